"""Session API details beyond the conformance suite, against a real VPP."""

from __future__ import annotations

import socket
from typing import Any

from pyvcl.testing.streams import CheckedThread
from pyvcl.vclsocket import VclApp


def test_ipv6_cut_through_echo(vpp: Any) -> None:
    opts = {"scope_global": False}
    with (
        VclApp(vpp.app_socket(), name="v6-srv", **opts) as a,
        VclApp(vpp.app_socket(), name="v6-cli", **opts) as b,
    ):
        srv = a.create_server(("::1", 18600))
        assert srv.family == socket.AF_INET6 and srv.getsockname() == ("::1", 18600, 0, 0)

        def serve() -> None:
            conn, addr = srv.accept()
            assert len(addr) == 4
            with conn:
                conn.sendall(conn.recv(10))

        # Leaving the block joins the server and raises what it raised (its asserts included).
        with (
            CheckedThread(serve, name="v6-serve", timeout=5),
            b.create_connection(("::1", 18600), timeout=5) as c,
        ):
            c.sendall(b"v6!")
            assert c.recv(10) == b"v6!"
            assert c.getpeername() == ("::1", 18600, 0, 0)
        srv.close()
