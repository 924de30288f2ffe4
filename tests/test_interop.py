"""pyvcl against C VCL on a real VPP: an ordinary Python socket script run over VCL through
LD_PRELOAD (`pyvcl.testing.ldp`) on one side, pyvcl on the other, cut-through ("ct": both apps
on the default namespace, app-scope-local) and through VPP's TCP stack ("tcp": two VRFs, the
server in namespace srv, the client in cli; docs/vpp-setups.md).

LDP servers may spin forever after EOF (v26.06), so every C-side program is SIGKILLed at the end
and interop is judged by the bytes each side received.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvcl.testing.hoststack import TOPOLOGIES, Side, Topology, topology
from pyvcl.testing.ldp import LdpPython, script
from pyvcl.testing.streams import recv_all, recv_exactly, recv_when_peer_dies
from pyvcl.vclsocket import VclApp, VclSocket

SIZE = 1 << 20
WAIT = 20.0  # bound on any single blocking step
_ports = itertools.count(24000)

# The C VCL side: plain socket-module scripts.  Each prints one line per milestone.
ECHO_SERVER = """\
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(16)
print("listening", flush=True)
conn, peer = srv.accept()
print("accepted", flush=True)
total = 0
while True:
    data = conn.recv(1 << 16)
    if not data:
        break
    total += len(data)
    conn.sendall(data)
print("eof", total, flush=True)
conn.close()
srv.close()
print("closed", flush=True)
"""

# Reads until EOF, then answers with the byte count and digest (a request/response over a
# half-closed connection, like HTTP/1.0).
DIGEST_SERVER = """\
import hashlib, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(16)
print("listening", flush=True)
conn, peer = srv.accept()
h, total = hashlib.sha256(), 0
while True:
    data = conn.recv(1 << 16)
    if not data:
        break
    h.update(data)
    total += len(data)
print("eof", total, flush=True)
conn.sendall(f"{total} {h.hexdigest()}\\n".encode())
conn.close()
print("closed", flush=True)
"""

# Sends SIZE seeded bytes, then (mode "echo") reads SIZE bytes back, or (mode "halfclose")
# shuts down its write side and reads the answer until EOF.
CLIENT = """\
import hashlib, random, socket, sys
host, port, size, seed, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4]), sys.argv[5]
data = random.Random(seed).randbytes(size)
s = socket.create_connection((host, port), timeout=20)
print("connected", flush=True)
s.sendall(data)
print("sent", len(data), flush=True)
got = bytearray()
if mode == "echo":
    while len(got) < size:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
else:
    s.shutdown(socket.SHUT_WR)
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
if mode == "echo":
    print("got", len(got), hashlib.sha256(got).hexdigest(), flush=True)
else:
    print("answer", got.decode(errors="replace").strip(), flush=True)
s.close()
print("closed", flush=True)
"""


@pytest.fixture(scope="module")
def topologies(vpp: Any) -> dict[str, Topology]:
    return {name: topology(vpp, name) for name in TOPOLOGIES}


@pytest.fixture(params=TOPOLOGIES)
def topo(request: pytest.FixtureRequest, topologies: dict[str, Topology]) -> Topology:
    return topologies[request.param]


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    return {
        "echo_server": script(tmp_path, "echo_server.py", ECHO_SERVER),
        "digest_server": script(tmp_path, "digest_server.py", DIGEST_SERVER),
        "client": script(tmp_path, "client.py", CLIENT),
    }


@pytest.fixture
def conf(vpp: Any, tmp_path: Path) -> Any:
    """conf(side) -> a vcl.conf for a C VCL app on that side."""
    counter = itertools.count()

    def make(side: Side) -> Path:
        path: Path = vpp.vcl_conf(tmp_path / f"vcl{next(counter)}.conf", **side.conf_opts)
        return path

    return make


@pytest.fixture
def app_factory() -> Iterator[Any]:
    apps: list[VclApp] = []

    def make(side: Side, name: str) -> VclApp:
        app = VclApp(side.socket, name=name, **side.pyvcl_opts)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def _check_vpp(vpp: Any) -> None:
    assert vpp.is_running(), f"VPP died\n{vpp.log_tail()}"


# -- C VCL server <- pyvcl client ------------------------------------------------------------
def test_pyvcl_client_to_cvcl_echo_server(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any
) -> None:
    port = next(_ports)
    data = random.Random(port).randbytes(SIZE)
    with LdpPython(vpp, conf(topo.server), scripts["echo_server"], topo.host, str(port)) as srv:
        srv.wait_line("listening", WAIT)
        app = app_factory(topo.client, f"interop-cli-{topo.name}")
        t0 = time.monotonic()
        with app.create_connection((topo.host, port), timeout=WAIT) as s:
            got: dict[str, bytes] = {}
            reader = threading.Thread(target=lambda: got.setdefault("echo", recv_exactly(s, SIZE)))
            reader.start()
            s.sendall(data)
            reader.join(WAIT)
            assert not reader.is_alive(), "echo did not come back in time"
            elapsed = time.monotonic() - t0
            echo = got["echo"]
            assert len(echo) == SIZE
            assert hashlib.sha256(echo).digest() == hashlib.sha256(data).digest()
        # Our close reaches the C side as EOF.
        assert srv.wait_line("eof", WAIT) == f"eof {SIZE}"
        print(f"{topo.name}: 1 MiB echoed by C VCL in {elapsed * 1e3:.0f} ms")
    _check_vpp(vpp)


def skip_half_close_on_ct(topo: Topology) -> None:
    if topo.name == "ct":
        pytest.skip(
            "VPP v26.06 cut-through has no half-close (cut_thru_proto has no .half_close): "
            "SHUTDOWN is a no-op there, for C VCL too, and the peer never sees EOF"
        )


def test_pyvcl_half_close_then_cvcl_answers(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any
) -> None:
    """pyvcl shuts down its write side; the C side reads to EOF and answers on the half-open
    connection; pyvcl reads the answer, then EOF."""
    skip_half_close_on_ct(topo)
    port = next(_ports)
    data = random.Random(port).randbytes(SIZE)
    with LdpPython(vpp, conf(topo.server), scripts["digest_server"], topo.host, str(port)) as srv:
        srv.wait_line("listening", WAIT)
        app = app_factory(topo.client, f"interop-hc-{topo.name}")
        with app.create_connection((topo.host, port), timeout=WAIT) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(WAIT)
            answer = recv_all(s).decode()
        assert answer == f"{SIZE} {hashlib.sha256(data).hexdigest()}\n"
    _check_vpp(vpp)


# -- C VCL client -> pyvcl server ------------------------------------------------------------
@contextlib.contextmanager
def _cvcl_client_accepted(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any, mode: str
) -> Iterator[tuple[VclSocket, LdpPython, bytes]]:
    """A pyvcl server and the C VCL (LDP) client script in ``mode`` connected to it: yields
    the accepted connection (closed after), the client process and the SIZE bytes it sends."""
    port = next(_ports)
    seed = port
    data = random.Random(seed).randbytes(SIZE)
    app = app_factory(topo.server, f"interop-{mode}-{topo.name}")
    with app.create_server((topo.host, port)) as listener:
        listener.settimeout(WAIT)
        argv = (topo.host, str(port), str(SIZE), str(seed), mode)
        with LdpPython(vpp, conf(topo.client), scripts["client"], *argv) as cli:
            conn, _peer = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                yield conn, cli, data


def test_cvcl_client_to_pyvcl_echo_server(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any
) -> None:
    with _cvcl_client_accepted(vpp, topo, scripts, conf, app_factory, "echo") as (conn, cli, data):
        received = bytearray()
        while chunk := conn.recv(1 << 20):
            received += chunk
            conn.sendall(chunk)
            if len(received) == SIZE:
                break
        got = cli.wait_line("got", WAIT)
        assert bytes(received) == data
        assert got == f"got {SIZE} {hashlib.sha256(data).hexdigest()}"
        cli.finish(timeout=2)
    _check_vpp(vpp)


@pytest.mark.xfail(
    reason="C VCL (LDP) side, VPP v26.06: after its own shutdown(SHUT_WR) the LDP client's "
    "recv fails with ENOTCONN or hangs (CLEANUP(TRANSPORT) moves its session to a state it "
    "cannot read from); pyvcl sent the answer.  pyvcl<->pyvcl half-close works (test_nc).",
    strict=False,
)
def test_cvcl_half_close_then_pyvcl_answers(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any
) -> None:
    skip_half_close_on_ct(topo)
    accepted = _cvcl_client_accepted(vpp, topo, scripts, conf, app_factory, "halfclose")
    with accepted as (conn, cli, data):
        received = recv_all(conn)  # the C client shut down its write side
        assert received == data
        conn.sendall(f"{len(received)} {hashlib.sha256(received).hexdigest()}".encode())
        conn.close()  # the client reads the answer to EOF
        answer = cli.wait_line("answer", WAIT)
        assert answer == f"answer {SIZE} {hashlib.sha256(data).hexdigest()}"
    _check_vpp(vpp)


def test_reference_cvcl_half_close_then_cvcl_answers(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any
) -> None:
    """The reference for the test above: C VCL on both sides.  The C VCL server reads to EOF
    and answers after its peer's FIN (VPP_CLOSING is still "open" for writes in
    vppcom_session_write_inline): its sendall succeeds and it reaches "closed".

    (The LDP *client* does not read that answer: seen here, its recv after shutdown(SHUT_WR)
    either hangs or fails with ENOTCONN -- in vcl_session_cleanup_handler, CLEANUP(TRANSPORT)
    moves a VPP_CLOSING session to UPDATED, which is not readable, while the answer may still
    sit in its rx fifo.  pyvcl does read it: test_pyvcl_half_close_then_cvcl_answers.)"""
    skip_half_close_on_ct(topo)
    port = next(_ports)
    seed = port
    with LdpPython(vpp, conf(topo.server), scripts["digest_server"], topo.host, str(port)) as srv:
        srv.wait_line("listening", WAIT)
        argv = (topo.host, str(port), str(SIZE), str(seed), "halfclose")
        with LdpPython(vpp, conf(topo.client), scripts["client"], *argv) as cli:
            assert srv.wait_line("eof", WAIT) == f"eof {SIZE}"
            assert srv.wait_line("closed", WAIT) == "closed"  # the answer was written
            cli.finish(timeout=5)
    _check_vpp(vpp)


def test_cvcl_clients_one_after_another(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any
) -> None:
    """A pyvcl listener serves several C VCL apps in turn (each a new app attach/detach in
    VPP, killed at the end), and stays usable."""
    port = next(_ports)
    app = app_factory(topo.server, f"interop-seq-{topo.name}")
    with app.create_server((topo.host, port)) as listener:
        listener.settimeout(WAIT)
        for seed in range(3):
            data = random.Random(seed).randbytes(64 << 10)
            argv = (topo.host, str(port), str(len(data)), str(seed), "echo")
            with LdpPython(vpp, conf(topo.client), scripts["client"], *argv) as cli:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(WAIT)
                    received = bytearray()
                    while len(received) < len(data) and (chunk := conn.recv(1 << 20)):
                        received += chunk
                        conn.sendall(chunk)
                    assert bytes(received) == data
                    assert cli.wait_line("got", WAIT).split()[1] == str(len(data))
    _check_vpp(vpp)


@pytest.mark.parametrize("role", ["server", "client"])
def test_cvcl_peer_killed(
    vpp: Any, topo: Topology, scripts: dict[str, Path], conf: Any, app_factory: Any, role: str
) -> None:
    """The C VCL peer is SIGKILLed mid-session: pyvcl's blocked recv returns promptly (EOF
    or an OSError), its close is clean, and VPP lives on."""
    port = next(_ports)
    if role == "server":  # C VCL echo server, pyvcl client
        peer = LdpPython(vpp, conf(topo.server), scripts["echo_server"], topo.host, str(port))
        peer.wait_line("listening", WAIT)
        app = app_factory(topo.client, f"interop-kill-cli-{topo.name}")
        s = app.create_connection((topo.host, port), timeout=WAIT)
        s.sendall(b"ping")
        s.settimeout(WAIT)
        assert recv_exactly(s, 4) == b"ping"
        listener = None
    else:  # C VCL client, pyvcl server
        app = app_factory(topo.server, f"interop-kill-srv-{topo.name}")
        listener = app.create_server((topo.host, port))
        listener.settimeout(WAIT)
        argv = (topo.host, str(port), str(SIZE), "7", "echo")
        peer = LdpPython(vpp, conf(topo.client), scripts["client"], *argv)
        s, _ = listener.accept()
        s.settimeout(WAIT)
        recv_exactly(s, 1000)  # the client is sending; we do not echo, so it blocks
    with peer:
        # recv_all returns at EOF or raises the OSError the death caused: either is fine.
        result, delay = recv_when_peer_dies(lambda: recv_all(s), peer.kill)
    seen = f"EOF after {len(result)} bytes" if isinstance(result, bytes) else repr(result)
    s.close()
    if listener is not None:
        listener.close()
    _check_vpp(vpp)
    print(f"{topo.name}: C VCL {role} death seen after {delay * 1e3:.0f} ms: {seen}")
