"""``pyvcl decode FILE``: decode a recording, message by message.

A trace (JSON with ``events``: a recorded app-socket exchange) prints each frame decoded; a
live trace (``PYVCL_TRACE``, docs/traces.md) prints as a timeline, one line per record
(``--session N``: what concerns the app's session N; ``--json``); a shared-memory snapshot
(``NAME.json`` with ``regions``, + ``NAME.bin`` or ``NAME.bin.gz``) prints its segments,
message queues with every event, and fifos.  A malformed or unreadable file is one line on
stderr, ``pyvcl decode: FILE: what is wrong``, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import VclError
from .render import render, to_jsonable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("decode", help="decode a recorded app-socket trace or a memory snapshot")
    p.add_argument("file", type=Path, help="trace .json, or snapshot .bin/.bin.gz/.json")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.add_argument(
        "--session",
        type=int,
        metavar="N",
        help="live traces: only what concerns the app's session N (its frames, messages, "
        "core calls)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = _decode(path, args.json, args.session)
    except VclError:
        raise  # a RecordingError names the file; the CLI prints it as one line
    except OSError as e:  # unreadable: missing, a directory, no permission...
        print(f"pyvcl decode: {e.filename or path}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _decode(path: Path, as_json: bool, session: int | None = None) -> str:
    """The decoded recording as text (or JSON text)."""
    data: Any
    from ..api.timeline import is_live_trace

    if is_live_trace(path):
        from ..api.timeline import load_timeline
        from .timeline import format_timeline, timeline_json

        timeline = load_timeline(path)
        if as_json:
            return json.dumps(timeline_json(timeline, session), indent=1)
        return format_timeline(timeline, session)
    if path.name.endswith((".bin", ".bin.gz")) or _is_snapshot(path):
        from ..snapshot import describe_snapshot

        data = to_jsonable(describe_snapshot(path))
        return json.dumps(data, indent=2) if as_json else render(data)
    from ..api.trace import format_trace, load_trace

    messages = load_trace(path)
    if as_json:
        return json.dumps(to_jsonable([vars(m) for m in messages]), indent=2)
    return format_trace(messages)


def _is_snapshot(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    from ..recording import read_json

    try:
        head = read_json(path)
    except (OSError, VclError):
        return False  # the trace loader says what is wrong with it
    if not isinstance(head, dict):
        return False
    from ..snapshot import SNAPSHOT_FORMAT

    return "regions" in head or head.get("format") == SNAPSHOT_FORMAT
