"""The stacks the conformance suite runs over: what gives it listening and connecting sockets.

A `Stack` is anything with the methods below; `KernelStack` is the reference (Python's own
sockets on loopback), `VclStack` is pyvcl's socket API over a running VPP (cut-through or
through VPP's TCP stack), `InterposedStack` the sockets `pyvcl run` gives unmodified programs.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ..hoststack import topology

Address = tuple[Any, ...]


class Stack(Protocol):
    name: str

    def server(self) -> tuple[Any, Address]:
        """A listening socket and the address clients connect to."""

    def connect(self, address: Address, timeout: float | None = None) -> Any: ...

    def unused_address(self) -> Address:
        """An address where nothing listens (connects must be refused)."""

    def client_socket(self) -> Any:
        """An unconnected client socket (for the non-blocking connect checks)."""

    def selector(self) -> selectors.BaseSelector:
        """A selector able to wait on this stack's sockets."""


class KernelStack:
    """The reference: Python's own sockets on loopback."""

    name = "kernel"

    def server(self) -> tuple[Any, Address]:
        s = socket.create_server(("127.0.0.1", 0))
        return s, s.getsockname()

    def connect(self, address: Address, timeout: float | None = None) -> Any:
        return socket.create_connection(address, timeout=timeout)

    def unused_address(self) -> Address:
        s = socket.create_server(("127.0.0.1", 0))
        addr: Address = s.getsockname()
        s.close()
        return addr

    def client_socket(self) -> Any:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def selector(self) -> selectors.BaseSelector:
        return selectors.DefaultSelector()


@contextmanager
def pair(stack: Stack) -> Iterator[tuple[Any, Any, Any]]:
    """(listener, client, accepted) connected to each other; all closed afterwards."""
    srv, addr = stack.server()
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("conn", srv.accept()[0]), daemon=True)
    t.start()
    cli = None
    try:
        cli = stack.connect(addr, timeout=10)
        t.join(10)
        assert "conn" in out, "accept did not complete"
        yield srv, cli, out["conn"]
    finally:
        t.join(10)
        for s in (out.get("conn"), cli, srv):
            if s is not None:
                s.close()


_SCOPE_TOPOLOGY = {"local": "ct", "global": "tcp"}  # VclStack scope -> hoststack topology


class VclStack:
    """pyvcl over a running VPP: a server app and a client app, cut-through (``scope``
    "local", topology ``ct``) or through VPP's TCP stack ("global", topology ``tcp``, which
    sets up `VppInstance.setup_two_vrf_tcp`); see `pyvcl.testing.hoststack.topology`."""

    def __init__(self, vpp: Any, scope: str = "local", first_port: int = 21000) -> None:
        if scope not in _SCOPE_TOPOLOGY:
            raise ValueError(f"scope must be 'local' or 'global', not {scope!r}")
        topo = topology(vpp, _SCOPE_TOPOLOGY[scope])
        self.vpp = vpp  # (a failing test's report shows its log)
        self.name = f"pyvcl-{topo.name}"
        self.topology = topo
        self.host = topo.host
        self._port = first_port
        self._attach_apps()

    def _attach_apps(self) -> None:
        from ...vclsocket import VclApp

        topo, name = self.topology, f"pyvcl-{self.topology.name}"
        self.server_app = VclApp(topo.server.socket, name=f"{name}-srv", **topo.server.pyvcl_opts)
        self.client_app = VclApp(topo.client.socket, name=f"{name}-cli", **topo.client.pyvcl_opts)

    def reattach_if_vpp_wrapped(self) -> str | None:
        """Attach both apps afresh when VPP's congestion counter for either has wrapped (a VPP
        bug, `pyvcl.testing.congestion`): VPP would refuse their connects and drop SYNs to
        their listeners for the next ~250 event flushes, whatever a check does.  Returns what
        was found, for a warning; None (after one CLI call per app) when nothing was."""
        if not getattr(self.vpp, "workers", 0):
            return None  # one VPP thread cannot race itself
        from ..congestion import app_congestion

        mine = {self.server_app.app.app_index, self.client_app.app.app_index}
        n_threads = self.vpp.workers + 1
        wrapped = [w for w in app_congestion(self.vpp, mine) if w.wrapped(n_threads)]
        if not wrapped:
            return None
        self.close()
        self._attach_apps()
        return ", ".join(f"{w.app_name} mq-cong {w.mq_congested}" for w in wrapped)

    def _next_port(self) -> int:
        self._port += 1
        return self._port

    def server(self) -> tuple[Any, Address]:
        addr = (self.host, self._next_port())
        return self.server_app.create_server(addr), addr

    def connect(self, address: Address, timeout: float | None = None) -> Any:
        return self.client_app.create_connection(address, timeout=timeout)

    def unused_address(self) -> Address:
        return (self.host, self._next_port())

    def client_socket(self) -> Any:
        return self.client_app.socket()

    def selector(self) -> selectors.BaseSelector:
        from ...selector import VclSelector

        return VclSelector()

    def close(self) -> None:
        self.client_app.close()
        self.server_app.close()


class InterposedStack(VclStack):
    """`VclStack`'s apps and topology, through the sockets `pyvcl run` gives unmodified
    programs (`pyvcl.interpose`): standard-library socket objects with a real descriptor,
    waited on with the standard library's own selector."""

    def __init__(self, vpp: Any, scope: str = "local", first_port: int = 21000) -> None:
        super().__init__(vpp, scope, first_port)
        self.name = f"run-{self.topology.name}"

    def server(self) -> tuple[Any, Address]:
        from ...interpose.vsocket import socket_over

        addr = (self.host, self._next_port())
        s = socket_over(self.server_app)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            s.listen()
        except BaseException:
            s.close()
            raise
        return s, addr

    def connect(self, address: Address, timeout: float | None = None) -> Any:
        s = self.client_socket()
        try:
            s.settimeout(timeout)
            s.connect(address)
        except BaseException:
            s.close()
            raise
        return s

    def client_socket(self) -> Any:
        from ...interpose.vsocket import socket_over

        return socket_over(self.client_app)

    def selector(self) -> selectors.BaseSelector:
        return selectors.DefaultSelector()
