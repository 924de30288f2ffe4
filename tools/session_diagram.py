#!/usr/bin/env python3
"""Draw the session core's state machines from their table (`pyvcl.session.transitions`).

    python3 tools/session_diagram.py                  # Mermaid, both machines
    python3 tools/session_diagram.py --dot            # Graphviz dot text
    python3 tools/session_diagram.py --machine listener

Prints text only (no dependency: paste it where Mermaid renders, or pipe the dot text to
Graphviz's ``dot -Tsvg``).  docs/sessions.md carries the Mermaid output, and
tests/test_session_core.py checks that it is the current one: after changing the table, run
``python3 tools/session_diagram.py --markdown`` and paste its output into docs/sessions.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pyvcl

from pyvcl.session.core import State
from pyvcl.session.transitions import MACHINES, TRANSITIONS, Transition

# Where a machine starts and ends, drawn as Mermaid's [*].
_START, _END = State.CREATED, State.CLOSED


def _label(t: Transition) -> str:
    sends = " / " + ", ".join(n.removeprefix("CTRL_") for n in t.sends) if t.sends else ""
    return f"{t.trigger}{sends}"


def _name(state: State) -> str:
    return state.name


def mermaid(machine: str) -> str:
    lines = ["stateDiagram-v2"]
    for t in TRANSITIONS:
        if t.machine != machine:
            continue
        src = "[*]" if t.state == _START else _name(t.state)
        dst = "[*]" if t.next == _END else _name(t.next)
        lines.append(f"    {src} --> {dst} : {_label(t)}")
    return "\n".join(lines)


def dot(machine: str) -> str:
    lines = [f"digraph {machine} {{", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    for t in TRANSITIONS:
        if t.machine == machine:
            lines.append(f'    {_name(t.state)} -> {_name(t.next)} [label="{_label(t)}"];')
    lines.append("}")
    return "\n".join(lines)


def markdown() -> str:
    """The block docs/sessions.md carries: each machine's Mermaid diagram."""
    parts = []
    for machine in MACHINES:
        parts += [f"### The {machine}", "", "```mermaid", mermaid(machine), "```", ""]
    return "\n".join(parts).rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    form = p.add_mutually_exclusive_group()
    form.add_argument("--dot", action="store_true", help="Graphviz dot text instead of Mermaid")
    form.add_argument("--markdown", action="store_true", help="the block docs/sessions.md holds")
    p.add_argument("--machine", choices=MACHINES, help="one machine only (default: both)")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown())
        return 0
    draw = dot if args.dot else mermaid
    print("\n\n".join(draw(m) for m in ([args.machine] if args.machine else MACHINES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
