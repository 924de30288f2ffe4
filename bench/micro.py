"""Micro-benchmarks of the foundation layer; one JSON record per case on stdout.

    python -m bench.micro [--quick]

Cases: atomics per backend, fifo enqueue+dequeue (64 B, 1 KiB, 64 KiB), message-queue send+drain in
both signalling modes, a live trace's cost (off and on), and — when a VPP is installed
(PYVCL_VPP_PREFIX or `vpp` on PATH) — attach+detach against a private instance.  Figures are
per operation, best of several rounds (the machine is shared and noisy: compare cases within
one run, not across days).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 7


def best_of(fn: Callable[[], None], n: int, rounds: int = ROUNDS) -> float:
    """Seconds per call, best of ``rounds`` rounds of ``n`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def emit(case: str, seconds: float, **extra: Any) -> None:
    record = {"case": case, "us_per_op": round(seconds * 1e6, 3), **extra}
    print(json.dumps(record), flush=True)


def bench_atomics(n: int) -> None:
    for backend in ("libatomic", "stub"):
        code = (
            "import mmap, time, json; from pyvcl import atomics as a;"
            "r = a.AtomicRegion(mmap.mmap(-1, 4096));"
            f"n={n}; best=1e9\n"
            "for _ in range(7):\n"
            "    t=time.perf_counter()\n"
            "    for i in range(n): r.cas64(0, i, i + 1)\n"
            "    best=min(best,(time.perf_counter()-t)/n)\n"
            "print(json.dumps([a.backend_name(), best]))"
        )
        env = {**os.environ, "PYVCL_ATOMICS": backend}
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if p.returncode:
            emit(f"atomics.cas64[{backend}]", float("nan"), error=p.stderr.strip()[-200:])
            continue
        name, secs = json.loads(p.stdout)
        emit(f"atomics.cas64[{backend}]", secs, backend=name)


def bench_fifo(n: int) -> None:
    from pyvcl.fifo import Fifo
    from tests.fifo_fixtures import alloc_fifo
    from tests.segment_fixtures import make_segment

    for size in (64, 1 << 10, 64 << 10):  # 1 KiB: the per-call fast path (issue 9)
        seg = make_segment(64 << 20)
        off = alloc_fifo(seg, 4 << 20)
        prod, cons = Fifo(seg, off), Fifo(seg, off)
        data = os.urandom(size)
        buf = bytearray(size)

        def step(
            prod: Fifo = prod, cons: Fifo = cons, data: bytes = data, buf: bytearray = buf
        ) -> None:
            prod.enqueue(data)
            cons.dequeue_into(buf)

        emit(f"fifo.enqueue+dequeue_into[{size}B]", best_of(step, max(10, n // max(1, size // 64))),
             bytes=size)  # fmt: skip


def bench_mq(n: int) -> None:
    from pyvcl.wire.enums import SessionEvent
    from tests.mq_fixtures import build_mq

    for mode in ("condvar", "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) if mode == "eventfd" else None
        _, _, mq = build_mq(2048, eventfd=fd)

        def step(mq: Any = mq) -> None:
            mq.send_io(SessionEvent.IO_TX, 1)
            mq.drain()

        emit(f"mq.send_io+drain[{mode}]", best_of(step, n))
        if fd is not None:
            os.close(fd)


def bench_trace(n: int) -> None:
    """A live trace's cost (pyvcl.api.live_trace): one step of a writer's data path -- 1 KiB
    into a fifo, its IO event sent, drained and handed to the session core, the 1 KiB read
    back -- untraced and traced into a file.  Untraced it is the same code as without tracing
    (the wrappers are installed only on traced objects), so "off" is the plain cost."""
    import tempfile

    from pyvcl.api.live_trace import Tracer
    from pyvcl.fifo import Fifo
    from pyvcl.session.core import SessionLayer
    from pyvcl.session.replay import watch_layer
    from pyvcl.wire.enums import SessionEvent
    from tests.fifo_fixtures import alloc_fifo
    from tests.mq_fixtures import build_mq
    from tests.segment_fixtures import make_segment

    data, buf = os.urandom(1 << 10), bytearray(1 << 10)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("off", "on"):
            seg = make_segment(16 << 20)
            off = alloc_fifo(seg, 1 << 20)
            prod, cons = Fifo(seg, off), Fifo(seg, off)
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            _, _, mq = build_mq(2048, eventfd=fd)
            layer = SessionLayer(1)
            tracer = None
            if mode == "on":
                tracer = Tracer(os.path.join(tmp, "trace"))
                tracer.watch_queue(mq, "vpp0")
                watch_layer(layer, tracer)

            def step(
                mq: Any = mq, layer: Any = layer, prod: Fifo = prod, cons: Fifo = cons
            ) -> None:
                prod.enqueue(data)
                mq.send_io(SessionEvent.IO_TX, 1)
                for ev in mq.drain():
                    layer.handle_event(ev)
                cons.dequeue_into(buf)

            secs = best_of(step, n)
            extra = {}
            if tracer is not None:
                tracer.close()
                extra["trace_bytes_per_op"] = round(os.path.getsize(tracer.path) / (n * ROUNDS))
            emit(f"trace.1KiB+send_io+drain+core[{mode}]", secs, **extra)
            os.close(fd)


def bench_attach(n: int) -> None:
    from pyvcl.app import App
    from pyvcl.testing.vpp import VppInstance, find_vpp

    install = find_vpp()
    if install is None:
        print(json.dumps({"case": "attach+detach", "skipped": "no VPP installed"}), flush=True)
        return
    with VppInstance(install) as vpp:
        sock = vpp.app_socket()
        for label, opts in (("small-segments", {"segment_size": 4 << 20, "prealloc_fifo_pairs": 0}),
                            ("vcl-defaults", {})):  # fmt: skip
            emit(
                f"attach+detach[{label}]",
                best_of(lambda opts=opts: App.attach(sock, **opts).detach(), n, rounds=3),
                vpp=install.version(),
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    n = 2000 if args.quick else 20000
    print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                      "cpus": os.cpu_count(), "page": mmap.PAGESIZE}), flush=True)  # fmt: skip
    bench_atomics(n * 5)
    bench_fifo(n)
    bench_mq(n)
    bench_trace(n)
    bench_attach(max(20, n // 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
