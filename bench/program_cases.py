"""Program-level cases: the same unmodified plain-Python program over each stack, in one run.

Each program (bench/programs/) is a server and a client, started as separate processes the
way a user would start them, over one of these stacks (the STACK of ``KIND/STACK/VARIANT``):

* ``kernel``: plain ``python`` on kernel sockets, 127.0.0.1.
* ``pyvcl-run-fallback``: ``python -m pyvcl run ...`` with ``VCL_VPP_SAPI_SOCKET=NOWHERE`` --
  no VPP answers there, so `pyvcl run` falls back to kernel sockets: its cost over plain
  Python.
* ``ldp-ct`` / ``ldp-tcp``: plain ``python`` with VPP's ``libvcl_ldpreload.so`` preloaded and
  ``VCL_CONFIG`` (C VCL), cut-through or through VPP's TCP stack (`Config.topology`).
* ``pyvcl-run-ct`` / ``pyvcl-run-tcp``: ``python -m pyvcl run --vcl-config CONF
  --no-fallback ...`` with the very vcl.conf the LDP case uses.
* ``pyvcl-run-busy-ct`` / ``pyvcl-run-busy-tcp`` (echo only): the same with
  ``PYVCL_BUSY_POLL=500`` in the environment of both sides: a spin longer than the blocking
  round trip through VPP's TCP stack on the bench VM (~350 µs), as docs/busy-polling.md
  says to pick it.  (At 50 µs, the value until 2026-12-05, the TCP case spun out before the
  reply and measured the blocking path: 353 µs; at 300 or 1000 µs, 155-157 µs.)

The pyvcl stacks report ``{"skipped": "pyvcl run not available"}`` while ``python -m pyvcl run
--help`` fails (the command is not there yet).  Every process is bounded by a timeout and
killed at the end of its case (`procs.Proc`); only loopback addresses and VPP's own are used.
bench/README.md says what each KIND measures and how to read the ratios.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.kernel import free_port
from bench.procs import BENCH_DIR, PYTHON, REPO, CaseError, Proc, json_lines, script_env
from bench.registry import EXTRA_RATIOS, CaseFn, Config, Record, Skip, register

PROGRAMS = BENCH_DIR / "programs"
DOWNLOAD_SIZE = 32 << 20
AIOHTTP_CONCURRENCY = 32
BUSY_POLL_ENV = {"PYVCL_BUSY_POLL": "500"}  # µs; see the module notes
RUN_UNAVAILABLE = "pyvcl run not available"
PYVCL_RUN: tuple[str, ...] = ("-m", "pyvcl", "run")
"""How the interpreter is told to run a program under `pyvcl run` (after `PYTHON`)."""
READY_TIMEOUT_S = 60.0
SERVER_GRACE_S = 3.0
"""How long a one-connection server gets to print its result after the client finished (an
LDP server may never see EOF in cut-through: it is killed then, the client's figures count)."""

FALLBACK_SOCKET_VAR = "VCL_VPP_SAPI_SOCKET"
_STACK_ENV_VARS = ("LD_PRELOAD", "VCL_CONFIG", FALLBACK_SOCKET_VAR, "PYVCL_BUSY_POLL")
"""Removed from the runner's environment before a side's own settings are added."""


@dataclass(frozen=True)
class Stack:
    """How a program runs: ``via`` "kernel", "fallback", "ldp" or "run" (`pyvcl run`),
    ``topo`` "ct" / "tcp" for the VPP stacks, ``env`` added to both sides."""

    name: str
    via: str
    topo: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


STACKS = (
    Stack("kernel", "kernel"),
    Stack("pyvcl-run-fallback", "fallback"),
    Stack("ldp-ct", "ldp", "ct"),
    Stack("pyvcl-run-ct", "run", "ct"),
    Stack("ldp-tcp", "ldp", "tcp"),
    Stack("pyvcl-run-tcp", "run", "tcp"),
)
BUSY_STACKS = (
    Stack("pyvcl-run-busy-ct", "run", "ct", BUSY_POLL_ENV),
    Stack("pyvcl-run-busy-tcp", "run", "tcp", BUSY_POLL_ENV),
)


@dataclass(frozen=True)
class Side:
    """The command prefix (interpreter, maybe ``-m pyvcl run ...``) and environment of one
    side of a program."""

    prefix: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Placement:
    """Where a program runs: the address the server binds and the client connects to."""

    stack: Stack
    bind: str
    host: str
    port: int
    server: Side
    client: Side


_run_available: bool | None = None


def pyvcl_run_available() -> bool:
    """Whether ``python -m pyvcl run --help`` works here (asked once per run)."""
    global _run_available
    if _run_available is None:
        try:
            proc = subprocess.run(
                [PYTHON, *PYVCL_RUN, "--help"],
                cwd=REPO,
                env=script_env(),
                capture_output=True,
                timeout=60,
            )
            _run_available = proc.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _run_available = False
    return _run_available


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STACK_ENV_VARS}
    env.update(extra)
    env = script_env(env)  # the checkout on PYTHONPATH, for `python -m pyvcl run`
    env["PYTHONUNBUFFERED"] = "1"  # readiness lines reach the output file at once
    return env


def _side(cfg: Config, stack: Stack, role: str) -> Side:
    run = [PYTHON, *PYVCL_RUN]
    if stack.via == "kernel":
        return Side([PYTHON], _base_env(stack.env))
    if stack.via == "fallback":
        # C VCL's variable for the app socket, not --app-socket: a VPP named on the command
        # line may rightly mean "no fallback" (as for pyvcl nc)
        nowhere = cfg.workdir / "no-vpp-here" / "app.sock"
        return Side(run, _base_env({**stack.env, FALLBACK_SOCKET_VAR: str(nowhere)}))
    kind = "ct" if stack.topo == "ct" else f"tcp-{role}"
    if stack.via == "ldp":
        try:
            env = cfg.vcl_env(kind, ldpreload=True)
        except FileNotFoundError as exc:  # no libvcl_ldpreload.so in this install
            raise Skip(str(exc)) from exc
        env = _base_env({**env, **stack.env})
        return Side([PYTHON], env)
    conf = str(cfg.vcl_conf(kind))
    return Side([*run, "--vcl-config", conf, "--no-fallback"], _base_env(stack.env))


def place(cfg: Config, stack: Stack) -> Placement:
    """Addresses and sides for `stack`; Skip when it cannot run here (no `pyvcl run`, no VPP),
    checked before VPP is started."""
    if stack.via in ("run", "fallback") and not pyvcl_run_available():
        raise Skip(RUN_UNAVAILABLE)
    if stack.via in ("kernel", "fallback"):
        host = bind = "127.0.0.1"
        port = free_port()
    else:
        host = cfg.topology(stack.topo).host
        bind = "0.0.0.0" if stack.topo == "ct" else host  # as the LDP script cases do
        port = cfg.port()
    return Placement(stack, bind, host, port, _side(cfg, stack, "server"),
                     _side(cfg, stack, "client"))  # fmt: skip


def _vpp_lists_listener(cfg: Config, port: int) -> bool:
    with contextlib.suppress(Exception):
        return re.search(rf":{port}\b", cfg.vpp().cli("show app server")) is not None
    return False


def run_program(
    cfg: Config,
    name: str,
    where: Placement,
    server_argv: list[str],
    client_argv: list[str],
    *,
    ready: str,
    timeout: float,
    server_grace: float = 0.0,
) -> Record:
    """Start the server (its `ready` regex in stdout), run the client to its end (at most
    `timeout` s), give the server `server_grace` s to finish, kill both.  The record is the
    client's last JSON line plus ``server`` (the server's last JSON line, if any),
    ``process_s`` (the client process's whole life, start-up included) and, over VPP,
    ``listener_in_vpp`` (``show app server`` listed the port while the server ran)."""
    tag = name.replace("/", "_")
    with Proc(f"{tag}.server", [*where.server.prefix, *server_argv], env=where.server.env,
              workdir=cfg.workdir) as srv:  # fmt: skip
        srv.wait_output(ready, timeout=READY_TIMEOUT_S)
        in_vpp = _vpp_lists_listener(cfg, where.port) if where.stack.topo else None
        t0 = time.monotonic()
        with Proc(f"{tag}.client", [*where.client.prefix, *client_argv], env=where.client.env,
                  workdir=cfg.workdir) as cli:  # fmt: skip
            rc = cli.wait(timeout)
            process_s = time.monotonic() - t0
            records = json_lines(cli.stdout())
            if rc != 0 or not records:
                raise CaseError(f"client failed\n{cli.describe()}\n{srv.describe()}")
            notice = cli.stderr().strip().splitlines()[:1]
        if server_grace > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                srv.popen.wait(timeout=server_grace)
        srv.kill()
        done = [r for r in json_lines(srv.stdout()) if "listening" not in r]
    rec: Record = {**records[-1], "process_s": round(process_s, 3)}
    if done:
        rec["server"] = done[-1]
    elif server_grace > 0:
        rec["server_killed"] = True
    if in_vpp is not None:
        rec["listener_in_vpp"] = in_vpp
        if not in_vpp:
            rec["warning"] = "VPP's `show app server` did not list the server's port"
    if where.stack.via == "fallback" and notice:
        rec["notice"] = notice[0]
    return rec


def _script(name: str) -> str:
    return str(PROGRAMS / name)


# ---- the programs ---------------------------------------------------------------------------


def _download_file(cfg: Config) -> tuple[Path, str]:
    """A DOWNLOAD_SIZE file of random bytes in the work dir (made once) and its sha256."""
    path = cfg.workdir / "www" / "blob.bin"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(DOWNLOAD_SIZE))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def download(cfg: Config, stack: Stack, name: str) -> Record:
    where = place(cfg, stack)
    path, digest = _download_file(cfg)
    server = ["-m", "http.server", "--bind", where.bind, str(where.port),
              "--directory", str(path.parent)]  # fmt: skip
    url = f"http://{where.host}:{where.port}/{path.name}"
    client = [_script("http_get.py"), url, digest, str(cfg.duration)]
    timeout = cfg.bulk_timeout() + 120
    return run_program(cfg, name, where, server, client, ready="Serving HTTP on", timeout=timeout)


def aiohttp_rps(cfg: Config, stack: Stack, name: str) -> Record:
    if importlib.util.find_spec("aiohttp") is None:
        raise Skip("aiohttp is not installed (it is in pyproject's [test] extra)")
    where = place(cfg, stack)
    script = _script("aiohttp_app.py")
    server = [script, "server", where.bind, str(where.port)]
    client = [script, "client", where.host, str(where.port), str(cfg.duration),
              str(AIOHTTP_CONCURRENCY)]  # fmt: skip
    return run_program(cfg, name, where, server, client, ready='"listening"',
                       timeout=cfg.bulk_timeout())  # fmt: skip


def socket_loop(cfg: Config, stack: Stack, name: str, *, mode: str) -> Record:
    where = place(cfg, stack)
    script = _script("socket_loops.py")
    amount = str(cfg.rtt_rounds) if mode == "echo" else str(cfg.duration)
    server = [script, "server", mode, where.bind, str(where.port)]
    client = [script, "client", mode, where.host, str(where.port), amount]
    timeout = cfg.rtt_timeout() if mode == "echo" else cfg.bulk_timeout()
    grace = 0.0 if mode == "connect" else SERVER_GRACE_S
    rec = run_program(cfg, name, where, server, client, ready='"listening"', timeout=timeout,
                      server_grace=grace)  # fmt: skip
    got = rec.get("server", {}).get("received")
    if mode == "sendall" and got is not None and got != rec["bytes"]:
        rec["warning"] = f"server received {got} bytes, client sent {rec['bytes']}"
    return rec


ProgramFn = Callable[[Config, Stack, str], Record]

KINDS: dict[str, tuple[str, ProgramFn]] = {
    "prog-download": ("32MiB", download),
    "prog-aiohttp": (f"c{AIOHTTP_CONCURRENCY}", aiohttp_rps),
    "prog-sendall": ("1KiB", functools.partial(socket_loop, mode="sendall")),
    "prog-connect": ("close", functools.partial(socket_loop, mode="connect")),
    "prog-echo": ("64B", functools.partial(socket_loop, mode="echo")),
}
"""KIND -> (VARIANT, the function running the program over a stack)."""


def _bind(fn: ProgramFn, stack: Stack, name: str) -> CaseFn:
    def run(cfg: Config) -> Iterator[Record]:
        yield fn(cfg, stack, name)

    return run


def register_all() -> list[str]:
    """Register every KIND over every stack (echo also busy-polling); the case names."""
    names = []
    for kind, (variant, fn) in KINDS.items():
        for stack in STACKS + BUSY_STACKS if kind == "prog-echo" else STACKS:
            names.append(f"{kind}/{stack.name}/{variant}")
            register(names[-1], _bind(fn, stack, names[-1]))
    for topo in ("ct", "tcp"):
        busy, plain = f"pyvcl-run-busy-{topo}", f"pyvcl-run-{topo}"
        EXTRA_RATIOS.append((f"prog-echo/{busy}/64B", f"prog-echo/{plain}/64B"))
    return names


PROGRAM_CASES = register_all()
