"""Session events as they sit in message-queue ring slots (protocol.md 6.1).

An IO event (types 0..4) is an 18-byte ``session_event_t`` in ring 0: ``event_type``,
``postponed``, ``session_index``.  A control event is a 256-byte ring-1 slot whose first two
bytes are ``event_type``/``postponed`` and whose payload (``session_*_msg_t``) starts at byte 2.
VPP's worker mqs also carry VPP-internal events (RPC, HALF_CLOSE, CLOSE, RESET) with pointers
in ring 0; `decode` shows those raw.

This module is pure: bytes in, `Event` out, and back.  Queues move the bytes.  The bytes come
from memory other processes write, so `decode` raises `SharedMemoryError` for anything that
cannot be an event of that ring, and nothing else.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import SharedMemoryError
from ..wire.enums import MqRing, SessionEvent, ring_for_event
from ..wire.session import (
    CTRL_EVENT_SLOT_SIZE,
    CTRL_PAYLOADS,
    SESSION_EVENT,
    SESSION_EVENT_PAYLOAD_OFFSET,
    SESSION_EVENT_SIZE,
)

_EVENT_TYPE = SESSION_EVENT["event_type"]
_SESSION_INDEX = SESSION_EVENT["session_index"]
_PAYLOAD = SESSION_EVENT_PAYLOAD_OFFSET


# The payload fields `Event`'s repr shows: those that say which session and what became of the
# request.  The rest (fifo offsets, addresses, the slot's stale tail) is in `fields()` and
# ``raw``.
_REPR_FIELDS = (
    "handle",
    "listener_handle",
    "session_handle",
    "new_handle",
    "segment_handle",
    "context",
    "retval",
    "type",
)
_HEX_REPR_FIELDS = frozenset(n for n in _REPR_FIELDS if n.endswith("handle"))


class Event(NamedTuple):
    """One decoded event.  ``msg`` is the payload's named tuple (ctrl events) or None;
    ``session_index`` is set for IO events; ``raw`` keeps the slot bytes that were read.
    (A named tuple: immutable, and cheap to make -- one per event on the data path.)

    The repr is one short line (type, session, the payload's key fields, the raw size);
    every field is in `fields()`, the slot's bytes in ``raw``."""

    type: int
    ring: int
    session_index: int | None = None
    msg: Any = None
    raw: bytes = b""

    @property
    def name(self) -> str:
        try:
            return SessionEvent(self.type).name
        except ValueError:
            return f"UNKNOWN_{self.type}"

    def __repr__(self) -> str:
        parts = [self.name]
        if self.session_index is not None:
            parts.append(f"session_index={self.session_index}")
        if self.msg is not None:
            payload = self.msg._asdict()
            for name in _REPR_FIELDS:
                value = payload.get(name)
                if isinstance(value, int):
                    parts.append(
                        f"{name}={value:#x}" if name in _HEX_REPR_FIELDS else f"{name}={value}"
                    )
        elif self.session_index is None:  # a VPP-internal event: only its bytes
            parts.append(f"ring={self.ring}")
        parts.append(f"raw={len(self.raw)} B")
        return f"Event({', '.join(parts)})"

    def fields(self) -> dict[str, Any]:
        """The payload as a plain dict (for printing and JSON)."""
        if self.msg is not None:
            return dict(self.msg._asdict())
        if self.session_index is not None:
            return {"session_index": self.session_index}
        return {}


# Where the two fields an app sets in an IO event live, and how to write them in place (the
# queue writes IO events straight into their ring slot: `MessageQueue.send_io`).
IO_TYPE_AT = _EVENT_TYPE.offset
IO_TYPE_CODEC = _EVENT_TYPE.codec
IO_INDEX_AT = _SESSION_INDEX.offset
IO_INDEX_CODEC = _SESSION_INDEX.codec
IO_EVENT_TYPES = frozenset(e for e in SessionEvent if ring_for_event(e) == MqRing.IO_EVT)
#: Event types below this are IO events (`decode`'s first case; the queue's drain inlines it).
IO_TYPES_END = int(SessionEvent.CTRL_RPC)


def encode_io(event_type: int, session_index: int) -> bytes:
    """An 18-byte IO event (VCL's ``app_send_io_evt_to_vpp`` sets only these two fields)."""
    if event_type not in IO_EVENT_TYPES:
        raise ValueError(f"event type {event_type} is not an IO event")
    buf = bytearray(SESSION_EVENT_SIZE)
    IO_TYPE_CODEC.pack_into(buf, IO_TYPE_AT, event_type)
    IO_INDEX_CODEC.pack_into(buf, IO_INDEX_AT, session_index)
    return bytes(buf)


def encode_ctrl(event_type: int, **fields: Any) -> bytes:
    """A control event: type byte, postponed 0, then the payload built from ``fields`` (missing
    fields zero).  Returns ``2 + sizeof(payload)`` bytes; the rest of the slot is left alone,
    as VPP copies only the payload size."""
    decl = CTRL_PAYLOADS.get(event_type)
    if decl is None:
        raise ValueError(f"event type {event_type} has no control payload")
    payload = decl.build(**fields)
    return bytes((event_type, 0)) + payload


# Event types each ring can hold.  Ring 0: IO events, and on VPP's own worker mqs the
# VPP-internal RPC / HALF_CLOSE / CLOSE / RESET (session_send_evt_to_thread).  Ring 1: control
# events with a payload (mq_event_ring_index puts every type >= CTRL_RPC there).
_IO_RING_MAX = int(SessionEvent.CTRL_RESET)
_RPC = int(SessionEvent.CTRL_RPC)
_IO_RING, _CTRL_RING = int(MqRing.IO_EVT), int(MqRing.CTRL_EVT)


def decode(ring: int, data: bytes | bytearray | memoryview, vpp_internal: bool = True) -> Event:
    """Decode one slot's bytes (an 18-byte IO slot or a 256-byte ctrl slot).

    Raises `SharedMemoryError` (and only that) for a slot that cannot hold an event of that
    ring: too short, an event type that does not belong to the ring (a control event in the IO
    ring would come out without its message), or a payload that does not decode.  The
    VPP-internal events of VPP's own worker mqs (RPC, HALF_CLOSE, CLOSE, RESET in the IO ring,
    without a message) come out raw; ``vpp_internal=False`` refuses them too, as
    `MessageQueue.drain` does: VPP never sends them to an app, and pyvcl consumes only app mqs
    (a RESET without its message would break whoever handles it)."""
    n = len(data)
    if n < SESSION_EVENT_SIZE:
        raise SharedMemoryError(f"event slot of {n} bytes is shorter than session_event_t")
    event_type = int(data[0])
    if event_type < _RPC:  # the data path: an IO event
        if ring != _IO_RING:
            raise SharedMemoryError(f"IO event type {event_type} in ring {ring}")
        return Event(
            event_type, ring, IO_INDEX_CODEC.unpack_from(data, IO_INDEX_AT)[0], None, bytes(data)
        )
    if ring == _IO_RING:
        if event_type > _IO_RING_MAX or not vpp_internal:
            raise SharedMemoryError(f"{_type_name(event_type)} ({event_type}) in the IO ring")
        # VPP-internal events carry pointers or a session handle that mean nothing outside
        # VPP: keep the bytes.
        return Event(event_type, ring, raw=bytes(data))
    if ring != _CTRL_RING:
        raise SharedMemoryError(f"no ring {ring} in a session message queue")
    decl = CTRL_PAYLOADS.get(event_type)
    if decl is None:
        raise SharedMemoryError(f"{_type_name(event_type)} ({event_type}) in the control ring")
    if _PAYLOAD + decl.size > n or n > CTRL_EVENT_SLOT_SIZE:
        raise SharedMemoryError(f"{decl.c_name} does not fit a {n}-byte slot")
    try:
        msg = decl.unpack(data, _PAYLOAD)
    except Exception as e:  # whatever the payload codec raises on bytes from elsewhere
        raise SharedMemoryError(f"{decl.c_name} does not decode: {e!r}") from None
    return Event(event_type, ring, msg=msg, raw=bytes(data))


def _type_name(event_type: int) -> str:
    try:
        return SessionEvent(event_type).name
    except ValueError:
        return "unknown event type"
