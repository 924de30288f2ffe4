"""`VclSelector`: a `selectors.BaseSelector` for VclSockets and kernel files together.

    sel = VclSelector()
    sel.register(vcl_sock, selectors.EVENT_READ, "vpp")
    sel.register(kernel_sock, selectors.EVENT_READ, "kernel")
    for key, events in sel.select(timeout=1.0):
        ...

A VclSocket has no kernel fd.  VPP signals the app's message-queue eventfd whenever it queues
events for the app, so `select` waits on that eventfd (plus the kernel fds, plus the app socket
to notice VPP going away) with an inner `selectors.DefaultSelector`, then resets the eventfd,
handles the queued events and computes each VclSocket's readiness from session state and
fifos.  Readiness is level-triggered, as with select/epoll by default.  How the wake-ups are
re-armed (has_event, dequeue notifications) is in docs/async.md.

One selector serves the VclSockets of one `VclApp` (any number of kernel files); the app must
use eventfd signalling (the default, ``use_mq_eventfd=True``).  A VclSocket key has ``fd``
-1 and is looked up by the socket object.  Close-then-forget is an error with select(2) too:
unregister a VclSocket before closing it (a closed one is reported ready, so the caller
notices).
"""

from __future__ import annotations

import contextlib
import math
import selectors
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import LocalError, VclError
from .interrupts import interruptible
from .session.worker import POLL_SLICE
from .vclsocket import VclApp, VclSocket

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
SelectorKey = selectors.SelectorKey

MAX_SLEEP = 1.0  # longest sleep on the eventfd: bounds how long a closing app waits for us
_WAKE, _SAPI = object(), object()  # inner-selector data of the eventfd and the app socket


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _KeyMap(Mapping[Any, SelectorKey]):
    def __init__(self, sel: VclSelector) -> None:
        self._sel = sel

    def __len__(self) -> int:
        return len(self._sel._vcl) + len(self._sel._fds)

    def __getitem__(self, fileobj: Any) -> SelectorKey:
        key = self._sel._lookup(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def __iter__(self) -> Iterator[Any]:
        for key in [*self._sel._vcl.values(), *self._sel._fds.values()]:
            yield key.fileobj


class VclSelector(selectors.BaseSelector):
    """A selector for VclSockets (of one `VclApp`) and kernel file objects or fds."""

    def __init__(self, app: VclApp | None = None) -> None:
        self._inner = selectors.DefaultSelector()
        self._vcl: dict[VclSocket, SelectorKey] = {}
        self._fds: dict[int, SelectorKey] = {}
        self._map = _KeyMap(self)
        self._app: VclApp | None = None
        self._watched: list[int] = []  # our inner registrations: eventfd, app socket
        self._closed = False
        if app is not None:
            self._bind(app)

    # -- registration -----------------------------------------------------------------------
    def register(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        self._check_open()
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if isinstance(fileobj, VclSocket):
            if fileobj in self._vcl:
                raise KeyError(f"{fileobj!r} is already registered")
            if fileobj.closed:
                raise ValueError(f"{fileobj!r} is closed")
            self._bind(fileobj.app)
            key = SelectorKey(fileobj, -1, events, data)
            self._vcl[fileobj] = key
            return key
        fd = _fileobj_to_fd(fileobj)
        if fd in self._fds or fd in self._watched:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = SelectorKey(fileobj, fd, events, data)
        self._inner.register(fd, events, key)
        self._fds[fd] = key
        return key

    def unregister(self, fileobj: Any) -> SelectorKey:
        self._check_open()
        if isinstance(fileobj, VclSocket):
            try:
                key = self._vcl.pop(fileobj)
            except KeyError:
                raise KeyError(f"{fileobj!r} is not registered") from None
            if not self._vcl:
                self._unbind()
            return key
        found = self._lookup(fileobj)
        if found is None:
            raise KeyError(f"{fileobj!r} is not registered")
        del self._fds[found.fd]
        self._inner_forget(found.fd)
        return found

    def _inner_forget(self, fd: int) -> None:
        # A file closed before it was unregistered: the kernel dropped it already.
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._inner.unregister(fd)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        self._check_open()
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        key = self._lookup(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        new = key._replace(events=events, data=data)
        if isinstance(fileobj, VclSocket):
            self._vcl[fileobj] = new
        else:
            self._inner.modify(key.fd, events, new)
            self._fds[key.fd] = new
        return new

    def get_map(self) -> Mapping[Any, SelectorKey]:
        return self._map

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inner.close()
        self._vcl.clear()
        self._fds.clear()
        self._watched = []
        self._app = None

    def _lookup(self, fileobj: Any) -> SelectorKey | None:
        if isinstance(fileobj, VclSocket):
            return self._vcl.get(fileobj)
        key = self._fds.get(_fileobj_to_fd(fileobj))
        return key

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the selector is closed")

    def _bind(self, app: VclApp) -> None:
        if self._app is app:
            return
        if self._app is not None:
            raise ValueError("a VclSelector serves the sockets of one VclApp; use one per app")
        if app.closed:
            raise LocalError("the VclApp is closed")
        mq = app.app.app_mq
        if mq is None or mq.eventfd is None:
            raise LocalError(
                "this VclApp signals its message queue with a mutex and condvar "
                "(use_mq_eventfd=False): it has no file descriptor to select on; "
                "attach with use_mq_eventfd=True (the default)"
            )
        watched = [(mq.fileno(), _WAKE), (app.app.sapi.fileno(), _SAPI)]
        for fd, _ in watched:
            if fd in self._fds:
                raise KeyError(f"fd {fd} is registered but belongs to the VclApp")
        for fd, tag in watched:
            self._inner.register(fd, EVENT_READ, tag)
        self._watched = [fd for fd, _ in watched]
        self._app = app

    def _unbind(self) -> None:
        for fd in self._watched:
            self._inner_forget(fd)
        self._watched = []
        self._app = None

    # -- waiting ----------------------------------------------------------------------------
    @interruptible
    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        """Ready keys and their events; [] when ``timeout`` (seconds; None: forever, <= 0:
        just look) passes with nothing ready."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            remaining = math.inf if deadline is None else max(0.0, deadline - time.monotonic())
            vcl_ready, claimed = self._vcl_ready(may_sleep=remaining > 0)
            wait: float | None
            if vcl_ready or remaining == 0:
                wait = 0.0
            elif self._app is None:
                wait = None if remaining == math.inf else remaining  # kernel files only
            elif claimed:
                wait = min(remaining, MAX_SLEEP)
            elif self._worker_busy():
                wait = min(remaining, POLL_SLICE)  # another thread polls the mq: it wakes us
            else:
                wait = 0.0  # events are pending: pump them now
            try:
                fired = self._inner.select(wait)
            finally:
                if claimed and self._app is not None:
                    self._app.worker.release_poller()
            kernel: list[tuple[SelectorKey, int]] = []
            signalled = False
            for ikey, ev in fired:
                if ikey.data is _WAKE:
                    signalled = True
                elif ikey.data is _SAPI:
                    signalled = True
                    self._vpp_check()
                else:
                    ukey: SelectorKey = ikey.data
                    if self._fds.get(ukey.fd) is ukey:
                        kernel.append((ukey, ev & ukey.events))
            if vcl_ready or kernel:
                return vcl_ready + kernel
            if remaining == 0:
                return []
            if not signalled and wait is None:
                continue  # (kernel-only sleep without timeout cannot end empty; be safe)

    def _worker_busy(self) -> bool:
        assert self._app is not None
        w = self._app.worker
        with w.lock:
            return w.polling

    def _vpp_check(self) -> None:
        """The app socket fired: VPP gone?  Then stop watching it (it stays readable)."""
        assert self._app is not None
        if not self._app.worker.check_vpp():
            for fd in self._watched:
                self._inner_forget(fd)
            self._watched = []

    def _vcl_ready(self, may_sleep: bool) -> tuple[list[tuple[SelectorKey, int]], bool]:
        """Pump the worker, then each VclSocket's readiness; also whether we became the
        poller (allowed to sleep on the eventfd): all under the worker's lock, so no event
        can be consumed by another thread between the checks and the sleep."""
        app = self._app
        if app is None or not self._vcl:
            return [], False
        w = app.worker
        ready: list[tuple[SelectorKey, int]] = []
        with w.lock:
            alive = not app.closed
            if alive:
                try:
                    w.pump_signalled()
                except VclError:
                    alive = False
            for sock, key in self._vcl.items():
                if sock.closed or not alive:
                    ready.append((key, key.events))
                    continue
                r, wr = sock.readiness(
                    bool(key.events & EVENT_READ), bool(key.events & EVENT_WRITE)
                )
                mask = (EVENT_READ if r else 0) | (EVENT_WRITE if wr else 0)
                if mask:
                    ready.append((key, mask))
            claimed = alive and may_sleep and not ready and w.claim_poller()
        return ready, claimed

    def __repr__(self) -> str:
        return f"<pyvcl.VclSelector vcl={len(self._vcl)} fds={len(self._fds)}>"


# For code written against `selectors`: kernel fds alone work as with selectors.DefaultSelector,
# and pyvcl sockets (e.g. from the `pyvcl.socket` drop-in) can join them.
DefaultSelector = VclSelector
