"""Decode the four recorded app-socket exchanges of real C VCL apps, field by field."""

from __future__ import annotations

import pytest

from pyvcl.api.messages import AttachOptions, encode_attach
from pyvcl.api.sapi import encode_frame
from pyvcl.api.trace import format_trace, load_trace
from pyvcl.errors import AppSocketError
from pyvcl.wire.enums import AppOptionsFlags as F
from pyvcl.wire.enums import SapiMsgType, SessionFdFlag

from .shared_data import shared_path

VPP_MQ_SEGMENT_SIZE = 1364128  # one 2048-slot VPP mq (315552 B) + 1 MiB spare (protocol.md 5.1)
APP_SEGMENT_SIZE = 268447744  # 256 MiB + header + slice + 2 pages, page rounded (protocol.md 1.3)
CT_FLAGS = F.ACCEPT_REDIRECT | F.ADD_SEGMENT | F.USE_GLOBAL_SCOPE | F.USE_LOCAL_SCOPE

CASES = {
    # trace: (app name, flags, api_client_handle, fd flags, number of SEND_FDS after the reply)
    "sapi-client": ("vcl_test_client", CT_FLAGS | F.EVT_MQ_USE_EVENTFD, 2, 0x7, 2),
    "sapi-server": ("vcl_test_server", CT_FLAGS | F.EVT_MQ_USE_EVENTFD, 2, 0x7, 2),
    "sapi-client-noevfd": ("vcl_test_client", CT_FLAGS, 2, 0x3, 2),
    "sapi-client-tcp": (
        "vcl_test_client",
        F.ACCEPT_REDIRECT | F.ADD_SEGMENT | F.USE_GLOBAL_SCOPE | F.EVT_MQ_USE_EVENTFD,
        0x20001,  # namespace 2, socket 1: attached through app_ns_sockets/cli
        0x7,
        0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trace_decodes(name: str) -> None:
    app_name, flags, client_handle, fd_flags, n_send_fds = CASES[name]
    msgs = load_trace(shared_path("vpp-v26.06", "traces", f"{name}.json"))
    assert [m.type for m in msgs] == [SapiMsgType.ATTACH, SapiMsgType.ATTACH_REPLY] + [
        SapiMsgType.SEND_FDS
    ] * n_send_fds
    attach, reply = msgs[0], msgs[1]
    assert attach.direction == "app->vpp" and reply.direction == "vpp->app"
    assert attach.fields["name"] == app_name
    assert attach.fields["flags"] == flags
    assert attach.fields["EVT_QUEUE_SIZE"] == 2048
    assert attach.fields["SEGMENT_SIZE"] == 256 << 20
    assert attach.fields["ADD_SEGMENT_SIZE"] == 128 << 20
    assert attach.fields["RX_FIFO_SIZE"] == attach.fields["TX_FIFO_SIZE"] == 4000000
    assert attach.fields["PREALLOC_FIFO_PAIRS"] == 8
    assert attach.fields["TLS_ENGINE"] == 1
    assert attach.fields["NAMESPACE"] == attach.fields["NAMESPACE_SECRET"] == 0

    f = reply.fields
    assert f["retval"] == 0
    assert f["app_mq"] == f["vpp_ctrl_mq"] == 0x140  # fsh 128 + one 192-byte slice
    assert f["segment_handle"] >> 32 > 0 and f["segment_handle"] & 0xFFFFFFFF == 0
    assert f["api_client_handle"] == client_handle
    assert f["vpp_ctrl_mq_thread"] == 0
    assert f["fd_flags"] == fd_flags and f["n_fds"] == bin(fd_flags).count("1")
    roles = reply.fd_roles
    assert roles["VPP_MQ_SEGMENT"] == [reply.fds[0]]
    assert roles["MEMFD_SEGMENT"] == [reply.fds[1]]
    if fd_flags & SessionFdFlag.MQ_EVENTFD:
        assert roles["MQ_EVENTFD"] == [reply.fds[2]]
    else:
        assert "MQ_EVENTFD" not in roles
    # VCL maps each segment twice: one page for the ssvm header, then ssvm_size bytes.
    sizes = [(mm["fd_index"], mm["length"]) for mm in reply.mmaps]
    assert sizes == [(0, 4096), (0, VPP_MQ_SEGMENT_SIZE), (1, 4096), (1, APP_SEGMENT_SIZE)]
    for extra in msgs[2:]:
        assert len(extra.fds) == 1 and extra.fields == {}
        assert [mm["length"] for mm in extra.mmaps] == [4096, APP_SEGMENT_SIZE]
    assert "ATTACH_REPLY" in format_trace(msgs)


def test_our_attach_matches_vcl_byte_for_byte() -> None:
    """Options equal to vcl_test_client's produce the same 209 bytes VCL sent."""
    msgs = load_trace(shared_path("vpp-v26.06", "traces", "sapi-client.json"))
    import json

    recorded = json.loads(shared_path("vpp-v26.06", "traces", "sapi-client.json").read_text())
    ours = AttachOptions(
        name="vcl_test_client",
        rx_fifo_size=4000000,
        tx_fifo_size=4000000,
    )
    frame = encode_frame(SapiMsgType.ATTACH, encode_attach(ours))
    assert frame.hex() == recorded["events"][0]["hex"]
    assert msgs[0].fields["flags"] == ours.flags()


def test_bad_frames_are_clear_errors() -> None:
    from pyvcl.api.trace import decode_frame

    with pytest.raises(AppSocketError):
        decode_frame(b"\x02" * 10)
    with pytest.raises(AppSocketError, match="unknown"):
        decode_frame(bytes([99]) + bytes(208))
    reply = bytearray(209)
    reply[0] = SapiMsgType.ATTACH_REPLY
    reply[38], reply[39] = 3, 0x7  # promises 3 fds
    with pytest.raises(AppSocketError, match="3 fds but 2"):
        decode_frame(bytes(reply), [5, 6])
    with pytest.raises(AppSocketError, match="exactly one"):
        decode_frame(encode_frame(SapiMsgType.SEND_FDS), [])
