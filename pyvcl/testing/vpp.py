"""Find a VPP install and run private, throw-away VPP instances for tests and benchmarks.

Nothing here touches a system VPP: every instance gets its own directory holding the CLI,
binary-API and stats sockets, the runtime dir (where the session layer creates
``app_ns_sockets/``), the log and the captured console, plus a unique ``api-segment`` prefix, so
several instances can run side by side.  Where VPP comes from:

* ``PYVCL_VPP_PREFIX`` -- an install prefix (``$PREFIX/bin/vpp``); when set it is the only
  place looked at, so a broken value is reported rather than silently replaced by another VPP;
* otherwise ``vpp`` on ``PATH``; the prefix is derived from the binary's real path
  (``prefix/bin/vpp``), so a symlink to an installed VPP works.

Typical use::

    install = find_vpp()
    with VppInstance(install) as vpp:
        print(vpp.cli("show version"))
        sock = vpp.app_socket()          # DIR/app_ns_sockets/default

Set ``PYVCL_VPP_KEEP_DIR=1`` to keep instance directories (logs, startup.conf) after stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

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

ENV_PREFIX = "PYVCL_VPP_PREFIX"
"""Environment variable naming a VPP install prefix (``$PYVCL_VPP_PREFIX/bin/vpp``)."""

ENV_KEEP_DIR = "PYVCL_VPP_KEEP_DIR"
"""When set to a non-empty value other than ``0``, instance directories are kept after stop."""

DEFAULT_PLUGINS: tuple[str, ...] = (
    "af_packet",
    "hs_apps",
    "http",
    "quic",
    "tlsopenssl",
    "unittest",
)
"""Plugins enabled by default (everything else is disabled)."""

HS_APPS: tuple[str, ...] = ("vcl_test_client", "vcl_test_server", "vpp_echo")
"""Host-stack test programs installed next to ``vpp``."""

_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_NS_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UNSAFE_CONF_CHARS = re.compile(r"[\s#{}]")
# How VPP's CLI reports a failed command: the text is all that vppctl passes on (it exits 0).
_CLI_ERROR_RE = re.compile(
    r"unknown input `|^unknown command|^(?:\S.*: )?unknown (?:interface|table) ", re.MULTILINE
)
# Keys of the `vcl { }` section that VCL (src/vcl/vcl_cfg.c, v26.06) understands.
_VCL_KEYS = frozenset(
    {
        "heapsize",
        "app-socket-api",
        "segment-size",
        "add-segment-size",
        "preallocated-fifo-pairs",
        "rx-fifo-size",
        "tx-fifo-size",
        "event-queue-size",
        "app-timeout",
        "session-timeout",
        "app-proxy-transport-tcp",
        "app-proxy-transport-udp",
        "app-scope-local",
        "app-scope-global",
        "huge_page",
        "use-mq-eventfd",
        "tls-engine",
        "multi-thread-workers",
        "app_original_dst",
        "namespace-secret",
        "namespace-id",
        "api-socket-name",
        "uid",
        "gid",
    }
)
_instance_counter = itertools.count()


class VppError(RuntimeError):
    """A private VPP instance could not be used (not running, CLI failed, ...)."""


class VppStartError(VppError):
    """VPP did not come up; the message carries the reason and the tail of its output."""


class VppCliError(VppError):
    """A CLI command failed; ``cmd`` and ``output`` say which and what VPP answered."""

    def __init__(self, message: str, cmd: str, output: str) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.output = output


# --------------------------------------------------------------------------------------------
# Finding an install


@dataclass
class VppInstall:
    """A VPP install: ``prefix/bin/vpp``, ``prefix/bin/vppctl`` and ``lib_dir/vpp_plugins``."""

    prefix: Path
    vpp: Path
    vppctl: Path
    lib_dir: Path
    plugin_dir: Path
    _version: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin"

    @property
    def ldpreload(self) -> Path:
        """``libvcl_ldpreload.so`` (LD_PRELOAD it to run a kernel-socket program over VCL)."""
        return self.lib_dir / "libvcl_ldpreload.so"

    def bin(self, name: str) -> Path:
        """Path of an installed program (e.g. one of `HS_APPS`); FileNotFoundError if absent."""
        path = self.bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{name} is not installed in {self.bin_dir}")
        return path

    def plugins(self) -> list[str]:
        """Short names of the plugins in `plugin_dir` (``hs_apps`` for ``hs_apps_plugin.so``)."""
        return sorted(p.name[: -len("_plugin.so")] for p in self.plugin_dir.glob("*_plugin.so"))

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for running this install's programs: `lib_dir` first on LD_LIBRARY_PATH."""
        env = dict(os.environ if base is None else base)
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{self.lib_dir}:{old}" if old else str(self.lib_dir)
        return env

    def version(self) -> str:
        """First line of ``vpp --version``, e.g. ``vpp v26.06-release built by ...`` (cached)."""
        if self._version is None:
            try:
                res = subprocess.run(
                    [str(self.vpp), "--version"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=self.env(),
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise VppError(f"`{self.vpp} --version` failed: {exc}") from exc
            out = res.stdout.strip()
            if res.returncode != 0 or not out:
                raise VppError(
                    f"`{self.vpp} --version` exited with {res.returncode}: "
                    f"{(res.stdout + res.stderr).strip()!r}"
                )
            self._version = out.splitlines()[0]
        return self._version


def _lib_dir_candidates(prefix: Path) -> list[Path]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    cands = [prefix / "lib" / str(multiarch), prefix / "lib64", prefix / "lib"]
    cands += sorted(p.parent for p in prefix.glob("lib*/*/vpp_plugins"))
    return list(dict.fromkeys(cands))


def _is_exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _install_at(prefix: Path) -> tuple[VppInstall | None, str]:
    """The install at `prefix`, or None and what is wrong with it."""
    vpp = prefix / "bin" / "vpp"
    vppctl = prefix / "bin" / "vppctl"
    if not _is_exe(vpp):
        return None, f"{vpp} does not exist or is not executable"
    if not _is_exe(vppctl):
        return None, f"{vppctl} does not exist or is not executable"
    cands = _lib_dir_candidates(prefix)
    for lib in cands:
        if (lib / "vpp_plugins").is_dir():
            return VppInstall(prefix, vpp, vppctl, lib, lib / "vpp_plugins"), ""
    tried = ", ".join(str(c / "vpp_plugins") for c in cands)
    return None, f"no plugin directory under {prefix} (tried {tried})"


def _locate() -> tuple[VppInstall | None, str]:
    env_prefix = os.environ.get(ENV_PREFIX)
    if env_prefix:
        prefix = Path(env_prefix).expanduser()
        inst, problem = _install_at(prefix.resolve())
        if inst is None:
            return None, f"{ENV_PREFIX}={env_prefix} is not a usable VPP install: {problem}"
        return inst, ""
    found = shutil.which("vpp")
    if found is None:
        return None, (
            f"no VPP found: {ENV_PREFIX} is not set and there is no `vpp` on PATH; "
            f"set {ENV_PREFIX} to a VPP install prefix (the directory holding bin/vpp)"
        )
    real = Path(found).resolve()
    if real.parent.name != "bin":
        return None, (
            f"`vpp` on PATH is {found} (real path {real}), which is not in a bin/ directory, "
            f"so no install prefix can be derived; set {ENV_PREFIX} instead"
        )
    inst, problem = _install_at(real.parent.parent)
    if inst is None:
        return None, f"`vpp` on PATH is {found} (real path {real}), but {problem}"
    return inst, ""


def find_vpp() -> VppInstall | None:
    """The VPP install named by ``PYVCL_VPP_PREFIX``, else the one ``vpp`` on PATH belongs to.

    None when there is none; `why_missing` then says what was looked for and where.
    """
    return _locate()[0]


def why_missing() -> str:
    """Why `find_vpp` finds nothing (a skip reason), or ``""`` when it does find an install."""
    return _locate()[1]


# --------------------------------------------------------------------------------------------
# Running an instance


@dataclass(frozen=True)
class TwoVrfTcp:
    """What `VppInstance.setup_two_vrf_tcp` built: two loopbacks in two VRFs, one app
    namespace per side.  The server attaches through `server_socket` and listens on
    `server_addr`; the client attaches through `client_socket` and connects to `server_addr`."""

    server_ns: str
    client_ns: str
    server_secret: int
    client_secret: int
    server_addr: str
    client_addr: str
    server_interface: str
    client_interface: str
    server_table: int
    client_table: int
    server_socket: Path
    client_socket: Path


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
        if len(os.fsencode(longest)) > _SUN_PATH_MAX:
            raise ValueError(
                f"directory {d} is too long: socket paths under it would exceed "
                f"{_SUN_PATH_MAX} bytes (AF_UNIX limit)"
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
            self._launch()
            self._wait_ready()
        except BaseException:
            self.stop(timeout=1.0)  # a VPP that failed to start needs no graceful shutdown
            raise
        return self

    def _launch(self) -> None:
        self.startup_conf.write_text(self.startup_config())
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

    def _configure(self, cmd: str, *, expect: str | None = None) -> str:
        """A configuration command: its output must be empty (or match `expect`)."""
        out = self.cli(cmd).strip()
        ok = bool(re.fullmatch(expect, out)) if expect is not None else out == ""
        if not ok:
            raise VppCliError(f"`{cmd}` failed: {out!r}", cmd, out)
        return out

    def _wait_socket(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (path.exists() and stat.S_ISSOCK(path.stat().st_mode)):
            if not self.is_running():
                raise VppError(f"VPP exited while waiting for {path}\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise VppError(f"{path} did not appear within {timeout} s\n{self.log_tail()}")
            time.sleep(0.02)

    # ---- host-stack setups ------------------------------------------------------------

    def add_app_namespace(
        self,
        ns_id: str,
        secret: int,
        interface: str | None = None,
        *,
        ip4_fib_id: int | None = None,
        timeout: float = 10.0,
    ) -> Path:
        """``app ns add id NS secret N`` bound to `interface` (else to IPv4 table `ip4_fib_id`,
        default 0: VPP requires one or the other); waits for and returns its app socket."""
        if not _NS_ID_RE.match(ns_id):
            raise ValueError(f"namespace id {ns_id!r} must match {_NS_ID_RE.pattern}")
        sock = self.app_socket(ns_id)
        if len(os.fsencode(sock)) > _SUN_PATH_MAX:
            raise ValueError(f"app socket path {sock} exceeds {_SUN_PATH_MAX} bytes")
        cmd = f"app ns add id {ns_id} secret {int(secret)}"
        if interface is not None:
            cmd += f" if {interface}"
        else:
            cmd += f" ip4-fib-id {0 if ip4_fib_id is None else int(ip4_fib_id)}"
        self._configure(cmd)
        self._wait_socket(sock, timeout)
        return sock

    def setup_two_vrf_tcp(
        self,
        *,
        server_ns: str = "srv",
        client_ns: str = "cli",
        server_secret: int = 1234,
        client_secret: int = 5678,
        server_table: int = 1,
        client_table: int = 2,
        server_addr: str = "127.0.10.1",
        client_addr: str = "127.0.20.1",
        prefix_len: int = 24,
    ) -> TwoVrfTcp:
        """Topology 2 of docs (TCP through VPP's stack on one VPP): two loopbacks in two VRFs
        joined by cross-table routes, app namespace `server_ns` on the first and `client_ns`
        on the second.  Returns the names, addresses and app sockets."""
        srv_if = self._configure("create loopback interface", expect=r"loop\d+")
        cli_if = self._configure("create loopback interface", expect=r"loop\d+")
        for table in (server_table, client_table):
            self._configure(f"ip table add {table}")
        self._configure(f"set interface ip table {srv_if} {server_table}")
        self._configure(f"set interface ip table {cli_if} {client_table}")
        for ifname in (srv_if, cli_if):
            self._configure(f"set interface state {ifname} up")
        self._configure(f"set interface ip address {srv_if} {server_addr}/{prefix_len}")
        self._configure(f"set interface ip address {cli_if} {client_addr}/{prefix_len}")
        self._configure(
            f"ip route add {client_addr}/32 table {server_table} via lookup in table {client_table}"
        )
        self._configure(
            f"ip route add {server_addr}/32 table {client_table} via lookup in table {server_table}"
        )
        srv_sock = self.add_app_namespace(server_ns, server_secret, srv_if)
        cli_sock = self.add_app_namespace(client_ns, client_secret, cli_if)
        return TwoVrfTcp(
            server_ns=server_ns,
            client_ns=client_ns,
            server_secret=server_secret,
            client_secret=client_secret,
            server_addr=server_addr,
            client_addr=client_addr,
            server_interface=srv_if,
            client_interface=cli_if,
            server_table=server_table,
            client_table=client_table,
            server_socket=srv_sock,
            client_socket=cli_sock,
        )

    # ---- C VCL apps -------------------------------------------------------------------

    def vcl_conf(self, path: str | os.PathLike[str], **opts: object) -> Path:
        """Write a ``vcl { }`` config for C VCL apps (and pyvcl's compatible reader).

        Keyword names are VCL keys with ``_`` for ``-`` (``rx_fifo_size=...``; ``huge_page``
        and ``app_original_dst`` keep their underscore).  True writes a bare flag, False/None
        drops the key.  Defaults: ``app-socket-api`` = this instance's socket for
        ``namespace_id`` (else ``default``), ``app-scope-local``, ``app-scope-global``,
        ``rx-fifo-size``/``tx-fifo-size`` 4000000, ``use-mq-eventfd``."""
        given: dict[str, object] = {}
        for name, value in opts.items():
            key = name if name in _VCL_KEYS else name.replace("_", "-")
            if key not in _VCL_KEYS:
                raise ValueError(f"unknown VCL option {name!r} (known: {sorted(_VCL_KEYS)})")
            given[key] = value
        ns = given.get("namespace-id")
        conf: dict[str, object] = {
            "app-socket-api": self.app_socket(str(ns) if ns else "default"),
            "app-scope-local": True,
            "app-scope-global": True,
            "rx-fifo-size": 4000000,
            "tx-fifo-size": 4000000,
            "use-mq-eventfd": True,
        }
        conf.update(given)
        lines = ["vcl {"]
        for key, value in conf.items():
            if value is None or value is False:
                continue
            lines.append(f"  {key}" if value is True else f"  {key} {value}")
        lines.append("}")
        out = Path(path)
        out.write_text("\n".join(lines) + "\n")
        return out

    def vcl_env(
        self,
        vcl_conf: str | os.PathLike[str],
        *,
        ldpreload: bool = False,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a C VCL app (``VCL_CONFIG``, LD_LIBRARY_PATH) or, with `ldpreload`,
        for an ordinary program run over VCL through ``libvcl_ldpreload.so``."""
        env = self.install.env(base)
        env["VCL_CONFIG"] = str(Path(vcl_conf).absolute())
        if ldpreload:
            lib = self.install.ldpreload
            if not lib.is_file():
                raise FileNotFoundError(f"{lib} does not exist")
            env["LD_PRELOAD"] = str(lib)
        return env
