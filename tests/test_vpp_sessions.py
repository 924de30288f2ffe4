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


def test_close_with_linger_handles_the_cleanups_first(vpp: Any) -> None:
    """``VclApp.close(linger=...)`` waits for VPP's CLEANUP of the sessions closed already
    (what `pyvcl nc` does, so that its trace shows its session's end); without it the app
    leaves at once, the session still in the core's table."""
    import time

    opts = {"scope_global": False}
    for linger in (0.0, 5.0):
        with VclApp(vpp.app_socket(), name="linger-srv", **opts) as a:
            srv = a.create_server(("127.0.0.1", 18601))
            b = VclApp(vpp.app_socket(), name="linger-cli", **opts)

            def serve(srv: Any = srv) -> None:
                conn, _ = srv.accept()
                with conn:
                    while conn.recv(100):
                        pass

            with CheckedThread(serve, name="linger-serve", timeout=10):
                c = b.create_connection(("127.0.0.1", 18601), timeout=5)
                c.sendall(b"bye")
                c.close()
                sessions = b.worker.layer.sessions
                t0 = time.monotonic()
                b.close(linger=linger)
                took = time.monotonic() - t0
            srv.close()
        if linger:
            assert not sessions, f"left before the CLEANUP: {list(sessions.values())}"
            assert took < linger
        else:
            assert sessions, "the CLEANUP came before a close that does not wait for it"
