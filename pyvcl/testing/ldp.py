"""Run an ordinary Python program over C VCL (LD_PRELOAD of VPP's ``libvcl_ldpreload.so``).

The C side of interop tests and baselines: a plain ``socket``-module script, preloaded into the
real interpreter binary (not a shell shim such as pyenv's, which fails under LDP with "File
descriptor in bad state"), with ``VCL_CONFIG`` from `VppInstance.vcl_conf`::

    conf = vpp.vcl_conf(tmp_path / "vcl.conf", app_scope_global=False)
    with LdpPython(vpp, conf, script_path, "127.0.0.1", "9000") as proc:
        proc.wait_line("listening", timeout=10)
        ...
        out = proc.finish(timeout=10)     # stdout so far; SIGKILLs it if still running

For a side of a `pyvcl.testing.hoststack.topology` (cut-through or through VPP's TCP stack),
write its config with ``vpp.vcl_conf(path, **side.conf_opts)``.

LDP servers in VPP v26.06 may spin forever after the peer's EOF and ignore SIGTERM
(docs/vpp-setups.md), so `finish` and ``__exit__`` use SIGKILL, and a test judges interop by
the bytes it saw, not by the program's exit.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PYTHON", "LdpPython", "script"]

PYTHON = os.path.realpath(sys.executable)
"""The interpreter binary itself (symlinks and shims resolved)."""


class LdpPython:
    """A Python script under LDP, its stdout read line by line with timeouts."""

    def __init__(
        self,
        vpp: Any,
        vcl_conf: str | os.PathLike[str],
        script: str | os.PathLike[str],
        *args: str,
        ldpreload: bool = True,
    ) -> None:
        env = vpp.vcl_env(vcl_conf, ldpreload=ldpreload)
        env["PYTHONUNBUFFERED"] = "1"
        # a file, so a chatty program never blocks on a full pipe
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        self.argv = [PYTHON, str(script), *args]
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buf = b""
        self.lines: list[str] = []  # every complete stdout line read so far

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_some(self, timeout: float) -> bool:
        """Read what stdout has within `timeout`; False at EOF."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(max(timeout, 0)):
                return True
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return False
        self._buf += chunk
        *done, self._buf = self._buf.split(b"\n")
        self.lines += [line.decode(errors="replace") for line in done]
        return True

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with `prefix` (earlier ones included); raises
        TimeoutError (with the program's stderr) if none comes within `timeout` s."""
        deadline = time.monotonic() + timeout
        eof = False
        while True:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            remaining = deadline - time.monotonic()
            if eof or remaining <= 0:
                self.kill()
                raise TimeoutError(
                    f"{' '.join(self.argv)}: no line starting with {prefix!r} within "
                    f"{timeout} s (exit {self.proc.poll()}); stdout {self.lines!r}; "
                    f"stderr {self.stderr()[-2000:]!r}"
                )
            eof = not self._read_some(min(remaining, 0.1))
            if eof and self._buf:
                self.lines.append(self._buf.decode(errors="replace"))
                self._buf = b""

    def kill(self) -> None:
        """SIGKILL (LDP programs may ignore SIGTERM) and reap."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def finish(self, timeout: float = 5.0) -> list[str]:
        """Let it exit on its own for up to `timeout` s, then SIGKILL; all stdout lines."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        self.kill()
        while self._read_some(0):
            pass
        if self._buf:
            self.lines.append(self._buf.decode(errors="replace"))
            self._buf = b""
        return self.lines

    def stderr(self) -> str:
        """What it wrote to stderr so far."""
        with contextlib.suppress(ValueError, OSError):
            self._err.seek(0)
            return self._err.read().decode(errors="replace")
        return ""

    def __enter__(self) -> LdpPython:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


def script(directory: str | os.PathLike[str], name: str, text: str) -> Path:
    """Write `text` to ``directory/name`` and return its path (for `LdpPython`)."""
    path = Path(directory) / name
    path.write_text(text)
    return path
