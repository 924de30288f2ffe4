"""Session API details beyond the conformance suite, against a real VPP."""

from __future__ import annotations

import socket
import threading
from typing import Any

from pyvcl.sockets import VclApp


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

        t = threading.Thread(target=serve)
        t.start()
        with b.create_connection(("::1", 18600), timeout=5) as c:
            c.sendall(b"v6!")
            assert c.recv(10) == b"v6!"
            assert c.getpeername() == ("::1", 18600, 0, 0)
        t.join(5)
        srv.close()
