"""Ctrl-C (and any signal whose handler raises) held back while pyvcl changes shared memory.

Python runs a signal's handler in the main thread between two bytecodes, and an exception the
handler raises (SIGINT's default raises KeyboardInterrupt) comes out of whatever line was
running.  In pyvcl that line may sit halfway through a change of shared memory that takes
several steps: a queue's head moved but not its ring's, a fifo's head moved over a chunk not
yet given back.  The structure is then inconsistent, for good: the next call on it finds a
handle out of order or a chunk chain that ends too soon (`SharedMemoryError`), and the
session, or the whole app, is lost.  A program that goes on after Ctrl-C (a REPL, a server
closing its connections cleanly) meets exactly that.

`guard_signal` wraps a signal's Python handler so that, when the signal comes while the main
thread runs pyvcl's library code, the handler is called a little later, once that code is
back at a consistent point.  Which frame decides, skipping the standard library's frames:

- a frame of the program, of a third-party library or of pyvcl's own tools (``pyvcl.cli``,
  ``pyvcl.repl``, ``pyvcl.testing``): call the handler now, as without pyvcl;
- a pyvcl function marked `interruptible`, a wait between two consistent states (a queue's
  eventfd wait, a nap, a full queue's backoff): now, so Ctrl-C still ends every wait;
- any other pyvcl code: later.  A short-lived thread sends the signal to the main thread
  again after `REDELIVER_S` (a real signal, so a blocking call is interrupted too), and the
  same test is made then, until the handler runs or `DEFER_LIMIT_S` has passed since the
  first arrival; then it runs wherever the program is, so that a wait nobody marked (each is
  bounded, in slices of at most 0.1 s) cannot make Ctrl-C useless.

A handler that runs "later" still sees one signal, with the frame it was finally run in.
Nothing is done per call on the data path: the frames are looked at only when a signal comes.

`App.attach` guards SIGINT when it runs in the main thread, unless ``PYVCL_GUARD_SIGINT=0``.
Other signals whose handlers raise (a SIGALRM timeout, a SIGTERM handler calling
``sys.exit``) can be guarded with `guard_signal`.  An asyncio program that attaches before
``asyncio.run`` gets Python 3.10's Ctrl-C (KeyboardInterrupt in the loop) rather than 3.11's
(the main task cancelled), because asyncio installs its own handler only over the default
one; attaching inside the coroutine keeps asyncio's handler, guarded.

This module imports nothing of pyvcl: every layer may mark its waits.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sysconfig
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

__all__ = [
    "DEFER_LIMIT_S",
    "REDELIVER_S",
    "guard_sigint_at_attach",
    "guard_signal",
    "interruptible",
    "unguard_signal",
]

REDELIVER_S = 0.002
"""How soon a held-back signal is sent again (a pyvcl step takes microseconds)."""
DEFER_LIMIT_S = 1.0
"""The longest a signal is held back; after that its handler runs wherever the program is."""
ENV = "PYVCL_GUARD_SIGINT"
_STALE_S = 1.0  # a hold-back chain sends again every REDELIVER_S: one older than this is over

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[int, "FrameType | None"], Any]

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TOOLS = tuple(_PKG + p for p in ("cli" + os.sep, "testing" + os.sep, "repl", "__main__"))
_STDLIB = tuple(
    {
        os.path.abspath(p) + os.sep
        for key in ("stdlib", "platstdlib")
        if (p := sysconfig.get_paths().get(key))
    }
)
_SITE = ("site-packages", "dist-packages")

_INTERRUPTIBLE: set[CodeType] = set()
_NOW, _LATER, _SKIP = 0, 1, 2
_kinds: dict[CodeType, int] = {}
_KINDS_MAX = 4096  # code objects classified and kept (they are few; a bound all the same)


def interruptible(fn: F) -> F:
    """Mark ``fn`` as a place where a guarded signal's handler may run: a wait, entered and
    left with everything it touches consistent."""
    _INTERRUPTIBLE.add(fn.__code__)
    _kinds.pop(fn.__code__, None)
    return fn


def _classify(code: CodeType) -> int:
    if code in _INTERRUPTIBLE:
        return _NOW
    name = code.co_filename
    if name.startswith(_PKG):
        return _NOW if name.startswith(_TOOLS) else _LATER
    if name.startswith("<frozen ") or (
        name.startswith(_STDLIB) and not any(s in name for s in _SITE)
    ):
        return _SKIP
    return _NOW  # the program's code, or a third-party library's


def held_back(frame: FrameType | None) -> bool:
    """Whether a guarded signal arriving in ``frame`` waits (pyvcl's library is mid-step)."""
    f = frame
    while f is not None:
        code = f.f_code
        kind = _kinds.get(code)
        if kind is None:
            kind = _classify(code)
            if len(_kinds) < _KINDS_MAX:
                _kinds[code] = kind
        if kind != _SKIP:
            return kind == _LATER
        f = f.f_back
    return False


def _send_later(main: int | None, sig: int) -> None:
    """Send ``sig`` to the main thread again after `REDELIVER_S` (a real signal: a blocking
    call is interrupted too), if our handler still takes it: once the program has put another
    back (SIG_DFL would kill the process), what was held back has no one to go to."""
    time.sleep(REDELIVER_S)
    _scheduled.discard(sig)
    guard = _guards.get(sig)
    if main is None or guard is None or signal.getsignal(sig) is not guard[1]:
        _first_held.pop(sig, None)
        return
    with contextlib.suppress(OSError):  # the main thread is gone: no one to tell
        signal.pthread_kill(main, sig)


_scheduled: set[int] = set()  # signals with a _send_later on its way
os.register_at_fork(after_in_child=_scheduled.clear)  # (those threads stayed in the parent)
_guards: dict[int, tuple[Handler, Handler]] = {}  # signum -> (the program's handler, ours)
_first_held: dict[int, float] = {}


def _wrap(signum: int, original: Handler) -> Handler:
    def pyvcl_guarded_handler(sig: int, frame: FrameType | None) -> Any:
        now = time.monotonic()
        first = _first_held.setdefault(sig, now)
        if now - first > DEFER_LIMIT_S + _STALE_S:  # left by a chain that broke off: a new one
            first = _first_held[sig] = now
        if now - first < DEFER_LIMIT_S and held_back(frame):
            if sig not in _scheduled:
                _scheduled.add(sig)
                # A bare thread, not threading's: Thread.start takes a lock that the main
                # thread, interrupted right here, may hold.  (Tripping the signal again from
                # here instead would run this handler again inside itself, endlessly.)
                _thread.start_new_thread(_send_later, (threading.main_thread().ident, sig))
            return None
        _first_held.pop(sig, None)
        return original(sig, frame)

    pyvcl_guarded_handler.__wrapped__ = original  # type: ignore[attr-defined]
    return pyvcl_guarded_handler


def guard_signal(signum: int = signal.SIGINT) -> bool:
    """Wrap ``signum``'s Python handler as the module docstring says; True if it is guarded
    now.  Only the main thread can change handlers: elsewhere this returns False, as it does
    for a signal that is ignored or has no Python handler (nothing of Python's would run)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signum)
    guard = _guards.get(signum)
    if guard is not None and current is guard[1]:
        return True
    if not callable(current):
        return False
    ours = _wrap(signum, current)
    signal.signal(signum, ours)
    _guards[signum] = (current, ours)
    return True


def unguard_signal(signum: int = signal.SIGINT) -> None:
    """Put back the handler `guard_signal` wrapped, if ours is still the one installed."""
    guard = _guards.pop(signum, None)
    if guard is not None and signal.getsignal(signum) is guard[1]:
        signal.signal(signum, guard[0])


def guard_sigint_at_attach() -> None:
    """What `App.attach` does: guard SIGINT in the main thread unless ``PYVCL_GUARD_SIGINT``
    is ``0``."""
    if os.environ.get(ENV, "1") != "0":
        guard_signal(signal.SIGINT)
