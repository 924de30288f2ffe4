"""Unmodified programs under ``pyvcl run`` against a real VPP: issue 9's "Done means".

Every program is a separate process started as a user would start it (``python -m pyvcl run
--vcl-config CONF --no-fallback ...``), in its own session, its output in files, bounded by
a timeout and killed with its whole process group at the end of the test.  Two topologies
(`pyvcl.testing.hoststack.topology`): ``ct`` (cut-through, both apps on the default app
namespace, 127.0.0.1) and ``tcp`` (through VPP's TCP stack: two VRFs, one app namespace
each).  curl reaches VPP from a network namespace of the test's own (``vpp_netns``).
The programs are standard-library or aiohttp scripts under tests/programs/.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvcl.testing.hoststack import Topology, topology
from pyvcl.testing.netns import VethNamespace, why_unavailable
from pyvcl.testing.vpp import VppInstance

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
DOWNLOAD_SIZE = 32 << 20
FIRST_PORT = 31000
READY_S = 30.0
RUN_S = 30.0
DEATH_WAKE_S = 5.0  # a program whose VPP died must see its connections fail this quickly


# -- processes ---------------------------------------------------------------------------------
class Program:
    """A process in its own session with stdout/stderr in files; ``kill`` SIGKILLs its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"{self.name}: {' '.join(self.argv)}\n  exit {self.proc.poll()}\n"
            f"  stdout: {self.stdout()[-3000:]}\n  stderr: {self.stderr()[-3000:]}"
        )

    def wait_output(self, pattern: str, timeout: float = READY_S) -> re.Match[str]:
        """The first match of `pattern` in stdout; fails the test if none within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.stdout())
            if m:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} in the output of\n{self.describe()}")
            time.sleep(0.05)

    def finish(self, timeout: float = RUN_S) -> str:
        """Wait for the exit (failing the test after `timeout` s); stdout, status 0 asserted."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s:\n{self.describe()}")
        assert self.proc.returncode == 0, self.describe()
        return self.stdout()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def programs(tmp_path: Path) -> Iterator[Any]:
    """``programs(name, argv, env)`` starts a `Program`; all are killed after the test."""
    started: list[Program] = []

    def start(name: str, argv: list[str], env: dict[str, str]) -> Program:
        started.append(Program(name, argv, env, tmp_path))
        return started[-1]

    yield start
    for prog in started:
        prog.kill()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCL_", "PYVCL_"))}
    env.pop("LD_PRELOAD", None)
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def pyvcl_run(*options: str) -> list[str]:
    return [sys.executable, "-m", "pyvcl", "run", "--no-fallback", *options]


def last_json(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in {text!r}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- where programs run ------------------------------------------------------------------------
_ports = iter(range(FIRST_PORT, FIRST_PORT + 1000))


def kernel_listening_ports() -> set[int]:
    """The ports of the kernel's TCP listeners (/proc/net/tcp and tcp6, state 0A)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def next_port() -> int:
    """A port of this module's range that no kernel listener holds (so that its absence from
    the kernel's list while a program serves on it says something)."""
    busy = kernel_listening_ports()
    return next(p for p in _ports if p not in busy)


@pytest.fixture(scope="module")
def topologies(vpp: VppInstance) -> dict[str, Topology]:
    return {"ct": topology(vpp, "ct"), "tcp": topology(vpp, "tcp")}


class Placement:
    """A topology's server and client sides as `pyvcl run` command prefixes (a vcl.conf each)."""

    def __init__(self, vpp: VppInstance, topo: Topology, workdir: Path) -> None:
        self.topo = topo
        self.host = topo.host
        server_conf = vpp.vcl_conf(workdir / "server.conf", **topo.server.conf_opts)
        client_conf = vpp.vcl_conf(workdir / "client.conf", **topo.client.conf_opts)
        self.server = pyvcl_run("--vcl-config", str(server_conf))
        self.client = pyvcl_run("--vcl-config", str(client_conf))


@pytest.fixture(params=["ct", "tcp"])
def where(
    request: pytest.FixtureRequest,
    vpp: VppInstance,
    topologies: dict[str, Topology],
    tmp_path: Path,
) -> Placement:
    return Placement(vpp, topologies[request.param], tmp_path)


@pytest.fixture
def ct(vpp: VppInstance, topologies: dict[str, Topology], tmp_path: Path) -> Placement:
    return Placement(vpp, topologies["ct"], tmp_path)


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory holding ``blob.bin`` (DOWNLOAD_SIZE random bytes), and its sha256."""
    d = tmp_path_factory.mktemp("www")
    data = os.urandom(DOWNLOAD_SIZE)
    (d / "blob.bin").write_bytes(data)
    return d, hashlib.sha256(data).hexdigest()


def http_server(
    programs: Any, prefix: list[str], bind: str | None, port: int, directory: Path
) -> Program:
    argv = [*prefix, "-m", "http.server", str(port), "--directory", str(directory)]
    if bind is not None:
        argv += ["--bind", bind]
    server = programs("http-server", argv, base_env())
    server.wait_output(r"Serving HTTP on")
    return server


def assert_listener_in_vpp_not_kernel(vpp: VppInstance, port: int) -> None:
    # (``show app server``, not ``show session verbose``: VPP suppresses the latter's list
    # past 200 sessions, which the module's earlier tests leave behind in TIME_WAIT)
    servers = vpp.cli("show app server")
    assert re.search(rf":{port}->", servers), servers
    assert port not in kernel_listening_ports()


# -- http.server and urllib --------------------------------------------------------------------
def test_http_server_serves_32mib_to_urllib(
    vpp: VppInstance, where: Placement, programs: Any, blob: tuple[Path, str]
) -> None:
    directory, digest = blob
    port = next_port()
    http_server(programs, where.server, where.host, port, directory)
    assert_listener_in_vpp_not_kernel(vpp, port)
    url = f"http://{where.host}:{port}/blob.bin"
    client = programs("fetch", [*where.client, str(PROGRAMS / "fetch.py"), url], base_env())
    got = last_json(client.finish())
    assert got == {"status": 200, "bytes": DOWNLOAD_SIZE, "sha256": digest}


def test_http_server_without_bind_is_reached_on_127_0_0_1(
    vpp: VppInstance, ct: Placement, programs: Any, blob: tuple[Path, str]
) -> None:
    """No --bind: http.server binds what getaddrinfo(None) gives first ("::" dual-stack on an
    IPv6 host, else 0.0.0.0); an IPv4 client reaches it on 127.0.0.1."""
    directory, digest = blob
    port = next_port()
    server = http_server(programs, ct.server, None, port, directory)
    assert_listener_in_vpp_not_kernel(vpp, port)
    url = f"http://127.0.0.1:{port}/blob.bin"
    client = programs("fetch", [*ct.client, str(PROGRAMS / "fetch.py"), url], base_env())
    got = last_json(client.finish())
    assert got == {"status": 200, "bytes": DOWNLOAD_SIZE, "sha256": digest}, server.describe()


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on PATH")
def test_curl_in_a_network_namespace_downloads_through_af_packet(
    vpp: VppInstance, vpp_netns: VethNamespace, programs: Any, blob: tuple[Path, str]
) -> None:
    """The server attaches to the default app namespace with global scope; curl runs in the
    test's own network namespace, whose only way to VPP is veth + af_packet."""
    directory, digest = blob
    port = next_port()
    prefix = pyvcl_run("--app-socket", str(vpp.app_socket()), "--scope", "global")
    http_server(programs, prefix, "0.0.0.0", port, directory)
    assert_listener_in_vpp_not_kernel(vpp, port)
    url = f"http://{vpp_netns.vpp_addr}:{port}/blob.bin"
    res = vpp_netns.run(
        ["curl", "-sS", "--max-time", "60", "-o", "-", url], capture_output=True, timeout=90
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert len(res.stdout) == DOWNLOAD_SIZE
    assert hashlib.sha256(res.stdout).hexdigest() == digest


def test_without_vpp_the_same_commands_run_on_the_kernel(
    programs: Any, blob: tuple[Path, str], tmp_path: Path
) -> None:
    """No VPP at the default app socket: the same commands (without --no-fallback) say so in
    one line and run on kernel sockets, where the kernel now holds the listener."""
    directory, digest = blob
    env = {**base_env(), "VCL_VPP_SAPI_SOCKET": str(tmp_path / "no-vpp-here")}
    run = [sys.executable, "-m", "pyvcl", "run"]
    port = next_port()
    argv = [*run, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
            str(directory)]  # fmt: skip
    server = programs("http-server", argv, env)
    server.wait_output(r"Serving HTTP on")
    assert port in kernel_listening_ports()
    url = f"http://127.0.0.1:{port}/blob.bin"
    client = programs("fetch", [*run, str(PROGRAMS / "fetch.py"), url], env)
    assert last_json(client.finish()) == {"status": 200, "bytes": DOWNLOAD_SIZE, "sha256": digest}
    for prog in (server, client):
        notice = prog.stderr().splitlines()[0]
        assert notice.startswith("pyvcl run: VPP not reachable (") and notice.endswith(
            "; using kernel sockets"
        ), prog.describe()


# -- aiohttp -----------------------------------------------------------------------------------
@pytest.mark.skipif(
    importlib.util.find_spec("aiohttp") is None, reason="aiohttp is not installed ([test] extra)"
)
def test_aiohttp_200_concurrent_requests_and_an_8mib_echo(where: Placement, programs: Any) -> None:
    port = next_port()
    script = str(PROGRAMS / "aiohttp_echo.py")
    programs("aiohttp-server", [*where.server, script, "server", where.host, str(port)],
             base_env()).wait_output('"listening"')  # fmt: skip
    client = programs(
        "aiohttp-client",
        [*where.client, script, "client", where.host, str(port), "200", str(8 << 20)],
        base_env(),
    )
    got = last_json(client.finish())
    assert got == {"gets_ok": 200, "post_status": 200, "post_bytes": 8 << 20, "post_sha_ok": True}


# -- uvloop ------------------------------------------------------------------------------------
@pytest.mark.parametrize("server_how, client_how", [("policy", "run"), ("run", "new_event_loop")])
def test_uvloop_programs_run_on_asyncios_loop_over_vpp(
    where: Placement, programs: Any, vpp: VppInstance, server_how: str, client_how: str
) -> None:
    """uvloop does its IO on descriptors, which carry no data under pyvcl run: its ways of
    choosing a loop give asyncio's (pyvcl.interpose.loops), said once on stderr.  Before,
    the server believed it listened and VPP had no listener."""
    pytest.importorskip("uvloop")
    port = next_port()
    script = str(PROGRAMS / "uvloop_echo.py")
    argv = [*where.server, script, "server", where.host, str(port), server_how]
    server = programs("uvloop-server", argv, base_env())
    server.wait_output('"listening"')
    assert_listener_in_vpp_not_kernel(vpp, port)
    argv = [*where.client, script, "client", where.host, str(port), client_how]
    got = last_json(programs("uvloop-client", argv, base_env()).finish())
    assert got == {"echo_ok": True, "loop": "_UnixSelectorEventLoop"}
    assert server.stderr().count("uvloop does its IO on descriptors") == 1, server.describe()


# -- socketserver ------------------------------------------------------------------------------
def echo_server(programs: Any, where: Placement) -> int:
    port = next_port()
    argv = [*where.server, str(PROGRAMS / "threaded_echo.py"), "server", where.host, str(port)]
    programs("echo-server", argv, base_env()).wait_output('"listening"')
    return port


def test_threading_tcp_server_echoes_to_20_client_threads(where: Placement, programs: Any) -> None:
    port = echo_server(programs, where)
    script = str(PROGRAMS / "threaded_echo.py")
    client = programs(
        "echo-client", [*where.client, script, "client", where.host, str(port), "20"], base_env()
    )
    assert last_json(client.finish()) == {"threads_ok": 20}


def _known_on_cut_through(reason: str) -> Any:
    """Parametrize ``where`` over both placements, cut-through a known (strict) failure."""
    ct = pytest.param("ct", marks=pytest.mark.xfail(strict=True, reason=reason))
    return pytest.mark.parametrize("where", [ct, "tcp"], indirect=True)


@_known_on_cut_through(
    "VPP v26.06 passes no half-close on cut-through sessions: the server never sees the "
    "client's shutdown(SHUT_WR) (docs/async.md)"
)
def test_half_close_reaches_the_server(where: Placement, programs: Any) -> None:
    """The client's shutdown(SHUT_WR) is the server's EOF: its echo loop ends, it closes, and
    the client reads the whole echo and then EOF."""
    port = echo_server(programs, where)
    script = str(PROGRAMS / "threaded_echo.py")
    argv = [*where.client, script, "client", where.host, str(port), "2", "half-close"]
    client = programs("echo-client", argv, base_env())
    assert last_json(client.finish(timeout=10)) == {"threads_ok": 2}


FORK_MESSAGE = "pyvcl does not share sessions across fork"
CLIENT_OF_FORKED = """\
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
try:  # (the parent may close its copy before the ping: then the send is what fails)
    s.sendall(b"ping")
    r = "eof" if s.recv(100) == b"" else "data"
except OSError as e:
    r = next(c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins")
print(json.dumps({"recv": r}))
"""


def test_forking_tcp_server_child_fails_clearly_and_the_parent_keeps_serving(
    ct: Placement, programs: Any
) -> None:
    """A forked child cannot use the session its parent accepted: its handler fails with
    `ForkedSession` (EBADF) saying so, the client sees its connection end, and the parent
    accepts the next connection, which meets the same fate."""
    port = next_port()
    server = programs(
        "forking-server",
        [*ct.server, str(PROGRAMS / "forking_echo.py"), ct.host, str(port)],
        base_env(),
    )
    server.wait_output('"listening"')
    for n in (1, 2):
        client = programs(
            f"fork-client-{n}",
            [*ct.client, "-c", CLIENT_OF_FORKED, ct.host, str(port)],
            base_env(),
        )
        got = last_json(client.finish())
        ended = ("eof", "ConnectionResetError", "BrokenPipeError")
        assert got["recv"] in ended, server.describe()
        deadline = time.monotonic() + 10
        while server.stderr().count(FORK_MESSAGE) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        err = server.stderr()
        assert err.count(FORK_MESSAGE) == n, server.describe()
        assert "ForkedSession" in err and server.proc.poll() is None, server.describe()


# -- addresses -------------------------------------------------------------------------------
ADDRESS_SERVER = """\
import json, socket, sys
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as s:
    print(json.dumps({"listening": True}), flush=True)
    c, peer = s.accept()
    print(json.dumps({"peer": peer, "getpeername": c.getpeername()}), flush=True)
    c.recv(1)
"""
ADDRESS_CLIENT = """\
import json, socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as s:
    print(json.dumps({"sockname": s.getsockname()}), flush=True)
"""


@_known_on_cut_through(
    "cut-through sessions have no local endpoint in VPP v26.06: a client's getsockname() and "
    "the server's accept() peer are ('0.0.0.0', 0)"
)
def test_accept_names_the_clients_address(where: Placement, programs: Any) -> None:
    """accept()'s peer address is the client's getsockname(), a real address and port."""
    port = next_port()
    server = programs(
        "addr-server", [*where.server, "-c", ADDRESS_SERVER, where.host, str(port)], base_env()
    )
    server.wait_output('"listening"')
    client = programs(
        "addr-client", [*where.client, "-c", ADDRESS_CLIENT, where.host, str(port)], base_env()
    )
    sockname = last_json(client.finish())["sockname"]
    got = last_json(server.finish())
    assert got["peer"] == got["getpeername"] == sockname, server.describe()
    assert sockname[0] != "0.0.0.0" and sockname[1] != 0


# -- VPP dying under a program -----------------------------------------------------------------
WAYS = {"recv", "selectors", "asyncio"}
DEAD_PEER = {"eof", "ConnectionResetError", "BrokenPipeError"}


def kill_vpp_under_blocked_program(
    vpp_factory: Any, programs: Any, tmp_path: Path
) -> tuple[dict[str, dict[str, Any]], Program]:
    """Run tests/programs/vpp_dies.py (blocked in recv, selectors and asyncio) on a VPP of
    its own, SIGKILL that VPP, and return how each way woke, once the program exited; fails
    if the program is not gone within DEATH_WAKE_S."""
    own: VppInstance = vpp_factory()
    place = Placement(own, topology(own, "ct"), tmp_path)
    port = echo_server(programs, place)
    victim = programs(
        "victim", [*place.client, str(PROGRAMS / "vpp_dies.py"), place.host, str(port)], base_env()
    )
    victim.wait_output('"blocked"')
    time.sleep(0.5)  # asyncio's read is awaited just after the barrier
    assert own.pid is not None
    os.kill(own.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        victim.proc.wait(DEATH_WAKE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the program hung {DEATH_WAKE_S} s after VPP died:\n{victim.describe()}")
    took = time.monotonic() - killed_at
    assert victim.proc.returncode == 0, victim.describe()
    reports = {}
    for line in victim.stdout().splitlines():
        if '"way"' in line:
            r = json.loads(line)
            reports[r["way"]] = r
    assert set(reports) == WAYS, (took, victim.describe())
    return reports, victim


def test_blocked_connections_wake_when_vpp_dies(
    vpp_factory: Any, programs: Any, tmp_path: Path
) -> None:
    """A program blocked in recv, in selectors' select and in asyncio's read when its VPP is
    SIGKILLed: each wakes with EOF or an OSError, a send after it fails, and the program
    exits on its own within DEATH_WAKE_S."""
    reports, victim = kill_vpp_under_blocked_program(vpp_factory, programs, tmp_path)
    for way, r in reports.items():
        assert r["recv"] != "data", (way, victim.describe())
        assert r["send"] != "sent", (way, victim.describe())


def test_vpp_dying_looks_like_a_dead_peer(vpp_factory: Any, programs: Any, tmp_path: Path) -> None:
    """What a program catches when its VPP dies: what a dead peer gives on kernel sockets,
    EOF or ConnectionResetError on receive, ConnectionResetError or BrokenPipeError on send."""
    reports, victim = kill_vpp_under_blocked_program(vpp_factory, programs, tmp_path)
    for way, r in reports.items():
        assert r["recv"] in DEAD_PEER, (way, victim.describe())
        assert r["send"] in DEAD_PEER - {"eof"}, (way, victim.describe())


# -- the namespace fixture itself --------------------------------------------------------------
def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_a_half_built_namespace_is_taken_down(
    vpp: VppInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the namespace, the veth pair and VPP's interface exist undoes all three;
    so does close after a complete build."""
    reason = why_unavailable(vpp)
    if reason is not None:
        pytest.skip(reason)

    def fail(self: VethNamespace, cmd: str, **kwargs: Any) -> None:
        real(self, cmd, **kwargs)
        if cmd.startswith("set interface ip address"):
            raise RuntimeError("made to fail")

    real = VethNamespace._vpp
    ns = VethNamespace(vpp)
    monkeypatch.setattr(VethNamespace, "_vpp", fail)
    with pytest.raises(RuntimeError, match="made to fail"):
        ns.open()
    monkeypatch.undo()
    assert not ns.exists() and ns.host_veth not in _links()
    assert ns.vpp_interface not in vpp.cli("show interface")
    with VethNamespace(vpp) as ns2:
        assert ns2.exists() and ns2.host_veth in _links()
        assert ns2.vpp_addr in vpp.cli("show interface address")
    assert not ns2.exists() and ns2.host_veth not in _links()
    assert ns2.vpp_interface not in vpp.cli("show interface")
