"""``pyvcl inspect PID``: the VCL state of a running application, read from outside.

Works on any VCL application (C VCL, a program under LDP, pyvcl): its segments, mapped
read-only through ``/proc/PID/fd``; its message queues with the events still queued; the
fifos of its sessions with the bytes unread in each (`pyvcl.procview`).  Never writes to a
segment, never takes a lock.  ``--json`` prints one JSON object; ``--watch`` redraws every
``SECONDS`` until interrupted; ``--snapshot PATH`` also records what it maps
(`pyvcl.snapshot_record`), for ``pyvcl decode`` and the tests.  Exit status 1 when the
process has no VCL segments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

_CLEAR = "\x1b[H\x1b[2J"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "inspect", help="show a running VCL app's segments, queues and fifos (read-only)"
    )
    p.add_argument(
        "pid", type=int, nargs="?", help="the process to look into (none: list the VCL apps)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 1) until Ctrl-C",
    )
    p.add_argument(
        "--peek", type=int, default=0, metavar="N", help="show up to N unread bytes of each fifo"
    )
    p.add_argument(
        "--snapshot",
        metavar="PATH",
        help="also record PATH.json + PATH.bin.gz (a snapshot `pyvcl decode` reads; stop the "
        "process first for a consistent one)",
    )
    p.add_argument("--note", default="", help="a note stored in the --snapshot")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..procview import ProcessView

    if args.watch is not None and args.watch <= 0:
        raise ValueError("--watch SECONDS must be positive")
    if args.peek < 0:
        raise ValueError("--peek N must be 0 or more")
    if args.snapshot and args.watch is not None:
        raise ValueError("--snapshot records once: it does not go with --watch")
    if args.pid is None:
        return _list(args)
    with ProcessView(args.pid) as view:
        if args.snapshot:
            from ..snapshot_record import record_snapshot

            if not view.segments:
                print(f"process {args.pid} has no VCL segments to record", file=sys.stderr)
                return 1
            from ..snapshot import snapshot_files

            stem = record_snapshot(view, args.snapshot, note=args.note)
            print("recorded {} + {}".format(*snapshot_files(stem)), file=sys.stderr)
        while True:
            state = view.describe(peek=args.peek)
            if not state["segments"]:
                print(
                    f"process {args.pid} has no VCL segments (not a VCL application, or not "
                    "attached to VPP yet)",
                    file=sys.stderr,
                )
                return 1
            out = json.dumps(state) if args.json else render(state)
            if args.watch is None:
                print(out)
                return 0
            print((_CLEAR if not args.json and sys.stdout.isatty() else "") + out, flush=True)
            try:
                time.sleep(args.watch)
            except KeyboardInterrupt:
                return 0
            view.refresh()


def _list(args: argparse.Namespace) -> int:
    """``pyvcl inspect`` without a PID: the VCL apps there are to look into."""
    from ..procview import vcl_processes

    if args.watch is not None or args.snapshot or args.peek:
        raise ValueError("--watch, --peek and --snapshot need a PID")
    found = vcl_processes()
    if args.json:
        print(json.dumps(found))
    else:
        for p in found:
            print(f"{p['pid']:>7}  {p['name']:<16} {p['command']}")
    if not found:
        print("no VCL application found (none attached to a VPP, or none of yours)",
              file=sys.stderr)  # fmt: skip
    return 0 if found else 1


def render(state: dict[str, Any]) -> str:
    """The text form of `pyvcl.procview.ProcessView.describe`."""
    lines = [f"process {state['pid']}: {state['command']}", "segments:"]
    for s in state["segments"]:
        if "error" in s:
            lines.append(f"  fd {s['fd']:<3} {s['name']}: {s['error']}")
            continue
        what = "VPP's worker queues" if s["role"] == "vpp" else f"{s['active_fifos']} fifos"
        lines.append(
            f"  fd {s['fd']:<3} {s['name']:<28} {_size(s['size']):>9}, "
            f"{_size(s['free_bytes'])} free, {what}"
        )
        lines += [f"      problem: {p}" for p in s["problems"]]
    lines.append("message queues:")
    for mq in state["mqs"]:
        where = f"{mq['segment']} @{mq['fsh_offset']:#x}" if mq["fsh_offset"] else mq["segment"]
        if mq["queued"] is None:
            lines.append(f"  {mq['role']:<4} {where}: {mq['detail'].get('error')}")
            continue
        lines.append(f"  {mq['role']:<4} {where}: {mq['queued']} queued of {mq['capacity']}")
        lines += [f"      {_event(e)}" for e in mq["pending"]]
        lines += [f"      problem: {p}" for p in mq["problems"]]
    lines.append("fifos (named by the events still in the queues' rings):")
    if not state["fifos"]:
        lines.append("  none found")
    for f in state["fifos"]:
        lines.append(
            f"  session {f['session_handle']:#x} {f['role']:<16} {f['segment']} "
            f"@{f['fsh_offset']:#x}: {f['unread']} bytes unread of {f['size']} "
            f"(head {f['head']}, tail {f['tail']}, {f['chunks']} chunk(s), "
            f"has_event {f['has_event']}, want_deq_ntf {f['want_deq_ntf']})"
        )
        data = f["detail"].get("head_data")
        if data:
            lines.append(f"      head: {bytes.fromhex(data)!r}")
    for s in state["skipped"]:
        lines.append(f"skipped fd {s['fd']} ({s['name']}): {s['why']}")
    return "\n".join(lines)


def _event(e: dict[str, Any]) -> str:
    if "type_name" not in e:
        return f"undecodable: {e.get('error', e)}"
    out = str(e["type_name"])
    if "session_index" in e:
        out += f" session {e['session_index']}"
    payload = e.get("payload")
    if payload:
        shown = {k: v for k, v in payload.items() if not k.endswith("_raw")}
        out += " " + " ".join(f"{k}={v}" for k, v in list(shown.items())[:8])
    return out


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
