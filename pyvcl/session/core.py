"""The session state machines, IO-free (protocol.md 7; VCL's vppcom.c handlers).

`SessionLayer` holds one worker's sessions.  Requests (`listen`, `connect`, `accept`,
`shutdown`, `close`) and VPP's events (`handle_event`) change session state and return
`Action`s: the control messages the app owes VPP.  Nothing here touches a socket, a queue or
shared memory; the adapter (`pyvcl.session.worker`) sends the actions and maps the fifos a
`FifoRef` names.  That split lets the rules be tested with recorded or made-up events.

What the app owes VPP, after each event, as C VCL does it:
- ACCEPTED: queued on its listener; ACCEPTED_REPLY when the app accepts it (with our index,
  which VPP then puts in every IO event for the session).
- DISCONNECTED (peer closed): nothing until the app closes; then DISCONNECTED_REPLY.
- RESET: nothing until the app closes; then RESET_REPLY.
- CLEANUP(TRANSPORT) while the app still holds the session open: the pending reply at once.
- CLEANUP(SESSION): forget VPP's handle (VPP reuses it); free if the app closed already.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import RemoteError
from ..mq.events import Event
from ..wire.addr import ip_from_wire, ip_to_wire, port_from_wire, port_to_wire
from ..wire.enums import CleanupType, SessionError, TransportCfgFlags, TransportProto
from ..wire.enums import SessionEvent as E

NO_PARENT = 0xFFFFFFFFFFFFFFFF  # parent_handle of a CONNECT that opens no stream
ORPHANS_KEPT = 64  # unmatched events a SessionLayer keeps for debugging (the latest ones)


class State(enum.Enum):
    CREATED = "created"  # nothing asked of VPP yet
    LISTEN_PENDING = "listen-pending"  # LISTEN sent, BOUND awaited
    LISTENING = "listening"
    CONNECTING = "connecting"  # CONNECT sent, CONNECTED awaited
    ACCEPTING = "accepting"  # ACCEPTED arrived on a listener, app has not accepted yet
    READY = "ready"
    PEER_CLOSED = "peer-closed"  # DISCONNECTED: read what is left, then EOF
    RESET = "reset"  # RESET: both directions fail with ECONNRESET
    FAILED = "failed"  # connect/listen refused
    CLOSING = "closing"  # the app closed; waiting for VPP's CLEANUP
    CLOSED = "closed"  # VPP forgot it (CLEANUP(SESSION)) and so may we


@dataclass(frozen=True)
class FifoRef:
    """Where a session's fifo pair lives: segment handle and fsh-relative offsets, plus the
    fifos whose signal words to use (the connecting side of a cut-through session)."""

    segment_handle: int
    rx: int
    tx: int
    signal_segment_handle: int | None = None
    rx_signals: int | None = None
    tx_signals: int | None = None


@dataclass(frozen=True)
class Action:
    """A control message for VPP: to the ctrl mq (``mq_offset`` None) or a session's mq."""

    event_type: int
    fields: dict[str, Any]
    mq_offset: int | None = None


@dataclass
class Session:
    index: int  # our app session index: the context of LISTEN/CONNECT, echoed by VPP
    proto: int = TransportProto.TCP
    state: State = State.CREATED
    handle: int | None = None  # VPP's session handle
    vpp_mq: int | None = None  # fsh offset of the VPP mq owning the session (vpp-mq segment)
    fifos: FifoRef | None = None
    local: tuple[str, int] | None = None
    peer: tuple[str, int] | None = None
    is_listener: bool = False
    listener: int | None = None  # for accepted sessions: our index of the listener
    error: int = 0  # session_error_t that ended it (connect refused, reset)
    shut_wr: bool = False
    shut_rd: bool = False
    app_closed: bool = False
    peer_closed: bool = False  # DISCONNECTED seen (sending is still allowed, as in VCL)
    confirmed: bool = False  # we answered VPP's close already (on CLEANUP(TRANSPORT))
    freed: bool = False  # VPP sent CLEANUP(SESSION): its handle is void (and maybe reused)
    cut_through: bool = False  # both ends are apps on this VPP (no half-close exists there)
    accepted: deque[Event] = field(default_factory=deque)  # listeners: ACCEPTED not yet taken
    rx_events: int = 0  # IO RX events seen (informative; readiness comes from the fifo)
    tx_events: int = 0  # IO TX (dequeue notifications) seen

    @property
    def vpp_index(self) -> int:
        """The session index VPP wants in IO events we send (low 32 bits of the handle)."""
        if self.handle is None:
            raise RemoteError(f"session {self.index} has no VPP handle yet")
        return self.handle & 0xFFFFFFFF

    @property
    def released(self) -> bool:
        """Its fifos are VPP's again, or may be at any moment: VPP sent CLEANUP(SESSION)
        (`freed`), or we confirmed its end after CLEANUP(TRANSPORT) (`confirmed`), after which
        VPP frees the session.  Nothing may touch them any more."""
        return self.freed or self.confirmed

    @property
    def readable_state(self) -> bool:
        return self.state in (State.READY, State.PEER_CLOSED) and not self.released

    @property
    def writable_state(self) -> bool:
        # After the peer's close a TCP session may still send (the peer may have only
        # half-closed, as C VCL allows); cut-through has no half-close in VPP v26.06, so
        # there DISCONNECTED means the peer is gone and writing is a broken pipe.
        if self.state == State.PEER_CLOSED and self.cut_through:
            return False
        # Not once VPP freed it (or may): its fifos and index may belong to another session.
        return (
            self.state in (State.READY, State.PEER_CLOSED)
            and not self.shut_wr
            and not self.released
        )


class SessionLayer:
    """All sessions of one app worker.  ``client_index`` is its api client handle."""

    def __init__(self, client_index: int, wrk_index: int = 0) -> None:
        self.client_index = client_index
        self.wrk_index = wrk_index
        self.sessions: dict[int, Session] = {}
        self.by_handle: dict[int, int] = {}
        self._next = 0
        # Events for sessions we do not know, kept for debugging: only the latest few, since a
        # peer (or a confused VPP) can send them forever; `orphans_dropped` counts the rest.
        self.orphans: deque[Event] = deque(maxlen=ORPHANS_KEPT)
        self.orphans_dropped = 0

    # -- requests ---------------------------------------------------------------------------
    def new_session(self, proto: int = TransportProto.TCP) -> Session:
        index = self._next
        self._next += 1
        s = Session(index, proto)
        self.sessions[index] = s
        return s

    def listen(self, s: Session, ip: str, port: int, vrf: int = 0) -> list[Action]:
        self._expect(s, State.CREATED, "listen")
        s.state, s.is_listener = State.LISTEN_PENDING, True
        s.local = (ip, port)
        return [Action(E.CTRL_LISTEN, self._endpoint_fields(s, ip, port, vrf))]

    def connect(self, s: Session, ip: str, port: int, vrf: int = 0) -> list[Action]:
        self._expect(s, State.CREATED, "connect")
        s.state, s.peer = State.CONNECTING, (ip, port)
        fields = self._endpoint_fields(s, ip, port, vrf)
        # VCL marks every connecting session connected; VPP reads it for UDP and TLS only.
        fields.update(parent_handle=NO_PARENT, flags=int(TransportCfgFlags.CONNECTED))
        return [Action(E.CTRL_CONNECT, fields)]

    def _endpoint_fields(self, s: Session, ip: str, port: int, vrf: int) -> dict[str, Any]:
        """What LISTEN and CONNECT share: who asks, for which session, and the endpoint."""
        ip46, is_ip4 = ip_to_wire(ip)
        return dict(
            client_index=self.client_index,
            context=s.index,
            wrk_index=self.wrk_index,
            vrf=vrf,
            port=port_to_wire(port),
            proto=s.proto,
            is_ip4=is_ip4,
            ip=ip46,
        )

    def accept(self, listener: Session) -> tuple[Session | None, list[Action]]:
        """Take the oldest pending ACCEPTED of ``listener``: a new READY (or already closed)
        session and the ACCEPTED_REPLY that gives VPP our index for it."""
        while listener.accepted:
            ev = listener.accepted.popleft()
            m = ev.msg
            s = self.new_session(listener.proto)
            s.handle, s.vpp_mq, s.listener = m.handle, m.vpp_event_queue_address, listener.index
            s.fifos = FifoRef(m.segment_handle, m.server_rx_fifo, m.server_tx_fifo)
            s.local = (ip_from_wire(m.lcl_ip, m.lcl_is_ip4), port_from_wire(m.lcl_port))
            s.peer = (ip_from_wire(m.rmt_ip, m.rmt_is_ip4), port_from_wire(m.rmt_port))
            if not any(m.lcl_ip) and not m.rmt_port:
                # Cut-through accepts carry only the listener's port (protocol.md 6.3).
                s.cut_through = True
                if listener.local is not None:
                    s.local = (listener.local[0], s.local[1] or listener.local[1])
            pre = self.by_handle.get(m.handle)
            early = self.sessions.pop(pre) if pre is not None and pre != s.index else None
            self.by_handle[m.handle] = s.index
            s.state = State.READY
            if early is not None:  # DISCONNECTED/RESET arrived before the app accepted
                s.state, s.error = early.state, early.error
            reply = Action(
                E.CTRL_ACCEPTED_REPLY,
                dict(context=m.context, retval=0, handle=m.handle, app_session_index=s.index),
                s.vpp_mq,
            )
            return s, [reply]
        return None, []

    def shutdown(self, s: Session) -> list[Action]:
        """Half-close: no more writes; VPP sends FIN after the tx fifo drains."""
        if s.shut_wr or s.state not in (State.READY, State.PEER_CLOSED):
            s.shut_wr = True
            return []
        s.shut_wr = True
        return [self._msg(s, E.CTRL_SHUTDOWN)]

    def close(self, s: Session) -> list[Action]:
        """The app is done with ``s``: the message VPP needs, per state (7.7, 7.8)."""
        if s.app_closed:
            return []
        s.app_closed = True
        st = s.state
        if s.is_listener:
            # Refuse what the app never accepted, or VPP keeps those sessions (and their
            # peers) open (vppcom_session_unbind).
            refusals = [
                Action(
                    E.CTRL_ACCEPTED_REPLY,
                    dict(context=ev.msg.context, retval=SessionError.REFUSED, handle=ev.msg.handle),
                    ev.msg.vpp_event_queue_address,
                )
                for ev in s.accepted
            ]
            s.accepted.clear()
            if st == State.LISTENING and s.handle is not None:
                s.state = State.CLOSING
                return [
                    *refusals,
                    Action(
                        E.CTRL_UNLISTEN,
                        dict(
                            client_index=self.client_index,
                            context=s.index,
                            wrk_index=self.wrk_index,
                            handle=s.handle,
                        ),
                    ),
                ]
            if st == State.LISTEN_PENDING:
                s.state = State.CLOSING  # unlisten once BOUND arrives
                return refusals
            return refusals + self._forget(s)
        if s.freed or s.confirmed:
            # VPP freed it already (CLEANUP(SESSION)), or we confirmed its end when the
            # transport went: nothing more to say (VCL's DETACHED / UPDATED states).
            if s.freed:
                return self._forget(s)
            s.state = State.CLOSING
            return []
        if st == State.READY:
            s.state = State.CLOSING
            return [self._msg(s, E.CTRL_DISCONNECT)]
        if st == State.PEER_CLOSED:
            s.state = State.CLOSING
            return [self._reply(s, E.CTRL_DISCONNECTED_REPLY)]
        if st == State.RESET:
            s.state = State.CLOSING
            return [self._reply(s, E.CTRL_RESET_REPLY)]
        if st == State.CONNECTING:
            s.state = State.CLOSING  # disconnect once CONNECTED arrives
            return []
        return self._forget(s)

    # -- events -----------------------------------------------------------------------------
    def handle_event(self, ev: Event) -> list[Action]:
        """Apply one event from this worker's mq; return what we owe VPP now."""
        t = ev.type
        if t == E.IO_RX or t == E.IO_TX:
            s = self.sessions.get(ev.session_index or 0)
            if s is not None:
                if t == E.IO_RX:
                    s.rx_events += 1
                else:
                    s.tx_events += 1
            return []
        m = ev.msg
        if m is None:
            return []
        handler = _HANDLERS.get(t)
        if handler is None:
            return []  # segment add/del are the adapter's; others are not for apps
        actions: list[Action] = handler(self, ev, m)
        return actions

    def _bound(self, ev: Event, m: Any) -> list[Action]:
        s = self.sessions.get(m.context)
        if s is None or s.state not in (State.LISTEN_PENDING, State.CLOSING):
            self._orphan(ev)
            return []
        if m.retval:
            s.state, s.error = State.FAILED, m.retval
            return self._forget(s) if s.app_closed else []
        s.handle, s.vpp_mq = m.handle, m.vpp_evt_q
        s.local = (ip_from_wire(m.lcl_ip, m.lcl_is_ip4), port_from_wire(m.lcl_port))
        self.by_handle[m.handle] = s.index
        if s.state == State.CLOSING:  # closed while pending: unlisten now
            s.state = State.LISTENING
            s.app_closed = False
            return self.close(s)
        s.state = State.LISTENING
        return []

    def _unlisten_reply(self, ev: Event, m: Any) -> list[Action]:
        s = self.sessions.get(m.context)
        if s is not None and s.is_listener:
            self._forget(s)
        return []

    def _accepted(self, ev: Event, m: Any) -> list[Action]:
        idx = self.by_handle.get(m.listener_handle)
        listener = self.sessions.get(idx) if idx is not None else None
        if listener is None or listener.state != State.LISTENING:
            # Nobody to hand it to: refuse, as VCL does (VPP then disconnects it).
            return [
                Action(
                    E.CTRL_ACCEPTED_REPLY,
                    dict(context=m.context, retval=SessionError.INVALID, handle=m.handle),
                    m.vpp_event_queue_address,
                )
            ]
        listener.accepted.append(ev)
        return []

    def _connected(self, ev: Event, m: Any) -> list[Action]:
        s = self.sessions.get(m.context)
        if s is None or s.state not in (State.CONNECTING, State.CLOSING):
            self._orphan(ev)
            return []
        if m.retval:
            s.state, s.error = State.FAILED, m.retval
            return self._forget(s) if s.app_closed else []
        s.handle, s.vpp_mq = m.handle, m.vpp_event_queue_address
        self.by_handle[m.handle] = s.index
        s.local = (ip_from_wire(m.lcl_ip, m.lcl_is_ip4), port_from_wire(m.lcl_port))
        if m.ct_rx_fifo:
            s.cut_through = True
            # Cut-through: data in the CT fifos, signals in our regular pair (4.7).
            s.fifos = FifoRef(m.ct_segment_handle, m.ct_rx_fifo, m.ct_tx_fifo,
                              m.segment_handle, m.server_rx_fifo, m.server_tx_fifo)  # fmt: skip
        else:
            s.fifos = FifoRef(m.segment_handle, m.server_rx_fifo, m.server_tx_fifo)
        if s.state == State.CLOSING:  # closed while connecting
            return [self._msg(s, E.CTRL_DISCONNECT)]
        s.state = State.READY
        return []

    def _disconnected(self, ev: Event, m: Any) -> list[Action]:
        s = self._by_handle(m.handle, ev)
        if s is None:
            return []
        # A late DISCONNECTED on a session the app already closed needs no answer: our
        # DISCONNECT closes it (vcl_session_disconnected_handler); a reply here would be a
        # second close of the same session.
        if s.state == State.READY:
            s.state = State.PEER_CLOSED
        s.peer_closed = True
        return []

    def _reset(self, ev: Event, m: Any) -> list[Action]:
        s = self._by_handle(m.handle, ev)
        if s is None:
            return []
        # After our own close nothing is owed (vcl_session_reset_handler).
        if s.state != State.CLOSING:
            s.state = State.RESET
        return []

    def _cleanup(self, ev: Event, m: Any) -> list[Action]:
        s = self._by_handle(m.handle, None)
        if s is None:
            return []
        if m.type == CleanupType.TRANSPORT:
            if s.app_closed:
                return []
            # Transport gone while the app holds the session: confirm now (vcl_session_cleanup).
            if s.state == State.PEER_CLOSED and not s.confirmed:
                s.confirmed = True
                return [self._reply(s, E.CTRL_DISCONNECTED_REPLY)]
            if s.state == State.RESET and not s.confirmed:
                s.confirmed = True
                return [self._reply(s, E.CTRL_RESET_REPLY)]
            return []
        # CLEANUP(SESSION): VPP freed it and will reuse the handle.
        self.by_handle.pop(m.handle, None)
        if s.app_closed:
            self._forget(s)
        else:
            if s.state in (State.READY, State.CONNECTING, State.ACCEPTING):
                s.state = State.RESET  # gone without a close we saw: treat as reset
            s.handle, s.freed = None, True
        return []

    def _migrated(self, ev: Event, m: Any) -> list[Action]:
        s = self._by_handle(m.handle, ev)
        if s is None:
            return []
        self.by_handle.pop(m.handle, None)
        s.handle, s.vpp_mq = m.new_handle, m.vpp_evt_q
        self.by_handle[m.new_handle] = s.index
        return []

    # -- helpers ----------------------------------------------------------------------------
    def _by_handle(self, handle: int, ev: Event | None) -> Session | None:
        idx = self.by_handle.get(handle)
        if idx is None:
            # An accepted session the app has not accepted yet? Flag the queued entry.
            for s in self.sessions.values():
                for queued in s.accepted:
                    if queued.msg.handle == handle and ev is not None:
                        placeholder = self.new_session(s.proto)
                        placeholder.state = (
                            State.PEER_CLOSED if ev.type == E.CTRL_DISCONNECTED else State.RESET
                        )
                        self.by_handle[handle] = placeholder.index
                        return None
            if ev is not None:
                self._orphan(ev)
            return None
        return self.sessions.get(idx)

    def _orphan(self, ev: Event) -> None:
        if len(self.orphans) == self.orphans.maxlen:
            self.orphans_dropped += 1
        self.orphans.append(ev)

    def _msg(self, s: Session, event_type: int) -> Action:
        return Action(event_type, dict(client_index=self.client_index, handle=s.handle), s.vpp_mq)

    def _reply(self, s: Session, event_type: int) -> Action:
        # context must be the api client handle: VPP finds the app by it (gotcha 12).
        return Action(
            event_type, dict(context=self.client_index, retval=0, handle=s.handle), s.vpp_mq
        )

    def _forget(self, s: Session) -> list[Action]:
        s.state = State.CLOSED
        if s.handle is not None and self.by_handle.get(s.handle) == s.index:
            del self.by_handle[s.handle]
        self.sessions.pop(s.index, None)
        return []

    @staticmethod
    def _expect(s: Session, state: State, what: str) -> None:
        if s.state != state:
            raise ValueError(f"cannot {what} a session in state {s.state.value}")


_HANDLERS: dict[int, Any] = {
    E.CTRL_BOUND: SessionLayer._bound,
    E.CTRL_UNLISTEN_REPLY: SessionLayer._unlisten_reply,
    E.CTRL_ACCEPTED: SessionLayer._accepted,
    E.CTRL_CONNECTED: SessionLayer._connected,
    E.CTRL_DISCONNECTED: SessionLayer._disconnected,
    E.CTRL_RESET: SessionLayer._reset,
    E.CTRL_CLEANUP: SessionLayer._cleanup,
    E.CTRL_MIGRATED: SessionLayer._migrated,
}
