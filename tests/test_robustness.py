"""pyvcl under load and abuse on a real VPP: many connections (sequential and concurrent) with
no fd, mapping or session growth; VPP killed under blocked calls; a peer app killed mid-session;
a listener closed with connections pending; a TCP reset by the peer; 1 GiB each way (``slow``;
about 4 s cut-through and 20 s through VPP's TCP stack on a 2-core machine).

Leak checks compare the process's open fds and memory mappings (psutil) after a warm-up with
the same counts at the end, VPP's ``show session verbose`` with the listener alone (TCP
connections VPP keeps in TIME_WAIT aside), pyvcl's own session tables with their starting size
and, cut-through, each app's segments with those it had after attaching.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from pyvcl.session.core import State
from pyvcl.testing.hoststack import Topology, topology
from pyvcl.testing.streams import recv_exactly, recv_when_peer_dies, run_threads
from pyvcl.vclsocket import VclApp, VclSocket
from pyvcl.wire.enums import SessionEvent as E

WAIT = 20.0


# -- helpers -------------------------------------------------------------------------------
@dataclass
class Pair:
    """A server app and a client app on one VPP, attached as `topo` says; `host` is where
    servers listen, `scope` the topology's name ("ct" or "tcp")."""

    server: VclApp
    client: VclApp
    topo: Topology
    base_segments: dict[VclApp, set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for app in (self.server, self.client):
            self.base_segments[app] = set(app.app.segments)

    @property
    def host(self) -> str:
        return self.topo.host

    @property
    def scope(self) -> str:
        return self.topo.name

    def close(self) -> None:
        self.client.close()
        self.server.close()


def make_pair(vpp: Any, scope: str, name: str, **opts: Any) -> Pair:
    """Apps on topology `scope` ("ct", or "tcp": sets up the two VRFs, once per VPP)."""
    topo = topology(vpp, scope)
    srv, cli = topo.server, topo.client
    server = VclApp(srv.socket, name=f"{name}-srv", **srv.pyvcl_opts, **opts)
    try:
        client = VclApp(cli.socket, name=f"{name}-cli", **cli.pyvcl_opts, **opts)
    except BaseException:
        server.close()
        raise
    return Pair(server, client, topo)


@pytest.fixture(scope="module")
def ct_pair(vpp: Any) -> Iterator[Pair]:
    pair = make_pair(vpp, "ct", "robust", rx_fifo_size=256 << 10, tx_fifo_size=256 << 10)
    yield pair
    pair.close()


_SESSION_LINE = re.compile(r"^\[[\d:]+\]\S*\s+\S+\s+(\S+)", re.MULTILINE)
LINGERING = {"TIME_WAIT", "CLOSED"}  # TCP connections VPP keeps for a while after the apps


def vpp_session_states(vpp: Any) -> list[str]:
    """The state of every session VPP lists in ``show session verbose``."""
    return _SESSION_LINE.findall(vpp.cli("show session verbose force-print"))


def vpp_live_sessions(vpp: Any) -> int:
    """Sessions VPP still holds for the apps (TCP's TIME_WAIT leftovers not counted)."""
    return sum(state not in LINGERING for state in vpp_session_states(vpp))


def wait_for(cond: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what()} after {timeout} s")
        time.sleep(0.02)


def pump_until(app: VclApp, cond: Callable[[], bool], what: str, timeout: float = 5) -> None:
    """Handle `app`'s events until `cond()`."""

    def step() -> bool:
        app.worker.pump()
        return cond()

    wait_for(step, timeout, lambda: what)


def pyvcl_leftovers(app: VclApp, tcp: bool) -> list[str]:
    """Sessions pyvcl still tracks other than open listeners (and, over TCP, other than
    closed sessions awaiting VPP's cleanup after TIME_WAIT)."""
    return [
        f"{s.index}:{s.state.value}" for s in app.worker.layer.sessions.values()
        if not (s.is_listener and s.state == State.LISTENING)
        and not (tcp and not s.is_listener and s.state == State.CLOSING and s.app_closed)
    ]  # fmt: skip


def settle(pair: Pair, vpp: Any, listeners: int, segments: bool | None = None) -> None:
    """Pump both apps' events until VPP holds only `listeners` live sessions, pyvcl tracks
    nothing else (bar TCP sessions awaiting VPP's TIME_WAIT cleanup) and, cut-through, each
    app is back to the segments it had after attaching (a CT segment goes with its last
    session; a TCP listener keeps its own segment).

    Close listeners only once their sessions are gone: VPP v26.06 does not tell a server app
    about a CT segment that outlives its listener (segment_manager_del_segment skips the
    notification once the listener's segment manager is "detached"), so the app keeps that
    mapping until it detaches -- C VCL as much as pyvcl."""
    if segments is None:
        segments = pair.scope == "ct"

    def state() -> tuple[int, list[str], list[str], bool]:
        pair.server.worker.pump()
        pair.client.worker.pump()
        segs = all(set(a.app.segments) == base for a, base in pair.base_segments.items())
        tcp = pair.scope == "tcp"
        return (vpp_live_sessions(vpp), pyvcl_leftovers(pair.server, tcp),
                pyvcl_leftovers(pair.client, tcp), segs)  # fmt: skip

    want = (listeners, [], [], True)

    def done() -> bool:
        now = state()
        return now[:3] == want[:3] and (now[3] or not segments)

    def why() -> str:
        segs = {a.app.options.name: (sorted(map(hex, base)), sorted(map(hex, a.app.segments)))
                for a, base in pair.base_segments.items()}  # fmt: skip
        return (
            f"(VPP live sessions, server, client, segments) = {state()}, wanted {want}; "
            f"segments (base, now) {segs}; VPP:\n{vpp.cli('show session verbose force-print')}"
        )

    wait_for(done, 10, why)


def resources() -> tuple[int, int]:
    p = psutil.Process()
    return p.num_fds(), len(p.memory_maps(grouped=False))


class Server:
    """Accepts on `listener` in a thread and runs `handler(conn)` for each connection, either
    inline (one at a time) or in a thread per connection."""

    def __init__(self, listener: VclSocket, handler: Callable[[VclSocket], None],
                 count: int, threaded: bool = False) -> None:  # fmt: skip
        self.listener, self.handler, self.count, self.threaded = listener, handler, count, threaded
        self.errors: list[BaseException] = []
        self.handlers: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve_one(self, conn: VclSocket) -> None:
        try:
            with conn:
                conn.settimeout(WAIT)
                self.handler(conn)
        except BaseException as e:
            self.errors.append(e)

    def _run(self) -> None:
        self.listener.settimeout(WAIT)
        try:
            for _ in range(self.count):
                conn, _ = self.listener.accept()
                if self.threaded:
                    t = threading.Thread(target=self._serve_one, args=(conn,), daemon=True)
                    t.start()
                    self.handlers.append(t)
                else:
                    self._serve_one(conn)
        except BaseException as e:
            self.errors.append(e)

    def join(self, timeout: float = WAIT) -> None:
        self.thread.join(timeout)
        for t in self.handlers:
            t.join(timeout)
        assert not self.thread.is_alive(), "server did not finish"
        if self.errors:
            raise self.errors[0]


def echo8(conn: VclSocket) -> None:
    conn.sendall(recv_exactly(conn, 8))


def just_close(conn: VclSocket) -> None:
    pass


def layer_sizes(pair: Pair) -> tuple[int, int, int, int]:
    s, c = pair.server.worker.layer, pair.client.worker.layer
    return len(s.sessions), len(c.sessions), len(s.by_handle), len(c.by_handle)


# -- many connections ----------------------------------------------------------------------
def run_sequential(vpp: Any, pair: Pair, port: int, n: int, data: bool) -> float:
    """`n` connections one after another; checks fds, mappings, VPP's and pyvcl's sessions."""
    listener = pair.server.create_server((pair.host, port))
    try:
        warmup = 20
        server = Server(listener, echo8 if data else just_close, warmup + n)

        def one(i: int) -> None:
            with pair.client.create_connection((pair.host, port), timeout=WAIT) as c:
                if data:
                    c.settimeout(WAIT)
                    c.sendall(i.to_bytes(8, "little"))
                    assert recv_exactly(c, 8) == i.to_bytes(8, "little")

        for i in range(warmup):
            one(i)
        settle(pair, vpp, 1)
        fds, maps = resources()
        sizes = layer_sizes(pair)
        t0 = time.monotonic()
        for i in range(n):
            one(i)
        elapsed = time.monotonic() - t0
        server.join()
        settle(pair, vpp, 1)  # the listener alone
        assert layer_sizes(pair) == sizes
        fds2, maps2 = resources()
        assert fds2 <= fds, f"fds grew from {fds} to {fds2} over {n} connections"
        assert maps2 <= maps + 4, f"mappings grew from {maps} to {maps2} over {n} connections"
        for app in (pair.server, pair.client):
            assert len(app.worker.layer.orphans) < 10, "unmatched events pile up"
        return elapsed
    finally:
        listener.close()


def test_1000_sequential_short_connections(vpp: Any, ct_pair: Pair) -> None:
    elapsed = run_sequential(vpp, ct_pair, 26001, 1000, data=True)
    print(f"1000 connect/echo/close: {elapsed:.1f} s ({elapsed:.2f} ms each)")


def test_10000_connect_close_cycles(vpp: Any, ct_pair: Pair) -> None:
    elapsed = run_sequential(vpp, ct_pair, 26002, 10_000, data=False)
    print(f"10000 connect/close: {elapsed:.1f} s ({elapsed / 10:.2f} ms each)")


@pytest.mark.parametrize("scope", ["ct", "tcp"])
def test_100_concurrent_connections(vpp_factory: Any, scope: str) -> None:
    """100 client threads connect at once, hold their connections together, exchange data;
    the server handles each in its own thread."""
    vpp = vpp_factory()
    pair = make_pair(vpp, scope, f"conc-{scope}", rx_fifo_size=64 << 10, tx_fifo_size=64 << 10)
    n, size, port = 100, 32 << 10, 26100
    try:
        listener = pair.server.create_server((pair.host, port))

        def echo(conn: VclSocket) -> None:
            conn.sendall(recv_exactly(conn, size))
            assert conn.recv(1) == b""  # the client closes after reading the echo

        server = Server(listener, echo, n, threaded=True)
        barrier = threading.Barrier(n, timeout=WAIT)
        results: dict[int, bool] = {}
        errors: list[BaseException] = []

        def client(i: int) -> None:
            try:
                payload = bytes([i]) * size
                with pair.client.create_connection((pair.host, port), timeout=WAIT) as c:
                    c.settimeout(WAIT)
                    barrier.wait()  # all connected at the same time
                    c.sendall(payload)
                    results[i] = recv_exactly(c, size) == payload
            except BaseException as e:
                errors.append(e)
                barrier.abort()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        elapsed = run_threads(threads, 60, errors, "a client thread")
        server.join()
        assert results == dict.fromkeys(range(n), True)
        settle(pair, vpp, 1)
        listener.close()
        settle(pair, vpp, 0)
        if scope == "ct":
            assert layer_sizes(pair) == (0, 0, 0, 0)
        else:  # the client closed first: its connections linger in TIME_WAIT
            assert set(vpp_session_states(vpp)) <= LINGERING
        print(f"{scope}: {n} concurrent connections x {size >> 10} KiB echoed in {elapsed:.1f} s")
    finally:
        pair.close()


# -- VPP dies --------------------------------------------------------------------------------
def connected_pair(pair: Pair, port: int) -> tuple[VclSocket, VclSocket, VclSocket]:
    """(listener, client socket, accepted socket) on `port` (accepting in a thread, as a
    cut-through connect completes only when the server accepts)."""
    listener = pair.server.create_server((pair.host, port))
    listener.settimeout(WAIT)
    got: dict[str, Any] = {}
    acceptor = threading.Thread(target=lambda: got.setdefault("conn", listener.accept()[0]))
    acceptor.start()
    try:
        cli = pair.client.create_connection((pair.host, port), timeout=WAIT)
    finally:
        acceptor.join(WAIT)
    conn: VclSocket = got["conn"]
    return listener, cli, conn


@pytest.mark.parametrize("eventfd", [True, False], ids=["eventfd", "mutex"])
def test_vpp_killed_unblocks_every_call(vpp_factory: Any, eventfd: bool) -> None:
    """SIGKILL VPP while one thread is blocked in recv (nothing coming) and another in sendall
    (the peer not reading, the tx fifo full): each must raise an OSError within 1 s."""
    vpp = vpp_factory()
    pair = make_pair(vpp, "ct", "kill", use_mq_eventfd=eventfd, rx_fifo_size=64 << 10,
                     tx_fifo_size=64 << 10)  # fmt: skip
    try:
        _, idle_cli, idle_conn = connected_pair(pair, 26200)  # recv: nobody sends
        _, bulk_cli, bulk_conn = connected_pair(pair, 26201)  # sendall: nobody reads
        bulk_cli.sendall(b"x" * 1000)  # a transfer under way
        assert recv_exactly(bulk_conn, 1000) == b"x" * 1000

        outcome: dict[str, tuple[float, BaseException | None]] = {}

        def blocked(name: str, call: Callable[[], Any]) -> None:
            try:
                call()
                err: BaseException | None = None
            except BaseException as e:
                err = e
            outcome[name] = (time.monotonic(), err)

        calls: dict[str, Callable[[], Any]] = {
            "recv": lambda: idle_cli.recv(100),
            "sendall": lambda: bulk_cli.sendall(b"y" * (16 << 20)),
        }
        threads = [threading.Thread(target=blocked, args=item, daemon=True)
                   for item in calls.items()]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(0.5)  # both are blocked now: nothing to read, no room to write
        assert outcome == {}, f"calls returned before VPP died: {outcome}"
        killed_at = time.monotonic()
        os.kill(vpp.pid, signal.SIGKILL)
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads), f"a call is still blocked: {outcome}"
        delays = {name: when - killed_at for name, (when, _) in outcome.items()}
        for name, (_, err) in outcome.items():
            assert isinstance(err, OSError), f"{name} ended with {err!r}, not an OSError"
            assert delays[name] < 1.0, f"{name} took {delays[name]:.2f} s"
        # The app that saw VPP go fails every later call at once; the other one (the server
        # app: nothing of it was waiting) finds out on its first wait, within 1 s too.
        for call in (lambda: idle_cli.send(b"z"), lambda: bulk_cli.recv(1)):
            with pytest.raises(OSError):
                call()
        t0 = time.monotonic()
        with pytest.raises(OSError):
            idle_conn.recv(1)
        assert time.monotonic() - t0 < 1.0
        for s in (idle_cli, idle_conn, bulk_cli, bulk_conn):
            s.close()
        print("unblocked after VPP death:", {k: f"{v * 1e3:.0f} ms" for k, v in delays.items()})
    finally:
        with contextlib.suppress(Exception):
            pair.close()


# -- a peer app dies -------------------------------------------------------------------------
PEER = """\
import sys, time
sys.path.insert(0, {root!r})
from pyvcl.vclsocket import VclApp
app = VclApp({sock!r}, name="doomed-peer", **{opts!r})
s = app.create_connection(({host!r}, {port}), timeout=20)
s.sendall(b"hello")
print("sent", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("scope", ["ct", "tcp"])
def test_peer_app_killed(vpp_factory: Any, scope: str, tmp_path: Any) -> None:
    """A peer app (another process) is SIGKILLed while we hold a session with it: our blocked
    recv returns (EOF or an OSError) promptly, closing is clean, VPP survives and frees every
    session, and the listener keeps serving."""
    vpp = vpp_factory()
    pair = make_pair(vpp, scope, f"peerdie-{scope}")
    port = 26300
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    side = pair.topo.client  # the peer attaches as our client app does
    code = PEER.format(root=root, sock=str(side.socket), opts=dict(side.pyvcl_opts),
                       host=pair.host, port=port)  # fmt: skip
    try:
        listener = pair.server.create_server((pair.host, port))
        listener.settimeout(WAIT)
        peer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            conn, _ = listener.accept()  # the peer's connect completes when we accept
            conn.settimeout(WAIT)
            assert recv_exactly(conn, 5) == b"hello"
            result, delay = recv_when_peer_dies(lambda: conn.recv(100), peer.kill)
            assert result == b"" or isinstance(result, OSError), result
            conn.close()
        finally:
            peer.kill()
            peer.wait(10)
            if peer.stdout is not None:
                peer.stdout.close()
        settle(pair, vpp, 1)
        assert vpp.is_running()
        # The listener still works.
        listener.close()
        listener, c, conn = connected_pair(pair, port + 1)
        with c, conn:
            c.sendall(b"again")
            conn.settimeout(WAIT)
            assert recv_exactly(conn, 5) == b"again"
        settle(pair, vpp, 1)
        listener.close()
        settle(pair, vpp, 0)
        assert vpp.is_running()
        print(f"{scope}: peer death seen after {delay * 1e3:.0f} ms: {result}")
    finally:
        pair.close()


# -- a listener closes with connections pending ---------------------------------------------
@pytest.mark.parametrize("scope", ["ct", "tcp"])
def test_listener_close_refuses_pending_connections(vpp_factory: Any, scope: str) -> None:
    vpp = vpp_factory()
    pair = make_pair(vpp, scope, f"pending-{scope}")
    try:
        listener = pair.server.create_server((pair.host, 26600))
        outcome: dict[str, Any] = {}

        def connect() -> None:
            try:
                with pair.client.create_connection((pair.host, 26600), timeout=3) as c:
                    c.settimeout(3)
                    outcome["recv"] = c.recv(10)  # EOF expected once the server refuses
            except OSError as e:
                outcome["error"] = e

        t = threading.Thread(target=connect, daemon=True)
        t.start()
        pump_until(pair.server, lambda: bool(listener._s.accepted), "no ACCEPTED arrived")
        listener.close()  # never accepted
        deadline = time.monotonic() + 10
        while t.is_alive() and time.monotonic() < deadline:
            pair.server.worker.pump()
            time.sleep(0.02)
        t.join(1)
        assert not isinstance(outcome.get("error"), TimeoutError), outcome
        assert outcome.get("recv") == b"" or isinstance(outcome.get("error"), OSError), outcome
        # The refused CT session's segment outlives the listener: VPP never tells the server
        # app it is gone (see `settle`), so do not wait for it.
        settle(pair, vpp, 0, segments=False)
    finally:
        pair.close()


# -- a peer resets ---------------------------------------------------------------------------
class Recorder:
    """Records every control message an app's worker sends VPP (type name, fields)."""

    def __init__(self, app: VclApp) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        worker = app.worker
        inner = worker.execute

        def execute(actions: list[Any]) -> None:
            self.sent += [(E(a.event_type).name, dict(a.fields)) for a in actions]
            inner(actions)

        worker.execute = execute  # type: ignore[method-assign]


def reset_by_peer(vpp_factory: Any) -> tuple[Any, Pair, VclSocket, VclSocket, Recorder]:
    """TCP: the server closes a connection with unread data, so VPP's TCP sends RST; the
    client app gets RESET, then (transport gone) CLEANUP(TRANSPORT) and CLEANUP(SESSION)."""
    vpp = vpp_factory()
    pair = make_pair(vpp, "tcp", "rst")
    listener, cli, conn = connected_pair(pair, 26500)
    rec = Recorder(pair.client)
    cli.sendall(b"x" * 1000)
    pump_until(pair.server, lambda: conn._s.rx_events > 0, "the server never saw the data")
    conn.close()  # unread data: VPP resets the connection
    listener.close()
    return vpp, pair, cli, conn, rec


def test_reset_by_peer(vpp_factory: Any) -> None:
    vpp, pair, cli, _, _ = reset_by_peer(vpp_factory)
    try:
        cli.settimeout(WAIT)
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            cli.recv(10)
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(ConnectionResetError):
            cli.send(b"more")
        cli.close()
        settle(pair, vpp, 0)
        assert vpp.is_running()
    finally:
        pair.close()


def test_reset_by_peer_close_after_vpp_cleanup_sends_nothing(vpp_factory: Any) -> None:
    _, pair, cli, _, rec = reset_by_peer(vpp_factory)
    try:
        handle = cli._s.handle
        # Let VPP finish with the session before the app closes it.
        pump_until(pair.client, lambda: cli._s.handle is None,
                   f"no CLEANUP(SESSION) for {handle}; sent {rec.sent}")  # fmt: skip
        assert rec.sent == [("CTRL_RESET_REPLY", {"context": pair.client.app.api_client_handle,
                                                 "retval": 0, "handle": handle})]  # fmt: skip
        cli.close()
        assert rec.sent[1:] == [], "close sent more after VPP had freed the session"
    finally:
        pair.close()


# -- bulk ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("scope", ["ct", "tcp"])
def test_1gib_each_way(vpp_factory: Any, scope: str) -> None:
    """1 GiB in each direction at the same time (four threads), sha256 compared."""
    vpp = vpp_factory()
    pair = make_pair(vpp, scope, f"bulk-{scope}", rx_fifo_size=4000000, tx_fifo_size=4000000)
    total, chunk = 1 << 30, 1 << 20
    try:
        listener, cli, conn = connected_pair(pair, 26400)
        for s in (cli, conn):
            s.settimeout(60)
        digests: dict[str, str] = {}
        errors: list[BaseException] = []

        def send(name: str, s: VclSocket, seed: int) -> None:
            try:
                h = hashlib.sha256()
                block = bytearray(os.urandom(chunk))
                for i in range(total // chunk):
                    block[:8] = (i * 2 + seed).to_bytes(8, "little")  # every chunk differs
                    h.update(block)
                    s.sendall(block)
                digests[f"{name}-sent"] = h.hexdigest()
            except BaseException as e:
                errors.append(e)

        def recv(name: str, s: VclSocket) -> None:
            try:
                h, n, buf = hashlib.sha256(), 0, bytearray(chunk)
                view = memoryview(buf)
                while n < total:
                    k = s.recv_into(view, min(chunk, total - n))
                    if not k:
                        raise AssertionError(f"EOF after {n} bytes")
                    h.update(view[:k])
                    n += k
                digests[f"{name}-got"] = h.hexdigest()
            except BaseException as e:
                errors.append(e)

        threads = [
            threading.Thread(target=send, args=("up", cli, 0)),
            threading.Thread(target=recv, args=("up", conn)),
            threading.Thread(target=send, args=("down", conn, 1)),
            threading.Thread(target=recv, args=("down", cli)),
        ]
        elapsed = run_threads(threads, 900, errors, "the transfer")
        assert digests["up-sent"] == digests["up-got"]
        assert digests["down-sent"] == digests["down-got"]
        for s in (cli, conn, listener):
            s.close()
        gbps = 2 * total * 8 / elapsed / 1e9
        print(f"{scope}: 1 GiB each way in {elapsed:.1f} s ({gbps:.2f} Gbit/s both ways)")
    finally:
        pair.close()
