"""The run mode of `pyvcl run`, handed down to Python child processes through the environment.

`pyvcl run` puts its stack options, as JSON (`pyvcl.stack.StackChoice`), in ``PYVCL_RUN``
(`hand_down`), prepends `BOOT_DIR` (``pyvcl/_boot``, shipped in the package) to
``PYTHONPATH``, and calls `from_environment`.  A Python child started with that environment
imports ``pyvcl/_boot/sitecustomize.py`` at interpreter start, which calls the same
`from_environment`: runner and children open their app and `enable` interposition by one
code path.  Then that sitecustomize runs the one it shadows, if any.

When VPP is not there (the fallback), `from_environment` rewrites ``PYVCL_RUN`` to the
kernel choice and takes `BOOT_DIR` off ``PYTHONPATH`` again, so that the children of a
process on kernel sockets start as plain Python does: nothing imported, nothing patched.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..stack import StackChoice

ENV = "PYVCL_RUN"
PYTHONPATH = "PYTHONPATH"
BOOT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_boot")
PROG = "pyvcl run"

# The app this process runs on, once `from_environment` opened one (kept: interposition
# uses it for the process's lifetime).
_app: Any = None


def say(message: str) -> None:
    """One line on stderr: the runner's and the boot's only way to speak to the user."""
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # no stderr (closed, None): stay silent
        pass


def hand_down(choice: StackChoice) -> None:
    """Put ``choice`` in this process's environment, for itself (`from_environment`) and for
    the Python processes it starts: ``PYVCL_RUN``, and `BOOT_DIR` first on ``PYTHONPATH``
    unless the choice is the kernel (which needs no boot)."""
    os.environ[ENV] = choice.for_children().to_json()
    _set_boot_path(not choice.kernel)


def _set_boot_path(present: bool) -> None:
    entries = [p for p in os.environ.get(PYTHONPATH, "").split(os.pathsep) if p]
    others = [p for p in entries if os.path.abspath(p) != BOOT_DIR]
    wanted = [BOOT_DIR, *others] if present else others
    if wanted == entries:
        return
    if wanted:
        os.environ[PYTHONPATH] = os.pathsep.join(wanted)
    else:
        os.environ.pop(PYTHONPATH, None)


def from_environment(*, strict: bool = False) -> Any:
    """Enable the run mode that ``PYVCL_RUN`` describes; return the app it runs on, or None
    (no ``PYVCL_RUN``, kernel sockets chosen, or VPP not reachable and fallback allowed: one
    notice line on stderr, and nothing patched).

    ``strict`` (the runner): errors are raised, for the runner to report before the program
    starts.  Otherwise (a child at interpreter start) an error is one line on stderr and the
    child runs on kernel sockets, or, when the mode has no fallback, exits with status 1."""
    global _app
    text = os.environ.get(ENV)
    if not text:
        return None
    try:
        choice = StackChoice.from_json(text)
    except ValueError as e:
        if strict:
            raise
        say(f"ignoring {ENV} ({e})")
        return None
    _release()  # (a `pyvcl run` in a process that booted already: its choice wins)
    if choice.kernel:
        return None
    try:
        app = _enable(choice)
    except BaseException as e:
        if strict or isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        _refuse_or_fall_back(choice, e)
        return None
    if app is None:
        _use_kernel_from_now_on(choice)
        return None
    if choice.verbose:
        say(f"using VPP's host stack (pid {os.getpid()})")
    _app = app
    from .leave import register

    register()  # close the sessions and detach at exit (after the app's attach: see there)
    return app


def _enable(choice: StackChoice) -> Any:
    """Open the app and enable interposition; None when it fell back to the kernel."""
    from ..errors import VppUnreachable
    from ..stack import absent_default_vpp

    def notice(e: VppUnreachable) -> None:
        say(f"VPP not reachable ({e.strerror}); using kernel sockets")

    absent = absent_default_vpp(choice)  # (the fallback without importing the data path)
    if absent is not None:
        notice(absent)
        return None
    from ..fallback import is_vpp
    from ..stack import open_stack
    from . import enable

    if choice.use_mq_eventfd is None:
        # The pump (pyvcl.interpose.pump) sleeps on the app mq's eventfd: whatever vcl.conf
        # says (C VCL's default is the mutex and condvar), interposed apps use the eventfd.
        choice = choice._replace(use_mq_eventfd=True)

    app = open_stack(choice, on_fallback=notice, follow_absent_vpp=False)
    if not is_vpp(app):
        return None  # (a KernelApp: no thread, nothing patched)

    def reopen() -> Any:  # a forked child's own app (its parent's belongs to the parent)
        return open_stack(choice, on_fallback=notice, follow_absent_vpp=False)

    try:
        enable(app, reopen=reopen)
    except BaseException:
        app.close()
        raise
    return app


def _release() -> None:
    """Undo an earlier `from_environment` of this process, if it enabled anything."""
    global _app
    if _app is None:
        return
    from . import disable

    disable()
    _app.close()
    _app = None


def _refuse_or_fall_back(choice: StackChoice, error: BaseException) -> None:
    from ..errors import VppUnreachable

    if isinstance(error, VppUnreachable):
        why = f"VPP not reachable ({error.strerror})"
    else:
        why = f"{type(error).__name__}: {error}"
    if not choice.fallback:
        say(f"{why} (pid {os.getpid()}, no fallback): exiting")
        # (SystemExit at interpreter start is a fatal error with a traceback: exit here)
        os._exit(1)
    say(f"{why}; using kernel sockets (pid {os.getpid()})")
    _use_kernel_from_now_on(choice)


def _use_kernel_from_now_on(choice: StackChoice) -> None:
    hand_down(choice._replace(kernel=True))
