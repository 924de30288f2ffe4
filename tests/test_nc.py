"""``pyvcl nc`` as a user runs it: separate processes, kernel sockets and VPP (cut-through and
VPP's TCP stack).  Every child is killed at teardown; every wait is bounded."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from pyvcl.vclsocket import VclApp

ROOT = Path(__file__).resolve().parents[1]
BIG = 100 << 20  # the bulk transfers: 100 MiB


class Nc:
    """A running ``python -m pyvcl nc``; its stderr is collected line by line."""

    def __init__(self, args: list[str], stdin: Any, stdout: Any, env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyvcl", "nc", *args],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first (further) stderr line matching ``pattern``; fails on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    self._reader.join(2)
                    if self.lines.empty():
                        raise AssertionError(
                            f"nc {self.args} exited ({self.proc.returncode}) before "
                            f"{pattern!r}: {self.err()}"
                        ) from None
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"no {pattern!r} from nc within {timeout} s: {self.err()}"
                    ) from None
                continue
            m = re.search(pattern, line)
            if m:
                return m

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"nc {self.args} still running after {timeout} s: {self.err()}"
            ) from None
        self._reader.join(5)
        return code

    def err(self) -> str:
        return "\n".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def nc(tmp_path: Path) -> Iterator[Any]:
    """``nc(*args, stdin=..., stdout=..., env=...)`` starts one; all are killed afterwards.
    The environment names no VPP unless ``env`` says otherwise (VCL_VPP_SAPI_SOCKET)."""
    started: list[Nc] = []
    base = dict(os.environ, VCL_CONFIG="", VCL_VPP_SAPI_SOCKET=str(tmp_path / "no-vpp"))
    for var in ("VCL_APP_SCOPE_LOCAL", "VCL_APP_SCOPE_GLOBAL", "VCL_APP_NAMESPACE_ID"):
        base.pop(var, None)

    def start(
        *args: str,
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.PIPE,
        **env: str | None,
    ) -> Nc:
        full = {**base, **env}
        p = Nc(list(args), stdin, stdout, {k: v for k, v in full.items() if v is not None})
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        for stream in (p.proc.stdin, p.proc.stdout):
            if stream is not None:
                stream.close()


def run_nc(
    *args: str, input: bytes = b"", timeout: float = 30, env: dict[str, str | None] | None = None
) -> Any:
    """Run one to its end; ``env`` adds variables (None: remove) to a VCL_CONFIG-less one."""
    full = {**os.environ, "VCL_CONFIG": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pyvcl", "nc", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env={k: v for k, v in full.items() if v is not None},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def rate(nc_proc: Nc, what: str) -> float:
    """MB/s that ``nc -v`` reported for ``what`` ("sent" or "received")."""
    m = re.search(rf"{what} \d+ bytes in [\d.]+ s \(([\d.]+) MB/s\)", nc_proc.err())
    assert m, nc_proc.err()
    return float(m[1])


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    path = tmp_path_factory.mktemp("nc") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(BIG >> 20):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    yield path, h.hexdigest()
    path.unlink()


# -- kernel sockets --------------------------------------------------------------------------
def test_kernel_both_ways_with_half_close(nc: Any) -> None:
    srv = nc("--kernel", "-v", "-l", "127.0.0.1", "0", stdin=subprocess.PIPE)
    port = srv.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1]
    up, down = os.urandom(3 << 20), os.urandom(1 << 20)
    cli = nc("--kernel", "127.0.0.1", port, stdin=subprocess.PIPE)
    got: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda: got.setdefault("srv", srv.proc.stdout.read())),
        threading.Thread(target=lambda: got.setdefault("cli", cli.proc.stdout.read())),
    ]
    for t in readers:
        t.start()
    cli.proc.stdin.write(up)
    cli.proc.stdin.close()  # client half-closes; the server keeps sending
    srv.proc.stdin.write(down)
    srv.proc.stdin.close()
    assert srv.wait(30) == 0, srv.err()
    assert cli.wait(30) == 0, cli.err()
    for t in readers:
        t.join(10)
    assert got["srv"] == up and got["cli"] == down


def test_fallback_to_kernel_with_notice(nc: Any) -> None:
    srv = nc("-v", "-l", "127.0.0.1", "0")  # no VPP named, none reachable: kernel
    port = srv.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1]
    cli = nc("127.0.0.1", port, stdin=subprocess.PIPE)
    cli.proc.stdin.write(b"hello over the kernel\n")
    cli.proc.stdin.close()
    assert cli.wait(30) == 0 and srv.wait(30) == 0, (cli.err(), srv.err())
    assert srv.proc.stdout.read() == b"hello over the kernel\n"
    notice = [line for line in cli.stderr if "kernel sockets" in line]
    assert len(cli.stderr) == 1 and len(notice) == 1, cli.err()
    assert notice[0].startswith("pyvcl nc: VPP not reachable")


def test_keep_open_serves_one_after_another(nc: Any) -> None:
    srv = nc("--kernel", "-v", "-l", "-k", "127.0.0.1", "0")
    port = srv.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1]
    for i in range(3):
        p = run_nc("--kernel", "127.0.0.1", port, input=f"message {i}\n".encode())
        assert p.returncode == 0, p.stderr
        srv.wait_for(r"^pyvcl nc: closed")
    srv.kill()
    assert srv.proc.stdout.read() == b"message 0\nmessage 1\nmessage 2\n"


def test_quit_after_stdin_eof_bounds_the_wait(nc: Any) -> None:
    srv = nc("--kernel", "-v", "-l", "127.0.0.1", "0", stdin=subprocess.PIPE)  # never EOF
    port = srv.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1]
    t0 = time.monotonic()
    p = run_nc("--kernel", "-q", "0.5", "127.0.0.1", port, input=b"x", timeout=20)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 10
    srv.wait_for("EOF from the peer after 1 bytes")


def test_reset_ends_the_connection_while_stdin_is_open(nc: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        cli = nc("--kernel", "127.0.0.1", str(port), stdin=subprocess.PIPE)  # stdin stays open
        srv.settimeout(20)
        conn, _ = srv.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: RST
        assert cli.wait(10) == 1
    assert "connection: Connection reset by peer" in cli.err(), cli.err()


def test_refused_kernel() -> None:
    p = run_nc("--kernel", "127.0.0.1", str(free_port()))
    assert p.returncode == 1
    assert b"connection refused" in p.stderr and b"Traceback" not in p.stderr


def test_unreachable_vpp_without_fallback(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"VCL_VPP_SAPI_SOCKET": str(tmp_path / "no-vpp")}
    p = run_nc("--no-fallback", "127.0.0.1", "9", env=env)
    assert p.returncode == 1 and b"Traceback" not in p.stderr
    assert p.stderr.decode().startswith("pyvcl nc: VPP not reachable: no VPP app socket at")
    # a VPP named on the command line is never replaced by the kernel
    p = run_nc("--app-socket", str(tmp_path / "no-vpp"), "127.0.0.1", "9")
    assert p.returncode == 1 and b"VPP not reachable" in p.stderr
    assert b"kernel" not in p.stderr


def test_bad_vcl_config_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "vcl.conf"
    conf.write_text("vcl {\n  rx-fifo-size 4m\n}\n")
    p = run_nc("--vcl-config", str(conf), "127.0.0.1", "9")
    assert p.returncode == 1 and b"rx-fifo-size" in p.stderr and b"Traceback" not in p.stderr


# -- VPP -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_vrf(vpp: Any) -> Any:
    return vpp.setup_two_vrf_tcp()


def test_refused_vpp(vpp: Any) -> None:
    p = run_nc("--app-socket", str(vpp.app_socket()), "127.0.0.1", "25999")
    assert p.returncode == 1, p.stderr
    assert b"connection refused" in p.stderr and b"Traceback" not in p.stderr


def test_vcl_config_cut_through_echo(vpp: Any, nc: Any, tmp_path: Path) -> None:
    conf = str(vpp.vcl_conf(tmp_path / "vcl.conf"))
    env: dict[str, str | None] = {"VCL_CONFIG": conf, "VCL_VPP_SAPI_SOCKET": None}
    srv = nc("-v", "-l", "127.0.0.1", "25001", **env)
    srv.wait_for("listening on")
    assert "VPP's host stack" in srv.err()
    p = run_nc("-q", "0", "127.0.0.1", "25001", input=b"through vcl.conf", env=env)
    assert p.returncode == 0, p.stderr
    assert srv.wait(20) == 0, srv.err()
    assert srv.proc.stdout.read() == b"through vcl.conf"
    assert b"kernel" not in p.stderr


def test_vpp_cut_through_ends_without_quit_option(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """Cut-through has no half-close: at stdin's EOF the sender waits until the peer has read
    everything, then closes, and the listener (whose stdin stays open) ends on that EOF.
    Before, both waited forever."""
    sock, data = str(vpp.app_socket()), os.urandom(4 << 20)
    src, out = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    with open(out, "wb") as f:
        srv = nc(
            "-v", "--app-socket", sock, "-l", "127.0.0.1", "25003", stdin=subprocess.PIPE, stdout=f
        )
    srv.wait_for("listening on 127.0.0.1:25003")
    with open(src, "rb") as f:
        cli = nc("-v", "--app-socket", sock, "127.0.0.1", "25003", stdin=f)
    assert cli.wait(30) == 0, cli.err()
    assert "closing once the peer has read them" in cli.err()
    assert srv.wait(30) == 0, srv.err()
    assert "the peer closed (no half-close on this session)" in srv.err()
    assert out.read_bytes() == data


@pytest.mark.slow
def test_vpp_cut_through_100mib(
    vpp: Any, nc: Any, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    """Cut-through does not pass the half-close on: the sender closes at EOF (-q 0), which
    the listener sees as EOF, so both exit."""
    sock, out = str(vpp.app_socket()), tmp_path / "out.bin"
    with open(out, "wb") as f:
        srv = nc("-v", "--app-socket", sock, "-l", "127.0.0.1", "25002", stdout=f)
    srv.wait_for("listening on 127.0.0.1:25002")
    with open(big_file[0], "rb") as f:
        cli = nc("-v", "--app-socket", sock, "-q", "0", "127.0.0.1", "25002", stdin=f)
    assert cli.wait(90) == 0, cli.err()
    assert srv.wait(30) == 0, srv.err()
    assert "connection from 0.0.0.0:0" in srv.err()  # cut-through: VPP gives no peer address
    assert sha256_file(out) == big_file[1]
    out.unlink()
    print(f"\ncut-through 100 MiB: {rate(srv, 'received'):.1f} MB/s (receiver)")


@pytest.mark.slow
def test_vpp_tcp_100mib_with_half_close(
    vpp: Any, two_vrf: Any, nc: Any, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    """Through VPP's TCP stack the half-close travels: the client's EOF reaches the server
    while the server's stdin is still open; then the server's EOF reaches the client.
    (--scope global: with local scope VPP answers connects to 127/8 with NOROUTE.)"""
    out, back = tmp_path / "out.bin", tmp_path / "back.bin"
    host = two_vrf.server_addr
    with open(out, "wb") as f:
        srv = nc("-v", "--scope", "global", "--app-socket", str(two_vrf.server_socket), "-l",
                 host, "25003",
                 stdin=subprocess.PIPE, stdout=f)  # fmt: skip
    srv.wait_for(f"listening on {re.escape(host)}:25003")
    with open(big_file[0], "rb") as f, open(back, "wb") as g:
        cli = nc("-v", "--scope", "global", "--app-socket", str(two_vrf.client_socket),
                 host, "25003",
                 stdin=f, stdout=g)  # fmt: skip
    srv.wait_for(f"connection from {re.escape(two_vrf.client_addr)}:")
    srv.wait_for(f"EOF from the peer after {BIG} bytes", timeout=90)
    assert cli.proc.poll() is None, cli.err()  # waiting for the server's EOF
    srv.proc.stdin.close()
    assert srv.wait(30) == 0, srv.err()
    assert cli.wait(30) == 0, cli.err()
    assert "EOF from the peer after 0 bytes" in cli.err()
    assert sha256_file(out) == big_file[1] and back.stat().st_size == 0
    out.unlink()
    print(f"\nVPP TCP 100 MiB: {rate(srv, 'received'):.1f} MB/s (receiver)")


def test_vpp_tcp_send_after_peer_half_close(vpp: Any, two_vrf: Any) -> None:
    """After the peer's shutdown(SHUT_WR) the session is PEER_CLOSED and may still send, as
    kernel sockets and C VCL (VPP_CLOSING counts as ready for writes) allow.  (Was a bug:
    ``nc -l < /dev/null`` facing ``nc < file`` through VPP's TCP stack lost the file.)"""
    opts: dict[str, Any] = {"scope_local": False, "scope_global": True}
    host = two_vrf.server_addr
    with (
        VclApp(two_vrf.server_socket, name="hc-srv", **opts) as sa,
        VclApp(two_vrf.client_socket, name="hc-cli", **opts) as ca,
    ):
        srv = sa.create_server((host, 25004))
        srv.settimeout(10)
        result: dict[str, Any] = {}

        def serve() -> None:
            conn, _ = srv.accept()
            conn.settimeout(10)
            result["conn"] = conn
            result["eof"] = conn.recv(10)  # the client's half-close, as EOF

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        c = ca.create_connection((host, 25004), timeout=10)
        c.settimeout(10)
        c.shutdown(socket.SHUT_WR)
        t.join(10)
        conn = result["conn"]
        assert result["eof"] == b""
        conn.sendall(b"reply after your half-close")
        assert c.recv(100) == b"reply after your half-close"
        conn.close()
        c.close()
        srv.close()


def test_vpp_survives_app_close_right_after_accept(vpp_factory: Any) -> None:
    """Regression (fixed in App.detach, found running nc's tests): accept() sends
    ACCEPTED_REPLY on VPP's mq; closing the app right after closes the app socket, and VPP
    v26.06 may detach the app (socket close) before its session queue node handles that
    reply: SIGSEGV in session_mq_accepted_reply_handler (app worker NULL).  Only through
    VPP's TCP stack: a cut-through connect waits for the reply, so it is always handled.
    Own VPP instance, since it crashes."""
    inst = vpp_factory()
    topo = inst.setup_two_vrf_tcp()
    opts: dict[str, Any] = {"scope_local": False, "scope_global": True}
    with VclApp(topo.client_socket, name="race-cli", **opts) as ca:
        for i in range(40):  # a race: VPP dies in most runs within a few iterations
            try:
                sa = VclApp(topo.server_socket, name=f"race-srv{i}", **opts)
                srv = sa.create_server((topo.server_addr, 25100 + i))
                c = ca.create_connection((topo.server_addr, 25100 + i), timeout=5)
                srv.settimeout(5)
                srv.accept()
                sa.close()  # ACCEPTED_REPLY may still be in VPP's mq
                c.close()
            except OSError:  # VPP went away under us (checked below) or a real error
                time.sleep(0.5)
                if inst.is_running():
                    raise
            time.sleep(0.02)
            assert inst.is_running(), f"VPP died in iteration {i}:\n{inst.log_tail(14)}"
