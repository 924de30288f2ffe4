"""pyvcl on a VPP with a worker thread (``cpu { workers 1 }``): sessions live on the worker,
the app's ctrl mq is the worker's, and the main thread polls its own mq outside the barrier.

The crash of issue 8: a pyvcl server app that served a connection and detached made VPP die
with SIGSEGV in session_queue_node_fn within a few rounds, because the detach's sync probe
(an UNLISTEN of an invalid handle) went to every VPP mq, the main thread's too.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from pyvcl.testing.hoststack import Topology, topology
from pyvcl.testing.streams import recv_all
from pyvcl.vclsocket import VclApp, VclSocket

ROUNDS = 12  # the crash came within four rounds
PORTS = {"tcp": 7100, "ct": 7200}


class _Server(threading.Thread):
    """Accepts one connection on ``listener`` and reads it to EOF."""

    def __init__(self, listener: VclSocket) -> None:
        super().__init__(daemon=True)
        self.listener = listener
        self.got: bytes | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(10)
                self.got = recv_all(conn)
        except BaseException as e:
            self.error = e

    def result(self) -> bytes | None:
        self.join(20)
        assert not self.is_alive(), "the server hung"
        if self.error is not None:
            raise self.error
        return self.got


_TOPOLOGIES: dict[tuple[int, str], Topology] = {}


def _topology(vpp: Any, name: str) -> Topology:
    """Set up once per VPP (the TCP topology can be set up only once)."""
    key = (id(vpp), name)
    if key not in _TOPOLOGIES:
        _TOPOLOGIES[key] = topology(vpp, name)
    return _TOPOLOGIES[key]


@pytest.mark.parametrize("topo_name", ["tcp", "ct"])
def test_serving_and_detaching_leaves_vpp_alive(vpp_with_workers: Any, topo_name: str) -> None:
    vpp = vpp_with_workers
    topo = _topology(vpp, topo_name)
    addr = (topo.host, PORTS[topo_name])
    data = os.urandom(100_000)
    for r in range(ROUNDS):
        server = VclApp(topo.server.socket, name=f"w-srv{r}", **topo.server.pyvcl_opts)
        client = VclApp(topo.client.socket, name=f"w-cli{r}", **topo.client.pyvcl_opts)
        try:
            with server.create_server(addr) as listener:
                listener.settimeout(10)
                srv = _Server(listener)
                srv.start()  # a cut-through connect completes only once the server accepts
                with client.create_connection(addr, timeout=10) as c:
                    c.sendall(data)
                assert srv.result() == data
        finally:
            client.close()
            server.close()
        assert vpp.is_running(), f"VPP died after round {r}:\n{vpp.console_text()[-2000:]}"
