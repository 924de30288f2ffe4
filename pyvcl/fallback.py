"""Opportunistic use of VPP: attach when VPP is there, use the kernel's sockets when it is not.

    app = pyvcl.open_app()                  # VPP if it answers, else the kernel's sockets
    with app.create_connection(("10.0.0.1", 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    print("via VPP" if pyvcl.is_vpp(app) else "via the kernel")

`open_app` attaches like `VclApp` (``app_socket``, ``config``, attach options) and returns an
`OpportunisticApp` over that `VclApp`, or over a `KernelApp`; only `VppUnreachable` -- no VPP
at the app socket -- makes it fall back.  Everything else (a bad option, VPP refusing the
attach, a broken vcl.conf) is raised as usual, since a fallback would hide a mistake.
`KernelApp` has `VclApp`'s surface (``socket``, ``create_connection``, ``create_server``,
``close``, ``closed``, context manager) over Python's `socket` module.

The module-level `create_connection` and `create_server` (also ``pyvcl.create_connection`` /
``pyvcl.create_server``) use one process-wide default app, made on first use by `default_app`:
attached as C VCL would (``$VCL_CONFIG`` and the ``VCL_*`` variables, see `pyvcl.config`),
kernel sockets when no VPP answers.  Caveats:

* An attached app belongs to the process that attached.  A forked child does not inherit the
  default app: its first call attaches anew (or falls back), and sessions the parent opened
  through VPP are unusable in the child.  (Kernel sockets the parent opened are inherited as
  usual, so a pre-fork server that listens before forking works in kernel mode only.)
* The default app is shared by every thread.  pyvcl sessions are thread-safe, but all of them
  go through one app worker: one message queue, events handled by whichever thread waits.
  Threads that each want their own app should call `open_app` themselves.
* The two stacks differ where VPP does: VPP does not connect an app to its own listener (so
  a process cannot talk to itself through one app, the default one included); a cut-through
  connect completes only once the listening app accepts; C VCL's default scope (no
  ``app-scope-local`` in vcl.conf, no ``VCL_APP_SCOPE_LOCAL``) is global only, so no
  cut-through to apps on the same VPP.

VPP restarts (docs/restarts.md).  `open_app` and the default app return an `OpportunisticApp`,
which follows VPP: a watcher thread looks every `WATCH_INTERVAL` seconds.  When VPP dies it
logs one WARNING on this module's logger ("VPP went away (...): new connections use kernel
sockets until it is back", or "... fail until it is back" without fallback) and new
connections and listeners use the kernel (or raise `VppUnreachable`); connections through the
dead VPP raise `VppDisconnected` (ECONNRESET).  When VPP's app socket accepts again it
attaches anew and logs "VPP is back (...): new connections use VPP again"; kernel sockets made
meanwhile keep working.  The same happens when VPP first starts after the app was opened.
Listeners do not move by themselves (``on_switch`` says when to listen again);
`pyvcl.aio.start_server` with ``app=None`` does it for you.  An explicit `VclApp` is never
attached again: after VPP's death it raises `VppDisconnected` for good.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .errors import LocalError, VclError, VppDisconnected, VppUnreachable
from .vclsocket import Address, VclApp, VclSocket

__all__ = [
    "KernelApp",
    "OpportunisticApp",
    "close_default_app",
    "create_connection",
    "create_server",
    "default_app",
    "is_vpp",
    "open_app",
]

log = logging.getLogger(__name__)
_Socket = socket.socket  # (inside KernelApp, "socket" is its method)


class KernelApp:
    """`VclApp`'s surface over the kernel's sockets: what `open_app` returns without VPP.

    ``create_connection`` / ``create_server`` / ``socket`` return ordinary `socket.socket`
    objects (hostnames are resolved as the socket module does).  `close` closes the sockets
    this app made that are still open, as detaching a `VclApp` voids its sessions."""

    is_vpp = False

    def __init__(self, reason: BaseException | None = None) -> None:
        self.reason = reason  # why VPP was not used (the VppUnreachable), if it was tried
        self._sockets: weakref.WeakSet[_Socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def _track(self, s: _Socket) -> _Socket:
        with self._lock:
            if self._closed:
                s.close()
                raise LocalError("this KernelApp is closed", errno.EBADF)
            self._sockets.add(s)
        return s

    def _check_open(self) -> None:
        if self._closed:
            raise LocalError("this KernelApp is closed", errno.EBADF)

    def socket(self, family: int = socket.AF_INET) -> _Socket:
        self._check_open()
        return self._track(socket.socket(family, socket.SOCK_STREAM))

    def create_connection(self, address: Address, timeout: float | None = None) -> _Socket:
        self._check_open()
        return self._track(socket.create_connection((address[0], address[1]), timeout))

    def create_server(self, address: Address, *, backlog: int | None = None) -> _Socket:
        self._check_open()
        host = address[0]
        family = socket.AF_INET6 if isinstance(host, str) and ":" in host else socket.AF_INET
        s = socket.create_server((host, address[1]), family=family, backlog=backlog)
        return self._track(s)

    def close(self, linger: float = 0.0) -> None:
        """Close the sockets this app made (``linger``: `VclApp.close`'s, nothing to wait for
        here: the kernel finishes a closed socket's work by itself)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._sockets)
            self._sockets = weakref.WeakSet()
        for s in sockets:
            s.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> KernelApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyvcl.KernelApp {'closed' if self._closed else 'open'}>"


AnyApp = VclApp | KernelApp
AnySocket = VclSocket | socket.socket


def is_vpp(app: Any) -> bool:
    """True for an app whose new connections go through VPP now: a `VclApp`, or an
    `OpportunisticApp` attached at the moment; False for a `KernelApp` (or an opportunistic
    app waiting for VPP)."""
    if isinstance(app, OpportunisticApp):
        return app.is_vpp
    return isinstance(app, VclApp)


WATCH_INTERVAL = 0.5  # how often an opportunistic app looks for VPP's death or return


class OpportunisticApp:
    """What `open_app` returns: an app that follows VPP (module docstring, "VPP restarts").

    New connections and listeners go through `backend`: the `VclApp` while VPP is attached,
    the `KernelApp` while it is not (with ``fallback``; without, they raise `VppUnreachable`).
    A daemon thread looks every `WATCH_INTERVAL` seconds for VPP's death (the app socket's
    hang-up) and, while VPP is away, tries to attach again; each switch is logged once on the
    ``pyvcl.fallback`` logger and reported to the `on_switch` callbacks.  Sockets keep the
    app they were made by: those of a VPP that died raise `VppDisconnected` (ECONNRESET)."""

    def __init__(
        self,
        attach: Callable[[], VclApp],
        first: VclApp | VppUnreachable,
        *,
        fallback: bool = True,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self._attach = attach
        self._fallback = fallback
        self._lock = threading.Lock()
        self._vpp: VclApp | None = None
        self._kernel: KernelApp | None = None
        self._why_not_vpp: VclError | None = None
        self._was_attached = False  # "VPP is back" rather than "VPP is there" when it comes
        self._retired: list[VclApp] = []  # dead attachments, closed once their sockets are
        self._callbacks: list[Callable[[OpportunisticApp], None]] = []
        self._closed = False
        self.switches = 0  # how many times the backend changed (VPP lost or found)
        if isinstance(first, VclApp):
            self._vpp, self._was_attached = first, True
        else:
            self._use_kernel_or_fail(first)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_watch, args=(weakref.ref(self), self._stop, watch_interval),
            name="pyvcl-vpp-watch", daemon=True,
        )  # fmt: skip
        self._thread.start()

    # -- what new connections use -----------------------------------------------------------
    @property
    def backend(self) -> VclApp | KernelApp:
        """The app new connections go through now (VPP's death noticed first, so a dead
        `VclApp` is never returned).  Raises `VppUnreachable` while VPP is away without
        fallback, `LocalError` (EBADF) once closed."""
        self.check_vpp()
        with self._lock:
            if self._closed:
                raise LocalError("this app is closed", errno.EBADF)
            if self._vpp is not None:
                return self._vpp
            if self._kernel is not None:
                return self._kernel
            why = self._why_not_vpp
            raise VppUnreachable(
                f"no VPP ({why.strerror if why else 'not attached'}): new connections fail "
                "until it is back",
                errno.ECONNREFUSED,
            )

    @property
    def is_vpp(self) -> bool:
        """Whether new connections go through VPP now (VPP's death noticed first)."""
        return not self._closed and self.check_vpp()

    @property
    def reason(self) -> VclError | None:
        """Why VPP is not used now (the `VppUnreachable` or `VppDisconnected`), or None."""
        return self._why_not_vpp

    def on_switch(self, callback: Callable[[OpportunisticApp], None]) -> Callable[[], None]:
        """Call ``callback(app)`` after each switch between VPP and the kernel (from the thread
        that noticed it, without locks held).  Returns a function that removes it."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    def socket(self, family: int = socket.AF_INET) -> AnySocket:
        return self.backend.socket(family)

    def create_connection(self, address: Address, timeout: float | None = None) -> AnySocket:
        """Connect through `backend`; when VPP dies during the connect, once more through
        the new backend (nothing was sent yet)."""
        app = self.backend
        try:
            return app.create_connection(address, timeout)
        except VppDisconnected:
            if self.backend is app:
                raise
            return self.backend.create_connection(address, timeout)

    def create_server(self, address: Address, *, backlog: int | None = None) -> AnySocket:
        """A listener of `backend`.  It does not follow VPP: one of a VPP that died raises
        `VppDisconnected` from ``accept``; listen again then (`pyvcl.aio.start_server` does)."""
        app = self.backend
        try:
            return app.create_server(address, backlog=backlog)
        except VppDisconnected:
            if self.backend is app:
                raise
            return self.backend.create_server(address, backlog=backlog)

    # -- following VPP ----------------------------------------------------------------------
    def check_vpp(self) -> bool:
        """True while attached to a live VPP; notices VPP's death (and switches) at once
        instead of at the watcher's next look."""
        vpp = self._vpp
        if vpp is None:
            return False
        if vpp.worker.check_vpp():
            return True
        if not vpp.closed:  # (closed means we are closing, not that VPP died)
            self._lost(vpp)
        return False

    def _use_kernel_or_fail(self, why: VclError) -> None:
        self._why_not_vpp = why
        if not self._fallback:
            return
        if self._kernel is None:
            self._kernel = KernelApp(reason=why)
        else:
            self._kernel.reason = why

    def _lost(self, vpp: VclApp) -> None:
        with self._lock:
            if self._vpp is not vpp or self._closed:
                return
            self._vpp = None
            self._retired.append(vpp)
            dead = vpp.worker.dead
            self._use_kernel_or_fail(dead or VppDisconnected("VPP went away"))
            self.switches += 1
        then = "use kernel sockets" if self._fallback else "fail"
        log.warning(
            "VPP went away (app socket %s): new connections %s until it is back",
            vpp.app.sapi.path, then,
        )  # fmt: skip
        self._notify()

    def _look(self) -> None:
        """One look of the watcher: VPP's death, its return, dead attachments to release."""
        if self.check_vpp() or self._closed:
            return
        self._release_retired()
        try:
            vpp = self._attach()
        except VclError as e:
            log.debug("VPP not back yet: %s", e)
            return
        with self._lock:
            taken = not self._closed and self._vpp is None
            if taken:
                self._vpp, self._why_not_vpp = vpp, None
                back, self._was_attached = self._was_attached, True
                self.switches += 1
        if not taken:
            vpp.close()
            return
        if back:
            log.warning("VPP is back (app socket %s): new connections use VPP again",
                        vpp.app.sapi.path)  # fmt: skip
        else:
            log.info("VPP is there now (app socket %s): new connections use VPP",
                     vpp.app.sapi.path)  # fmt: skip
        self._notify()

    def _release_retired(self) -> None:
        """Close dead attachments none of whose sockets is open any more (their mappings of
        the dead VPP's memory go; closing earlier would turn ECONNRESET into EBADF)."""
        with self._lock:
            idle = [a for a in self._retired if not a.worker.layer.sessions]
            self._retired = [a for a in self._retired if a not in idle]
        for a in idle:
            a.close()

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb(self)
            except Exception:  # one callback's bug must not stop the others or the watcher
                log.exception("pyvcl.fallback: an on_switch callback failed")

    # -- closing ----------------------------------------------------------------------------
    def close(self, linger: float = 0.0) -> None:
        """Stop following VPP, detach (waiting up to ``linger`` s for VPP's CLEANUPs, see
        `VclApp.close`), and close the kernel sockets this app made."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            apps: list[AnyApp] = [*self._retired]
            if self._vpp is not None:
                apps.append(self._vpp)
            if self._kernel is not None:
                apps.append(self._kernel)
            self._retired, self._callbacks = [], []
        self._stop.set()
        for app in apps:
            app.close(linger)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> OpportunisticApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "VPP" if self._vpp is not None else "no VPP"
        return f"<pyvcl.OpportunisticApp {state}>"


def _watch(ref: weakref.ref[OpportunisticApp], stop: threading.Event, interval: float) -> None:
    """The watcher thread: looks every ``interval`` s until the app is closed or collected."""
    while not stop.wait(interval):
        app = ref()
        if app is None:
            return
        try:
            app._look()
        except Exception:  # keep watching: a failed look must not end reattaching for good
            log.warning("pyvcl.fallback: looking for VPP failed", exc_info=True)
        del app


def open_app(
    app_socket: str | os.PathLike[str] | None = None,
    *,
    config: Any = None,
    fallback: bool = True,
    on_fallback: Callable[[VppUnreachable], None] | None = None,
    follow_vpp: bool = True,
    follow_absent_vpp: bool = True,
    watch_interval: float = WATCH_INTERVAL,
    **attach_options: Any,
) -> OpportunisticApp | VclApp | KernelApp:
    """An app attached through ``app_socket`` (or ``config``, see `VclApp`); when no VPP
    answers there and ``fallback`` is true, kernel sockets instead.

    It is an `OpportunisticApp` that follows VPP (attaches when VPP comes, switches to the
    kernel -- or to failing, without ``fallback`` -- when it goes), looking every
    ``watch_interval`` seconds; with ``follow_vpp=False``, the `VclApp` or `KernelApp` of
    the first try, for good; with ``follow_absent_vpp=False``, a `KernelApp` for good when
    the first try fell back (an `OpportunisticApp` when it attached).  ``on_fallback(error)``
    is called before falling back at first (the default logs the reason at INFO level on the
    ``pyvcl.fallback`` logger).  With ``fallback=False`` the first `VppUnreachable` is
    raised.  ``attach_options`` are `VclApp`'s keyword arguments (``timeout``,
    ``session_timeout``, ``name``, ``scope_local``, ...)."""

    def attach() -> VclApp:
        return VclApp(app_socket, config=config, **attach_options)

    first: VclApp | VppUnreachable
    try:
        first = attach()
    except VppUnreachable as e:
        if not fallback:
            raise
        if on_fallback is not None:
            on_fallback(e)
        else:
            log.info("VPP not reachable (%s); using kernel sockets", e.strerror)
        first = e
    if not isinstance(first, VclApp):
        if not (follow_vpp and follow_absent_vpp):
            return KernelApp(reason=first)
    elif not follow_vpp:
        return first
    return OpportunisticApp(attach, first, fallback=fallback, watch_interval=watch_interval)


# -- the process-wide default app --------------------------------------------------------------

_default_lock = threading.Lock()
_default: tuple[int, OpportunisticApp] | None = None  # (pid that made it, app)


def default_app() -> OpportunisticApp:
    """The process-wide app behind `create_connection` / `create_server`: attached from the
    environment like C VCL (``$VCL_CONFIG``, ``VCL_*``) on first use, or kernel sockets when
    VPP is not reachable; an `OpportunisticApp`, so it follows VPP's restarts.  Made again
    in a forked child (module docstring).  Unlike C VCL it always asks for the message-queue
    eventfd, which event loops need."""
    global _default
    with _default_lock:
        current = _default
        if current is not None and current[0] == os.getpid() and not current[1].closed:
            return current[1]
        from .config import load_vcl_config

        # Always with the mq eventfd, whatever vcl.conf says (C VCL's default is the
        # mutex/condvar): pyvcl.selector and pyvcl.aio wait on it, and neither VPP nor any
        # peer can tell the difference.
        app = open_app(config=load_vcl_config(), use_mq_eventfd=True)
        assert isinstance(app, OpportunisticApp)
        _default = (os.getpid(), app)
        return app


def close_default_app() -> None:
    """Close the default app (detach from VPP); the next use makes a new one."""
    global _default
    with _default_lock:
        current, _default = _default, None
    if current is not None and current[0] == os.getpid():
        current[1].close()


def _after_fork_in_child() -> None:
    # The parent's app is not ours: forget it (without closing: closing could close kernel
    # sockets the child inherited and means to use), and do not inherit a held lock.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def create_connection(address: Address, timeout: float | None = None) -> VclSocket | socket.socket:
    """Connect through the default app (VPP if reachable, else the kernel); see `default_app`.

    Like `socket.create_connection`, except that ``timeout=None`` means blocking (VPP's
    connect is still bounded by VCL's session-timeout)."""
    return default_app().create_connection(address, timeout)


def create_server(address: Address, *, backlog: int | None = None) -> VclSocket | socket.socket:
    """A listening socket from the default app (VPP if reachable, else the kernel)."""
    return default_app().create_server(address, backlog=backlog)
