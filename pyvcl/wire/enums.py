"""Enumerations of VPP v26.06's session layer, each named after its C enum.

Members drop the C prefix (``SESSION_CTRL_EVT_BOUND`` -> ``SessionEvent.CTRL_BOUND``...); the
``C_PREFIX`` class attribute gives it back, and `tests/test_layouts.py` checks every value
against the ground truth extracted from a real build.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class SapiMsgType(enum.IntEnum):
    """app_sapi_msg_type_e: first byte of every 209-byte app-socket message."""

    NONE = 0
    ATTACH = 1
    ATTACH_REPLY = 2
    ADD_DEL_WORKER = 3
    ADD_DEL_WORKER_REPLY = 4
    SEND_FDS = 5
    ADD_DEL_CERT_KEY = 6
    ADD_DEL_CERT_KEY_REPLY = 7


class AttachOption(enum.IntEnum):
    """app_attach_options_index_t: index into the attach message's ``options[18]``."""

    FLAGS = 0
    EVT_QUEUE_SIZE = 1
    SEGMENT_SIZE = 2
    ADD_SEGMENT_SIZE = 3
    MAX_FIFO_MEMORY = 4
    RX_FIFO_SIZE = 5
    TX_FIFO_SIZE = 6
    PREALLOC_FIFO_PAIRS = 7
    PREALLOC_FIFO_HDRS = 8
    NAMESPACE = 9
    NAMESPACE_SECRET = 10
    PROXY_TRANSPORT = 11
    UNUSED2 = 12
    TLS_ENGINE = 13
    MAX_FIFO_SIZE = 14
    HIGH_WATERMARK = 15
    LOW_WATERMARK = 16
    PCT_FIRST_ALLOC = 17
    N_OPTIONS = 18


class AppOptionsFlags(enum.IntFlag):
    """app_options_flags_t: value of option FLAGS."""

    ACCEPT_REDIRECT = 0x1
    ADD_SEGMENT = 0x2
    IS_BUILTIN = 0x4
    IS_TRANSPORT_APP = 0x8
    IS_PROXY = 0x10
    USE_GLOBAL_SCOPE = 0x20
    USE_LOCAL_SCOPE = 0x40
    EVT_MQ_USE_EVENTFD = 0x80
    MEMFD_FOR_BUILTIN = 0x100
    USE_HUGE_PAGE = 0x200
    GET_ORIGINAL_DST = 0x400
    EVT_COLLECTOR = 0x800
    NO_DUMP_SEGMENTS = 0x1000


class SessionFdFlag(enum.IntFlag):
    """session_fd_flag_t: which fds an attach/worker reply carries, in this bit order."""

    VPP_MQ_SEGMENT = 0x1
    MEMFD_SEGMENT = 0x2
    MQ_EVENTFD = 0x4
    VPP_MQ_EVENTFD = 0x8


class SessionFdType(enum.IntEnum):
    """session_fd_type_t: the bit positions of `SessionFdFlag`."""

    VPP_MQ_SEGMENT = 0
    MEMFD_SEGMENT = 1
    MQ_EVENTFD = 2
    VPP_MQ_EVENTFD = 3
    N_FD_TYPE = 4


class SessionEvent(enum.IntEnum):
    """session_evt_type_t: ``event_type`` of every message-queue event."""

    IO_RX = 0
    IO_TX = 1
    IO_TX_FLUSH = 2
    IO_BUILTIN_RX = 3
    IO_TX_MAIN = 4
    CTRL_RPC = 5
    CTRL_HALF_CLOSE = 6
    CTRL_CLOSE = 7
    CTRL_RESET = 8
    CTRL_BOUND = 9
    CTRL_UNLISTEN_REPLY = 10
    CTRL_ACCEPTED = 11
    CTRL_ACCEPTED_REPLY = 12
    CTRL_CONNECTED = 13
    CTRL_DISCONNECTED = 14
    CTRL_DISCONNECTED_REPLY = 15
    CTRL_RESET_REPLY = 16
    CTRL_REQ_WORKER_UPDATE = 17
    CTRL_WORKER_UPDATE = 18
    CTRL_WORKER_UPDATE_REPLY = 19
    CTRL_SHUTDOWN = 20
    CTRL_DISCONNECT = 21
    CTRL_CONNECT = 22
    CTRL_CONNECT_URI = 23
    CTRL_LISTEN = 24
    CTRL_LISTEN_URI = 25
    CTRL_UNLISTEN = 26
    CTRL_APP_DETACH = 27
    CTRL_APP_ADD_SEGMENT = 28
    CTRL_APP_DEL_SEGMENT = 29
    CTRL_MIGRATED = 30
    CTRL_CLEANUP = 31
    CTRL_APP_WRK_RPC = 32
    CTRL_TRANSPORT_ATTR = 33
    CTRL_TRANSPORT_ATTR_REPLY = 34
    CTRL_TRANSPORT_CLOSED = 35
    CTRL_HALF_CLEANUP = 36
    CTRL_CONNECT_STREAM = 37
    CTRL_TERMINATE = 38


class MqRing(enum.IntEnum):
    """session_mq_rings_e: ring 0 holds 18-byte IO events, ring 1 256-byte ctrl events."""

    IO_EVT = 0
    CTRL_EVT = 1
    N_RINGS = 2


def ring_for_event(event_type: int) -> MqRing:
    """The ring an app puts an event on (``mq_event_ring_index`` in session_input.c)."""
    return MqRing.IO_EVT if event_type < SessionEvent.CTRL_RPC else MqRing.CTRL_EVT


class SessionError(enum.IntEnum):
    """session_error_t: ``retval`` of replies (0 or negative)."""

    NONE = 0
    UNKNOWN = -1
    REFUSED = -2
    TIMEDOUT = -3
    ALLOC = -4
    OWNER = -5
    NOROUTE = -6
    NOINTF = -7
    NOIP = -8
    NOPORT = -9
    NOSUPPORT = -10
    NOLISTEN = -11
    NOSESSION = -12
    NOAPP = -13
    APP_ATTACHED = -14
    PORTINUSE = -15
    IPINUSE = -16
    ALREADY_LISTENING = -17
    ADDR_NOT_IN_USE = -18
    INVALID = -19
    INVALID_RMT_IP = -20
    INVALID_APPWRK = -21
    INVALID_NS = -22
    SEG_NO_SPACE = -23
    SEG_NO_SPACE2 = -24
    SEG_CREATE = -25
    FILTERED = -26
    SCOPE = -27
    BAPI_NO_FD = -28
    BAPI_SEND_FD = -29
    BAPI_NO_REG = -30
    MQ_MSG_ALLOC = -31
    TLS_HANDSHAKE = -32
    EVENTFD_ALLOC = -33
    NOEXTCFG = -34
    NOCRYPTOENG = -35
    NOCRYPTOCKP = -36
    LOCAL_CONNECT = -37
    WRONG_NS_SECRET = -38
    SYSCALL = -39
    TRANSPORT_NO_REG = -40
    MAX_STREAMS_HIT = -41


class CleanupType(enum.IntEnum):
    """session_cleanup_ntf_t: ``type`` of a CLEANUP event."""

    TRANSPORT = 0
    SESSION = 1


class TransportProto(enum.IntEnum):
    """transport_proto_t (same values as VCL's VPPCOM_PROTO_*)."""

    TCP = 0
    UDP = 1
    CT = 2
    TLS = 3
    QUIC = 4
    DTLS = 5
    SRTP = 6
    HTTP = 7


class TransportCfgFlags(enum.IntFlag):
    """transport_endpt_cfg_flags_t: ``flags`` of LISTEN/CONNECT."""

    CONNECTED = 0x1
    UNIDIRECTIONAL = 0x2


class TransportAttrType(enum.IntEnum):
    """transport_endpt_attr_type_t as in v26.06 (v26.02 lacks TLS_PROFILE_INFO: see versions)."""

    NEXT_OUTPUT_NODE = 0
    MSS = 1
    FLAGS = 2
    CC_ALGO = 3
    EXT_ENDPT = 4
    TLS_PEER_CERT = 5
    TLS_ALPN = 6
    TLS_PROFILE_INFO = 7
    NEXT_TRANSPORT = 8
    APP_PROTO_ERR_CODE = 9


class TransportAttrFlag(enum.IntFlag):
    """transport_endpt_attr_flag_t."""

    CSUM_OFFLOAD = 0x1
    GSO = 0x2
    RATE_SAMPLING = 0x4


class SessionFlagBit(enum.IntEnum):
    """session_flag_bits_t: bit numbers of session flags (accepted ``flags`` uses 1 << bit)."""

    RX_EVT = 0
    PROXY = 1
    CUSTOM_TX = 2
    IS_MIGRATING = 3
    UNIDIRECTIONAL = 4
    CUSTOM_FIFO_TUNING = 5
    HALF_OPEN = 6
    APP_CLOSED = 7
    IS_CLESS = 8
    RX_READY = 9
    TPT_INIT_CLOSE = 10
    STREAM = 11
    N_FLAGS = 12


class SessionState(enum.IntEnum):
    """session_state_t (VPP's view of a session; informative for apps)."""

    CREATED = 0
    LISTENING = 1
    CONNECTING = 2
    ACCEPTING = 3
    READY = 4
    OPENED = 5
    TRANSPORT_CLOSING = 6
    CLOSING = 7
    APP_CLOSED = 8
    TRANSPORT_CLOSED = 9
    CLOSED = 10
    TRANSPORT_DELETED = 11
    N_STATES = 12


class SsvmSegmentType(enum.IntEnum):
    """ssvm_segment_type_t: ``type`` in the ssvm header (app segments are MEMFD)."""

    SHM = 0
    MEMFD = 1
    PRIVATE = 2
    N_SEGMENT_TYPES = 3


class FifoSegmentFlags(enum.IntFlag):
    """fifo_segment_flags_t (VPP-private segment state; listed for the inspector)."""

    IS_PREALLOCATED = 0x1
    WILL_DELETE = 0x2
    MEM_LIMIT = 0x4
    CUSTOM_USE = 0x8


class DeqNotify(enum.IntFlag):
    """svm_fifo_deq_ntf_t: bits of ``want_deq_ntf``."""

    NO_DEQ_NOTIF = 0
    WANT_DEQ_NOTIF = 0x1
    WANT_DEQ_NOTIF_IF_FULL = 0x2
    WANT_DEQ_NOTIF_IF_EMPTY = 0x4


class FifoFlag(enum.IntFlag):
    """svm_fifo_flag_t (flags of VPP's private svm_fifo_t; listed for completeness)."""

    LL_TRACKED = 0x1
    SERVER_CT = 0x2
    CLIENT_CT = 0x4


class TlsEngine(enum.IntEnum):
    """crypto_engine_type_t values VCL puts in attach option TLS_ENGINE."""

    NONE = 0
    OPENSSL = 1
    PICOTLS = 2
    VPP = 3
    MBEDTLS = 4


def _prefixed(prefix: str, counter: str = "") -> Callable[[str], str]:
    """Rule for enums whose members are the C enumerators minus ``prefix``; ``N_*`` counters
    (which C often spells with a shorter prefix) get ``counter`` instead."""

    def rule(member: str) -> str:
        if counter and member.startswith("N_"):
            return counter + member
        return prefix + member

    return rule


def _event_c_name(member: str) -> str:
    kind, _, rest = member.partition("_")
    return f"SESSION_{kind}_EVT_{rest}"


# C enum name -> (Python enum, rule giving each member's C enumerator name).
# tests/test_layouts.py checks both directions against the extracted ground truth.
C_ENUMS: dict[str, tuple[type[enum.IntEnum] | type[enum.IntFlag], Callable[[str], str]]] = {
    "app_sapi_msg_type_e": (SapiMsgType, _prefixed("APP_SAPI_MSG_TYPE_")),
    "app_attach_options_index_t": (AttachOption, _prefixed("APP_OPTIONS_")),
    "app_options_flags_t": (AppOptionsFlags, _prefixed("APP_OPTIONS_FLAGS_")),
    "session_fd_flag_t": (SessionFdFlag, _prefixed("SESSION_FD_F_")),
    "session_fd_type_t": (SessionFdType, _prefixed("SESSION_FD_", "SESSION_")),
    "session_evt_type_t": (SessionEvent, _event_c_name),
    "session_mq_rings_e": (
        MqRing,
        lambda m: f"SESSION_MQ_{m}" + ("" if m[:2] == "N_" else "_RING"),
    ),
    "session_error_t": (SessionError, _prefixed("SESSION_E_")),
    "session_cleanup_ntf_t": (CleanupType, _prefixed("SESSION_CLEANUP_")),
    "transport_proto_t": (TransportProto, _prefixed("TRANSPORT_PROTO_")),
    "transport_endpt_cfg_flags_t": (TransportCfgFlags, _prefixed("TRANSPORT_CFG_F_")),
    "transport_endpt_attr_type_t": (TransportAttrType, _prefixed("TRANSPORT_ENDPT_ATTR_")),
    "transport_endpt_attr_flag_t": (TransportAttrFlag, _prefixed("TRANSPORT_ENDPT_ATTR_F_")),
    "session_flag_bits_t": (SessionFlagBit, _prefixed("SESSION_F_BIT_", "SESSION_")),
    "session_state_t": (SessionState, _prefixed("SESSION_STATE_", "SESSION_")),
    "ssvm_segment_type_t": (SsvmSegmentType, _prefixed("SSVM_SEGMENT_", "SSVM_")),
    "fifo_segment_flags_t": (FifoSegmentFlags, _prefixed("FIFO_SEGMENT_F_")),
    "svm_fifo_deq_ntf_t": (DeqNotify, _prefixed("SVM_FIFO_")),
    "svm_fifo_flag_t": (FifoFlag, _prefixed("SVM_FIFO_F_")),
}
