"""``pyvcl attach``: attach, show everything VPP gave us, detach.

Shows the decoded attach reply, every segment (name, size, slices, free space), and the app
and VPP message queues (rings, sizes, head/tail, eventfd or mutex mode).  ``--json`` prints
the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from .common import add_attach_options, app_socket_path, attach_options
from .render import render, to_jsonable

if TYPE_CHECKING:
    from ..app import App


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("attach", help="attach to VPP, show segments and queues, detach")
    add_attach_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument("-v", "--verbose", action="store_true", help="every decoded field as text")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="poll the app mq this long before showing (to see events VPP sends on attach)",
    )
    p.set_defaults(run=run)


def report(app: App, events: list[Any] | None = None) -> dict[str, Any]:
    from ..shmview import describe_segment

    reply = app.reply
    assert reply is not None and app.app_mq is not None and app.vpp_segment is not None
    out: dict[str, Any] = {
        "app_socket": str(app.sapi.path),
        "name": app.options.app_name(),
        "attach_reply": to_jsonable(vars(reply)),
        "segments": [],
        "app_mq": {
            "segment_handle": reply.segment_handle,
            "offset": reply.app_mq,
            **app.app_mq.describe(),
        },
        "vpp_mqs": [],
    }
    out["segments"].append({"role": "vpp-mq", **describe_segment(app.vpp_segment)})
    for handle, seg in app.segments.items():
        role = "first" if handle == reply.segment_handle else "added"
        out["segments"].append({"role": role, "handle": handle, **describe_segment(seg)})
    for i, mq in enumerate(app.vpp_mqs):
        entry = {"thread": i, "offset": mq.offset, "ctrl": i == reply.vpp_ctrl_mq_thread}
        out["vpp_mqs"].append({**entry, **mq.describe()})
    if events is not None:
        out["events"] = [{"type": e.name, **e.fields()} for e in events]
    return to_jsonable(out)  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    from ..app import App  # not imported for the other subcommands

    with App.attach(app_socket_path(args), attach_options(args), timeout=args.timeout) as app:
        events = app.poll(args.wait) if args.wait else None
        data = report(app, events)
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.verbose:
        print(render(data))
    else:
        print(summary(data))
    return 0


def summary(data: dict[str, Any]) -> str:
    """The one-screen view: reply, one line per segment, one block per queue."""
    r = data["attach_reply"]
    handle = int(r["api_client_handle"])
    flags = "|".join(r["fd_flags"]["names"])
    lines = [
        f"attached to {data['app_socket']} as app {r['app_index']} {data['name']!r}",
        f"  api client handle {handle:#x} (namespace {handle >> 16}, socket {handle & 0xFFFF}),"
        f" first segment {int(r['segment_handle']):#x}, fds {flags}",
        "segments:",
    ]
    for seg in data["segments"]:
        fsh = seg["fsh"]
        cached = [
            f"{fl['count']}x{_size(fl['chunk_size'])}"
            for sl in seg["slices"]
            for fl in sl["free_chunk_lists"]
            if fl["count"]
        ]
        handle_text = f"{int(seg['handle']):#x}" if seg.get("handle") is not None else "-"
        lines.append(
            f"  {seg['name'] or '?':14} {seg['role']:6} handle {handle_text:>12}  "
            f"{_size(seg['size']):>9}  slices {fsh['n_slices']}  mqs {fsh['n_mqs']}  "
            f"free {_size(seg['free_bytes'])}  cached {_size(fsh['n_cached_bytes'])}"
            + (f" ({', '.join(cached)})" if cached else "")
        )
        for problem in seg.get("problems", []):
            lines.append(f"    ! {problem}")
    lines.append("message queues:")
    lines.append(_mq_line("app mq", data["app_mq"]))
    for mq in data["vpp_mqs"]:
        role = f"vpp thread {mq['thread']}" + (" (ctrl)" if mq["ctrl"] else "")
        lines.append(_mq_line(role, mq))
    return "\n".join(lines)


def _mq_line(role: str, mq: dict[str, Any]) -> str:
    q = mq["queue"]
    mode = (
        f"eventfd {mq['eventfd']}"
        if mq["mode"] == "eventfd"
        else (f"mutex/condvar (kind {q['mutex']['__kind']})")
    )
    rings = "  ".join(
        f"ring{rg['index']} {rg['cursize']}/{rg['nitems']}x{rg['elsize']}B"
        f" h{rg['head']} t{rg['tail']}"
        for rg in mq["rings"]
    )
    text = (
        f"  {role:22} @{int(mq['offset']):#x}  {mode}\n"
        f"    queue {q['cursize']}/{q['maxsize']} h{q['head']} t{q['tail']}  {rings}"
    )
    for problem in mq.get("problems", []):
        text += f"\n    ! {problem}"
    return text


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g}{unit}"
    return f"{n}B"
