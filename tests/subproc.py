"""Code that could abort, crash or hang the interpreter, run in a fresh one instead: a
regression then fails one test, never the whole run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_bounded(code: str, timeout: float = 60, prelude: str = "") -> str:
    """Run ``prelude`` + ``code`` in a fresh interpreter in its own session; fail (killing the
    session, forked children included) if it has not exited 0 within ``timeout`` seconds.
    Returns its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung for {timeout} s:\n{out}\n{err}")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err}"
    return out
