"""Leaving VPP at interpreter exit: what an interposed process (`pyvcl run` and the Python
children it boots) does with the apps it still holds when its program ends.

C VCL registers ``vppcom_app_exit`` with atexit: it tells VPP that its worker is gone and
closes the app socket, and VPP, freeing the app, closes every session it still held (LDP's
own destructor adds nothing).  pyvcl says the same more explicitly, the way `VclApp.close`
and a program that closes its sockets do, so that a live trace shows how the app ended: each
session still open is closed (DISCONNECT, or the reply VPP waits for; a listener is
unlistened and what it never accepted refused), VPP's CLEANUPs are handled, and APP_DETACH
ends the app (`App.detach`).  Sessions end as when the program closes them: TCP sends what
is queued, then FIN.

It must never hold up the exit or change how it ends:

* **Bounded.**  Taking the app from other threads, closing the sessions and waiting for
  their CLEANUPs: `EXIT_TIMEOUT` in all; then, per app, the detach's sync and goodbye,
  within about twice ``DETACH_SYNC_TIMEOUT`` against a VPP that stopped answering (three
  times against one that answers but is slow to close the app socket: pyvcl.app).  At most
  about 3 s against a VPP that stopped answering (5 s for a process with a second app, made
  to connect to itself); a few milliseconds against one that answers.
* **Skipped** when there is nothing to say or nobody to say it to: the app was closed
  already, VPP is gone (it closed the app socket), the app is a forked parent's (a child
  that never used interposed sockets has none of its own), or the exit is by SIGINT (an
  uncaught KeyboardInterrupt: as C VCL, whose atexit handlers do not run when a signal
  kills the process).  A second Ctrl-C during it ends it quietly.
* **Other threads** (daemon threads still blocked in a recv, an accept, a select): the app
  worker's lock is taken (within the timeout) and never given back.  A thread waiting in
  one of the app's calls wakes only to take that lock, so it stays blocked, as a thread
  blocked in a kernel socket call does until the process ends; none wakes to an error made
  up by the exit.  Nothing is unmapped (``release=False``): whatever another thread still
  reads stays readable until the process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..vclsocket import VclApp

EXIT_TIMEOUT = 1.0  # taking the app, closing its sessions, waiting for their CLEANUPs

_registered = False


def register() -> None:
    """Leave at interpreter exit (once per process; a forked child inherits it).  Call after
    the first attach: atexit runs the last registered first, so this runs before the live
    trace's own exit handler (registered at that attach) writes its last lines."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(at_exit)


def at_exit() -> None:
    """The atexit handler: `leave` every app this process holds, unless the exit is by SIGINT.
    Never raises."""
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        return  # (python sets sys.last_value for an uncaught exception; so does pyvcl run)
    from . import held_apps

    deadline = time.monotonic() + EXIT_TIMEOUT
    for app in held_apps():
        try:
            leave(app, deadline)
        except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now
            return
        except Exception:  # (nothing here may disturb the exit: the socket's close suffices)
            continue


def leave(app: Any, deadline: float) -> bool:
    """Close the sessions of ``app`` (an `OpportunisticApp`) and detach it, if it is
    attached to a live VPP in this process; True when it said goodbye.  Returns by
    ``deadline`` plus the detach's own bound."""
    from ..errors import VclError
    from ..vclsocket import VclApp

    if app.closed:
        return False
    try:
        vcl = app.backend  # (notices VPP's death first)
    except VclError:
        return False
    # (Not app.close(): it would unmap what other threads may still read.  Its watcher
    # thread stops at its next look, which needs the worker's lock, kept from now on.)
    return isinstance(vcl, VclApp) and _leave_vpp(vcl, deadline)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _leave_vpp(vcl: VclApp, deadline: float) -> bool:
    from ..errors import LocalError, VclError

    worker = vcl.worker
    if vcl.closed or vcl.app.pid != os.getpid() or not worker.check_vpp():
        return False
    if not worker.lock.acquire(timeout=_left(deadline)):
        return False  # a thread keeps it (stuck): VPP cleans up when the app socket closes
    # Held from here to the process's end (the module docstring says why); only the wait
    # for the poller's round gives it up for moments, before anything is closed.
    _wake_pump(vcl)
    if not worker.reserve_poller(_left(deadline)) or worker.dead is not None:
        return False
    try:
        closing = _close_sessions(vcl, deadline)
        # Handled by the core (nobody else can poll now: they need the lock): the trace
        # shows each session's end as it shows a program's own close.
        worker.wait_until(
            lambda: not any(i in worker.layer.sessions for i in closing), _left(deadline)
        )
    except VclError:
        pass  # (VPP went away meanwhile: the detach below sees it and says nothing)
    worker.shutdown_worker(LocalError("the program exited", errno.EBADF), timeout=0)
    vcl.app.detach(release=False)
    if not vcl.app.said_goodbye:
        return False  # (VPP went away just now)
    _note("app detached at exit")
    return True


def _close_sessions(vcl: VclApp, deadline: float) -> list[int]:
    """Close every session the program left open, as `SessionWorker.close` would, each
    message sent within the deadline; the indexes of those that await VPP's word."""
    worker, app = vcl.worker, vcl.app
    closing = []
    for s in list(worker.layer.sessions.values()):
        if s.app_closed:
            continue
        for a in worker.layer.close(s):
            mq = app.ctrl_mq if a.mq_offset is None else worker.vpp_mq(a.mq_offset)
            mq.send_ctrl(a.event_type, timeout=_left(deadline), **a.fields)
        if s.index in worker.layer.sessions:
            closing.append(s.index)
    return closing


def _wake_pump(vcl: VclApp) -> None:
    """The pump thread may sleep on the app mq for up to a second: wake it now."""
    from .carrier import pumps

    for pump in list(pumps):
        if pump.app is vcl:
            pump.wake()


def _note(what: str) -> None:
    from ..api import live_trace

    tracer = live_trace.active()
    if tracer is not None:
        with contextlib.suppress(Exception):
            tracer.record("note", what=what)
            tracer.flush()
