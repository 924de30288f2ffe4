"""``pyvcl status``: is there a VPP to use?  Attach briefly if so; else say what pyvcl would
fall back to.  Exit 0 either way (``--require-vpp`` makes a missing VPP an error)."""

from __future__ import annotations

import argparse

from ..errors import VppUnreachable
from .common import add_attach_options, app_socket_path, attach_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="check whether VPP's host stack is reachable")
    add_attach_options(p)
    p.add_argument("--require-vpp", action="store_true", help="exit 1 when VPP is absent")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..app import App  # not imported for the other subcommands

    path = app_socket_path(args)
    try:
        with App.attach(path, attach_options(args), timeout=args.timeout) as app:
            segs = len(app.segments)
            print(
                f"VPP reachable at {path} ({app.vpp_version}): attached as app {app.app_index} "
                f"(api client handle {app.api_client_handle:#x}, {len(app.vpp_mqs)} VPP "
                f"thread(s), {segs} segment(s)); detached."
            )
            return 0
    except VppUnreachable as e:
        print(f"VPP not reachable: {e.strerror}")
        print("pyvcl sessions will use kernel sockets (fallback) until VPP is available.")
        return 1 if args.require_vpp else 0
