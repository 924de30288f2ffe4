"""What the standalone scripts bench/bulk.py and bench/pingpong.py share: the command line,
connecting with retries, listening, socket options, and printing JSON records.

Standard library only, like the scripts (they run over C VCL under LDP).  They import it from
their own directory (``sys.path`` set from ``__file__``), so ``python bench/bulk.py ...`` works
from any directory.  `socket-like module` means what the scripts' ``--module`` names: it
provides ``AF_INET``, ``SOCK_STREAM`` and ``socket(family, type)``; ``setsockopt`` and the
option constants are used when they exist.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

CONNECT_TIMEOUT = 20.0


def sockopt(mod: Any, sock: Any, level: str, name: str) -> None:
    """Set boolean option `level`/`name` (attribute names of `mod`) when the stack has it."""
    lvl, opt = getattr(mod, level, None), getattr(mod, name, None)
    if lvl is None or opt is None or not hasattr(sock, "setsockopt"):
        return
    with contextlib.suppress(OSError):  # an option the stack lacks: measure without it
        sock.setsockopt(lvl, opt, 1)


def connect(mod: Any, host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> Any:
    """Connect, retrying while the server is not listening yet (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = mod.socket(mod.AF_INET, mod.SOCK_STREAM)
        try:
            sock.connect((host, port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def listen(mod: Any, host: str, port: int) -> Any:
    """A listening socket on (`host`, `port`), SO_REUSEADDR when available, backlog 1."""
    ls = mod.socket(mod.AF_INET, mod.SOCK_STREAM)
    sockopt(mod, ls, "SOL_SOCKET", "SO_REUSEADDR")
    ls.bind((host, port))
    ls.listen(1)
    return ls


def emit(record: dict[str, Any]) -> None:
    """Print `record` as one JSON line, flushed at once."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def parse_args(
    doc: str | None,
    client_args: Callable[[argparse.ArgumentParser], None],
    argv: list[str] | None = None,
) -> tuple[argparse.Namespace, ModuleType, argparse.ArgumentParser]:
    """The scripts' command line: ``server PORT [HOST]`` or ``client HOST PORT ...`` (what
    `client_args` adds), both with ``--module M``.  Returns the arguments, the imported
    socket-like module and the parser (for ``error``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--module", default="socket", help="socket-like module (default: socket)")
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server", parents=[common])
    s.add_argument("port", type=int)
    s.add_argument("host", nargs="?", default="0.0.0.0")
    c = sub.add_parser("client", parents=[common])
    c.add_argument("host")
    c.add_argument("port", type=int)
    client_args(c)
    args = ap.parse_args(argv)
    return args, importlib.import_module(args.module), ap
