"""Options shared by the subcommands that attach, and by those that choose a stack (nc, run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..stack import SCOPES, StackChoice

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


def add_stack_options(p: argparse.ArgumentParser) -> None:
    """Which stack: kernel, VPP with or without fallback, a vcl.conf, the session scope."""
    stack = p.add_argument_group("stack")
    stack.add_argument("--kernel", action="store_true", help="use kernel sockets, not VPP")
    stack.add_argument(
        "--no-fallback",
        action="store_true",
        help="fail instead of falling back to kernel sockets when VPP is not reachable",
    )
    stack.add_argument(
        "--vcl-config", metavar="FILE", help="attach as C VCL would with this vcl.conf"
    )
    stack.add_argument(
        "--scope",
        choices=SCOPES,
        default=None,
        help="session scope: local (cut-through to apps on the same VPP), global (VPP's "
        "TCP stack) or both (default; from the VCL config when one is used)",
    )
    stack.add_argument(
        "--trace",
        metavar="FILE",
        help="record every app-socket frame and message-queue message to FILE (as "
        "PYVCL_TRACE=FILE does; read it with pyvcl decode FILE)",
    )


def stack_choice(args: argparse.Namespace) -> StackChoice:
    """The `StackChoice` of parsed options (those `add_stack_options` does not add keep
    their defaults)."""
    return StackChoice(
        kernel=getattr(args, "kernel", False),
        fallback=not getattr(args, "no_fallback", False),
        vcl_config=getattr(args, "vcl_config", None),
        app_socket=str(args.app_socket) if args.app_socket else None,
        runtime_dir=args.runtime_dir,
        namespace_id=args.namespace_id,
        secret=args.secret,
        name=args.name,
        use_mq_eventfd=args.use_mq_eventfd,
        segment_size=args.segment_size,
        fifo_size=args.fifo_size,
        timeout=args.timeout,
        scope=getattr(args, "scope", None),
        verbose=getattr(args, "verbose", False),
    )


def app_socket_path(args: argparse.Namespace) -> Path | str:
    return stack_choice(args).app_socket_path()


def attach_options(args: argparse.Namespace) -> AttachOptions:
    return stack_choice(args).attach_options()


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


def start_tracing(args: argparse.Namespace) -> None:
    """``--trace FILE``: trace this process (before it attaches)."""
    path = getattr(args, "trace", None)
    if path:
        from ..api.live_trace import trace_to

        trace_to(path)
