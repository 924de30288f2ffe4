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

After a warm-up (a tenth of the cycles, at most 200) it records this process's open fds,
memory mappings and RSS (psutil), and again at the end: fds and mappings must not grow at
all; RSS may grow by ``--rss-slack`` MiB (CPython's allocator keeps freed arenas).  One JSON
record per phase and topology goes to stdout; the exit status is 1 if any check failed.  VPP
comes from ``PYVCL_VPP_PREFIX`` or PATH (`pyvcl.testing.install`), in a temp directory.
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


@dataclass
class Usage:
    """What the process holds: open fds, memory mappings, resident MiB."""

    fds: int
    maps: int
    rss_mib: float

    @classmethod
    def now(cls) -> Usage:
        p = psutil.Process()
        return cls(p.num_fds(), len(p.memory_maps(grouped=False)), p.memory_info().rss / MiB)


@dataclass
class Record:
    phase: str
    topology: str
    cycles: int
    seconds: float
    before: Usage | None = None
    after: Usage | None = None
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _growth(rec: Record, rss_slack: float) -> None:
    b, a = rec.before, rec.after
    if b is None or a is None:
        return
    if a.fds > b.fds:
        rec.problems.append(f"fds grew {b.fds} -> {a.fds}")
    if a.maps > b.maps:
        rec.problems.append(f"mappings grew {b.maps} -> {a.maps}")
    if a.rss_mib - b.rss_mib > rss_slack:
        rec.problems.append(f"RSS grew {a.rss_mib - b.rss_mib:.1f} MiB (slack {rss_slack})")


def _cycles(rec: Record, n: int, one: Callable[[int], None], rss_slack: float) -> None:
    """``one(i)`` n times; usage sampled after the warm-up and at the end."""
    warm = min(200, max(1, n // 10))
    t0 = time.monotonic()
    for i in range(n):
        if i == warm:
            rec.before = Usage.now()
        one(i)
    rec.seconds = time.monotonic() - t0
    rec.after = Usage.now()
    _growth(rec, rss_slack)


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
    from ..sockets import VclApp

    server = VclApp(topo.server.socket, name=f"soak-{tag}-srv", **topo.server.pyvcl_opts)
    client = VclApp(topo.client.socket, name=f"soak-{tag}-cli", **topo.client.pyvcl_opts)
    return server, client


def connect_close(topo: Topology, n: int, port: int, rss_slack: float) -> Record:
    rec = Record("connect-close", topo.name, n, 0.0)
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
                _cycles(rec, n, one, rss_slack)
            finally:
                acceptor.close()
    except Exception as e:
        rec.problems.append(f"{type(e).__name__}: {e}")
    finally:
        client.close()
        server.close()
    return rec


def attach_detach(topo: Topology, n: int, rss_slack: float) -> Record:
    from ..sockets import VclApp

    rec = Record("attach-detach", topo.name, n, 0.0)

    def one(i: int) -> None:
        VclApp(topo.client.socket, name=f"soak-ad-{i}", **topo.client.pyvcl_opts).close()

    try:
        _cycles(rec, n, one, rss_slack)
    except Exception as e:
        rec.problems.append(f"{type(e).__name__}: {e}")
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
    p.add_argument("--rss-slack", type=float, default=4.0, help="MiB of RSS growth allowed")
    args = p.parse_args(argv)
    records = run(args)
    return 0 if records and all(r.ok for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
