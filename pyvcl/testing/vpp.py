"""Run private, throw-away VPP instances for tests and benchmarks.

Nothing here touches a system VPP: every instance gets its own directory holding the CLI,
binary-API and stats sockets, the runtime dir (where the session layer creates
``app_ns_sockets/``), the log and the captured console, plus a unique ``api-segment`` prefix, so
several instances can run side by side.  Where VPP comes from (`find_vpp`,
`pyvcl.testing.install`): ``PYVCL_VPP_PREFIX``, else the ``vpp`` on ``PATH``.

Typical use::

    install = find_vpp()
    with VppInstance(install) as vpp:
        print(vpp.cli("show version"))
        sock = vpp.app_socket()          # DIR/app_ns_sockets/default

Set ``PYVCL_VPP_KEEP_DIR=1`` to keep instance directories (logs, startup.conf) after stop.

The host-stack setups (namespaces, the two-VRF topology, vcl.conf files) live in
`pyvcl.testing.hoststack` and are offered here as `VppInstance` methods; this module also
re-exports the install finder and the exceptions, so everything is importable from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from . import hoststack
from .errors import VppCliError, VppError, VppStartError
from .hoststack import SUN_PATH_MAX, TwoVrfTcp
from .install import ENV_PREFIX, HS_APPS, VppInstall, find_vpp, why_missing

__all__ = [
    "DEFAULT_PLUGINS",
    "ENV_KEEP_DIR",
    "ENV_PREFIX",
    "HS_APPS",
    "TwoVrfTcp",
    "VppCliError",
    "VppError",
    "VppInstall",
    "VppInstance",
    "VppStartError",
    "find_vpp",
    "why_missing",
]

ENV_KEEP_DIR = "PYVCL_VPP_KEEP_DIR"
"""When set to a non-empty value other than ``0``, instance directories are kept after stop."""

log = logging.getLogger(__name__)

STARVED_START_RETRIES = 2
"""How often a VPP that aborted at start for a CPU-starved worker is started again."""

DEFAULT_PLUGINS: tuple[str, ...] = (
    "af_packet",
    "hs_apps",
    "http",
    "quic",
    "tlsopenssl",
    "unittest",
)
"""Plugins enabled by default (everything else is disabled)."""

_UNSAFE_CONF_CHARS = re.compile(r"[\s#{}]")
# How VPP's CLI reports a failed command: the text is all that vppctl passes on (it exits 0).
_CLI_ERROR_RE = re.compile(
    r"unknown input `|^unknown command|^(?:\S.*: )?unknown (?:interface|table) ", re.MULTILINE
)
_instance_counter = itertools.count()


# --------------------------------------------------------------------------------------------
# Running an instance


@dataclass
class _Resources:
    """What must be released when an instance goes away (shared with its finalizer, so it must
    not refer to the instance itself)."""

    proc: subprocess.Popen[bytes] | None = None
    remove_dir: Path | None = None
    shm_prefix: str = ""
    released: bool = False


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL.  (VPP ignores a SIGTERM that arrives before
    its main loop runs, so the fallback matters for instances stopped while starting.)"""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _remove_files(res: _Resources) -> None:
    if res.shm_prefix:
        for leftover in Path("/dev/shm").glob(f"{res.shm_prefix}-*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
    if res.remove_dir is not None:
        shutil.rmtree(res.remove_dir, ignore_errors=True)


def _release(res: _Resources, timeout: float = 5.0) -> None:
    """Stop the process and remove files; runs at most once (stop, GC or interpreter exit)."""
    if res.released:
        return
    res.released = True
    if res.proc is not None:
        _terminate(res.proc, timeout)
    _remove_files(res)


_prctl: object | None = None


def _load_prctl() -> object | None:
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _prctl = libc.prctl
    return _prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    prctl = _prctl
    if callable(prctl):
        PR_SET_PDEATHSIG = 1
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _keep_dir_default() -> bool:
    return os.environ.get(ENV_KEEP_DIR, "") not in ("", "0")


def _tail(text: str, lines: int) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _read(path: Path) -> str:
    try:
        # vppctl sends each command with its terminating NUL, and VPP logs it verbatim
        return path.read_text(errors="replace").replace("\x00", "")
    except OSError:
        return ""


def _plugin_file(name: str) -> str:
    return name if name.endswith(".so") else f"{name}_plugin.so"


class VppInstance:
    """A private VPP, started by `start` (or ``with``) and stopped by `stop`.

    Everything lives in `directory` (a fresh temp dir unless one is given): ``startup.conf``,
    ``cli.sock``, ``api.sock``, ``stats.sock``, ``vpp.log`` (VPP's log), ``console.log`` (its
    stdout and stderr, where startup errors go) and ``app_ns_sockets/``.  A temp dir is removed
    by `stop` (unless `keep_dir` or ``PYVCL_VPP_KEEP_DIR``); a given directory is left alone.
    The VPP process is stopped by `stop`, by ``__exit__``, when the object is garbage
    collected, at interpreter exit, and (with `die_with_parent`, Linux PR_SET_PDEATHSIG) by the
    kernel when the *thread* that started it ends, even by SIGKILL -- start instances from a
    long-lived thread, or pass ``die_with_parent=False``.

    Parameters: `plugins` to enable (short names like ``"hs_apps"`` or file names; all others
    are disabled), `poll_sleep_usec` (None = busy polling), `workers` (adds
    ``cpu { workers N }``), `session_options` (extra words for the ``session { }`` section, e.g.
    ``"use-private-rx-mqs"``), `extra` (appended verbatim to startup.conf), `startup_timeout`.
    """

    def __init__(
        self,
        install: VppInstall | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        plugins: Iterable[str] = DEFAULT_PLUGINS,
        poll_sleep_usec: int | None = 10,
        workers: int = 0,
        session_options: Sequence[str] = (),
        extra: str = "",
        main_heap_size: str = "1G",
        buffers_per_numa: int = 16384,
        startup_timeout: float = 30.0,
        keep_dir: bool | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if install is None:
            install = find_vpp()
            if install is None:
                raise VppError(why_missing())
        self.install = install
        self.plugins = tuple(dict.fromkeys(_plugin_file(p) for p in plugins))
        self.poll_sleep_usec = poll_sleep_usec
        if workers < 0:
            raise ValueError(f"workers must be >= 0, not {workers}")
        self.workers = workers
        self.session_options = tuple(session_options)
        self.extra = extra
        self.main_heap_size = main_heap_size
        self.buffers_per_numa = buffers_per_numa
        self.startup_timeout = startup_timeout
        self.keep_dir = _keep_dir_default() if keep_dir is None else keep_dir
        self.die_with_parent = die_with_parent
        self.api_prefix = f"pyvcl{os.getpid()}x{next(_instance_counter)}x{secrets.token_hex(3)}"
        self._given_dir = None if directory is None else Path(directory).absolute()
        if self._given_dir is not None:
            self._check_dir(self._given_dir)
        self._dir: Path | None = self._given_dir
        self._res = _Resources(shm_prefix=self.api_prefix)
        self._finalizer = weakref.finalize(self, _release, self._res)
        self._started = False
        self._startup_seconds: float | None = None
        self._console_at_launch = 0
        self._final_log: str | None = None
        self._final_console: str | None = None

    # ---- paths ------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The instance directory (ValueError before `start` when none was given)."""
        if self._dir is None:
            raise ValueError("the instance has no directory yet: call start() first")
        return self._dir

    @property
    def startup_conf(self) -> Path:
        return self.directory / "startup.conf"

    @property
    def cli_socket(self) -> Path:
        return self.directory / "cli.sock"

    @property
    def api_socket(self) -> Path:
        return self.directory / "api.sock"

    @property
    def stats_socket(self) -> Path:
        return self.directory / "stats.sock"

    @property
    def log_path(self) -> Path:
        return self.directory / "vpp.log"

    @property
    def console_path(self) -> Path:
        return self.directory / "console.log"

    def app_socket(self, ns: str = "default") -> Path:
        """The session layer's app socket for namespace `ns`: ``DIR/app_ns_sockets/<ns>``."""
        return self.directory / "app_ns_sockets" / ns

    @staticmethod
    def _check_dir(d: Path) -> None:
        if _UNSAFE_CONF_CHARS.search(str(d)):
            raise ValueError(f"VPP's config parser cannot take this directory: {str(d)!r}")
        longest = d / "app_ns_sockets" / ("x" * 16)
        if len(os.fsencode(longest)) > SUN_PATH_MAX:
            raise ValueError(
                f"directory {d} is too long: socket paths under it would exceed "
                f"{SUN_PATH_MAX} bytes (AF_UNIX limit)"
            )

    # ---- state ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """VPP's pid once started (also after it exited), else None."""
        return None if self._res.proc is None else self._res.proc.pid

    @property
    def returncode(self) -> int | None:
        """VPP's exit status once it exited (negative: killed by that signal), else None."""
        return None if self._res.proc is None else self._res.proc.poll()

    @property
    def startup_seconds(self) -> float | None:
        """How long `start` waited for VPP to become ready."""
        return self._startup_seconds

    def is_running(self) -> bool:
        return self._res.proc is not None and self._res.proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped" if self._started else "new"
        return f"<VppInstance {state} pid={self.pid} dir={self._dir}>"

    # ---- config -----------------------------------------------------------------------

    def startup_config(self) -> str:
        """The text of startup.conf (available before `start` only when a directory was given,
        since the paths in it are the instance directory's)."""
        d = self.directory
        unix = [
            "nodaemon",
            "nosyslog",  # warnings and errors go to stderr, i.e. console.log
            "nocolor",
            f"cli-listen {d / 'cli.sock'}",
            f"runtime-dir {d}",
            f"log {d / 'vpp.log'}",
        ]
        if self.poll_sleep_usec is not None:
            unix.append(f"poll-sleep-usec {int(self.poll_sleep_usec)}")
        plugin_lines = [
            f"path {self.install.plugin_dir}",
            "plugin default { disable }",
            *(f"plugin {p} {{ enable }}" for p in self.plugins),
        ]
        session = ["enable", "use-app-socket-api", *self.session_options]

        def section(name: str, items: Sequence[str]) -> str:
            return name + " {\n" + "".join(f"  {i}\n" for i in items) + "}\n"

        parts = [
            section("unix", unix),
            section("socksvr", [f"socket-name {d / 'api.sock'}"]),
            section("statseg", [f"socket-name {d / 'stats.sock'}", "page-size 4k"]),
            section("api-segment", [f"prefix {self.api_prefix}"]),
            section("memory", [f"main-heap-size {self.main_heap_size}", "main-heap-page-size 4k"]),
            section("buffers", [f"buffers-per-numa {self.buffers_per_numa}", "page-size 4k"]),
            section("plugins", plugin_lines),
            section("session", session),
        ]
        if self.workers:
            parts.append(section("cpu", [f"workers {self.workers}"]))
        if self.extra:
            parts.append(self.extra.rstrip("\n") + "\n")
        return "".join(parts)

    def _check_plugins(self) -> None:
        missing = [p for p in self.plugins if not (self.install.plugin_dir / p).is_file()]
        if missing:
            raise VppStartError(
                f"plugin(s) not found in {self.install.plugin_dir}: {', '.join(missing)} "
                f"(available: {', '.join(self.install.plugins()) or 'none'})"
            )

    # ---- start / stop -----------------------------------------------------------------

    def start(self) -> VppInstance:
        """Start VPP and wait until its CLI socket and default app socket exist and the CLI
        answers.  Raises VppStartError (with the tail of VPP's output) if VPP exits or is not
        ready within `startup_timeout`; the half-started VPP is then stopped and cleaned up."""
        if self._started:
            raise VppError("this VppInstance was already started (make a new one)")
        self._started = True
        self._check_plugins()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="pyvcl-vpp-"))
            if not self.keep_dir:
                self._res.remove_dir = self._dir
        else:
            self._dir.mkdir(parents=True, exist_ok=True)
        try:
            self._check_dir(self._dir)
            for attempt in range(1 + STARVED_START_RETRIES):
                self._launch()
                try:
                    self._wait_ready()
                    break
                except VppStartError:
                    if attempt == STARVED_START_RETRIES or not self._starved_at_start():
                        raise
                    log.warning("VPP aborted at start, its worker starved of CPU: starting again")
                    self._reap()
        except BaseException:
            self.stop(timeout=1.0)  # a VPP that failed to start needs no graceful shutdown
            raise
        return self

    def _console_size(self) -> int:
        try:
            return self.console_path.stat().st_size
        except OSError:
            return 0

    def _starved_at_start(self) -> bool:
        """Whether VPP died at start because a worker thread did not reach the barrier within
        VPP's 1 s (BARRIER_SYNC_TIMEOUT, release builds): on a loaded 2-core machine a busy
        worker can miss it.  That is the machine, not the test, so the start is tried again."""
        proc = self._res.proc
        if proc is None or proc.poll() is None:
            return False
        with open(self.console_path, "rb") as f:
            f.seek(self._console_at_launch)
            return b"worker thread deadlock" in f.read()

    def _reap(self) -> None:
        proc, self._res.proc = self._res.proc, None
        if proc is not None:
            proc.wait()

    def _launch(self) -> None:
        self.startup_conf.write_text(self.startup_config())
        self._console_at_launch = self._console_size()
        preexec = None
        if self.die_with_parent and _load_prctl() is not None:
            preexec = _die_with_parent
        with open(self.console_path, "ab") as console:
            self._res.proc = subprocess.Popen(
                [str(self.install.vpp), "-c", str(self.startup_conf)],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self.install.env(),
                start_new_session=True,  # a ^C meant for the test runner does not reach VPP
                preexec_fn=preexec,
            )

    def _wait_ready(self) -> None:
        proc = self._res.proc
        assert proc is not None
        t0 = time.monotonic()
        deadline = t0 + self.startup_timeout
        waiting_for: list[str] = []
        last_probe = ""
        while True:
            rc = proc.poll()
            if rc is not None:
                raise VppStartError(
                    f"VPP exited with status {rc} {time.monotonic() - t0:.1f} s after start "
                    f"(before it was ready)\n{self._failure_details()}"
                )
            waiting_for = [
                str(p)
                for p in (self.cli_socket, self.app_socket())
                if not (p.exists() and stat.S_ISSOCK(p.stat().st_mode))
            ]
            if not waiting_for:
                try:
                    self._vppctl("show version", timeout=5.0)
                except VppCliError as exc:
                    last_probe = f"{exc} {exc.output}".strip()
                else:
                    self._startup_seconds = time.monotonic() - t0
                    return
            if time.monotonic() >= deadline:
                what = ", ".join(waiting_for) if waiting_for else f"CLI answer ({last_probe})"
                raise VppStartError(
                    f"VPP (pid {proc.pid}) was not ready after {self.startup_timeout:g} s; "
                    f"still waiting for {what}\n{self._failure_details()}"
                )
            time.sleep(0.05)

    def _failure_details(self, lines: int = 30) -> str:
        return f"{self.log_tail(lines)}\n--- startup.conf ---\n{_read(self.startup_conf).rstrip()}"

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop VPP (SIGTERM, then SIGKILL after `timeout` s) and remove the temp directory.

        Idempotent.  Returns VPP's exit status (None if it never started).  The log and console
        text stay readable through `log_text` / `console_text` after the directory is gone."""
        res = self._res
        if not res.released:
            if res.proc is not None:
                _terminate(res.proc, timeout)
            if self._dir is not None and self._final_log is None:
                self._final_log = _read(self.log_path)
                self._final_console = _read(self.console_path)
            _release(res, timeout)
            self._finalizer.detach()
        return self.returncode

    def __enter__(self) -> VppInstance:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- logs -------------------------------------------------------------------------

    def log_text(self) -> str:
        """VPP's log file (``unix { log }``), also after `stop` removed the directory."""
        if self._final_log is not None:
            return self._final_log
        return "" if self._dir is None else _read(self.log_path)

    def console_text(self) -> str:
        """VPP's stdout and stderr: config errors, warnings (``nosyslog``), crash reports."""
        if self._final_console is not None:
            return self._final_console
        return "" if self._dir is None else _read(self.console_path)

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` non-blank lines of the console and of the log, labelled."""
        return (
            f"--- VPP console (stdout+stderr), last {lines} lines ---\n"
            f"{_tail(self.console_text(), lines)}\n"
            f"--- VPP log ({self._dir and self.log_path}), last {lines} lines ---\n"
            f"{_tail(self.log_text(), lines)}"
        )

    # ---- CLI --------------------------------------------------------------------------

    def _vppctl(self, cmd: str, timeout: float) -> str:
        argv = [str(self.install.vppctl), "-s", str(self.cli_socket), cmd]
        try:
            res = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=self.install.env(),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace")
            raise VppCliError(f"`{cmd}`: vppctl timed out after {timeout} s", cmd, out) from exc
        out = res.stdout.decode(errors="replace").replace("\r\n", "\n")
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise VppCliError(
                f"`{cmd}`: vppctl exited with {res.returncode}: {err}", cmd, out + err
            )
        return out.rstrip()

    def cli(self, cmd: str, *, timeout: float = 10.0, check: bool = True) -> str:
        """Run a CLI command through ``vppctl -s DIR/cli.sock`` and return its output (line
        ends normalised to ``\\n``, trailing whitespace stripped).

        Raises VppCliError if vppctl fails or times out, and (with `check`) if the output is
        VPP's way of rejecting the command (``unknown input ...``); VppError if VPP is not
        running.  Commands that report failure in other words are not caught by `check`."""
        if not self.is_running():
            raise VppError(
                f"VPP is not running (status {self.returncode}); cannot run `{cmd}`\n"
                f"{self.log_tail()}"
            )
        try:
            out = self._vppctl(cmd, timeout)
        except VppCliError as exc:
            if not self.is_running():
                raise VppError(
                    f"VPP died while running `{cmd}` (status {self.returncode})\n{self.log_tail()}"
                ) from exc
            raise
        if check and _CLI_ERROR_RE.search(out):
            raise VppCliError(f"`{cmd}` failed: {out}", cmd, out)
        return out

    # ---- host-stack setups and C VCL apps (`pyvcl.testing.hoststack`) ------------------

    add_app_namespace = hoststack.add_app_namespace
    setup_two_vrf_tcp = hoststack.setup_two_vrf_tcp
    vcl_conf = hoststack.vcl_conf
    vcl_env = hoststack.vcl_env
