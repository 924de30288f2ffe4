"""The session core's state machines as a table: data to read, draw and test.

`pyvcl.session.core.SessionLayer` implements the rules in code (its handlers follow C VCL's);
this table states them in one place, as h11 does for HTTP: from which `State`, on which
trigger, to which state, and which control messages the app then owes VPP.  Two machines:

* ``listener``: a session the app listens on;
* ``connection``: a connected session, opened by ``connect()`` or born READY when the app
  accepts one queued on a listener.

Triggers are the app's calls (``listen()``, ``connect()``, ``accept()``, ``shutdown()``,
``close()``) and VPP's control events by name, with a variant in parentheses when the outcome
depends on a field (``BOUND(error)``: ``retval`` non-zero; ``CLEANUP(SESSION)``: its ``type``).
IO events change no state.  ``tests/test_session_core.py`` replays every row through the core
and checks the state and the messages, so the table cannot drift from the code;
``tools/session_diagram.py`` draws it (Mermaid or Graphviz), and docs/sessions.md carries the
drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .core import State

__all__ = ["MACHINES", "TRANSITIONS", "Transition"]

MACHINES = ("listener", "connection")


@dataclass(frozen=True)
class Transition:
    machine: str  # "listener" or "connection"
    state: State
    trigger: str
    next: State
    sends: tuple[str, ...] = ()  # SessionEvent names of the control messages owed, in order
    note: str = ""


_L, _C = MACHINES
S = State
TRANSITIONS: tuple[Transition, ...] = (
    # -- listener ------------------------------------------------------------------------------
    Transition(_L, S.CREATED, "listen()", S.LISTEN_PENDING, ("CTRL_LISTEN",)),
    Transition(_L, S.LISTEN_PENDING, "BOUND", S.LISTENING),
    Transition(_L, S.LISTEN_PENDING, "BOUND(error)", S.FAILED, note="the address is taken..."),
    Transition(_L, S.LISTEN_PENDING, "close()", S.CLOSING, note="UNLISTEN once BOUND arrives"),
    Transition(_L, S.LISTENING, "ACCEPTED", S.LISTENING, note="queued until the app accepts"),
    Transition(
        _L,
        S.LISTENING,
        "accept()",
        S.LISTENING,
        ("CTRL_ACCEPTED_REPLY",),
        note="with our index for the new READY connection",
    ),
    Transition(
        _L,
        S.LISTENING,
        "close()",
        S.CLOSING,
        ("CTRL_UNLISTEN",),
        note="after an ACCEPTED_REPLY refusing each ACCEPTED still queued",
    ),
    Transition(_L, S.CLOSING, "BOUND", S.CLOSING, ("CTRL_UNLISTEN",), note="closed while pending"),
    Transition(_L, S.CLOSING, "BOUND(error)", S.CLOSED),
    Transition(_L, S.CLOSING, "UNLISTEN_REPLY", S.CLOSED),
    Transition(_L, S.FAILED, "close()", S.CLOSED),
    # -- connection ----------------------------------------------------------------------------
    Transition(_C, S.CREATED, "connect()", S.CONNECTING, ("CTRL_CONNECT",)),
    Transition(
        _C,
        S.CREATED,
        "accept()",
        S.READY,
        ("CTRL_ACCEPTED_REPLY",),
        note="taken from a listener's queue",
    ),
    Transition(_C, S.CONNECTING, "CONNECTED", S.READY),
    Transition(_C, S.CONNECTING, "CONNECTED(error)", S.FAILED, note="refused, no route..."),
    Transition(_C, S.CONNECTING, "close()", S.CLOSING, note="DISCONNECT once CONNECTED arrives"),
    Transition(_C, S.FAILED, "close()", S.CLOSED),
    Transition(_C, S.READY, "shutdown()", S.READY, ("CTRL_SHUTDOWN",), note="no more writes"),
    Transition(_C, S.READY, "DISCONNECTED", S.PEER_CLOSED, note="read what is left, then EOF"),
    Transition(_C, S.READY, "RESET", S.RESET),
    Transition(_C, S.READY, "CLEANUP(SESSION)", S.RESET, note="VPP freed it unannounced"),
    Transition(_C, S.READY, "close()", S.CLOSING, ("CTRL_DISCONNECT",)),
    Transition(_C, S.PEER_CLOSED, "RESET", S.RESET),
    Transition(
        _C,
        S.PEER_CLOSED,
        "CLEANUP(TRANSPORT)",
        S.PEER_CLOSED,
        ("CTRL_DISCONNECTED_REPLY",),
        note="the transport is gone: confirm now, once",
    ),
    Transition(_C, S.PEER_CLOSED, "close()", S.CLOSING, ("CTRL_DISCONNECTED_REPLY",)),
    Transition(
        _C,
        S.RESET,
        "CLEANUP(TRANSPORT)",
        S.RESET,
        ("CTRL_RESET_REPLY",),
        note="the transport is gone: confirm now, once",
    ),
    Transition(_C, S.RESET, "close()", S.CLOSING, ("CTRL_RESET_REPLY",)),
    Transition(
        _C,
        S.CLOSING,
        "CONNECTED",
        S.CLOSING,
        ("CTRL_DISCONNECT",),
        note="closed while connecting",
    ),
    Transition(_C, S.CLOSING, "DISCONNECTED", S.CLOSING, note="late: our DISCONNECT closes it"),
    Transition(_C, S.CLOSING, "RESET", S.CLOSING, note="late: nothing owed"),
    Transition(_C, S.CLOSING, "CLEANUP(TRANSPORT)", S.CLOSING),
    Transition(_C, S.CLOSING, "CLEANUP(SESSION)", S.CLOSED, note="VPP forgot it; so do we"),
)
