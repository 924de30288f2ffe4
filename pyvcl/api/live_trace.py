"""Live traces: every app-socket frame and message-queue message a process exchanges with VPP,
written as it happens to the file named by ``PYVCL_TRACE`` (docs/traces.md).

The file is JSON Lines: a header object, then one record per line.  Records of kind ``sapi``
are the events of the recorded traces of ``shared/vpp-v26.06/traces/`` (``dir``, ``len``,
``hex``, ``fds``) with ``seq``, ``t`` and ``kind`` added; ``mq`` records add the queue, the
ring, the event type and the session the message names; ``core`` records (written by
`pyvcl.session.replay.watch_layer`) are what the session core was asked and what it returned.
`pyvcl.api.trace.load_timeline` reads them back.

Nothing here runs unless tracing is on: `App.attach` asks `active` once and, only then,
replaces the methods of its own socket and queue objects with recording wrappers
(`watch_sapi`, `watch_queue`), so the data path of an untraced process is the same code as
before, without a check.  One lock orders the records of all threads; lines are buffered and
written with ``os.write`` (at 64 KiB, every half second, at `flush` and at exit), so a forked
child never writes the parent's buffer: it drops it and traces, if it attaches itself, into
``FILE.PID``.  An exec'd child that inherits ``PYVCL_TRACE`` does the same, since the file is
claimed by its first process (``PYVCL_TRACE_PID``).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import LocalError
from ..mq import events
from ..wire.enums import MqRing, SessionEvent, ring_for_event
from ..wire.session import SESSION_EVENT_SIZE

ENV = "PYVCL_TRACE"
OWNER_ENV = "PYVCL_TRACE_PID"  # "PID:FILE": the process writing FILE; others write FILE.PID
FORMAT = "pyvcl-trace"
VERSION = 1
KINDS = ("sapi", "mq", "core", "note")
_FLUSH_BYTES = 1 << 16
_FLUSH_SECONDS = 0.5
_PENDING_MAX = 4096  # drained events awaiting their core record (see `event_seq`)
_FIRST_CTRL = int(SessionEvent.CTRL_RPC)
_NO_HANDLE = (1 << 64) - 1  # session_handle_t ~0: names no session
# Control messages whose ``context`` is the app's session index (the others carry the api
# client handle or a listener's context there).
_CONTEXT_IS_SESSION = frozenset(
    {
        SessionEvent.CTRL_BOUND,
        SessionEvent.CTRL_CONNECTED,
        SessionEvent.CTRL_UNLISTEN_REPLY,
        SessionEvent.CTRL_LISTEN,
        SessionEvent.CTRL_CONNECT,
        SessionEvent.CTRL_UNLISTEN,
    }
)


_encode = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode
_EVENT_NAMES = {int(e): e.name for e in SessionEvent}


def event_name(event_type: int) -> str:
    return _EVENT_NAMES.get(event_type) or f"UNKNOWN_{event_type}"


def decode_message(ring: int, raw: bytes) -> events.Event:
    """A recorded mq message decoded.  A sent control message is recorded as the app wrote it
    (type, postponed, payload); its slot holds zeros after that, as here."""
    if len(raw) < SESSION_EVENT_SIZE:
        raw = raw + bytes(SESSION_EVENT_SIZE - len(raw))
    return events.decode(ring, raw)


def session_of(direction: str, ev: events.Event) -> dict[str, int]:
    """The session a message names: ``index`` (the app's session index: VPP->app IO events,
    the context of LISTEN/CONNECT and their replies, ACCEPTED_REPLY's app_session_index),
    ``vpp_index`` (app->VPP IO events) and ``handle`` (VPP's session handle)."""
    if ev.type < _FIRST_CTRL:
        if ev.session_index is None:
            return {}
        key = "index" if direction == "vpp->app" else "vpp_index"
        return {key: ev.session_index}
    m = ev.msg
    if m is None or getattr(m, "handle", None) == _NO_HANDLE:
        return {}  # (app.sync_with_vpp's probes: an UNLISTEN of no session, and its reply)
    out: dict[str, int] = {}
    if ev.type in _CONTEXT_IS_SESSION:
        out["index"] = int(m.context)
    elif ev.type == SessionEvent.CTRL_ACCEPTED_REPLY and not m.retval:
        out["index"] = int(m.app_session_index)
    handle = getattr(m, "handle", None)
    if handle is not None:
        out["handle"] = int(handle)
    return out


class Tracer:
    """One trace file, shared by every thread of the process.  Opened at once (a file that
    cannot be written is a `LocalError` at attach, not a surprise later); a write that fails
    later stops the trace (``error`` says why) rather than the program."""

    def __init__(self, path: str, claim: bool = False) -> None:
        """``claim``: the process's own tracer (`active`): mark ``path`` as this process's in
        the environment, or write ``path.PID`` if a parent process claimed it."""
        self.base = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lines: list[str] = []
        self._size = 0
        self._seq = 0
        self._pending: dict[int, tuple[Any, int]] = {}
        self._io_prefixes: dict[tuple[str, str, int], str] = {}
        self.closed = False
        self.error: OSError | None = None
        self.path = path
        if claim:
            owner, _, owned = os.environ.get(OWNER_ENV, "").partition(":")
            if owned == path and owner != str(os.getpid()):
                self.path = f"{path}.{os.getpid()}"  # an exec'd child of the file's writer
            else:
                os.environ[OWNER_ENV] = f"{os.getpid()}:{path}"
        self._t0 = self._last_flush = time.monotonic()
        self._start()
        try:
            self._fd = self._open()
        except OSError as e:
            raise LocalError(f"{ENV}: cannot write the trace {self.path}: {e.strerror}") from None

    def _start(self) -> None:
        header = {
            "format": FORMAT,
            "version": VERSION,
            "pid": os.getpid(),
            "argv": list(sys.argv),
            "started": time.time(),
        }
        self._lines = [json.dumps(header) + "\n"]
        self._size = len(self._lines[0])

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._lines or self.closed or (self._fd is None and not self._seq):
            return  # (a forked child that recorded nothing leaves no file)
        data = "".join(self._lines).encode()
        self._lines, self._size = [], 0
        self._last_flush = time.monotonic()
        try:
            if self._fd is None:  # a forked child's first write
                self._fd = self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            self.error, self.closed = e, True

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self.closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _forked(self) -> None:
        """In a forked child: forget the parent's file and buffer (its lines are the parent's
        to write) and trace into BASE.PID from now on (the file is created at the first
        flush, so a child that records nothing leaves none)."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path = f"{self.base}.{os.getpid()}"
        self._pending, self._seq = {}, 0
        self._t0 = self._last_flush = time.monotonic()
        self._start()

    # -- records ---------------------------------------------------------------------------
    def record(self, kind: str, **fields: Any) -> int:
        """Write one record; its ``seq`` (the record's index in the file, header excluded)."""
        return self._write(kind, _encode(fields)[1:-1])

    def _write(self, kind: str, body: str) -> int:
        """Write a record whose members other than seq, t and kind are ``body`` (JSON object
        members, encoded outside the lock)."""
        with self._lock:
            seq = self._seq
            self._seq += 1
            now = time.monotonic()
            line = f'{{"seq":{seq},"t":{now - self._t0:.6f},"kind":"{kind}",{body}}}\n'
            self._lines.append(line)
            self._size += len(line)
            if self._size >= _FLUSH_BYTES or now - self._last_flush >= _FLUSH_SECONDS:
                self._flush_locked()
            return seq

    def record_mq(self, direction: str, queue: str, ring: int, raw: bytes, ev: Any) -> int:
        t = raw[0]
        if t < _FIRST_CTRL and ev is not None and ev.session_index is not None:
            # IO events, most of a trace: one fixed prefix per direction, queue and type.
            key = (direction, queue, t)
            prefix = self._io_prefixes.get(key)
            if prefix is None:
                prefix = _encode(
                    {"dir": direction, "queue": queue, "ring": ring, "type": event_name(t)}
                )[1:-1]
                self._io_prefixes[key] = prefix
            name = "index" if direction == "vpp->app" else "vpp_index"
            body = (
                f'{prefix},"len":{len(raw)},"hex":"{raw.hex()}",'
                f'"session":{{"{name}":{ev.session_index}}}'
            )
            return self._write("mq", body)
        fields: dict[str, Any] = {
            "dir": direction,
            "queue": queue,
            "ring": ring,
            "type": event_name(t),
            "len": len(raw),
            "hex": raw.hex(),
        }
        if ev is not None:
            session = session_of(direction, ev)
            if session:
                fields["session"] = session
        return self.record("mq", **fields)

    def event_seq(self, ev: Any) -> int | None:
        """The seq of the mq record of a drained event (for the core record that handles it),
        or None if this tracer did not see it drained."""
        with self._lock:
            entry = self._pending.pop(id(ev), None)
        return entry[1] if entry is not None and entry[0] is ev else None

    def _remember(self, ev: Any, seq: int) -> None:
        with self._lock:
            pending = self._pending
            if len(pending) >= _PENDING_MAX:
                del pending[next(iter(pending))]
            pending[id(ev)] = (ev, seq)

    # -- hooks -------------------------------------------------------------------------------
    def watch_sapi(self, sapi: Any) -> None:
        """Record every frame ``sapi`` (a `SapiSocket`) sends and receives."""
        send_raw, send_pair, recv = sapi.send_raw, sapi.send_pair, sapi.recv

        def traced_send_raw(data: bytes) -> None:
            seq = self._record_frame("app->vpp", bytes(data), [])
            self._noting_failure(seq, send_raw, data)

        def traced_send_pair(first: bytes, second: bytes) -> None:
            # The second message is a cert/key blob: its length only, never the key.
            seq = self._record_frame("app->vpp", bytes(first), [], blob_len=len(second))
            self._noting_failure(seq, send_pair, first, second)

        def traced_recv(timeout: float | None = None) -> Any:
            msg = recv(timeout)
            frame = bytes((msg.type,)) + bytes(msg.payload)
            self._record_frame("vpp->app", frame, list(msg.fds))
            return msg

        sapi.send_raw, sapi.send_pair, sapi.recv = traced_send_raw, traced_send_pair, traced_recv

    def _record_frame(self, direction: str, frame: bytes, fds: list[int], **extra: Any) -> int:
        return self.record("sapi", dir=direction, len=len(frame), hex=frame.hex(), fds=fds, **extra)

    def _noting_failure(self, seq: int, send: Callable[..., None], *args: Any) -> None:
        """Send after recording (so that VPP's answer, drained by another thread, cannot come
        first in the file); a send that fails gets a note."""
        try:
            send(*args)
        except BaseException as e:
            self.record("note", of=seq, error=f"{type(e).__name__}: {e}")
            raise

    def watch_queue(self, mq: Any, name: str) -> None:
        """Record every message sent on and drained from ``mq`` (a `MessageQueue`), under the
        queue name ``name`` ("app", "vpp0", ...)."""
        send, send_io, drain = mq.send, mq.send_io, mq.drain
        io_ring = int(MqRing.IO_EVT)

        def traced_send(
            data: bytes | bytearray | memoryview,
            ring: int | None = None,
            timeout: float | None = None,
            block: bool = True,
        ) -> None:
            raw = bytes(data)
            r = int(ring_for_event(raw[0])) if ring is None and raw else ring
            seq = -1
            if raw and r is not None:
                try:
                    ev = decode_message(r, raw)
                except Exception:  # send refuses it itself, with its own error
                    ev = None
                seq = self.record_mq("app->vpp", name, r, raw, ev)
            self._noting_failure(seq, send, data, ring, timeout, block)

        def traced_send_io(
            event_type: int, session_index: int, timeout: float | None = None, block: bool = True
        ) -> None:
            seq = -1
            if event_type in events.IO_EVENT_TYPES and 0 <= session_index < 1 << 32:
                raw = events.encode_io(event_type, session_index)
                ev = events.Event(event_type, io_ring, session_index, None, raw)
                seq = self.record_mq("app->vpp", name, io_ring, raw, ev)
            self._noting_failure(seq, send_io, event_type, session_index, timeout, block)

        def traced_drain(max_n: int | None = None, decode: bool = True) -> list[Any]:
            got: list[Any] = drain(max_n, decode)
            for item in got:
                if decode:
                    seq = self.record_mq("vpp->app", name, item.ring, item.raw, item)
                    self._remember(item, seq)
                else:
                    ring, raw = item
                    self.record_mq("vpp->app", name, ring, raw, None)
            return got

        mq.send, mq.send_io, mq.drain = traced_send, traced_send_io, traced_drain


def trace_to(path: str | os.PathLike[str]) -> None:
    """Trace this process into ``path`` (``--trace FILE``): as ``PYVCL_TRACE=FILE`` in its
    environment, which its child processes inherit (they write ``FILE.PID``).  Call before
    anything attaches."""
    os.environ[ENV] = os.fspath(path)
    os.environ.pop(OWNER_ENV, None)  # ours, even if a traced process started us


_tracer: Tracer | None = None
_looked = False
_state_lock = threading.Lock()


def active() -> Tracer | None:
    """The process's tracer if ``PYVCL_TRACE`` names a file (read at the first call, which
    attach makes), else None."""
    global _tracer, _looked
    if _looked:
        return _tracer
    with _state_lock:
        if not _looked:
            path = os.environ.get(ENV, "")
            if path:
                _tracer = Tracer(path, claim=True)
                atexit.register(_tracer.close)
                os.register_at_fork(after_in_child=_tracer._forked)
            _looked = True
    return _tracer
