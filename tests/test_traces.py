"""Decode recorded app-socket exchanges field by field: the project's own live traces of
``pyvcl nc`` (tests/fixtures, every clone) and, when ../shared is present, the four recorded
exchanges of real C VCL apps (the independent cross-check)."""

from __future__ import annotations

import pytest

from pyvcl.api.messages import AttachOptions, encode_attach
from pyvcl.api.sapi import encode_frame
from pyvcl.api.timeline import load_timeline
from pyvcl.api.trace import TraceMessage, format_trace, load_trace
from pyvcl.errors import AppSocketError
from pyvcl.session.replay import replay
from pyvcl.wire.enums import AppOptionsFlags as F
from pyvcl.wire.enums import SapiMsgType, SessionFdFlag

from .shared_data import OWN, cross_check, shared_path

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


@cross_check("vpp-v26.06", "traces")
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


@cross_check("vpp-v26.06", "traces")
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


# -- the project's own traces --------------------------------------------------------------------
OWN_TRACES = sorted(p.name for p in (OWN / "vpp-v26.06" / "traces").glob("*.jsonl"))
# The messages each end of `pyvcl nc` exchanges, in this order (others may come between).
SEQUENCES = {
    "client": ["ATTACH", "ATTACH_REPLY", "CTRL_CONNECT", "CTRL_CONNECTED", "IO_TX",
               "CTRL_APP_DETACH"],
    "server": ["ATTACH", "ATTACH_REPLY", "CTRL_LISTEN", "CTRL_BOUND", "CTRL_ACCEPTED",
               "CTRL_ACCEPTED_REPLY", "IO_RX", "CTRL_DISCONNECTED", "CTRL_DISCONNECTED_REPLY",
               "CTRL_APP_DETACH"],
}  # fmt: skip
OWN_EVT_QUEUE_SIZE = 64  # tools/record_fixtures.py: VCL's event-queue-size


def _in_order(names: list[str], wanted: list[str]) -> bool:
    it = iter(names)
    return all(w in it for w in wanted)


def test_own_traces_are_there() -> None:
    topologies = {n.split("-")[0] for n in OWN_TRACES}
    assert {"ct", "tcp"} <= topologies and any("noevfd" in n for n in OWN_TRACES), OWN_TRACES


@pytest.mark.parametrize("name", OWN_TRACES)
def test_own_trace_decodes(name: str) -> None:
    """A ``pyvcl nc`` end: its attach (flags from its scope and eventfd mode), the reply and
    its fds, each SEND_FDS, then its session's messages in order; replayed through a fresh
    session core, every call has the outcome recorded."""
    topology, _, end, *mode = name.removesuffix(".jsonl").split("-")
    evfd = mode != ["noevfd"]
    path = OWN / "vpp-v26.06" / "traces" / name
    msgs = load_trace(path)
    sapi = [m for m in msgs if m.kind == "sapi"]
    assert [m.type for m in sapi[:2]] == [SapiMsgType.ATTACH, SapiMsgType.ATTACH_REPLY]
    assert all(m.type == SapiMsgType.SEND_FDS for m in sapi[2:])
    attach, reply = sapi[0], sapi[1]
    assert attach.direction == "app->vpp" and reply.direction == "vpp->app"
    scope = F.USE_LOCAL_SCOPE if topology == "ct" else F.USE_GLOBAL_SCOPE
    want = F.ACCEPT_REDIRECT | F.ADD_SEGMENT | scope | (F.EVT_MQ_USE_EVENTFD if evfd else 0)
    assert attach.fields["flags"] == want
    assert attach.fields["EVT_QUEUE_SIZE"] == OWN_EVT_QUEUE_SIZE
    assert attach.fields["RX_FIFO_SIZE"] == attach.fields["TX_FIFO_SIZE"] == 4000000
    # The frame is what AttachOptions encodes for the same settings.
    ours = AttachOptions(
        name=attach.fields["name"],
        scope_local=topology == "ct",
        scope_global=topology == "tcp",
        use_mq_eventfd=evfd,
        evt_queue_size=OWN_EVT_QUEUE_SIZE,
        rx_fifo_size=4000000,
        tx_fifo_size=4000000,
        segment_size=attach.fields["SEGMENT_SIZE"],
        add_segment_size=attach.fields["ADD_SEGMENT_SIZE"],
        prealloc_fifo_pairs=attach.fields["PREALLOC_FIFO_PAIRS"],
        namespace_secret=attach.fields["NAMESPACE_SECRET"],
    )
    assert attach.raw == encode_frame(SapiMsgType.ATTACH, encode_attach(ours))

    f = reply.fields
    assert f["retval"] == 0 and f["vpp_ctrl_mq_thread"] == 0
    assert f["segment_handle"] >> 32 > 0 and f["segment_handle"] & 0xFFFFFFFF == 0
    # Through an app namespace's socket the handle carries the namespace (docs/namespaces.md).
    assert (f["api_client_handle"] >> 16 > 0) == (topology == "tcp")
    fd_flags = SessionFdFlag.VPP_MQ_SEGMENT | SessionFdFlag.MEMFD_SEGMENT
    fd_flags |= SessionFdFlag.MQ_EVENTFD if evfd else 0
    assert f["fd_flags"] == fd_flags and f["n_fds"] == len(reply.fds) == bin(fd_flags).count("1")
    assert reply.fd_roles["VPP_MQ_SEGMENT"] == [reply.fds[0]]
    assert reply.fd_roles["MEMFD_SEGMENT"] == [reply.fds[1]]
    assert ("MQ_EVENTFD" in reply.fd_roles) == evfd
    for extra in sapi[2:]:
        assert len(extra.fds) == 1 and extra.fields == {}
    assert "ATTACH_REPLY" in format_trace(sapi)

    timeline = load_timeline(path)
    names = [r.type_name for r in timeline.records if isinstance(r, TraceMessage)]
    assert _in_order(names, SEQUENCES[end]), names
    result = replay(timeline)
    assert result.mismatches == [], "\n".join(map(str, result.mismatches))
    assert result.calls >= 4 and result.events >= 1


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
