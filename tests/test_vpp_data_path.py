"""Two pyvcl apps exchange bytes through a real VPP, cut-through, driving VPP's session layer
by hand with the foundation layer only (`App`, `MessageQueue`, `Fifo`), below pyvcl's session
API (`pyvcl.session`, `pyvcl.vclsocket`): LISTEN/CONNECT, APP_ADD_SEGMENT with its SEND_FDS fd,
ACCEPTED/ACCEPTED_REPLY, CONNECTED, fifo writes with TX events, RX events, has_event
re-arming, DISCONNECT and CLEANUP.  This proves the fifos and queues interoperate with VPP on
their own, so a failure here points below the session state machines
(`pyvcl.session.core`), which take these same steps."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest

from pyvcl.app import App
from pyvcl.fifo import Fifo
from pyvcl.mq.queue import MessageQueue
from pyvcl.wire.addr import ip_to_wire, port_to_wire
from pyvcl.wire.enums import SessionEvent as E

PORT = 17300
NO_PARENT = 0xFFFFFFFFFFFFFFFF  # parent_handle of a CONNECT opening no stream (as session.core)


def vpp_mq(app: App, offset: int) -> MessageQueue:
    for mq in app.vpp_mqs:
        if mq.offset == offset:
            return mq
    raise AssertionError(f"no VPP mq at {offset:#x}")


def pump(app: App, want: int, timeout: float = 5.0, **match: Any) -> Any:
    ev, _ = app.wait_for(want, timeout, **match)
    return ev


@pytest.mark.parametrize("eventfd", [True, False], ids=["eventfd", "mutex"])
def test_cut_through_bytes_both_ways(vpp: Any, eventfd: bool) -> None:
    opts = {"use_mq_eventfd": eventfd, "scope_global": False, "rx_fifo_size": 1 << 20,
            "tx_fifo_size": 1 << 20}  # fmt: skip
    with (
        App.attach(vpp.app_socket(), name="ct-srv", **opts) as srv,
        App.attach(vpp.app_socket(), name="ct-cli", **opts) as cli,
    ):
        ip, is_ip4 = ip_to_wire("127.0.0.1")
        port = PORT + int(eventfd)
        srv.send_ctrl(E.CTRL_LISTEN, client_index=srv.api_client_handle, context=1,
                      port=port_to_wire(port), is_ip4=is_ip4, ip=ip)  # fmt: skip
        assert pump(srv, E.CTRL_BOUND, context=1).msg.retval == 0

        cli.send_ctrl(E.CTRL_CONNECT, client_index=cli.api_client_handle, context=11,
                      port=port_to_wire(port), is_ip4=is_ip4, ip=ip, flags=1,
                      parent_handle=NO_PARENT)  # fmt: skip
        seg_before = set(srv.segments)
        acc = pump(srv, E.CTRL_ACCEPTED).msg
        assert acc.segment_handle in srv.segments and acc.segment_handle not in seg_before
        s_seg = srv.segments[acc.segment_handle]  # mapped from the SEND_FDS fd
        s_rx, s_tx = Fifo(s_seg, acc.server_rx_fifo), Fifo(s_seg, acc.server_tx_fifo)
        s_mq = vpp_mq(srv, acc.vpp_event_queue_address)
        s_mq.send_ctrl(E.CTRL_ACCEPTED_REPLY, context=acc.context, retval=0,
                       handle=acc.handle, app_session_index=21)  # fmt: skip

        con = pump(cli, E.CTRL_CONNECTED, context=11).msg
        assert con.retval == 0 and con.ct_rx_fifo and con.ct_segment_handle in cli.segments
        c_seg = cli.segments[con.ct_segment_handle]
        sig_seg = cli.segments[con.segment_handle]
        # Cut-through client: data in the CT fifos, signals in its own regular fifos (4.7).
        c_tx = Fifo(c_seg, con.ct_tx_fifo, signals=(sig_seg, con.server_tx_fifo))
        c_rx = Fifo(c_seg, con.ct_rx_fifo, signals=(sig_seg, con.server_rx_fifo))
        c_mq = vpp_mq(cli, con.vpp_event_queue_address)
        assert c_tx.offset == acc.server_rx_fifo and c_seg.name == s_seg.name

        payload = os.urandom(3 << 20)  # 3 MiB through a 1 MiB fifo: needs dequeue progress
        received = bytearray()
        sent = 0
        c_vpp_index = con.handle & 0xFFFFFFFF
        deadline = time.monotonic() + 30
        while len(received) < len(payload):
            assert time.monotonic() < deadline, f"stalled at {len(received)} bytes"
            if sent < len(payload):
                n = c_tx.enqueue(memoryview(payload)[sent : sent + (256 << 10)])
                sent += n
                if c_tx.set_event():
                    c_mq.send_io(E.IO_TX, c_vpp_index)
            for ev in srv.poll(0.01):
                if ev.type == E.IO_RX:
                    assert ev.session_index == 21
            while s_rx.max_dequeue():
                received += s_rx.dequeue(1 << 20)
            s_rx.unset_event()
            if s_rx.max_dequeue() and s_rx.set_event():
                continue  # data raced in: treat as a new event
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()

        # And back: server -> client.
        reply = b"pong" * 1000
        assert s_tx.enqueue(reply) == len(reply)
        if s_tx.set_event():
            s_mq.send_io(E.IO_TX, acc.handle & 0xFFFFFFFF)
        rx_ev = pump(cli, E.IO_RX, session_index=11)
        assert rx_ev.session_index == 11
        assert c_rx.dequeue(len(reply)) == reply
        c_rx.unset_event()

        # Client closes; both sides see the close and VPP cleans up.
        c_mq.send_ctrl(E.CTRL_DISCONNECT, client_index=cli.api_client_handle, handle=con.handle)
        disc = pump(srv, E.CTRL_DISCONNECTED).msg
        assert disc.handle == acc.handle
        s_mq.send_ctrl(E.CTRL_DISCONNECTED_REPLY, context=srv.api_client_handle, retval=0,
                       handle=acc.handle)  # fmt: skip
        assert pump(cli, E.CTRL_CLEANUP, handle=con.handle, type=1).msg.type == 1
        assert pump(srv, E.CTRL_CLEANUP, handle=acc.handle, type=1).msg.type == 1
