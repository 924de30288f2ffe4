"""The shell of ``pyvcl repl``: an app attached to VPP, and helpers to poke its session layer.

Modelled on scapy's shell: build a message, send it, see the answers decoded.  The namespace
(`Shell.namespace`) holds the attached app and a few helpers; everything else is pyvcl itself,
importable at the prompt.  What happens on the wire is shown as it happens:

- every event VPP sends is printed when it is handled, one line (``<< CTRL_BOUND ...``):
  before each prompt the shell handles what is queued (the prompt object's ``__str__`` does
  it, so nothing prints in the middle of a line being typed), and a helper that waits (accept,
  connect, `Shell.wait`) prints them as they come.  Events that another thread handles (the
  app's `pyvcl.session.idle.IdleDrain`, while the shell waits on something else or sits at
  the prompt) are printed at the shell's next pump, after the output of the statement that
  was running, never in the middle of it;
- every control message the app sends is printed too (``>> CTRL_LISTEN ...``);
- `Shell.history` keeps both, with times, and `Shell.export` writes it as JSON.

``show(x)`` prints every field of an event, a fifo (head, tail, chunks, free space drawn) or a
segment; ``hexdump(x)`` the bytes of an event's slot or of any bytes.  Bad input gets one
line saying what was wrong and the session goes on (`Console.showtraceback`).
"""

from __future__ import annotations

import code
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from . import shmview as decode
from .api import live_trace
from .errors import VclError
from .fifo import Fifo
from .mq.events import Event
from .mq.queue import MessageQueue
from .segment import Segment
from .session.core import Action
from .vclsocket import VclApp, VclSocket
from .wire.enums import MqRing, SessionEvent
from .wire.session import CTRL_PAYLOADS

__all__ = ["ONE_LINE_ERRORS", "Console", "MqView", "Peer", "Shell"]

BANNER = """pyvcl repl: attached to VPP as app {index} ({version}).
Names: app vcl listen connect accept send read close fifo segment mq msg wait peer
       show hexdump history export events E.  help(listen) and friends say more; exit() detaches.
Every event VPP sends is printed (<<), and every control message sent (>>)."""

# The exceptions a mistake at the prompt raises (a wrong field, a socket in the wrong state, a
# pyvcl error): one line for them, the full traceback for anything else.
ONE_LINE_ERRORS = (VclError, ValueError, TypeError, IndexError, KeyError)

_BAR = 40  # characters of a chunk's bar in `FifoView.show`


class Shell:
    """The REPL's state: the attached ``vcl`` (a `pyvcl.vclsocket.VclApp`), what was exchanged
    (``history``, ``events``) and the helpers of `namespace`."""

    def __init__(
        self, vcl: VclApp, out: IO[str] | None = None, peer_args: list[str] | None = None
    ) -> None:
        self.vcl = vcl
        self.app = vcl.app
        self.worker = vcl.worker
        self._out = out  # None: sys.stdout at the time of printing
        self.peer_args = peer_args  # how `peer` attaches its ``pyvcl nc`` (None: no peers)
        self.peers: list[Peer] = []
        self.events: list[Event] = []
        self.history: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        # Lines for the shell's own thread to print (`show_pending`): what the idle drain
        # handled while that thread was busy elsewhere.
        self._thread = threading.get_ident()
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self.worker.on_events = self._on_events
        execute = self.worker.execute

        def execute_and_show(actions: list[Action]) -> None:
            for a in actions:
                self._sent(a.event_type, a.fields)
            execute(actions)

        self.worker.execute = execute_and_show  # type: ignore[method-assign]

    @property
    def out(self) -> IO[str]:
        return self._out or sys.stdout

    # -- what goes by ------------------------------------------------------------------------
    def _stamp(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def _on_events(self, events: list[Event]) -> None:
        for ev in events:
            self.events.append(ev)
            self.history.append(
                {"t": self._stamp(), "dir": "vpp->app", "type": ev.name, "fields": _plain(ev)}
            )
            self._show(f"<< {one_line(ev)}")

    def _sent(self, event_type: int, fields: dict[str, Any]) -> None:
        name = _event_name(event_type)
        self.history.append(
            {"t": self._stamp(), "dir": "app->vpp", "type": name, "fields": _jsonable(fields)}
        )
        decl = CTRL_PAYLOADS.get(event_type)
        readable = _without_raw(decode.payload_dict(decl, decl.build(**fields))) if decl else fields
        self._show(f">> {name} {_fields_line(readable)}".rstrip())

    def _show(self, line: str) -> None:
        """Print ``line`` now from the shell's thread; from another, at its next pump."""
        with self._pending_lock:
            self._pending.append(line)
        if threading.get_ident() == self._thread:
            self.show_pending()

    def show_pending(self) -> None:
        """Print, in order, what was exchanged and not yet printed."""
        with self._pending_lock:
            lines, self._pending = self._pending, []
        for line in lines:
            print(line, file=self.out, flush=True)

    def pump(self) -> None:
        """Handle (and print) the events queued now, and print what the idle drain handled
        since the last pump."""
        try:
            self.worker.pump()
        finally:
            self.vcl.idle_drain.release()  # (`MqView.wait_pending` holds it until now)
            self.show_pending()

    # -- the helpers -------------------------------------------------------------------------
    def listen(self, ip: str = "127.0.0.1", port: int = 0) -> VclSocket:
        """Listen on ``ip``:``port``: LISTEN goes to VPP, its BOUND answer is printed.  Returns
        the listening socket (``accept`` takes it)."""
        s = self.vcl.socket()
        s.bind((ip, port))
        s.listen()
        return s

    def connect(self, ip: str, port: int, timeout: float = 10.0) -> VclSocket:
        """Connect to ``ip``:``port``; returns the socket once CONNECTED came."""
        return self.vcl.create_connection((ip, port), timeout=timeout)

    def accept(self, listener: VclSocket, timeout: float = 30.0) -> VclSocket:
        """The next connection ``listener`` gets (waits up to ``timeout`` s for VPP's
        ACCEPTED, then replies to it)."""
        listener.settimeout(timeout)
        conn, _addr = listener.accept()
        return conn

    def send(self, sock: VclSocket, data: bytes | str) -> int:
        """Write ``data`` (str is UTF-8) into the tx fifo, with the IO event VPP needs."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        sock.sendall(raw)
        return len(raw)

    def read(self, sock: VclSocket, n: int = 65536, timeout: float = 0.0) -> bytes:
        """Up to ``n`` bytes as a program reads them (``recv``); b"" if none came within
        ``timeout`` s.  To take them out of the fifo by hand: ``fifo(sock).read(n)``."""
        sock.settimeout(timeout)
        try:
            return sock.recv(n)
        except (BlockingIOError, TimeoutError):
            return b""

    def close(self, sock: VclSocket) -> None:
        """Close ``sock`` (DISCONNECT to VPP; the answers are printed)."""
        sock.close()

    def fifo(self, sock: VclSocket, which: str = "rx") -> FifoView:
        """The ``"rx"`` or ``"tx"`` fifo of a connected socket, to look at and read by hand."""
        if which not in ("rx", "tx"):
            raise ValueError(f"which must be 'rx' or 'tx', not {which!r}")
        rx, tx = self.worker.fifos(sock.session)
        return FifoView(rx if which == "rx" else tx, which)

    def segment(self, index: int = 0) -> SegmentView:
        """The app's ``index``-th mapped segment."""
        segs = list(self.app.segments.values())
        if not 0 <= index < len(segs):
            raise IndexError(f"the app has {len(segs)} segment(s); no segment {index}")
        return SegmentView(segs[index])

    def mq(self, which: int | str = "app") -> MqView:
        """A message queue to look at: ``"app"`` (the app's own, where VPP's events come) or
        ``i``, VPP's worker ``i``'s (where the app's messages go; ``app.vpp_mqs[i]``)."""
        if which == "app":
            assert self.app.app_mq is not None
            return MqView(self.app.app_mq, "app", hold=self.vcl.idle_drain.hold)
        if isinstance(which, int) and 0 <= which < len(self.app.vpp_mqs):
            return MqView(self.app.vpp_mqs[which], f"vpp[{which}]")
        raise ValueError(
            f"mq takes 'app' or a VPP worker 0..{len(self.app.vpp_mqs) - 1}, not {which!r}"
        )

    def msg(self, name: str, **fields: Any) -> None:
        """Send any control message by name (``msg("LISTEN", port=80, ...)``; the CTRL_
        prefix is optional) with keyword fields, checked against its declaration."""
        event_type = _event_type(name)
        decl = CTRL_PAYLOADS.get(event_type)
        if decl is None:
            raise ValueError(f"{_event_name(event_type)} has no control payload to send")
        known = {f.split(".")[0] for f in decl.fields}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"{decl.c_name} has no field {', '.join(unknown)} (fields: "
                f"{', '.join(sorted(known))})"
            )
        decl.build(**fields)  # (fails here, before anything is sent, on a bad value)
        self._sent(event_type, fields)
        self.app.send_ctrl(event_type, **fields)

    def peer(
        self,
        ip: str,
        port: int,
        data: bytes | str = b"",
        *,
        listen: bool = False,
        args: Sequence[str] = (),
    ) -> Peer:
        """Another app to talk to: ``pyvcl nc`` in the background, attached as this shell
        is, connecting to (or with ``listen``, listening on) ``ip``:``port``, sending
        ``data`` first.  ``args`` are more ``pyvcl nc`` options, after the shell's (the last
        of a repeated option wins: ``args=["--ns", "cli"]`` attaches it in namespace cli).
        ``.send(data)`` sends more, ``.output()`` is what it received, ``.finish()`` ends
        its input and waits for it to exit."""
        if self.peer_args is None:
            raise ValueError("this shell was not told how a peer attaches (peer_args)")
        if isinstance(args, str):
            raise TypeError("args is a list of pyvcl nc options, not one string")
        argv = [sys.executable, "-m", "pyvcl", "nc", *self.peer_args, *args]
        p = Peer([*argv, *(["-l"] if listen else []), ip, str(port)])
        self.peers.append(p)
        if data:
            p.send(data)
        return p

    def close_peers(self) -> None:
        for p in self.peers:
            p.close()
        self.peers.clear()

    def wait(self, timeout: float = 1.0) -> list[Event]:
        """Wait up to ``timeout`` s for events (printed as they come); the new ones."""
        n = len(self.events)
        self.worker.wait_until(lambda: len(self.events) > n, timeout)
        return self.events[n:]

    def export(self, path: str | Path) -> Path:
        """Write the session as a trace to ``path``: every app-socket frame and message-queue
        message since attach (docs/traces.md; ``pyvcl decode PATH`` renders it).  When this
        process is not traced (a `Shell` made by hand), ``history`` as JSON instead."""
        out = Path(path)
        tracer = live_trace.active()
        if tracer is None:
            doc = {"format": "pyvcl-repl-history", "version": 1, "history": self.history}
            out.write_text(json.dumps(doc, indent=1) + "\n")
        else:
            tracer.flush()
            shutil.copyfile(tracer.path, out)
        return out

    def namespace(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "vcl": self.vcl,
            "shell": self,
            "listen": self.listen,
            "connect": self.connect,
            "accept": self.accept,
            "send": self.send,
            "read": self.read,
            "close": self.close,
            "fifo": self.fifo,
            "segment": self.segment,
            "mq": self.mq,
            "msg": self.msg,
            "wait": self.wait,
            "peer": self.peer,
            "show": show,
            "hexdump": hexdump,
            "history": self.history,
            "export": self.export,
            "events": self.events,
            "E": SessionEvent,
        }


class Peer:
    """A ``pyvcl nc`` started by `Shell.peer`: its stdin is what it sends, its stdout what
    it received (read in a thread, so it never blocks on a full pipe)."""

    def __init__(self, argv: list[str]) -> None:
        # Its own session: Ctrl-C at the prompt (SIGINT to the terminal's foreground process
        # group) is meant for the shell, not for the peer it talks to.
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._got = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="pyvcl-repl-peer", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with self._lock:
                self._got += chunk

    def send(self, data: bytes | str) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data.encode() if isinstance(data, str) else bytes(data))
        stdin.flush()

    def finish(self, timeout: float = 10.0) -> int:
        """Close its stdin (its EOF: ``pyvcl nc`` then ends the connection as it does at the
        end of its input) and wait up to ``timeout`` s for it to exit; its exit status."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()
        return self.proc.wait(timeout)

    def output(self, wait: float = 0.5) -> bytes:
        """What it received so far, after up to ``wait`` s for something to come."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self._got:
            time.sleep(0.01)
        with self._lock:
            return bytes(self._got)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<peer pyvcl nc, {state}, {len(self._got)} bytes received>"


# -- looking at things -------------------------------------------------------------------------
class FifoView:
    """A fifo at the prompt: ``show()`` draws it, ``read(n)`` / ``peek(n)`` take bytes by
    hand (straight from the chunks: no IO event and no ``has_event`` bookkeeping, unlike a
    socket's recv), ``fifo`` is the `pyvcl.fifo.Fifo` itself."""

    def __init__(self, fifo: Fifo, role: str = "") -> None:
        self.fifo = fifo
        self.role = role

    def describe(self) -> dict[str, Any]:
        return decode.describe_fifo(self.fifo.segment, self.fifo.offset)

    def read(self, n: int = 65536) -> bytes:
        return self.fifo.dequeue(n)

    def peek(self, n: int = 64) -> bytes:
        return self.fifo.peek(n)

    def show(self) -> None:
        print(self.render())

    def render(self) -> str:
        d = self.describe()
        head, tail, size = d["head"], d["tail"], d["size"]
        lines = [
            f"{self.role} fifo @{d['fsh_offset']:#x} in {self.fifo.segment.name}: size {size}, "
            f"{d['bytes_present']} bytes unread, {d['free_space']} free",
            f"  head {head}  tail {tail}  has_event {d['has_event']}  "
            f"want_deq_ntf {d['want_deq_ntf']}",
        ]
        for c in d["chunks"]:
            lines.append(f"  chunk @{c['fsh_offset']:#x} [{c['start_byte']}, +{c['length']}) "
                         f"{_bar(c['start_byte'], c['length'], head, tail)}")  # fmt: skip
        lines.append("  (H = head, T = tail, # = unread bytes, . = room)")
        lines += [f"  problem: {p}" for p in d["problems"]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        f = self.fifo
        return f"<{self.role} fifo @{f.offset:#x}: {f.max_dequeue()} bytes unread>"


class MqView:
    """A message queue at the prompt: ``show()`` prints the queue of handles, each ring and
    the pending messages decoded, ``signalled()`` whether its eventfd is set (read only:
    nothing is consumed, nothing reset); ``mq`` is the `pyvcl.mq.queue.MessageQueue`."""

    def __init__(
        self, mq: MessageQueue, role: str = "", hold: Callable[[], None] | None = None
    ) -> None:
        self.mq = mq
        self.role = role
        self._hold = hold  # keeps the app's idle drain off the queue until the shell's pump

    def pending(self) -> list[Event]:
        """The messages waiting, in queue order, decoded (not consumed)."""
        return self.mq.pending()

    def wait_pending(self, n: int = 1, timeout: float = 10.0) -> MqView:
        """Wait up to ``timeout`` s until at least ``n`` messages are pending, without taking
        any (the shell handles them before the next prompt, and until then the app's idle
        drain leaves them too); this view, to ``show()``."""
        if self._hold is not None:
            self._hold()
        deadline = time.monotonic() + timeout
        while self.mq.size_now() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def signalled(self) -> bool | None:
        """Whether the queue's eventfd is readable now (None: the queue has none)."""
        fd = self.mq.eventfd
        return None if fd is None else bool(select.select([fd], [], [], 0)[0])

    def show(self) -> None:
        print(self.render())

    def render(self) -> str:
        d = self.mq.describe()
        q = d["queue"]
        lines = [
            f"{self.role} mq @{d['fsh_offset']:#x} in {self.mq.segment.name}: {d['mode']}",
            f"  queue: {q['cursize']} of {q['maxsize']} handles pending, "
            f"head {q['head']}  tail {q['tail']}",
        ]
        for r in d["rings"]:
            lines.append(f"  ring {r['index']} ({MqRing(r['index']).name}): {r['nitems']} "
                         f"slots of {r['elsize']} bytes, {r['cursize']} in use, "
                         f"head {r['head']}  tail {r['tail']}")  # fmt: skip
        for h in q["pending_handles"]:  # (decoded from the same look as the counts)
            ring, elt = h["ring_index"], h["elt_index"]
            lines.append(f"  [{ring}:{elt}] {one_line(self.mq.peek_slot(ring, elt))}")
        lines += [f"  problem: {p}" for p in d["problems"]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{self.role} mq @{self.mq.offset:#x}: {self.mq.size_now()} pending>"


class SegmentView:
    """A segment at the prompt: ``show()`` prints its header, slices and free space."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment

    def show(self) -> None:
        d = decode.describe_segment(self.segment)
        print(f"segment {d['name']!r}: {d['size']} bytes, header at {d['fsh_offset']:#x}, "
              f"{d['free_bytes']} free to the bump allocator")  # fmt: skip
        for k, v in d["fsh"].items():
            print(f"  {k:<20} {v}")
        for s in d["slices"]:
            print(f"  slice {s.get('index', '?')}: {s.get('n_fl_chunk_bytes')} bytes on free lists")
        for p in d["problems"]:
            print(f"  problem: {p}")

    def __repr__(self) -> str:
        return f"<segment {self.segment.name!r}, {self.segment.size} bytes>"


def one_line(ev: Event) -> str:
    """An event in one line: its name and its fields as `pyvcl.shmview` shows them (ports in
    host order, addresses as text), long values shortened."""
    return f"{ev.name} {_fields_line(readable_fields(ev))}".rstrip()


def readable_fields(ev: Event) -> dict[str, Any]:
    """An event's fields with ports in host order and addresses as text (the raw values
    under ``<name>_raw`` are left out)."""
    decl = CTRL_PAYLOADS.get(ev.type)
    if decl is not None and ev.raw:
        payload = decode.describe_event(ev.ring, ev.raw).get("payload")
        if payload is not None:
            return _without_raw(payload)
    return ev.fields()


def _without_raw(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _without_raw(v) if isinstance(v, dict) else v
        for k, v in d.items()
        if not k.endswith("_raw")
    }


def _fields_line(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in fields.items() if not k.endswith("_raw"))


def show(x: Any) -> None:
    """Every field of an event; the drawing of a fifo; a segment's header."""
    if isinstance(x, Event):
        print(f"{x.name} (type {x.type}, ring {x.ring})")
        for k, v in readable_fields(x).items():
            print(f"  {k:<24} {v!r}")
    elif hasattr(x, "show"):
        x.show()
    else:
        print(repr(x))


def hexdump(x: Any) -> None:
    """The bytes of an event's slot (``Event.raw``), of any bytes, 16 to a line."""
    data = x.raw if isinstance(x, Event) else bytes(x)
    for i in range(0, len(data), 16):
        row = data[i : i + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        print(f"{i:04x}  {row.hex(' '):<47}  {text}")


# -- the console -------------------------------------------------------------------------------
class Console(code.InteractiveConsole):
    """`code.InteractiveConsole` that answers pyvcl's errors and bad arguments with one line
    and handles VPP's queued events before each prompt."""

    def showtraceback(self) -> None:
        _type, value, _tb = sys.exc_info()
        if isinstance(value, ONE_LINE_ERRORS):
            self.write(f"! {type(value).__name__}: {value}\n")
        else:
            super().showtraceback()


class Prompt:
    """``sys.ps1``: ``str()`` of it, which ``input`` takes before each prompt, first handles
    the events queued meanwhile (printing them)."""

    def __init__(self, pump: Callable[[], None], text: str = ">>> ") -> None:
        self.pump, self.text = pump, text

    def __str__(self) -> str:
        try:
            self.pump()
        except VclError as e:
            print(f"! {type(e).__name__}: {e}")
        return self.text


# -- helpers -----------------------------------------------------------------------------------
def _event_type(name: str) -> int:
    key = name.upper()
    for candidate in (key, f"CTRL_{key}"):
        if candidate in SessionEvent.__members__:
            return int(SessionEvent[candidate])
    raise ValueError(f"no session event named {name!r} (see E.__members__)")


def _event_name(event_type: int) -> str:
    try:
        return SessionEvent(event_type).name
    except ValueError:
        return f"UNKNOWN_{event_type}"


def _short(v: Any) -> str:
    text = f"{v:#x}" if isinstance(v, int) and v > 0xFFFF else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def _plain(ev: Event) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in ev.fields().items()}


def _bar(start: int, length: int, head: int, tail: int) -> str:
    """``|H###T.....|``: where head and tail fall in a chunk, scaled to `_BAR` characters."""
    cells = []
    for i in range(_BAR):
        lo = start + length * i // _BAR
        hi = start + length * (i + 1) // _BAR
        unread = _between(head, lo, tail) or _between(head, hi - 1, tail)
        cells.append("#" if unread else ".")
    h_cell = None
    for pos, mark in ((head, "H"), (tail, "T")):
        if (pos - start) & 0xFFFFFFFF < length:
            cell = min(_BAR - 1, ((pos - start) & 0xFFFFFFFF) * _BAR // length)
            if mark == "T" and cell == h_cell and tail != head and cell + 1 < _BAR:
                cell += 1  # a few bytes unread: H and T side by side, both visible
            cells[cell] = mark
            h_cell = cell if mark == "H" else h_cell
    return "|" + "".join(cells) + "|"


def _between(head: int, pos: int, tail: int) -> bool:
    return (pos - head) & 0xFFFFFFFF < (tail - head) & 0xFFFFFFFF
