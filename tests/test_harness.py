"""Tests of the private-VPP harness (pyvcl.testing).

The first part needs no VPP (fake install prefixes, the pytest plugin's skip path); the rest
runs a real VPP and is skipped, with the reason, when none is found.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import pyvcl.testing
from pyvcl.testing import vpp as harness
from pyvcl.testing.plugin import VppFactory
from pyvcl.testing.streams import CheckedThread
from pyvcl.testing.vpp import (
    DEFAULT_PLUGINS,
    STARVED_START_RETRIES,
    VppCliError,
    VppError,
    VppInstall,
    VppInstance,
    VppStartError,
    find_vpp,
    why_missing,
)
from pyvcl.vppversion import detect_version
from pyvcl.wire import SUPPORTED_VERSIONS

REPO_ROOT = Path(pyvcl.testing.__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Without VPP: fake install prefixes


def _multiarch() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu")


def make_fake_prefix(root: Path, *, libdir: str | None = None, plugins: bool = True) -> Path:
    """A directory laid out like a VPP install; bin/vpp prints a version and counts calls."""
    prefix = root / "fakevpp"
    (prefix / "bin").mkdir(parents=True)
    calls = prefix / "calls"
    scripts = {
        "vpp": f'#!/bin/sh\necho x >> "{calls}"\necho "vpp v26.06-fake built by test"\n',
        "vppctl": "#!/bin/sh\nexit 0\n",
        "vcl_test_client": "#!/bin/sh\nexit 0\n",
    }
    for name, body in scripts.items():
        path = prefix / "bin" / name
        path.write_text(body)
        path.chmod(0o755)
    lib = prefix / "lib" / (libdir if libdir is not None else _multiarch())
    lib.mkdir(parents=True)
    if plugins:
        (lib / "vpp_plugins").mkdir()
        for name in (*DEFAULT_PLUGINS, "dpdk"):
            (lib / "vpp_plugins" / f"{name}_plugin.so").write_bytes(b"")
    return prefix


@pytest.fixture
def no_vpp_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PYVCL_VPP_PREFIX and a PATH holding only an empty directory."""
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.delenv(harness.ENV_PREFIX, raising=False)
    monkeypatch.setenv("PATH", str(empty))
    return empty


# -- threads whose checks reach the test ---------------------------------------------------------
def test_checked_thread_returns_the_value() -> None:
    assert CheckedThread(lambda a, b: a + b, 2, 3).result(5) == 5


def test_checked_thread_hands_a_failed_assert_to_the_test() -> None:
    def check() -> None:
        assert 1 + 1 == 3, "the server saw something wrong"

    with pytest.raises(AssertionError, match="the server saw something wrong"):
        CheckedThread(check).result(5)


def test_checked_thread_error_wins_over_the_blocks() -> None:
    """A client that times out because its server failed a check shows the server's assert."""

    def serve() -> None:
        seen = 1
        assert seen == 2, "server check failed"

    with (
        pytest.raises(AssertionError, match="server check failed") as caught,
        CheckedThread(serve, timeout=5) as t,
    ):
        t.join(5)
        raise TimeoutError("client gave up")
    assert isinstance(caught.value.__context__, TimeoutError)


def test_checked_thread_that_hangs_fails_the_test() -> None:
    stop = threading.Event()
    t = CheckedThread(stop.wait, 30, name="sleeper")
    with pytest.raises(AssertionError, match="sleeper still running"):
        t.result(0.05)
    stop.set()
    assert t.result(5) is True


@pytest.fixture
def fake_install(tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch) -> VppInstall:
    prefix = make_fake_prefix(tmp_path)
    monkeypatch.setenv(harness.ENV_PREFIX, str(prefix))
    inst = find_vpp()
    assert inst is not None, why_missing()
    return inst


def test_find_vpp_from_env_prefix(
    tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch
):
    prefix = make_fake_prefix(tmp_path)
    monkeypatch.setenv(harness.ENV_PREFIX, str(prefix))
    inst = find_vpp()
    assert inst is not None
    lib = prefix / "lib" / _multiarch()
    assert inst.prefix == prefix
    assert inst.vpp == prefix / "bin" / "vpp"
    assert inst.vppctl == prefix / "bin" / "vppctl"
    assert inst.lib_dir == lib
    assert inst.plugin_dir == lib / "vpp_plugins"
    assert inst.ldpreload == lib / "libvcl_ldpreload.so"
    assert "hs_apps" in inst.plugins() and "dpdk" in inst.plugins()
    assert why_missing() == ""


def test_find_vpp_lib64_layout(tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch):
    prefix = make_fake_prefix(tmp_path, libdir="")  # prefix/lib/vpp_plugins
    monkeypatch.setenv(harness.ENV_PREFIX, str(prefix))
    inst = find_vpp()
    assert inst is not None
    assert inst.plugin_dir == prefix / "lib" / "vpp_plugins"


def test_env_prefix_not_an_install(
    tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch
):
    # A vpp on PATH must not be used instead of a broken PYVCL_VPP_PREFIX.
    good = make_fake_prefix(tmp_path)
    monkeypatch.setenv("PATH", str(good / "bin"))
    monkeypatch.setenv(harness.ENV_PREFIX, str(tmp_path / "nowhere"))
    assert find_vpp() is None
    reason = why_missing()
    assert "PYVCL_VPP_PREFIX" in reason
    assert str(tmp_path / "nowhere" / "bin" / "vpp") in reason


def test_env_prefix_without_plugins(
    tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch
):
    prefix = make_fake_prefix(tmp_path, plugins=False)
    monkeypatch.setenv(harness.ENV_PREFIX, str(prefix))
    assert find_vpp() is None
    assert "vpp_plugins" in why_missing()


def test_find_vpp_on_path_through_symlink(
    tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch
):
    prefix = make_fake_prefix(tmp_path)
    links = tmp_path / "links"
    links.mkdir()
    (links / "vpp").symlink_to(prefix / "bin" / "vpp")
    monkeypatch.setenv("PATH", f"{no_vpp_env}:{links}")
    inst = find_vpp()
    assert inst is not None, why_missing()
    assert inst.prefix == prefix.resolve()
    assert inst.vppctl == prefix.resolve() / "bin" / "vppctl"


def test_env_prefix_wins_over_path(
    tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch
):
    on_path = make_fake_prefix(tmp_path / "a")
    chosen = make_fake_prefix(tmp_path / "b")
    monkeypatch.setenv("PATH", str(on_path / "bin"))
    monkeypatch.setenv(harness.ENV_PREFIX, str(chosen))
    inst = find_vpp()
    assert inst is not None and inst.prefix == chosen


def test_vpp_on_path_outside_bin(tmp_path: Path, no_vpp_env: Path, monkeypatch: pytest.MonkeyPatch):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "vpp").write_text("#!/bin/sh\n")
    (odd / "vpp").chmod(0o755)
    monkeypatch.setenv("PATH", str(odd))
    assert find_vpp() is None
    assert "not in a bin/ directory" in why_missing()


def test_nothing_found_reason(no_vpp_env: Path):
    assert find_vpp() is None
    reason = why_missing()
    assert "PYVCL_VPP_PREFIX is not set" in reason
    assert "no `vpp` on PATH" in reason


def test_version_and_bin(fake_install: VppInstall):
    assert fake_install.version() == "vpp v26.06-fake built by test"
    assert fake_install.version() == "vpp v26.06-fake built by test"
    calls = (fake_install.prefix / "calls").read_text().splitlines()
    assert len(calls) == 1  # cached
    assert fake_install.bin("vcl_test_client") == fake_install.prefix / "bin" / "vcl_test_client"
    with pytest.raises(FileNotFoundError, match="vpp_echo"):
        fake_install.bin("vpp_echo")


def test_startup_config(fake_install: VppInstall, tmp_path: Path):
    d = tmp_path / "inst"
    a = VppInstance(
        fake_install,
        directory=d,
        workers=1,
        poll_sleep_usec=25,
        session_options=["use-private-rx-mqs"],
        extra="logging { default-log-level debug }",
    )
    b = VppInstance(fake_install, directory=tmp_path / "other")
    conf = a.startup_config()
    for line in (
        f"cli-listen {d}/cli.sock",
        f"runtime-dir {d}",
        f"log {d}/vpp.log",
        "poll-sleep-usec 25",
        f"socket-name {d}/api.sock",
        f"socket-name {d}/stats.sock",
        f"prefix {a.api_prefix}",
        "main-heap-size 1G",
        "main-heap-page-size 4k",
        "buffers-per-numa 16384",
        f"path {fake_install.plugin_dir}",
        "plugin default { disable }",
        "plugin hs_apps_plugin.so { enable }",
        "use-private-rx-mqs",
        "workers 1",
        "logging { default-log-level debug }",
    ):
        assert line in conf, line
    assert "dpdk" not in conf
    assert "session {\n  enable\n  use-app-socket-api\n" in conf
    assert sum(line.endswith("{ enable }") for line in conf.splitlines()) == len(DEFAULT_PLUGINS)
    assert a.api_prefix != b.api_prefix
    assert "cpu" not in b.startup_config() and "poll-sleep-usec 10" in b.startup_config()
    assert a.app_socket() == d / "app_ns_sockets" / "default"
    assert a.app_socket("srv") == d / "app_ns_sockets" / "srv"
    assert a.pid is None and not a.is_running()


@pytest.mark.parametrize(
    ("console", "launches"),
    [
        ("vlib_worker_thread_barrier_release: worker thread deadlock", 1 + STARVED_START_RETRIES),
        ("some other failure", 1),
    ],
)
def test_start_retries_only_a_cpu_starved_abort(
    fake_install: VppInstall, console: str, launches: int
) -> None:
    """A VPP whose worker missed the 1 s start barrier on a loaded machine is started again
    (at most STARVED_START_RETRIES times); any other death at start is reported at once."""
    calls = fake_install.prefix / "calls"
    fake_install.vpp.write_text(f'#!/bin/sh\necho x >> "{calls}"\necho "{console}"\nexit 134\n')
    inst = VppInstance(fake_install, plugins=["hs_apps"])
    with pytest.raises(VppStartError, match="exited with status 134"):
        inst.start()
    assert calls.read_text().count("x") == launches


def test_unknown_plugin_is_rejected(fake_install: VppInstall):
    inst = VppInstance(fake_install, plugins=["hs_apps", "no_such"])
    with pytest.raises(VppStartError, match=r"no_such_plugin\.so.*available: .*hs_apps"):
        inst.start()
    assert inst.pid is None
    inst.stop()  # harmless


def test_bad_directory(fake_install: VppInstall, tmp_path: Path):
    with pytest.raises(ValueError, match="too long"):
        VppInstance(fake_install, directory=tmp_path / ("d" * 120))
    with pytest.raises(ValueError, match="config parser"):
        VppInstance(fake_install, directory=tmp_path / "with space")


def test_vcl_conf(fake_install: VppInstall, tmp_path: Path):
    inst = VppInstance(fake_install, directory=tmp_path / "inst")
    path = inst.vcl_conf(tmp_path / "vcl.conf", namespace_id="srv", namespace_secret=1234)
    text = path.read_text()
    assert text.startswith("vcl {\n") and text.endswith("}\n")
    lines = [line.strip() for line in text.splitlines()]
    assert f"app-socket-api {tmp_path / 'inst' / 'app_ns_sockets' / 'srv'}" in lines
    for line in ("app-scope-local", "app-scope-global", "use-mq-eventfd", "rx-fifo-size 4000000"):
        assert line in lines
    assert "namespace-id srv" in lines and "namespace-secret 1234" in lines
    text = inst.vcl_conf(
        tmp_path / "v2.conf", app_scope_global=False, rx_fifo_size=65536, huge_page=True
    ).read_text()
    assert "app-scope-global" not in text and "rx-fifo-size 65536" in text
    assert "huge_page" in text and "app_ns_sockets/default" in text
    with pytest.raises(ValueError, match="unknown VCL option"):
        inst.vcl_conf(tmp_path / "v3.conf", rx_fifo=1)
    env = inst.vcl_env(path)
    assert env["VCL_CONFIG"] == str(path)
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(fake_install.lib_dir)


_INNER_TESTS = """
    def test_uses_vpp(vpp):
        assert vpp.is_running()
        assert False, "deliberate"

    def test_uses_factory(vpp_factory):
        vpp_factory()

    def test_plain():
        pass
"""


def test_plugin_skips_without_vpp(pytester: pytest.Pytester, no_vpp_env: Path):
    pytester.makeconftest('pytest_plugins = ["pyvcl.testing.plugin"]')
    pytester.makepyfile(textwrap.dedent(_INNER_TESTS))
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*PYVCL_VPP_PREFIX is not set*"])
    # the fixtures' users carry the `vpp` marker
    result = pytester.runpytest("-m", "vpp", "-rs")
    result.assert_outcomes(skipped=2, deselected=1)
    result = pytester.runpytest("-m", "not vpp")
    result.assert_outcomes(passed=1, deselected=2)


def test_plugin_skips_where_pyvcl_cannot_attach(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    """On a machine whose VPP layouts pyvcl does not know (aarch64), VPP tests skip with the
    reason instead of failing at attach, whether or not a VPP is installed."""
    from pyvcl.wire import abi

    monkeypatch.setattr(abi, "MACHINE", "aarch64")  # the inner run is in this process
    pytester.makeconftest('pytest_plugins = ["pyvcl.testing.plugin"]')
    pytester.makepyfile(textwrap.dedent(_INNER_TESTS))
    result = pytester.runpytest_inprocess("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*layouts on x86_64 only, not on aarch64*"])


# --------------------------------------------------------------------------------------------
# With a real VPP


def _gone(pid: int) -> bool:
    """No such process, or only a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _vpp_processes_using(directory: Path) -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info.get("cmdline") or []
        if any(str(directory) in arg for arg in cmdline):
            procs.append(p)
    return procs


def test_show_version(vpp: VppInstance, vpp_install: VppInstall):
    # The release pyvcl reads off the running VPP (its mapped libvlib) is the one it says.
    assert vpp.pid is not None
    release = detect_version(vpp.pid)
    assert release in SUPPORTED_VERSIONS
    out = vpp.cli("show version")
    assert release in out
    assert release in vpp_install.version()
    assert vpp.startup_seconds is not None and vpp.startup_seconds < 30


def test_app_socket_exists(vpp: VppInstance):
    sock = vpp.app_socket()
    assert sock == vpp.directory / "app_ns_sockets" / "default"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_ISSOCK(vpp.cli_socket.stat().st_mode)


def test_show_app(vpp: VppInstance):
    out = vpp.cli("show app")
    assert "Index" in out or out == "", out
    vpp.cli("show session")


def test_cli_error_is_raised(vpp: VppInstance):
    with pytest.raises(VppCliError, match="unknown input") as info:
        vpp.cli("show no-such-thing")
    assert info.value.cmd == "show no-such-thing"
    assert "unknown input" in vpp.cli("show no-such-thing", check=False)


def test_app_namespace(vpp: VppInstance):
    sock = vpp.add_app_namespace("ns1", 42)
    assert sock == vpp.app_socket("ns1")
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert "ns1" in vpp.cli("show app ns")


def test_logs_are_captured(vpp: VppInstance):
    assert "Start: PID" in vpp.log_text() or vpp.log_text() == ""
    assert vpp.log_tail().startswith("--- VPP console")


def test_two_instances_at_once(vpp_factory: VppFactory):
    a = vpp_factory()
    b = vpp_factory()
    assert a.is_running() and b.is_running()
    assert a.pid != b.pid
    assert a.directory != b.directory and a.api_prefix != b.api_prefix
    assert a.app_socket() != b.app_socket()
    for inst in (a, b):
        assert any(v in inst.cli("show version") for v in SUPPORTED_VERSIONS)
        assert stat.S_ISSOCK(inst.app_socket().stat().st_mode)
    a.add_app_namespace("only-a", 7)
    assert "only-a" in a.cli("show app ns")
    assert "only-a" not in b.cli("show app ns")


def test_stop_leaves_nothing(vpp_install: VppInstall):
    inst = VppInstance(vpp_install).start()
    pid, directory, prefix = inst.pid, inst.directory, inst.api_prefix
    assert pid is not None and not _gone(pid)
    assert Path(psutil.Process(pid).exe()) == vpp_install.vpp.resolve()
    status = inst.stop()
    assert status is not None
    assert not inst.is_running()
    assert _gone(pid)
    assert not directory.exists()
    assert not _vpp_processes_using(directory)
    assert not list(Path("/dev/shm").glob(f"{prefix}-*"))
    assert inst.stop() == status  # idempotent
    assert "Start: PID" in inst.log_text()  # kept in memory after the directory went
    with pytest.raises(VppError, match="not running"):
        inst.cli("show version")


def test_context_manager_and_given_directory(vpp_install: VppInstall, tmp_path: Path):
    d = tmp_path / "mine"
    with VppInstance(vpp_install, directory=d) as inst:
        assert inst.directory == d
        pid = inst.pid
        assert pid is not None
        assert (d / "startup.conf").is_file()
    assert pid is not None and _gone(pid)
    assert (d / "vpp.log").is_file()  # a given directory is left in place


def test_workers_and_session_options(vpp_factory: VppFactory):
    inst = vpp_factory(workers=1, session_options=["use-private-rx-mqs"])
    out = inst.cli("show threads")
    assert "vpp_wk_0" in out, out


def test_broken_config_fails_fast_with_log(vpp_install: VppInstall):
    inst = VppInstance(vpp_install, extra="bogus-section { nonsense }")
    t0 = time.monotonic()
    with pytest.raises(VppStartError) as info:
        inst.start()
    assert time.monotonic() - t0 < 15
    msg = str(info.value)
    assert "exited with status" in msg
    assert "bogus-section" in msg  # VPP's own complaint, from the console tail
    assert "--- VPP console" in msg
    assert inst.pid is not None and _gone(inst.pid)
    assert not inst.directory.exists()


def test_unknown_plugin_with_real_install(vpp_install: VppInstall):
    with pytest.raises(VppStartError, match=r"not_a_plugin_plugin\.so"):
        VppInstance(vpp_install, plugins=["hs_apps", "not_a_plugin"]).start()


def test_startup_timeout_is_bounded(vpp_install: VppInstall):
    # Far too short a timeout: start() gives up, and the VPP it started is gone (VPP ignores a
    # SIGTERM that arrives before its main loop runs, so this exercises the SIGKILL fallback).
    inst = VppInstance(vpp_install, startup_timeout=0.05)
    t0 = time.monotonic()
    with pytest.raises(VppStartError, match="not ready after") as info:
        inst.start()
    assert time.monotonic() - t0 < 15
    assert "still waiting for" in str(info.value)
    assert inst.pid is not None and _gone(inst.pid)
    assert not inst.directory.exists()


def test_two_vrf_topology_with_c_apps(vpp_factory: VppFactory, tmp_path: Path):
    inst = vpp_factory()
    topo = inst.setup_two_vrf_tcp()
    assert topo.server_interface != topo.client_interface
    for sock in (topo.server_socket, topo.client_socket):
        assert stat.S_ISSOCK(sock.stat().st_mode)
    ns_out = inst.cli("show app ns")
    assert topo.server_ns in ns_out and topo.client_ns in ns_out
    srv_conf = inst.vcl_conf(
        tmp_path / "srv.conf",
        namespace_id=topo.server_ns,
        namespace_secret=topo.server_secret,
        app_scope_local=False,
    )
    cli_conf = inst.vcl_conf(
        tmp_path / "cli.conf",
        namespace_id=topo.client_ns,
        namespace_secret=topo.client_secret,
        app_scope_local=False,
    )
    server = subprocess.Popen(
        [str(inst.install.bin("vcl_test_server")), "12345"],
        env=inst.vcl_env(srv_conf),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while "12345" not in inst.cli("show session verbose"):
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "vcl_test_server did not listen"
            time.sleep(0.1)
        client = subprocess.run(
            [
                str(inst.install.bin("vcl_test_client")),
                "-U",
                "-N",
                "100",
                "-T",
                "65536",
                topo.server_addr,
                "12345",
            ],
            env=inst.vcl_env(cli_conf),
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = client.stdout + client.stderr
        assert client.returncode == 0, out
        assert "Gbps" in out, out
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_failure_report_has_vpp_log(pytester: pytest.Pytester, vpp_install: VppInstall):
    pytester.makeconftest('pytest_plugins = ["pyvcl.testing.plugin"]')
    pytester.makepyfile(textwrap.dedent(_INNER_TESTS))
    result = pytester.runpytest("-k", "uses_vpp")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*VPP pid * (running)*", "*--- VPP console*"])


def test_no_vpp_left_when_owner_exits(vpp_install: VppInstall, tmp_path: Path):
    """An instance never stopped explicitly is stopped at interpreter exit; one whose owner
    is SIGKILLed is killed by the kernel (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pyvcl.testing.vpp import VppInstance, find_vpp
        inst = VppInstance(find_vpp()).start()
        print(inst.pid, inst.directory, inst.api_prefix, flush=True)
        if sys.argv[1] == "hang":
            time.sleep(600)
        """
    )
    env = dict(os.environ, PYVCL_VPP_PREFIX=str(vpp_install.prefix))
    # 1. normal interpreter exit without stop()
    res = subprocess.run(
        [sys.executable, "-c", script, "exit"], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0, res.stderr
    pid_s, dir_s, _ = res.stdout.split()
    assert _gone(int(pid_s))
    assert not Path(dir_s).exists()
    # 2. owner killed with SIGKILL: no Python cleanup runs, the kernel kills VPP
    owner = subprocess.Popen(
        [sys.executable, "-c", script, "hang"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert owner.stdout is not None
    pid_s, dir_s, prefix = owner.stdout.readline().split()
    assert not _gone(int(pid_s))
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 10
    while not _gone(int(pid_s)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(int(pid_s))
    # files are left behind in that case (no cleanup code ran): remove them here
    shutil.rmtree(dir_s, ignore_errors=True)
    for leftover in Path("/dev/shm").glob(f"{prefix}-*"):
        leftover.unlink()
