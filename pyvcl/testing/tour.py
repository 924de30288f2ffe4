"""Runs the listings of the tour (``docs/tour/*.md``) against a VPP, so the book cannot drift.

A listing is a fenced block marked ``pycon``: statements after ``>>> `` (continued after
``... ``), each followed by the output it printed.  `run_chapter` runs a chapter's listings
in order in one `pyvcl.repl.Shell`, as the reader's ``pyvcl repl`` would, and returns, per
statement, what it printed.  After each statement the events it caused are given time to
arrive (`SETTLE_S` of quiet), so they print as its output, as a reader typing at human speed
sees them before the next prompt.

What a chapter needs from VPP it says in a line of its own (`requirements`)::

    <!-- tour: stack=tcp -->

- ``stack=ct`` (the default): the shell attaches to the given app socket with local scope
  only, and ``peer()`` runs ``pyvcl nc --app-socket SOCKET --scope local``: cut-through.
- ``stack=tcp``: the chapter also uses VPP's TCP stack, on the two-VRF topology
  (`pyvcl.testing.hoststack.setup_two_vrf_tcp`, passed as ``tcp``).  The shell attaches in
  the server's namespace with both scopes, as ``pyvcl repl --ns srv`` does; ``peer()`` runs
  ``pyvcl nc --runtime-dir DIR --ns srv``, so a listing picks the other namespace and the
  scope with ``peer(..., args=["--ns", "cli", "--scope", "global"])``.

`normalise` blanks what changes from run to run (handles, offsets, contexts, segment names,
app indices); `check_chapter` compares; `record_chapter` rewrites a chapter's outputs from a
real run (``python tools/tour.py record docs/tour/04-listen-and-accept.md``).
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hoststack import TwoVrfTcp

__all__ = [
    "STACKS",
    "Statement",
    "check_chapter",
    "normalise",
    "parse",
    "record_chapter",
    "requirements",
    "run_chapter",
]

SETTLE_S = 0.3
"""Quiet time after a statement before its output is taken (events still coming in)."""
MAX_SETTLE_S = 5.0

_FENCE = "```pycon"
_NEEDS = re.compile(r"^<!-- tour: (.*) -->$", re.M)
STACKS = ("ct", "tcp")
"""What ``stack=`` in a chapter's ``<!-- tour: ... -->`` line may say."""
_VARYING = (
    "handle|listener_handle|context|client_index|segment_handle|app_session_index|vpp_evt_q|"
    "vpp_event_queue_address|server_rx_fifo|server_tx_fifo|rx_fifo|tx_fifo|session_index|"
    "segment_size|segment_name|cl_sh_handle|mq_index|app_index|api_client_handle"
)
_NORMALISE = [
    (re.compile(rf"\b({_VARYING})=('[^']*'|\S+)"), r"\1=N"),
    (re.compile(rf"\b({_VARYING})\s{{2,}}\S+"), r"\1 N"),
    (re.compile(r"0x[0-9a-f]+"), "0x_"),
    (re.compile(r"\bseg-\d+-\d+-\d+"), "seg-_"),
    (re.compile(r"\bapp \d+"), "app N"),
    # A TCP peer's port is VPP's pick (`transport_alloc_local_port`); cut-through's 0 stays.
    (re.compile(r"(\brmt(?:=|\s+)\{'ip': '[^']*', 'port': )[1-9]\d*(?:, '\w*\.\.\.)?"), r"\1N"),
    (re.compile(r"[ \t]+$", re.M), ""),
]


@dataclass
class Statement:
    source: str  # with its ">>> " / "... " prompts removed
    expected: str
    line: int  # where it starts in the chapter (1-based)


def parse(text: str) -> list[list[Statement]]:
    """The chapter's listings, each a list of statements with their expected output."""
    listings: list[list[Statement]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != _FENCE:
            i += 1
            continue
        i += 1
        listing: list[Statement] = []
        while i < len(lines) and lines[i].strip() != "```":
            if not lines[i].startswith(">>> "):
                raise ValueError(f"line {i + 1}: a listing line before any '>>> ' statement")
            start = i
            src = [lines[i][4:]]
            i += 1
            while i < len(lines) and lines[i].startswith("... "):
                src.append(lines[i][4:])
                i += 1
            out = []
            while i < len(lines) and not lines[i].startswith(">>> ") and lines[i].strip() != "```":
                out.append(lines[i])
                i += 1
            listing.append(Statement("\n".join(src), "\n".join(out), start + 1))
        listings.append(listing)
        i += 1
    return listings


def normalise(text: str) -> str:
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text.strip("\n")


def requirements(text: str) -> dict[str, str]:
    """What a chapter asks of VPP, from its ``<!-- tour: key=value ... -->`` lines:
    ``{"stack": "ct"}`` unless it says otherwise."""
    needs = {"stack": "ct"}
    for m in _NEEDS.finditer(text):
        for item in m.group(1).split():
            key, sep, value = item.partition("=")
            if key != "stack" or not sep or value not in STACKS:
                raise ValueError(
                    f"<!-- tour: {m.group(1)} -->: {item!r} is not one of "
                    f"{', '.join(f'stack={s}' for s in STACKS)}"
                )
            needs[key] = value
    return needs


def run_chapter(
    path: str | Path, app_socket: str, tcp: TwoVrfTcp | None = None
) -> list[tuple[Statement, str]]:
    """Run every statement of the chapter at ``path``; (statement, what it printed).
    ``app_socket`` is VPP's default namespace's; a chapter that needs VPP's TCP stack
    (``stack=tcp``) runs on the two-VRF topology ``tcp`` instead."""
    from ..repl import Console, Shell  # (late: the testing package imports little)
    from ..vclsocket import VclApp

    text = Path(path).read_text()
    chapter = parse(text)
    if requirements(text)["stack"] == "tcp":
        if tcp is None:
            raise ValueError(f"{path} needs VPP's TCP stack: the two-VRF topology (tcp=)")
        sockets = tcp.server_socket.parent  # <runtime-dir>/app_ns_sockets/<namespace>
        if sockets.name != "app_ns_sockets":
            raise ValueError(f"{tcp.server_socket} is not in a runtime dir's app_ns_sockets")
        vcl = VclApp(str(tcp.server_socket), scope_local=True, scope_global=True)
        peer_args = ["--runtime-dir", str(sockets.parent), "--namespace-id", tcp.server_ns]
    else:
        vcl = VclApp(app_socket, scope_local=True, scope_global=False)
        peer_args = ["--app-socket", app_socket, "--scope", "local"]
    shell = Shell(vcl, peer_args=peer_args)
    results = []
    try:
        console = Console(shell.namespace())
        for listing in chapter:
            for st in listing:
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                    shell.pump()
                    more = console.runsource(st.source + "\n", f"{path}:{st.line}", "single")
                    if more:
                        raise ValueError(f"{path}:{st.line}: an unfinished statement")
                    _settle(shell)
                results.append((st, buf.getvalue().rstrip("\n")))
    finally:
        try:
            shell.close_peers()
        finally:
            vcl.close()
    return results


def _settle(shell: object) -> None:
    """Pump until nothing new came for `SETTLE_S` (at most `MAX_SETTLE_S`)."""
    from ..repl import Shell

    assert isinstance(shell, Shell)
    end = time.monotonic() + MAX_SETTLE_S
    seen = len(shell.history)
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        shell.pump()
        if len(shell.history) != seen:
            seen, quiet_since = len(shell.history), time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_S:
            return
        time.sleep(0.02)


def check_chapter(path: str | Path, app_socket: str, tcp: TwoVrfTcp | None = None) -> list[str]:
    """Run the chapter; the differences between what it says and what ran (empty: none)."""
    problems = []
    for st, got in run_chapter(path, app_socket, tcp):
        want, have = normalise(st.expected), normalise(got)
        if want != have:
            problems.append(
                f"{path}:{st.line}: >>> {st.source}\n--- the book says\n{st.expected}\n"
                f"--- it printed\n{got}"
            )
    return problems


def record_chapter(path: str | Path, app_socket: str, tcp: TwoVrfTcp | None = None) -> None:
    """Rewrite the chapter's expected outputs with what a run printed."""
    p = Path(path)
    lines = p.read_text().splitlines()
    results = run_chapter(p, app_socket, tcp)
    # Replace from the end, so earlier line numbers stay right.
    for st, got in reversed(results):
        start = st.line - 1 + st.source.count("\n") + 1
        end = start + (len(st.expected.splitlines()) if st.expected else 0)
        lines[start:end] = got.splitlines() if got else []
    p.write_text("\n".join(lines) + "\n")
