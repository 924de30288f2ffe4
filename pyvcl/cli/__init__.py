"""The ``pyvcl`` command: attach and show, decode recordings, check for VPP, netcat, look
into a running VCL app, an interactive shell, run a program over VPP.

Subcommands live in their own modules; each has ``add_parser(subparsers)`` and ``run(args)``,
except ``run``, whose arguments go to `pyvcl.cli.run.main` untouched (they end with the
program's own).  Library errors become one line on stderr and exit status 1 (2 for usage
errors).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import VclError


def build_parser() -> argparse.ArgumentParser:
    from . import attach, decode, nc, procview, repl, run, status  # (`pyvcl run`: none)

    parser = argparse.ArgumentParser(
        prog="pyvcl", description="A pure-Python client for VPP's host stack."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (status, attach, decode, nc, procview, repl, run):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:
        from . import run

        return run.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["status", *argv])
    try:
        code: int = args.run(args)
    except VclError as e:
        print(f"pyvcl {args.command}: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, ValueError) as e:
        print(f"pyvcl {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
