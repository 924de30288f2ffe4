"""Child processes for the benchmarks: bounded waits, output in files, always killed.

Every process is started in its own session (a ^C meant for the runner does not reach it), with
PR_SET_PDEATHSIG (the kernel kills it if the runner dies) and stdout/stderr in files under the
run's work directory (no pipe can fill up and block it).  `Proc` is a context manager that
kills the process on exit; `run_pair` runs one of the standalone scripts (bench/bulk.py,
bench/pingpong.py) as server + client, which is how the kernel and LDP cases work and how a
pyvcl case can run the same scripts with ``--module``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = os.path.realpath(sys.executable)
"""The real interpreter binary: LD_PRELOAD must go into it, not into a shell shim (pyenv)."""

_seq = itertools.count()


class CaseError(RuntimeError):
    """A benchmark case failed; the message says which command and what it printed."""


def _load_prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    return None


_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # in the child, between fork and exec
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


def tail(text: str, lines: int = 15) -> str:
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of `text` (other lines are ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


class Proc:
    """A child process whose stdout and stderr go to ``WORKDIR/NAME.N.{out,err}``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        workdir: Path,
        cwd: Path = REPO,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        stem = workdir / f"{name.replace('/', '_')}.{next(_seq)}"
        self.out_path = stem.with_suffix(".out")
        self.err_path = stem.with_suffix(".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(os.environ if env is None else env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        self.killed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def describe(self, lines: int = 15) -> str:
        """Command, exit status and the tails of both outputs, for error messages."""
        rc = self.popen.poll()
        state = "running" if rc is None else f"exit status {rc}"
        return (
            f"[{self.name}] `{shlex.join(self.argv)}` ({state})\n"
            f"--- stdout ---\n{tail(self.stdout(), lines)}\n"
            f"--- stderr ---\n{tail(self.stderr(), lines)}"
        )

    def wait(self, timeout: float) -> int:
        """Wait for exit; CaseError (after killing it) if it takes longer than `timeout`."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CaseError(f"timed out after {timeout:g} s\n{self.describe()}") from None

    def wait_output(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until stdout matches `pattern` (regex); CaseError if it exits or times out."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.stdout())
            if m:
                return m
            if self.popen.poll() is not None:
                raise CaseError(f"exited before printing /{pattern}/\n{self.describe()}")
            if time.monotonic() >= deadline:
                self.kill()
                raise CaseError(f"no /{pattern}/ within {timeout:g} s\n{self.describe()}")
            time.sleep(0.02)

    def kill(self, grace: float = 0.0) -> None:
        """SIGTERM, `grace` seconds, then SIGKILL (at once with grace 0), to its process
        group (it is its own group leader).  Idempotent; waits (bounded) for the exit."""
        if self.popen.poll() is not None:
            return
        self.killed = True
        pg = self.popen.pid
        if grace > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pg, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pg, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def __enter__(self) -> Proc:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


def script_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with the repo on PYTHONPATH (for ``--module pyvcl...``)."""
    env = dict(os.environ if base is None else base)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}:{old}" if old else str(REPO)
    return env


def run_pair(
    name: str,
    script: str,
    *,
    server_args: Sequence[str],
    client_args: Sequence[str],
    workdir: Path,
    timeout: float,
    server_env: Mapping[str, str] | None = None,
    client_env: Mapping[str, str] | None = None,
    server_module: str | None = None,
    client_module: str | None = None,
    server_grace: float = 3.0,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run ``bench/SCRIPT server ...`` then ``bench/SCRIPT client ...`` under `PYTHON`.

    Returns (client record, server's last record or None).  The server gets `server_grace`
    seconds to finish after the client did, then SIGKILL (an LDP server may never exit, see
    docs/vpp-setups.md): the client's output is what counts.  `server_module` and
    `client_module` are passed as ``--module`` (a socket-like module; default the stdlib
    ``socket``)."""
    path = BENCH_DIR / script
    smod = ["--module", server_module] if server_module else []
    cmod = ["--module", client_module] if client_module else []
    senv = script_env(server_env)
    cenv = script_env(client_env)
    with Proc(f"{name}.server", [PYTHON, path, "server", *server_args, *smod], env=senv,
              workdir=workdir) as srv:  # fmt: skip
        srv.wait_output(r'"listening"', timeout=30)
        with Proc(f"{name}.client", [PYTHON, path, "client", *client_args, *cmod], env=cenv,
                  workdir=workdir) as cli:  # fmt: skip
            rc = cli.wait(timeout)
            records = json_lines(cli.stdout())
            if rc != 0 or not records:
                raise CaseError(f"client failed\n{cli.describe()}\n{srv.describe()}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.popen.wait(timeout=server_grace)
        srv.kill()
        done = [r for r in json_lines(srv.stdout()) if "listening" not in r]
        server_rec = done[-1] if done else None
        if server_rec is not None:
            server_rec = {**server_rec, "killed": srv.killed}
        return records[-1], server_rec
