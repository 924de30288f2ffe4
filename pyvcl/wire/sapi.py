"""App-socket ("sapi") messages: ``src/vnet/session/application_interface.h``.

Every message in either direction is one packed ``app_sapi_msg_t`` of 209 bytes: a one-byte
``app_sapi_msg_type_e`` and a 208-byte union of the payloads below.  All payloads are packed.
"""

from __future__ import annotations

from ._decl import Bytes, Decl, Struct, array, i32, u8, u16, u32, u64

ATTACH_N_OPTIONS = 18  # APP_OPTIONS_N_OPTIONS; the test compares it with the enum

APP_SAPI_ATTACH_MSG = Decl(
    "app_sapi_attach_msg_t",
    Struct("name" / Bytes(64), "options" / array(ATTACH_N_OPTIONS, u64)),
    "ATTACH request: app name (NUL padded) and options indexed by AttachOption.",
)

APP_SAPI_ATTACH_REPLY_MSG = Decl(
    "app_sapi_attach_reply_msg_t",
    Struct(
        "retval" / i32,
        "app_index" / u32,
        "app_mq" / u64,  # offset of the app worker mq from the first app segment's fsh
        "vpp_ctrl_mq" / u64,  # offset of the ctrl mq from the vpp-mq segment's fsh
        "segment_handle" / u64,
        "api_client_handle" / u32,
        "vpp_ctrl_mq_thread" / u8,
        "n_fds" / u8,
        "fd_flags" / u8,
    ),
    "ATTACH_REPLY: fds follow in SessionFdFlag bit order.",
)

APP_SAPI_WORKER_ADD_DEL_MSG = Decl(
    "app_sapi_worker_add_del_msg_t",
    Struct("app_index" / u32, "wrk_index" / u32, "is_add" / u8),
)

APP_SAPI_WORKER_ADD_DEL_REPLY_MSG = Decl(
    "app_sapi_worker_add_del_reply_msg_t",
    Struct(
        "retval" / i32,
        "wrk_index" / u32,
        "app_event_queue_address" / u64,
        "segment_handle" / u64,
        "api_client_handle" / u32,
        "n_fds" / u8,
        "fd_flags" / u8,
        "is_add" / u8,
    ),
)

APP_SAPI_CERT_KEY_ADD_DEL_MSG = Decl(
    "app_sapi_cert_key_add_del_msg_t",
    Struct(
        "context" / u32,
        "index" / u32,
        "cert_len" / u16,
        "certkey_len" / u16,
        "is_add" / u8,
    ),
    "Followed, for an add, by one raw message of certkey_len bytes: PEM cert then PEM key.",
)

APP_SAPI_CERT_KEY_ADD_DEL_REPLY_MSG = Decl(
    "app_sapi_cert_key_add_del_reply_msg_t",
    Struct("context" / u32, "retval" / i32, "index" / u32),
)

# The union is as large as its largest member, the attach request.
SAPI_PAYLOAD_SIZE = APP_SAPI_ATTACH_MSG.size

APP_SAPI_MSG = Decl(
    "app_sapi_msg_t",
    Struct("type" / u8, "payload" / Bytes(SAPI_PAYLOAD_SIZE)),
    "The 209-byte frame of every app-socket message.",
)

SAPI_MSG_SIZE = APP_SAPI_MSG.size
SAPI_PAYLOAD_OFFSET = APP_SAPI_MSG.offset("payload")

# Which payload each message type carries (SEND_FDS carries none: the fd is the message).
PAYLOADS = {
    1: APP_SAPI_ATTACH_MSG,
    2: APP_SAPI_ATTACH_REPLY_MSG,
    3: APP_SAPI_WORKER_ADD_DEL_MSG,
    4: APP_SAPI_WORKER_ADD_DEL_REPLY_MSG,
    6: APP_SAPI_CERT_KEY_ADD_DEL_MSG,
    7: APP_SAPI_CERT_KEY_ADD_DEL_REPLY_MSG,
}

# Limits VPP enforces on a cert/key upload (sapi_add_del_cert_key_handler).
CERT_KEY_MAX = 20000
CERT_MAX = 10000
KEY_MAX = 10000
