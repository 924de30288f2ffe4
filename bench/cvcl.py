"""C VCL baselines, through the run's private VPP (`Config.vpp`).

Two topologies (docs/vpp-setups.md): ``ct`` = cut-through between two apps on the default
namespace (app-scope-local, 127.0.0.1), ``tcp`` = through VPP's TCP stack (two VRFs joined by
routes; server in namespace ``srv`` listening on 127.0.10.1, client in ``cli``,
app-scope-global).  All vcl.confs: 4000000-byte fifos, use-mq-eventfd.

* ``bulk/cvcl-{ct,tcp}/<size>``: VPP's ``vcl_test_server`` + ``vcl_test_client -U -N W -T
  SIZE`` (one-way stream, all C).  W is sized from short runs' rates (`MAX_SIZING_RUNS`) so the
  measured run lasts about `duration` s; the client's ``Gbps half-duplex`` figure is reported.
* ``bulk/ldp-{ct,tcp}/<size>``: bench/bulk.py (the kernel baseline's script) with server and
  client under LDP -- Python's socket loop over C VCL, the natural reference for pyvcl.
* ``rtt/ldp-{ct,tcp}/64B``: bench/pingpong.py, server and client under LDP.

LDP programs are started as the real interpreter binary (`procs.PYTHON`).  An LDP server that
does not exit after the client finished is SIGKILLed; the client's output is the result.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kernel import run_bulk, run_rtt
from bench.procs import CaseError, Proc
from bench.registry import (
    BULK_SIZES,
    RTT_SIZE,
    Config,
    Record,
    Skip,
    bind_case,
    register,
    size_label,
)

CALIBRATION_BYTES = 256 << 20
"""Bytes streamed by the first (sizing) vcl_test_client run."""

MAX_SIZING_RUNS = 4
"""vcl_test_client runs per case at most: each is sized from the previous one's rate, and the
first that lasts >= 80% of `duration` is the result (else the last, with a warning)."""

_RESULTS = re.compile(
    r"(CLIENT|SERVER) RESULTS: Streamed (\d+) bytes\s+in ([\d.]+) seconds "
    r"\(([\d.]+) Gbps (half|full)-duplex\)"
)


def _results(text: str, who: str) -> list[tuple[int, float, float]]:
    """(bytes, seconds, gbps) of each ``WHO RESULTS`` block in vcl_test output."""
    return [(int(m[2]), float(m[3]), float(m[4])) for m in _RESULTS.finditer(text) if m[1] == who]


def _topology(cfg: Config, topo: str) -> tuple[str, str, str]:
    """(server vcl.conf kind, client vcl.conf kind, address the client connects to)."""
    host = cfg.topology(topo).host
    return ("ct", "ct", host) if topo == "ct" else ("tcp-server", "tcp-client", host)


def _hs_app(cfg: Config, name: str) -> Path:
    try:
        return cfg.install().bin(name)
    except FileNotFoundError as exc:
        raise Skip(str(exc)) from exc


def _env(cfg: Config, kind: str, ldp: bool) -> dict[str, str]:
    try:
        return cfg.vcl_env(kind, ldpreload=ldp)
    except FileNotFoundError as exc:  # no libvcl_ldpreload.so in this install
        raise Skip(str(exc)) from exc


def wait_listening(cfg: Config, proc: Proc, ports: Iterable[int], timeout: float) -> None:
    """Wait until VPP lists listeners of `proc`'s app on all `ports` (``show app server``):
    vcl_test_server's own output is block-buffered, so VPP is asked instead."""
    want = [re.compile(rf":{p}->\S+\s+vcl_test_server\b") for p in ports]
    deadline = time.monotonic() + timeout
    while True:
        out = cfg.vpp().cli("show app server")
        if all(rx.search(out) for rx in want):
            return
        if proc.popen.poll() is not None:
            raise CaseError(f"exited before listening\n{proc.describe()}")
        if time.monotonic() >= deadline:
            raise CaseError(
                f"not listening on {list(ports)} after {timeout:g} s; `show app server`:\n"
                f"{out}\n{proc.describe()}"
            )
        time.sleep(0.05)


def vcl_test_once(cfg: Config, topo: str, size: int, writes: int) -> tuple[float, ...]:
    """A fresh vcl_test_server and one ``vcl_test_client -U`` run against it: (bytes,
    seconds, gbps, server gbps or 0).  A fresh server each time: whether vcl_test_server
    stays up after a client left is a race in v26.06 (it exits when the data session's close
    is handled before the client's final config message)."""
    server_bin = _hs_app(cfg, "vcl_test_server")
    client_bin = _hs_app(cfg, "vcl_test_client")
    skind, ckind, host = _topology(cfg, topo)
    senv, cenv = cfg.vcl_env(skind), cfg.vcl_env(ckind)
    port = cfg.port()
    name = f"vcl_test-{topo}-{size_label(size)}"
    # stdbuf: line-buffered stdout, so its SERVER RESULTS reach the file before it is killed
    stdbuf = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
    with Proc(f"{name}.server", [*stdbuf, server_bin, str(port)], env=senv,
              workdir=cfg.workdir) as srv:  # fmt: skip
        wait_listening(cfg, srv, (port, port + 1), timeout=30)
        argv = [str(client_bin), "-U", "-N", str(writes), "-T", str(size), host, str(port)]
        with Proc(f"{name}.client", argv, env=cenv, workdir=cfg.workdir) as cli:
            rc = cli.wait(cfg.bulk_timeout())
            found = _results(cli.stdout(), "CLIENT")
            if rc != 0 or not found:
                raise CaseError(
                    f"vcl_test_client failed (no CLIENT RESULTS)\n{cli.describe()}\n"
                    f"{srv.describe()}"
                )
        deadline = time.monotonic() + 3
        while not _results(srv.stdout(), "SERVER") and time.monotonic() < deadline:
            time.sleep(0.05)
        server = _results(srv.stdout(), "SERVER")
    nbytes, secs, gbps = found[-1]
    return nbytes, secs, gbps, server[-1][2] if server else 0.0


def vcl_test_bulk(cfg: Config, topo: str, size: int) -> Record:
    """Sizing runs, then the measured one (each `vcl_test_once`)."""
    # size the run from the last one's rate until one lasts >= 80% of `duration`
    writes = max(4, CALIBRATION_BYTES // size)
    cal_gbps: list[float] = []
    for _ in range(MAX_SIZING_RUNS):
        nbytes, secs, gbps, server_gbps = vcl_test_once(cfg, topo, size, writes)
        if secs >= cfg.duration * 0.8:
            break
        cal_gbps.append(round(gbps, 4))
        rate = nbytes / max(secs, 1e-6)  # bytes per second
        writes = max(1, math.ceil(rate * cfg.duration * 1.15 / size))
    rec: Record = {
        "gbps": round(gbps, 4),
        "bytes": int(nbytes),
        "seconds": round(secs, 4),
        "chunk": size,
        "writes": writes,
        "measured_at": "sender (vcl_test_client)",
        "sizing_runs_gbps": cal_gbps,
    }
    if server_gbps:
        rec["server_gbps"] = round(server_gbps, 4)
    if secs < cfg.duration * 0.8:
        rec["warning"] = f"ran {secs:.2f} s, under the {cfg.duration:g} s asked for"
    return rec


@dataclass(frozen=True)
class ScriptStack:
    """How bench/bulk.py and bench/pingpong.py run over VPP: per side, whether under LDP and
    which socket-like ``--module`` (None: the stdlib's).  Both sides get VCL_CONFIG."""

    server_ldp: bool = True
    client_ldp: bool = True
    server_module: str | None = None
    client_module: str | None = None


def script_sides(cfg: Config, topo: str, stack: ScriptStack) -> dict[str, Any]:
    """`kernel.run_script`'s keywords for the scripts over VPP (`topo` "ct" or "tcp"), sides
    as `stack` says."""
    skind, ckind, host = _topology(cfg, topo)
    return {
        "host": host,
        "bind": "0.0.0.0" if topo == "ct" else host,
        "port": cfg.port(),
        "server_env": _env(cfg, skind, stack.server_ldp),
        "client_env": _env(cfg, ckind, stack.client_ldp),
        "server_module": stack.server_module,
        "client_module": stack.client_module,
    }


def script_bulk(cfg: Config, topo: str, size: int, stack: ScriptStack, label: str) -> Record:
    """bench/bulk.py over VPP (`topo` "ct" or "tcp"), sides as `stack` says."""
    name = f"bulk-{label}-{topo}-{size_label(size)}"
    return run_bulk(cfg, name, size, **script_sides(cfg, topo, stack))


def script_rtt(cfg: Config, topo: str, stack: ScriptStack, label: str) -> Record:
    """bench/pingpong.py over VPP (`topo` "ct" or "tcp"), sides as `stack` says."""
    return run_rtt(cfg, f"rtt-{label}-{topo}", **script_sides(cfg, topo, stack))


def register_script_cases(
    name: str, stack: ScriptStack, topologies: tuple[str, ...] = ("ct", "tcp")
) -> list[str]:
    """Register ``bulk/NAME-TOPO/SIZE`` and ``rtt/NAME-TOPO/64B`` running the standalone
    scripts over `stack`; returns the case names.  The pyvcl cases are one call::

        register_script_cases("pyvcl", ScriptStack(False, False, "pyvcl.X", "pyvcl.X"))
    """
    names = []
    for topo in topologies:
        for size in BULK_SIZES:
            names.append(f"bulk/{name}-{topo}/{size_label(size)}")
            register(names[-1], bind_case(script_bulk, topo, size, stack, name))
        names.append(f"rtt/{name}-{topo}/{size_label(RTT_SIZE)}")
        register(names[-1], bind_case(script_rtt, topo, stack, name))
    return names


for _topo in ("ct", "tcp"):
    for _size in BULK_SIZES:
        register(f"bulk/cvcl-{_topo}/{size_label(_size)}", bind_case(vcl_test_bulk, _topo, _size))
register_script_cases("ldp", ScriptStack(server_ldp=True, client_ldp=True))
