"""The case registry, the run configuration, and the summary of ratios.

A case is a function ``fn(cfg: Config) -> Iterator[dict]`` registered under a name of the form
``KIND/STACK/VARIANT`` (``bulk/kernel/64KiB``, ``rtt/ldp-ct/64B``).  It yields result records
(usually one); the runner fills in ``"case"`` when a record has none and prints each as a JSON
line.  A case raises `Skip` when it cannot run here (no VPP ...) and anything else when it
failed; the runner prints ``{"case": ..., "skipped": reason}`` or ``{"case": ..., "error": ...}``
and goes on.

Adding a case (e.g. pyvcl) is a decorator away -- put it in ``bench/pyvcl_cases.py``, which
`bench.run` imports when it exists::

    from bench.registry import Config, case

    @case("rtt/pyvcl-ct/64B")
    def rtt_pyvcl_ct(cfg: Config):
        vpp = cfg.vpp()                      # the run's shared private VPP (Skip if none)
        conf = cfg.vcl_conf("ct")            # VCL_CONFIG for cut-through
        ...
        yield {"p50_us": ..., "p99_us": ..., "mean_us": ...}

Record names decide the summary: each ``KIND/STACK/VARIANT`` is compared with the baselines of
the same KIND and VARIANT (see `ratio_pairs`), using the KIND's primary metric (`PRIMARY`).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyvcl.testing.hoststack import Topology, topology, two_vrf_topology
from pyvcl.testing.vpp import TwoVrfTcp, VppInstall, VppInstance, find_vpp, why_missing

Record = dict[str, Any]
CaseFn = Callable[["Config"], Iterator[Record]]

CASES: dict[str, CaseFn] = {}
"""Registered cases by name, in registration order (the order they run in)."""

PRIMARY: dict[str, tuple[str, str]] = {
    "bulk": ("gbps", "higher is better"),
    "rtt": ("p50_us", "lower is better"),
    # program-level cases (bench/program_cases.py)
    "prog-download": ("mb_per_s", "higher is better"),
    "prog-aiohttp": ("req_per_s", "higher is better"),
    "prog-sendall": ("calls_per_s", "higher is better"),
    "prog-connect": ("conn_per_s", "higher is better"),
    "prog-echo": ("p50_us", "lower is better"),
}
"""Per KIND: the metric ratios are computed on, and which way is better."""

BASELINES: tuple[str, ...] = ("kernel", "cvcl-ct", "cvcl-tcp", "ldp-ct", "ldp-tcp")
"""Reference stacks, in order.  Any stack is compared with ``kernel`` and with the baselines of
its own topology (same ``-ct`` / ``-tcp`` suffix); a baseline only with those before it."""

BULK_SIZES: tuple[int, ...] = (64 << 10, 1 << 20)
"""Write sizes of the bulk cases (``bulk/*/64KiB``, ``bulk/*/1MiB``)."""

RTT_SIZE = 64
"""Message size of the ping-pong cases (``rtt/*/64B``)."""

EXTRA_RATIOS: list[tuple[str, str]] = []
"""More (A, B) case-name pairs to put in the summary, e.g. across topologies."""


class Skip(Exception):
    """The case cannot run on this machine (the reason is reported, it is not a failure)."""


def case(name: str) -> Callable[[CaseFn], CaseFn]:
    """Decorator: register `fn` as case `name` (``KIND/STACK/VARIANT``)."""

    def deco(fn: CaseFn) -> CaseFn:
        register(name, fn)
        return fn

    return deco


def register(name: str, fn: CaseFn) -> None:
    if name.count("/") != 2:
        raise ValueError(f"case name {name!r} is not KIND/STACK/VARIANT")
    if name in CASES:
        raise ValueError(f"case {name!r} is registered twice")
    CASES[name] = fn


def bind_case(fn: Callable[..., Record], *args: Any) -> CaseFn:
    """A case yielding the one record ``fn(cfg, *args)``."""

    def run(cfg: Config) -> Iterator[Record]:
        yield fn(cfg, *args)

    return run


def size_label(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def select(patterns: str | None) -> list[str]:
    """Case names matching comma-separated `patterns`: globs (``bulk/*/1MiB``) or, without
    glob characters, substrings (``ldp``).  None or empty: all cases."""
    if not patterns:
        return list(CASES)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]

    def hit(name: str, pat: str) -> bool:
        return fnmatch.fnmatchcase(name, pat) if any(c in pat for c in "*?[") else pat in name

    return [n for n in CASES if any(hit(n, p) for p in pats)]


# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """What a case gets: the run's parameters, a work directory, and a lazily started private
    VPP shared by all cases of the run (`vpp`, `two_vrf`, `vcl_conf`)."""

    workdir: Path
    duration: float = 5.0
    quick: bool = False
    rtt_rounds: int = 20000
    workers: int = 0  # VPP worker threads (cpu { workers N })
    _install: VppInstall | None = field(default=None, init=False, repr=False)
    _vpp: VppInstance | None = field(default=None, init=False, repr=False)
    _vpp_error: str | None = field(default=None, init=False, repr=False)
    _tcp: TwoVrfTcp | None = field(default=None, init=False, repr=False)
    _confs: dict[str, Path] = field(default_factory=dict, init=False, repr=False)
    _ports: Iterator[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        base = 20000 + (os.getpid() % 1000) * 20
        self._ports = itertools.count(base, 2)  # vcl_test_server uses PORT and PORT+1

    # ---- timeouts and ports --------------------------------------------------------------

    def bulk_timeout(self) -> float:
        """Bound on one bulk client run (generous: the machine is shared)."""
        return self.duration * 6 + 60

    def rtt_timeout(self) -> float:
        """Bound on one ping-pong client run (5 ms per round trip, plus start-up)."""
        return self.rtt_rounds * 0.005 + 60

    def port(self) -> int:
        """A fresh even port number (the next odd one is free too) for a VCL listener."""
        return next(self._ports)

    # ---- VPP -----------------------------------------------------------------------------

    def install(self) -> VppInstall:
        """The VPP install; `Skip` when there is none."""
        if self._install is None:
            self._install = find_vpp()
            if self._install is None:
                raise Skip(why_missing())
        return self._install

    def vpp(self) -> VppInstance:
        """The run's private VPP, started on first use (hs_apps only, poll-sleep-usec 10,
        `workers` worker threads) and stopped by `close`.  `Skip` without VPP; RuntimeError
        if it failed to start (then every later call fails the same way at once)."""
        if self._vpp is not None and self._vpp.is_running():
            return self._vpp
        if self._vpp_error is not None:
            raise RuntimeError(self._vpp_error)
        install = self.install()
        if self._vpp is not None:  # it died: say so once, do not restart behind the cases
            self._vpp_error = f"the private VPP died (status {self._vpp.returncode})\n"
            self._vpp_error += self._vpp.log_tail(20)
            raise RuntimeError(self._vpp_error)
        try:
            self._vpp = VppInstance(install, plugins=("hs_apps",), workers=self.workers).start()
        except Exception as exc:
            self._vpp_error = f"private VPP did not start: {exc}"
            raise RuntimeError(self._vpp_error) from exc
        return self._vpp

    def two_vrf(self) -> TwoVrfTcp:
        """Topology 2 (TCP through VPP's stack) on the shared VPP, set up once."""
        if self._tcp is None:
            self._tcp = self.vpp().setup_two_vrf_tcp()
        return self._tcp

    def topology(self, name: str) -> Topology:
        """``"ct"`` or ``"tcp"`` (`pyvcl.testing.hoststack`) on the shared VPP: where each
        side attaches and the address the server listens on."""
        if name == "tcp":
            return two_vrf_topology(self.vpp(), self.two_vrf())
        return topology(self.vpp(), name)

    def vcl_conf(self, kind: str) -> Path:
        """A vcl.conf (written once) for ``"ct"`` (default namespace, app-scope-local: the
        cut-through topology), ``"tcp-server"`` / ``"tcp-client"`` (namespaces srv / cli of
        `two_vrf`, app-scope-global).  All with 4000000-byte fifos and use-mq-eventfd."""
        if kind not in self._confs:
            if kind not in ("ct", "tcp-server", "tcp-client"):
                raise ValueError(f"unknown vcl.conf kind {kind!r}")
            name, _, role = kind.partition("-")
            topo = self.topology(name)
            side = topo.client if role == "client" else topo.server
            path = self.workdir / f"vcl-{kind}.conf"
            self._confs[kind] = self.vpp().vcl_conf(path, **side.conf_opts)
        return self._confs[kind]

    def vcl_env(self, kind: str, *, ldpreload: bool = False) -> dict[str, str]:
        """Environment for a C VCL app (or, with `ldpreload`, an LDP program) using
        `vcl_conf(kind)`."""
        return self.vpp().vcl_env(self.vcl_conf(kind), ldpreload=ldpreload)

    def vpp_version(self) -> str | None:
        try:
            return self.install().version()
        except (Skip, RuntimeError):
            return None

    def close(self) -> None:
        if self._vpp is not None:
            self._vpp.stop()


# --------------------------------------------------------------------------------------------
# Summary


def _split(name: str) -> tuple[str, str, str]:
    kind, stack, variant = name.split("/")
    return kind, stack, variant


def _topology(stack: str) -> str:
    return stack.rsplit("-", 1)[1] if "-" in stack else ""


def ratio_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """(A, B) pairs of case names to compare: see `BASELINES`, plus `EXTRA_RATIOS`."""
    names = list(dict.fromkeys(names))
    present = set(names)
    pairs: list[tuple[str, str]] = []
    for a in names:
        kind, stack, variant = _split(a)
        for base in BASELINES:
            if base == stack:
                break  # a baseline is only compared with those before it
            if base != "kernel" and _topology(base) != _topology(stack):
                continue
            b = f"{kind}/{base}/{variant}"
            if b in present:
                pairs.append((a, b))
    pairs += [(a, b) for a, b in EXTRA_RATIOS if a in present and b in present]
    return pairs


def primary_value(rec: Record) -> float | None:
    metric = PRIMARY.get(rec["case"].split("/")[0], (None, ""))[0]
    value = rec.get(metric) if metric else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def summarize(records: Iterable[Record]) -> Record:
    """``{"summary": {"A vs B": metric(A)/metric(B), ...}, "metrics": ..., "values": ...}``
    over the records that have their KIND's primary metric (median over repetitions)."""
    values: dict[str, list[float]] = {}
    for rec in records:
        if "case" in rec and (v := primary_value(rec)) is not None:
            values.setdefault(rec["case"], []).append(v)
    med = {name: statistics.median(vs) for name, vs in values.items()}
    ratios = {f"{a} vs {b}": round(med[a] / med[b], 3) for a, b in ratio_pairs(med)}
    metrics = {k: f"{m} ({how}); ratio = A/B" for k, (m, how) in PRIMARY.items()}
    rounded = {k: round(v, 3) for k, v in med.items()}
    return {"summary": ratios, "metrics": metrics, "values": rounded}
