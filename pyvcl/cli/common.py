"""Options shared by the subcommands that attach."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api.messages import AttachOptions


def add_attach_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attach")
    g.add_argument("--app-socket", metavar="PATH", help="VPP app socket (abstract:NAME allowed)")
    g.add_argument("--runtime-dir", metavar="DIR", help="VPP runtime dir (default /run/vpp)")
    g.add_argument("--namespace-id", "--ns", metavar="ID", default="", help="app namespace")
    g.add_argument(
        "--secret",
        type=int,
        default=0,
        help="namespace secret (VPP v26.06 ignores it on the app-socket path; see docs)",
    )
    g.add_argument("--name", default="", help="app name (default pyvcl_app_<pid>)")
    g.add_argument(
        "--use-mq-eventfd",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="app mq signals with an eventfd (default) or the shared mutex/condvar",
    )
    g.add_argument("--segment-size", type=_size, default=None, metavar="BYTES")
    g.add_argument("--fifo-size", type=_size, default=None, metavar="BYTES")
    g.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for VPP")


def app_socket_path(args: argparse.Namespace) -> Path | str:
    from ..app import default_app_socket

    if args.app_socket:
        return str(args.app_socket)
    return default_app_socket(args.namespace_id, args.runtime_dir)


def attach_options(args: argparse.Namespace) -> AttachOptions:
    from ..api.messages import AttachOptions

    opts = AttachOptions(
        name=args.name,
        use_mq_eventfd=args.use_mq_eventfd,
        namespace_id=args.namespace_id,
        namespace_secret=args.secret,
    )
    if args.segment_size is not None:
        opts.segment_size = args.segment_size
    if args.fifo_size is not None:
        opts.rx_fifo_size = opts.tx_fifo_size = args.fifo_size
    return opts


def _size(text: str) -> int:
    """Bytes, with an optional k/m/g suffix (powers of two)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        return int(number, 0) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
