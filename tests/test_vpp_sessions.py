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


def test_an_app_left_alone_after_many_closes_is_not_marked_congested(vpp: Any) -> None:
    """Each closed session brings CLEANUPs; 80 closed at once fill the app's 128-slot
    control ring while none of its threads waits.  VPP then marks the app congested, which
    refuses its connects (and, on a VPP with workers, can wrap its counter:
    pyvcl.testing.congestion).  The idle drain (pyvcl.session.idle) takes them instead."""
    import time

    from pyvcl.testing.congestion import app_congestion

    n, addr, opts = 80, ("127.0.0.1", 18602), {"scope_global": False}
    with (
        VclApp(vpp.app_socket(), name="idle-srv", **opts) as a,
        VclApp(vpp.app_socket(), name="idle-cli", **opts) as b,
    ):
        srv = a.create_server(addr)
        accepted: list[Any] = []

        def accept(k: int) -> None:
            for _ in range(k):
                accepted.append(srv.accept()[0])

        with CheckedThread(accept, n, name="idle-accept", timeout=20):
            clients = [b.create_connection(addr, timeout=5) for _ in range(n)]
        for s in clients + accepted:
            s.close()  # (no call waits on VPP from here on)
        time.sleep(1)
        marked = {
            w.app_name: w.mq_congested
            for w in app_congestion(vpp, [a.app.app_index, b.app.app_index])
        }
        assert marked == {"idle-srv": 0, "idle-cli": 0}, marked
        assert a.idle_drain.drains and b.idle_drain.drains
        with (
            CheckedThread(accept, 1, name="idle-accept-again", timeout=5),
            b.create_connection(addr, timeout=5),
        ):
            pass
        srv.close()
