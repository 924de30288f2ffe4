"""pyvcl's cases: the same bulk and ping-pong scripts as the kernel and LDP cases, with
``--module pyvcl.socket`` on both sides (VCL_CONFIG from the run), so ratios compare stacks.

Besides `register_script_cases`' set, the per-call cases of issue 9 (what a program making
many small calls pays per call), all cut-through, each stack in the same run:

* ``calls/{kernel,cvcl-ct,ldp-ct,pyvcl-ct}/1KiB``: 1 KiB ``sendall`` calls per second --
  bench/bulk.py with 1 KiB writes (the sender's writes / seconds), ``vcl_test_client -T 1024``
  for C VCL (its Gbps turned into writes per second).
* ``rtt/pyvclbusy-ct/64B``: the 64-byte echo with busy polling on both sides
  (``PYVCL_BUSY_POLL``, `BUSY_POLL_US`); compare with ``rtt/pyvcl-ct/64B`` (blocking) and
  ``rtt/ldp-ct/64B``.
* ``calls/pyvcltrace-ct/1KiB`` and ``rtt/pyvcltrace-ct/64B``: the same with a live trace on
  both sides (``PYVCL_TRACE``, docs/traces.md), compared with their untraced pyvcl cases in
  the summary: what tracing costs when it is on.  Off, it costs nothing: an untraced app runs
  the same objects and methods as before tracing existed (`pyvcl.api.live_trace` wraps only
  a traced app's own objects; tests/test_live_trace.py checks it).
"""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.cvcl import ScriptStack, register_script_cases, script_bulk, script_sides, vcl_test_bulk
from bench.kernel import run_bulk, run_rtt
from bench.registry import EXTRA_RATIOS, PRIMARY, Config, Record, register

CALL_SIZE = 1024
"""Write size of the ``calls/*`` cases."""

BUSY_POLL_US = 200
"""Busy-poll time of the ``*busy*`` cases (µs): longer than a round trip, so a waiting side
normally finds the reply while spinning."""

PYVCL = ScriptStack(
    server_ldp=False,
    client_ldp=False,
    server_module="pyvcl.socket",
    client_module="pyvcl.socket",
)
LDP = ScriptStack(server_ldp=True, client_ldp=True)

# A KIND of its own, so ratios are taken on calls per second (registry.PRIMARY).
PRIMARY.setdefault("calls", ("calls_per_s", "higher is better"))

register_script_cases("pyvcl", PYVCL)


def _calls(rec: Record) -> Record:
    """A bulk record of `CALL_SIZE` writes, with the sender's calls per second first."""
    per_s = rec["sender_gbps"] * 1e9 / 8 / CALL_SIZE
    return {"calls_per_s": round(per_s), **rec}


def calls_kernel(cfg: Config) -> Iterator[Record]:
    yield _calls(run_bulk(cfg, "calls-kernel", CALL_SIZE))


def calls_script(stack: ScriptStack, label: str) -> Callable[[Config], Iterator[Record]]:
    def run(cfg: Config) -> Iterator[Record]:
        yield _calls(script_bulk(cfg, "ct", CALL_SIZE, stack, label))

    return run


def calls_cvcl(cfg: Config) -> Iterator[Record]:
    rec = vcl_test_bulk(cfg, "ct", CALL_SIZE)
    yield {"calls_per_s": round(rec["gbps"] * 1e9 / 8 / CALL_SIZE), **rec}


def rtt_pyvcl_busy(cfg: Config) -> Iterator[Record]:
    """bench/pingpong.py over pyvcl cut-through, both sides with busy polling."""
    env = {**cfg.vcl_env("ct"), "PYVCL_BUSY_POLL": str(BUSY_POLL_US)}
    rec = run_rtt(
        cfg,
        "rtt-pyvclbusy-ct",
        host=cfg.topology("ct").host,
        bind="0.0.0.0",
        port=cfg.port(),
        server_env=env,
        client_env=env,
        server_module=PYVCL.server_module,
        client_module=PYVCL.client_module,
    )
    yield {**rec, "busy_poll_us": BUSY_POLL_US}


def _traced(cfg: Config, name: str) -> tuple[dict[str, object], Path]:
    """The pyvcl cut-through sides with ``PYVCL_TRACE`` set on both: the first process to
    start claims the file, the other writes ``FILE.PID`` beside it (docs/traces.md)."""
    trace = cfg.workdir / f"{name}.trace"
    where = script_sides(cfg, "ct", PYVCL)
    for side in ("server_env", "client_env"):
        where[side] = {**where[side], "PYVCL_TRACE": str(trace)}
    return where, trace


def _trace_bytes(trace: Path) -> int:
    """The size of both sides' trace files, which are then deleted (they can be large)."""
    total = 0
    for f in trace.parent.glob(trace.name + "*"):
        total += f.stat().st_size
        with contextlib.suppress(OSError):
            f.unlink()
    return total


def calls_pyvcl_traced(cfg: Config) -> Iterator[Record]:
    where, trace = _traced(cfg, "calls-pyvcltrace-ct")
    rec = _calls(run_bulk(cfg, "calls-pyvcltrace-ct", CALL_SIZE, **where))
    nbytes = _trace_bytes(trace)
    yield {**rec, "trace_bytes": nbytes}


def rtt_pyvcl_traced(cfg: Config) -> Iterator[Record]:
    where, trace = _traced(cfg, "rtt-pyvcltrace-ct")
    rec = run_rtt(cfg, "rtt-pyvcltrace-ct", **where)
    yield {**rec, "trace_bytes": _trace_bytes(trace)}


register(f"calls/kernel/{CALL_SIZE // 1024}KiB", calls_kernel)
register(f"calls/cvcl-ct/{CALL_SIZE // 1024}KiB", calls_cvcl)
register(f"calls/ldp-ct/{CALL_SIZE // 1024}KiB", calls_script(LDP, "ldp"))
register(f"calls/pyvcl-ct/{CALL_SIZE // 1024}KiB", calls_script(PYVCL, "pyvcl"))
register("rtt/pyvclbusy-ct/64B", rtt_pyvcl_busy)
register(f"calls/pyvcltrace-ct/{CALL_SIZE // 1024}KiB", calls_pyvcl_traced)
register("rtt/pyvcltrace-ct/64B", rtt_pyvcl_traced)
EXTRA_RATIOS.append(
    (f"calls/pyvcltrace-ct/{CALL_SIZE // 1024}KiB", f"calls/pyvcl-ct/{CALL_SIZE // 1024}KiB")
)
EXTRA_RATIOS.append(("rtt/pyvcltrace-ct/64B", "rtt/pyvcl-ct/64B"))
