"""Soak: many cycles on a private VPP, checking that nothing grows and no byte is lost.

    python -m pyvcl.testing.soak                       # the full run (issue 8's numbers)
    python -m pyvcl.testing.soak --connects 1000 --attaches 100 --gib 0.25 --workers 1

Three phases, each on both topologies (cut-through and VPP's TCP stack, `hoststack.topology`)
unless ``--topology`` picks one:

* **connect/close**: a client app connects to a server app, exchanges one byte each way and
  both close; ``--connects`` times.
* **attach/detach**: a `VclApp` attaches and closes; ``--attaches`` times.
* **bytes**: ``--gib`` GiB of a deterministic stream through one connection, SHA-256 compared
  at both ends.

Leaks are judged by this process's open fds and private resident memory (psutil).
Connect/close runs in two halves, each followed by a wait until the connections are gone from
both apps' session tables (VPP frees a TCP session only after TIME_WAIT, and pyvcl keeps it
until then); the first half reaches the high-water mark, so after the second, fds must be the
same and private memory within ``--rss-slack`` MiB.  Attach/detach compares the end with the
state after a warm-up (a tenth of the cycles, at most 200).  Once the phase's apps are closed,
fds and file or segment mappings must be back to what they were before the apps were made
(while cycling, VPP may add a segment to an app).  A short unrecorded round first loads
everything that is imported or mapped once per process.  One JSON record per phase and topology
goes to stdout; the exit status is 1 if any check failed.  VPP comes from ``PYVCL_VPP_PREFIX``
or PATH (`pyvcl.testing.install`), in a temp directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from .hoststack import TOPOLOGIES, Topology, topology
from .streams import recv_exactly
from .vpp import VppInstance, find_vpp, why_missing

MiB = 1 << 20
CHUNK = 1 << 16
WAIT = 30.0
SESSION_DRAIN_S = 90.0  # longer than VPP's TCP TIME_WAIT and cleanup timers


@dataclass
class Usage:
    """What the process holds: open fds, memory mappings, and private resident MiB (RSS less
    the pages it shares: VPP's segments count once they are touched, and VPP decides where
    in them the next fifo goes, so they are no measure of pyvcl's own memory)."""

    fds: int
    maps: int
    private_mib: float

    @classmethod
    def now(cls) -> Usage:
        p = psutil.Process()
        mem = p.memory_info()
        private = (mem.rss - getattr(mem, "shared", 0)) / MiB
        # Anonymous mappings are the allocators' arenas, kept or returned as they see fit;
        # what could leak is a file or segment mapping.
        named = sum(1 for m in p.memory_maps(grouped=False) if not m.path.startswith("["))
        return cls(p.num_fds(), named, private)


@dataclass
class Record:
    phase: str
    topology: str
    cycles: int
    seconds: float
    before: Usage | None = None  # after the warm-up
    after: Usage | None = None  # after the last cycle
    released: Usage | None = None  # once the phase's apps are closed (vs. `start`)
    start: Usage | None = None  # before the phase's apps were made
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _growth(rec: Record, rss_slack: float) -> None:
    """While cycling, fds must not grow and private memory only within ``rss_slack``; once
    the apps are closed, fds and mappings must be back where they started.  (Mappings may
    grow while cycling: VPP adds a segment when the first fills up.)"""
    b, a = rec.before, rec.after
    if b is not None and a is not None:
        if a.fds > b.fds:
            rec.problems.append(f"fds grew {b.fds} -> {a.fds}")
        if a.private_mib - b.private_mib > rss_slack:
            grew = a.private_mib - b.private_mib
            rec.problems.append(f"private RSS grew {grew:.1f} MiB (slack {rss_slack})")
    s, r = rec.start, rec.released
    if s is not None and r is not None:
        if r.fds > s.fds:
            rec.problems.append(f"{r.fds - s.fds} fd(s) left after closing the apps")
        if r.maps > s.maps:
            rec.problems.append(f"{r.maps - s.maps} mapping(s) left after closing the apps")


def _cycles(rec: Record, n: int, one: Callable[[int], None]) -> None:
    """``one(i)`` n times; usage sampled after the warm-up and at the end."""
    warm = min(200, max(1, n // 10))
    t0 = time.monotonic()
    for i in range(n):
        if i == warm:
            rec.before = Usage.now()
        one(i)
    rec.seconds = time.monotonic() - t0
    rec.after = Usage.now()


class _Acceptor:
    """Accepts on ``listener`` in a thread and runs ``handler(conn)`` for each connection."""

    def __init__(self, listener: Any, handler: Callable[[Any], None]) -> None:
        self.listener, self.handler = listener, handler
        self.error: BaseException | None = None
        self.stop = False
        self.thread = threading.Thread(target=self._run, name="soak-acceptor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(0.5)
        while not self.stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except BaseException as e:
                self.error = e
                return
            try:
                with conn:
                    conn.settimeout(WAIT)
                    self.handler(conn)
            except BaseException as e:
                self.error = e
                return

    def close(self) -> None:
        self.stop = True
        self.thread.join(WAIT)
        if self.error is not None:
            raise self.error


def _apps(topo: Topology, tag: str) -> tuple[Any, Any]:
    from ..vclsocket import VclApp

    server = VclApp(topo.server.socket, name=f"soak-{tag}-srv", **topo.server.pyvcl_opts)
    client = VclApp(topo.client.socket, name=f"soak-{tag}-cli", **topo.client.pyvcl_opts)
    return server, client


def connect_close(topo: Topology, n: int, port: int, rss_slack: float) -> Record:
    rec = Record("connect-close", topo.name, n, 0.0, start=Usage.now())
    server, client = _apps(topo, f"cc-{topo.name}")
    addr = (topo.host, port)
    try:
        with server.create_server(addr) as listener:

            def echo1(conn: Any) -> None:
                conn.sendall(recv_exactly(conn, 1))

            acceptor = _Acceptor(listener, echo1)

            def one(i: int) -> None:
                with client.create_connection(addr, timeout=WAIT) as s:
                    s.sendall(b"x")
                    if recv_exactly(s, 1) != b"x":
                        raise AssertionError(f"cycle {i}: wrong echo")

            try:
                # Two halves, each until the apps' session tables are drained: the first
                # reaches the high-water mark (sessions VPP keeps in TIME_WAIT), so the
                # second must end where the first did.
                base = _sessions(server, client)
                t0 = time.monotonic()
                half = n // 2
                for i in range(half):
                    one(i)
                _drained(rec, server, client, base)
                rec.before = Usage.now()
                for i in range(half, n):
                    one(i)
                rec.extra["sessions_after_cycles"] = _sessions(server, client)
                _drained(rec, server, client, base)
                rec.after = Usage.now()
                rec.seconds = time.monotonic() - t0
            finally:
                acceptor.close()
    except Exception as e:
        rec.problems.append(f"{type(e).__name__}: {e}")
    finally:
        client.close()
        server.close()
    rec.released = Usage.now()
    _growth(rec, rss_slack)
    return rec


def _sessions(*apps: Any) -> int:
    return sum(len(a.worker.layer.sessions) for a in apps)


def _drained(rec: Record, server: Any, client: Any, base: int) -> None:
    left = _wait_sessions(server, client, base)
    if left > base:
        rec.problems.append(
            f"{left - base} session(s) still held {SESSION_DRAIN_S:.0f} s after the last close"
        )


def _wait_sessions(server: Any, client: Any, base: int) -> int:
    """Handle events until the apps hold no more sessions than ``base`` (VPP frees a TCP
    session only after TIME_WAIT, and pyvcl keeps it until then), at most SESSION_DRAIN_S."""
    deadline = time.monotonic() + SESSION_DRAIN_S
    while True:
        for app in (server, client):
            app.worker.pump()
        left = _sessions(server, client)
        if left <= base or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def attach_detach(topo: Topology, n: int, rss_slack: float) -> Record:
    from ..vclsocket import VclApp

    rec = Record("attach-detach", topo.name, n, 0.0, start=Usage.now())

    def one(i: int) -> None:
        VclApp(topo.client.socket, name=f"soak-ad-{i}", **topo.client.pyvcl_opts).close()

    try:
        _cycles(rec, n, one)
    except Exception as e:
        rec.problems.append(f"{type(e).__name__}: {e}")
    rec.released = Usage.now()
    _growth(rec, rss_slack)
    return rec


def _stream(total: int) -> Iterator[bytes]:
    """A deterministic, incompressible-looking stream of ``total`` bytes, in CHUNK pieces."""
    block = hashlib.sha256(b"pyvcl soak").digest() * (CHUNK // 32)
    sent, i = 0, 0
    while sent < total:
        piece = block[: min(CHUNK, total - sent)]
        # A counter per chunk, so a dropped or repeated chunk changes the digest.
        piece = i.to_bytes(8, "little") + piece[8:] if len(piece) >= 8 else piece
        yield piece
        sent += len(piece)
        i += 1


def bytes_through(topo: Topology, gib: float, port: int) -> Record:
    total = int(gib * (1 << 30))
    rec = Record("bytes", topo.name, 1, 0.0, extra={"bytes": total})
    server, client = _apps(topo, f"by-{topo.name}")
    addr = (topo.host, port)
    got: dict[str, Any] = {}

    def sink(conn: Any) -> None:
        h, n = hashlib.sha256(), 0
        buf = bytearray(CHUNK)
        while n < total:
            k = conn.recv_into(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            n += k
        got.update(digest=h.hexdigest(), n=n)
        conn.sendall(b"k")  # tell the sender everything arrived before anyone closes

    try:
        with server.create_server(addr) as listener:
            acceptor = _Acceptor(listener, sink)
            try:
                want = hashlib.sha256()
                t0 = time.monotonic()
                with client.create_connection(addr, timeout=WAIT) as s:
                    for piece in _stream(total):
                        want.update(piece)
                        s.sendall(piece)
                    recv_exactly(s, 1)
                rec.seconds = time.monotonic() - t0
            finally:
                acceptor.stop = True
                acceptor.close()
        if got.get("n") != total:
            rec.problems.append(f"received {got.get('n')} of {total} bytes")
        elif got.get("digest") != want.hexdigest():
            rec.problems.append("SHA-256 differs: bytes were corrupted")
        rec.extra["gbps"] = round(total * 8 / max(rec.seconds, 1e-9) / 1e9, 2)
    except Exception as e:
        rec.problems.append(f"{type(e).__name__}: {e}")
    finally:
        client.close()
        server.close()
    return rec


def run(args: argparse.Namespace) -> list[Record]:
    install = find_vpp()
    if install is None:
        raise SystemExit(f"soak: {why_missing()}")
    records: list[Record] = []
    with VppInstance(install, workers=args.workers) as vpp:
        names = [args.topology] if args.topology else list(TOPOLOGIES)
        for k, name in enumerate(names):
            topo = topology(vpp, name)
            port = 31000 + 100 * k
            connect_close(topo, 20, port + 50, args.rss_slack)  # warm-up, not recorded
            phases: list[tuple[Callable[..., Record], tuple[Any, ...]]] = []
            if args.connects:
                phases.append((connect_close, (topo, args.connects, port, args.rss_slack)))
            if args.attaches:
                phases.append((attach_detach, (topo, args.attaches, args.rss_slack)))
            if args.gib:
                phases.append((bytes_through, (topo, args.gib, port + 1)))
            for phase, phase_args in phases:
                rec = phase(*phase_args)
                if not vpp.is_running():
                    rec.problems.append(f"VPP died (status {vpp.returncode})")
                records.append(rec)
                print(json.dumps({**asdict(rec), "ok": rec.ok}), flush=True)
                if not vpp.is_running():
                    return records
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvcl.testing.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--connects", type=int, default=100_000, help="connect/close cycles")
    p.add_argument("--attaches", type=int, default=10_000, help="attach/detach cycles")
    p.add_argument("--gib", type=float, default=10.0, help="GiB through one connection")
    p.add_argument("--topology", choices=TOPOLOGIES, help="only this one (default: both)")
    p.add_argument("--workers", type=int, default=0, help="VPP worker threads")
    p.add_argument("--rss-slack", type=float, default=4.0, help="MiB of private RSS growth")
    args = p.parse_args(argv)
    records = run(args)
    return 0 if records and all(r.ok for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
