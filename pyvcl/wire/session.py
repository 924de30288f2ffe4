"""Session-layer events and control messages: ``src/vnet/session/session_types.h``,
``application_interface.h`` and ``transport_types.h``.

An event on a message queue is a ``session_event_t``: ``event_type``, ``postponed`` and a
16-byte union.  IO events (types 0-4) are the 18-byte event itself in ring 0; control events
carry one of the ``*_msg_t`` payloads below starting at byte 2 of a 256-byte ring-1 slot.
Ports are stored in network byte order and IPv4 addresses in the last 4 bytes of an ip46 field.
"""

from __future__ import annotations

from ._decl import (
    Bytes,
    Decl,
    Struct,
    array,
    i32,
    pad,
    pointer,
    session_handle_t,
    u8,
    u16,
    u32,
    u64,
    uword,
)

IP46 = Bytes(16)  # ip46_address_t: IPv4 in bytes 12..15, bytes 0..11 zero

IP46_ADDRESS = Decl("ip46_address_t", Struct("as_u8" / IP46))

_TRANSPORT_ENDPOINT = Struct(
    "ip" / IP46,
    "port" / u16,  # network byte order
    "is_ip4" / u8,
    pad(1),
    "sw_if_index" / u32,
    "fib_index" / u32,
)
TRANSPORT_ENDPOINT = Decl("transport_endpoint_t", _TRANSPORT_ENDPOINT)

SESSION_EVENT = Decl(
    "session_event_t",
    Struct(
        "event_type" / u8,
        "postponed" / u8,  # app-internal; send 0
        # union: session_index u32 | session_handle u64 | rpc args | as_u64[2] | data[]
        "session_index" / u32,
        "union_rest" / Bytes(12),
    ),
    "IO events use session_index; a ctrl payload starts at offset 2 (`payload_offset`).",
)
SESSION_EVENT_PAYLOAD_OFFSET = SESSION_EVENT.offset("session_index")
SESSION_RPC_ARGS = Decl(
    "session_rpc_args_t",
    Struct("fp" / pointer, "arg" / pointer),
    "The RPC arm of session_event_t's union (VPP-internal CTRL_EVT_RPC in a worker mq's ring 0).",
)
SESSION_EVENT_SIZE = SESSION_EVENT.size  # the IO ring's slot size
CTRL_EVENT_SLOT_SIZE = 256  # SESSION_CTRL_MSG_MAX_SIZE: the ctrl ring's slot size

# -- listen / bound / unlisten ----------------------------------------------------------------
SESSION_LISTEN_MSG = Decl(
    "session_listen_msg_t",
    Struct(
        "client_index" / u32,
        "context" / u32,
        "wrk_index" / u32,
        "vrf" / u32,
        "port" / u16,
        "proto" / u8,
        "is_ip4" / u8,
        "ip" / IP46,
        "flags" / u8,
        "ext_config" / uword,
        "dscp" / u8,
    ),
)
SESSION_LISTEN_URI_MSG = Decl(
    "session_listen_uri_msg_t",
    Struct("client_index" / u32, "context" / u32, "uri" / Bytes(56)),
)
SESSION_BOUND_MSG = Decl(
    "session_bound_msg_t",
    Struct(
        "context" / u32,
        "handle" / session_handle_t,
        "cl_sh_handle" / session_handle_t,
        "retval" / i32,
        "lcl_is_ip4" / u8,
        "lcl_ip" / IP46,
        "lcl_port" / u16,
        "rx_fifo" / uword,
        "tx_fifo" / uword,
        "vpp_evt_q" / uword,
        "segment_handle" / u64,
        "mq_index" / u32,
    ),
)
SESSION_UNLISTEN_MSG = Decl(
    "session_unlisten_msg_t",
    Struct("client_index" / u32, "context" / u32, "wrk_index" / u32, "handle" / session_handle_t),
)
SESSION_UNLISTEN_REPLY_MSG = Decl(
    "session_unlisten_reply_msg_t",
    Struct("context" / u32, "handle" / session_handle_t, "retval" / i32),
)

# -- accept / connect -------------------------------------------------------------------------
SESSION_ACCEPTED_MSG = Decl(
    "session_accepted_msg_t",
    Struct(
        "context" / u32,
        "listener_handle" / session_handle_t,
        "handle" / session_handle_t,
        "server_rx_fifo" / uword,
        "server_tx_fifo" / uword,
        "segment_handle" / u64,
        "vpp_event_queue_address" / uword,
        "mq_index" / u32,
        "lcl" / _TRANSPORT_ENDPOINT,
        "rmt" / _TRANSPORT_ENDPOINT,
        "flags" / u16,
        "original_dst_ip4" / u32,
        "original_dst_port" / u16,
    ),
)
SESSION_ACCEPTED_REPLY_MSG = Decl(
    "session_accepted_reply_msg_t",
    Struct(
        "context" / u32,
        "retval" / i32,
        "handle" / session_handle_t,
        "app_session_index" / u32,
    ),
)
SESSION_CONNECT_MSG = Decl(
    "session_connect_msg_t",
    Struct(
        "client_index" / u32,
        "context" / u32,
        "wrk_index" / u32,
        "vrf" / u32,
        "port" / u16,
        "lcl_port" / u16,
        "proto" / u8,
        "is_ip4" / u8,
        "ip" / IP46,
        "lcl_ip" / IP46,
        "parent_handle" / u64,
        "ckpair_index" / u32,
        "crypto_engine" / u8,
        "flags" / u8,
        "dscp" / u8,
        "ext_config" / uword,
    ),
)
SESSION_CONNECT_URI_MSG = Decl(
    "session_connect_uri_msg_t",
    Struct("client_index" / u32, "context" / u32, "uri" / Bytes(56)),
)
SESSION_CONNECTED_MSG = Decl(
    "session_connected_msg_t",
    Struct(
        "context" / u32,
        "retval" / i32,
        "handle" / session_handle_t,
        "server_rx_fifo" / uword,
        "server_tx_fifo" / uword,
        "segment_handle" / u64,
        "ct_rx_fifo" / uword,
        "ct_tx_fifo" / uword,
        "ct_segment_handle" / u64,
        "vpp_event_queue_address" / uword,
        "lcl" / _TRANSPORT_ENDPOINT,
        "mq_index" / u32,
    ),
)


# -- close family: five 16-byte messages of the same shape -----------------------------------
def _handle_msg(c_name: str) -> Decl:
    return Decl(
        c_name,
        Struct("client_index" / u32, "context" / u32, "handle" / session_handle_t),
    )


def _reply_msg(c_name: str) -> Decl:
    return Decl(
        c_name,
        Struct("context" / u32, "retval" / i32, "handle" / session_handle_t),
        "context must be the worker's api_client_handle: VPP finds the app by it.",
    )


SESSION_SHUTDOWN_MSG = _handle_msg("session_shutdown_msg_t")
SESSION_DISCONNECT_MSG = _handle_msg("session_disconnect_msg_t")
SESSION_TERMINATE_MSG = _handle_msg("session_terminate_msg_t")
SESSION_DISCONNECTED_MSG = _handle_msg("session_disconnected_msg_t")
SESSION_RESET_MSG = _handle_msg("session_reset_msg_t")
SESSION_DISCONNECTED_REPLY_MSG = _reply_msg("session_disconnected_reply_msg_t")
SESSION_RESET_REPLY_MSG = _reply_msg("session_reset_reply_msg_t")

SESSION_CLEANUP_MSG = Decl(
    "session_cleanup_msg_t",
    Struct("handle" / session_handle_t, "type" / u8),
)

# -- workers, segments, migration, rpc -------------------------------------------------------
SESSION_REQ_WORKER_UPDATE_MSG = Decl(
    "session_req_worker_update_msg_t", Struct("session_handle" / session_handle_t)
)
SESSION_WORKER_UPDATE_MSG = Decl(
    "session_worker_update_msg_t",
    Struct(
        "client_index" / u32,
        "wrk_index" / u16,
        "req_wrk_index" / u16,
        "handle" / session_handle_t,
    ),
)
SESSION_WORKER_UPDATE_REPLY_MSG = Decl(
    "session_worker_update_reply_msg_t",
    Struct(
        "handle" / session_handle_t,
        "rx_fifo" / uword,
        "tx_fifo" / uword,
        "segment_handle" / u64,
    ),
)
SESSION_APP_DETACH_MSG = Decl(
    "session_app_detach_msg_t", Struct("client_index" / u32, "context" / u32)
)
SEGMENT_NAME_LEN = 128
SESSION_APP_ADD_SEGMENT_MSG = Decl(
    "session_app_add_segment_msg_t",
    Struct(  # not packed
        "client_index" / u32,
        "context" / u32,
        "fd_flags" / u8,
        pad(3),
        "segment_size" / u32,
        "segment_name" / Bytes(SEGMENT_NAME_LEN),
        "segment_handle" / u64,
    ),
)
SESSION_APP_DEL_SEGMENT_MSG = Decl(
    "session_app_del_segment_msg_t",
    Struct("client_index" / u32, "context" / u32, "segment_handle" / u64),
)
SESSION_MIGRATED_MSG = Decl(
    "session_migrated_msg_t",
    Struct(
        "vpp_evt_q" / uword,
        "handle" / session_handle_t,
        "new_handle" / session_handle_t,
        "segment_handle" / u64,
        "vpp_thread_index" / u32,
    ),
)
APP_WRK_RPC_DATA_LEN = 64
SESSION_APP_WRK_RPC_MSG = Decl(
    "session_app_wrk_rpc_msg_t",
    Struct("client_index" / u32, "wrk_index" / u32, "data" / Bytes(APP_WRK_RPC_DATA_LEN)),
)

# -- transport attributes -------------------------------------------------------------------
_TRANSPORT_ENDPT_ATTR = Struct(
    "type" / u32,  # TransportAttrType
    pad(4),
    # union: mss u16 | flags u8 | cc_algo u8 | ext_endpt | app_proto_err_code u64 | pointers
    "value" / Bytes(32),
)
TRANSPORT_ENDPT_ATTR = Decl("transport_endpt_attr_t", _TRANSPORT_ENDPT_ATTR)
SESSION_TRANSPORT_ATTR_MSG = Decl(
    "session_transport_attr_msg_t",
    Struct(
        "client_index" / u32,
        "handle" / session_handle_t,
        "attr" / _TRANSPORT_ENDPT_ATTR,
        "is_get" / u8,
    ),
)
SESSION_TRANSPORT_ATTR_REPLY_MSG = Decl(
    "session_transport_attr_reply_msg_t",
    Struct(
        "retval" / i32,
        "handle" / session_handle_t,
        "attr" / _TRANSPORT_ENDPT_ATTR,
        "is_get" / u8,
    ),
)

# -- datagrams -----------------------------------------------------------------------------
SESSION_DGRAM_PRE_HDR = Decl(
    "session_dgram_pre_hdr_t", Struct("data_length" / u32, "data_offset" / u32)
)
SESSION_DGRAM_HDR = Decl(
    "session_dgram_hdr_t",
    Struct(
        "data_length" / u32,
        "data_offset" / u32,
        "rmt_ip" / IP46,
        "lcl_ip" / IP46,
        "rmt_port" / u16,
        "lcl_port" / u16,
        "is_ip4" / u8,
        "gso_size" / u16,
    ),
)


# -- extended (crypto) endpoint config: differs between VPP releases -------------------------
def _crypto_cfg(with_tls_profile: bool) -> Struct:
    owner = ["tls_profile_index" / u32, "owner_app_wrk_index" / u32] if with_tls_profile else []
    return Struct(
        "ckpair_index" / u32,
        "ca_trust_index" / u32,
        *owner,
        "alpn_protos" / array(4, u8),
        "crypto_engine" / u8,
        pad(3),
        "verify_cfg" / u32,
        "hostname" / Bytes(256),
    )


def crypto_cfg_decl(with_tls_profile: bool) -> Decl:
    return Decl("transport_endpt_crypto_cfg_t", _crypto_cfg(with_tls_profile))


def ext_cfg_decl(with_tls_profile: bool) -> Decl:
    return Decl(
        "transport_endpt_ext_cfg_t",
        Struct("type" / u16, "len" / u16, "crypto" / _crypto_cfg(with_tls_profile)),
        "Copied into a chunk of the vpp-mq segment; LISTEN/CONNECT ext_config holds its offset.",
    )


# v26.06 layout (v26.02: see pyvcl.wire.versions).
TRANSPORT_ENDPT_CRYPTO_CFG = crypto_cfg_decl(with_tls_profile=True)
TRANSPORT_ENDPT_EXT_CFG = ext_cfg_decl(with_tls_profile=True)

# Control payload by event type; IO events (0..4) carry only session_index.
CTRL_PAYLOADS: dict[int, Decl] = {
    8: SESSION_RESET_MSG,
    9: SESSION_BOUND_MSG,
    10: SESSION_UNLISTEN_REPLY_MSG,
    11: SESSION_ACCEPTED_MSG,
    12: SESSION_ACCEPTED_REPLY_MSG,
    13: SESSION_CONNECTED_MSG,
    14: SESSION_DISCONNECTED_MSG,
    15: SESSION_DISCONNECTED_REPLY_MSG,
    16: SESSION_RESET_REPLY_MSG,
    17: SESSION_REQ_WORKER_UPDATE_MSG,
    18: SESSION_WORKER_UPDATE_MSG,
    19: SESSION_WORKER_UPDATE_REPLY_MSG,
    20: SESSION_SHUTDOWN_MSG,
    21: SESSION_DISCONNECT_MSG,
    22: SESSION_CONNECT_MSG,
    23: SESSION_CONNECT_URI_MSG,
    24: SESSION_LISTEN_MSG,
    25: SESSION_LISTEN_URI_MSG,
    26: SESSION_UNLISTEN_MSG,
    27: SESSION_APP_DETACH_MSG,
    28: SESSION_APP_ADD_SEGMENT_MSG,
    29: SESSION_APP_DEL_SEGMENT_MSG,
    30: SESSION_MIGRATED_MSG,
    31: SESSION_CLEANUP_MSG,
    32: SESSION_APP_WRK_RPC_MSG,
    33: SESSION_TRANSPORT_ATTR_MSG,
    34: SESSION_TRANSPORT_ATTR_REPLY_MSG,
    37: SESSION_CONNECT_MSG,  # CONNECT_STREAM
    38: SESSION_TERMINATE_MSG,
}

_ = u64  # re-exported building block
