"""``pyvcl decode FILE``: decode a recording, message by message.

A trace (JSON with ``events``: a recorded app-socket exchange) prints each frame decoded; a
shared-memory snapshot (``NAME.bin`` + ``NAME.json`` with ``regions``) prints its segments,
message queues with every event, and fifos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .render import render, to_jsonable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("decode", help="decode a recorded app-socket trace or a memory snapshot")
    p.add_argument("file", type=Path, help="trace .json, or snapshot .bin/.json")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if path.suffix == ".bin" or _is_snapshot(path):
        from ..snapshot import describe_snapshot

        data = to_jsonable(describe_snapshot(path))
        print(json.dumps(data, indent=2) if args.json else render(data))
        return 0
    from ..api.trace import format_trace, load_trace

    messages = load_trace(path)
    if args.json:
        print(json.dumps(to_jsonable([vars(m) for m in messages]), indent=2))
    else:
        print(format_trace(messages))
    return 0


def _is_snapshot(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and "regions" in head
