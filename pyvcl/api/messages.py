"""App-socket requests and replies: attach, worker add/del, cert/key add/del (protocol.md 2.3-2.7).

Pure codecs: options in, 208-byte payloads out; payload bytes (+ fds) in, typed replies out.
`pyvcl.api.sapi` and `pyvcl.app` do the IO.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import AppSocketError
from ..wire.enums import AppOptionsFlags, AttachOption, SessionFdFlag, TlsEngine, TransportProto
from ..wire.sapi import (
    APP_SAPI_ATTACH_MSG,
    APP_SAPI_ATTACH_REPLY_MSG,
    APP_SAPI_CERT_KEY_ADD_DEL_MSG,
    APP_SAPI_CERT_KEY_ADD_DEL_REPLY_MSG,
    APP_SAPI_WORKER_ADD_DEL_MSG,
    APP_SAPI_WORKER_ADD_DEL_REPLY_MSG,
    ATTACH_N_OPTIONS,
    CERT_KEY_MAX,
    CERT_MAX,
    KEY_MAX,
)

APP_NAME_MAX = APP_SAPI_ATTACH_MSG["name"].size - 1  # VPP forces the last byte to NUL
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
MiB = 1 << 20


@dataclass
class AttachOptions:
    """What an app asks for when it attaches; defaults are VCL's (vcl_cfg.c).

    Sizes are bytes.  ``namespace_secret`` is carried for fidelity only: on the app-socket path
    VPP v26.06 puts the app in the namespace of the socket it connected to and never checks the
    secret (`docs/namespaces.md`).  Set ``namespace_id`` to choose that socket.
    """

    name: str = ""
    scope_local: bool = True
    scope_global: bool = True
    use_mq_eventfd: bool = True
    evt_queue_size: int = 2048
    segment_size: int = 256 * MiB
    add_segment_size: int = 128 * MiB
    rx_fifo_size: int = 1 * MiB
    tx_fifo_size: int = 1 * MiB
    prealloc_fifo_pairs: int = 8
    prealloc_fifo_hdrs: int = 0
    max_fifo_memory: int = 0
    max_fifo_size: int = 0
    high_watermark: int = 0
    low_watermark: int = 0
    pct_first_alloc: int = 0
    tls_engine: int = TlsEngine.OPENSSL
    proxy_transports: frozenset[int] = field(default_factory=frozenset)
    huge_pages: bool = False
    original_dst: bool = False
    namespace_id: str = ""
    namespace_secret: int = 0

    def app_name(self) -> str:
        return self.name or f"pyvcl_app_{os.getpid()}"

    def flags(self) -> AppOptionsFlags:
        f = AppOptionsFlags.ACCEPT_REDIRECT | AppOptionsFlags.ADD_SEGMENT  # VCL always sets both
        if self.scope_local:
            f |= AppOptionsFlags.USE_LOCAL_SCOPE
        if self.scope_global:
            f |= AppOptionsFlags.USE_GLOBAL_SCOPE
        if self.use_mq_eventfd:
            f |= AppOptionsFlags.EVT_MQ_USE_EVENTFD
        if self.proxy_transports:
            f |= AppOptionsFlags.IS_PROXY
        if self.huge_pages:
            f |= AppOptionsFlags.USE_HUGE_PAGE
        if self.original_dst:
            f |= AppOptionsFlags.GET_ORIGINAL_DST
        return f

    def validate(self) -> None:
        """Raise ValueError for options VPP would refuse or misread."""
        if len(self.app_name().encode()) > APP_NAME_MAX:
            raise ValueError(f"app name longer than {APP_NAME_MAX} bytes: {self.name!r}")
        if "\0" in self.app_name():
            raise ValueError("app name contains NUL")
        for name in ("rx_fifo_size", "tx_fifo_size"):
            v = getattr(self, name)
            if not 0 < v <= _U32_MAX:
                raise ValueError(f"{name} must be in 1..{_U32_MAX}, not {v}")
        for name in ("segment_size", "add_segment_size", "max_fifo_memory", "max_fifo_size"):
            v = getattr(self, name)
            if not 0 <= v <= _U64_MAX:
                raise ValueError(f"{name} out of range: {v}")
        if not 0 < self.evt_queue_size <= _U32_MAX or self.evt_queue_size % 2:
            # Odd sizes leave the ctrl ring's atomic counter misaligned in shared memory.
            raise ValueError(f"evt_queue_size must be even and positive, not {self.evt_queue_size}")
        for name in ("high_watermark", "low_watermark", "pct_first_alloc"):
            v = getattr(self, name)
            if not 0 <= v <= 100:
                raise ValueError(f"{name} is a percentage, not {v}")
        if self.prealloc_fifo_pairs and self.prealloc_fifo_hdrs:
            raise ValueError("prealloc_fifo_pairs and prealloc_fifo_hdrs are exclusive (VPP)")
        for proto in self.proxy_transports:
            TransportProto(proto)

    def options(self) -> list[int]:
        opts = [0] * ATTACH_N_OPTIONS
        opts[AttachOption.FLAGS] = int(self.flags())
        opts[AttachOption.EVT_QUEUE_SIZE] = self.evt_queue_size
        opts[AttachOption.SEGMENT_SIZE] = self.segment_size
        opts[AttachOption.ADD_SEGMENT_SIZE] = self.add_segment_size
        opts[AttachOption.MAX_FIFO_MEMORY] = self.max_fifo_memory
        opts[AttachOption.RX_FIFO_SIZE] = self.rx_fifo_size
        opts[AttachOption.TX_FIFO_SIZE] = self.tx_fifo_size
        opts[AttachOption.PREALLOC_FIFO_PAIRS] = self.prealloc_fifo_pairs
        opts[AttachOption.PREALLOC_FIFO_HDRS] = self.prealloc_fifo_hdrs
        opts[AttachOption.NAMESPACE_SECRET] = self.namespace_secret
        opts[AttachOption.PROXY_TRANSPORT] = sum(1 << p for p in self.proxy_transports)
        opts[AttachOption.TLS_ENGINE] = self.tls_engine
        opts[AttachOption.MAX_FIFO_SIZE] = self.max_fifo_size
        opts[AttachOption.HIGH_WATERMARK] = self.high_watermark
        opts[AttachOption.LOW_WATERMARK] = self.low_watermark
        opts[AttachOption.PCT_FIRST_ALLOC] = self.pct_first_alloc
        return opts


def encode_attach(options: AttachOptions) -> bytes:
    options.validate()
    name = options.app_name().encode().ljust(APP_SAPI_ATTACH_MSG["name"].size, b"\0")
    return APP_SAPI_ATTACH_MSG.build(name=name, options=options.options())


@dataclass
class DecodedAttach:
    """An ATTACH request as decoded from a trace."""

    name: str
    options: dict[str, int]
    flags: AppOptionsFlags


def decode_attach(payload: bytes) -> DecodedAttach:
    msg = APP_SAPI_ATTACH_MSG.parse(payload)
    opts = {AttachOption(i).name: int(v) for i, v in enumerate(msg.options)}
    name = bytes(msg.name).split(b"\0", 1)[0].decode(errors="replace")
    return DecodedAttach(name, opts, AppOptionsFlags(opts["FLAGS"]))


# The fds a reply carries, in the fixed order of their flag bits (protocol.md 2.4).
FD_ORDER = (
    SessionFdFlag.VPP_MQ_SEGMENT,
    SessionFdFlag.MEMFD_SEGMENT,
    SessionFdFlag.MQ_EVENTFD,
    SessionFdFlag.VPP_MQ_EVENTFD,
)


def assign_fds(fd_flags: int, n_fds: int, fds: list[int]) -> dict[SessionFdFlag, list[int]]:
    """Name the received fds by their flags.  VPP_MQ_EVENTFD stands for one fd per VPP thread
    (all the remaining ones).  Raises `AppSocketError` when counts disagree."""
    unknown = fd_flags & ~sum(int(f) for f in FD_ORDER)
    if unknown:
        raise AppSocketError(f"reply has unknown fd flags {unknown:#x}")
    if n_fds != len(fds):
        raise AppSocketError(f"reply announces {n_fds} fds but {len(fds)} arrived")
    named: dict[SessionFdFlag, list[int]] = {}
    rest = list(fds)
    for flag in FD_ORDER:
        if not fd_flags & flag:
            continue
        if not rest:
            raise AppSocketError(f"reply flags {fd_flags:#x} promise a {flag.name} fd; none left")
        if flag == SessionFdFlag.VPP_MQ_EVENTFD:
            named[flag], rest = rest, []
        else:
            named[flag] = [rest.pop(0)]
    if rest:
        raise AppSocketError(f"reply carries {len(rest)} fd(s) its flags do not name")
    return named


@dataclass
class AttachReply:
    retval: int
    app_index: int
    app_mq: int
    vpp_ctrl_mq: int
    segment_handle: int
    api_client_handle: int
    vpp_ctrl_mq_thread: int
    n_fds: int
    fd_flags: SessionFdFlag

    @classmethod
    def decode(cls, payload: bytes) -> AttachReply:
        t = APP_SAPI_ATTACH_REPLY_MSG.unpack(payload)
        values: dict[str, Any] = t._asdict()
        values["fd_flags"] = SessionFdFlag(values["fd_flags"])
        return cls(**values)


@dataclass
class WorkerAddDelReply:
    retval: int
    wrk_index: int
    app_event_queue_address: int
    segment_handle: int
    api_client_handle: int
    n_fds: int
    fd_flags: SessionFdFlag
    is_add: int

    @classmethod
    def decode(cls, payload: bytes) -> WorkerAddDelReply:
        values: dict[str, Any] = APP_SAPI_WORKER_ADD_DEL_REPLY_MSG.unpack(payload)._asdict()
        values["fd_flags"] = SessionFdFlag(values["fd_flags"])
        return cls(**values)


def encode_worker_add_del(app_index: int, wrk_index: int, is_add: bool) -> bytes:
    return APP_SAPI_WORKER_ADD_DEL_MSG.build(
        app_index=app_index, wrk_index=wrk_index, is_add=int(is_add)
    )


@dataclass
class CertKeyReply:
    context: int
    retval: int
    index: int

    @classmethod
    def decode(cls, payload: bytes) -> CertKeyReply:
        return cls(**APP_SAPI_CERT_KEY_ADD_DEL_REPLY_MSG.unpack(payload)._asdict())


def encode_cert_key_add(context: int, cert: bytes, key: bytes) -> tuple[bytes, bytes]:
    """The header payload and the raw blob that must follow it at once (protocol.md 2.7)."""
    if len(cert) > CERT_MAX or len(key) > KEY_MAX or len(cert) + len(key) > CERT_KEY_MAX:
        raise ValueError(
            f"cert ({len(cert)} B) and key ({len(key)} B) exceed VPP's limits "
            f"({CERT_MAX}, {KEY_MAX}, {CERT_KEY_MAX} together)"
        )
    if not cert or not key:
        raise ValueError("both a certificate and a key are needed")
    header = APP_SAPI_CERT_KEY_ADD_DEL_MSG.build(
        context=context, cert_len=len(cert), certkey_len=len(cert) + len(key), is_add=1
    )
    return header, cert + key


def encode_cert_key_del(context: int, index: int) -> bytes:
    return APP_SAPI_CERT_KEY_ADD_DEL_MSG.build(context=context, index=index, is_add=0)
