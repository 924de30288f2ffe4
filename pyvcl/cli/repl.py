"""``pyvcl repl``: an interactive shell attached to VPP (`pyvcl.repl`).

Takes the attach options of ``pyvcl nc``.  At a terminal, with IPython installed, the shell is
IPython's (`pyvcl.repl_ipython`); otherwise, or with ``--plain`` or ``PYVCL_REPL=plain``, it
is the standard library's `code` console with `rlcompleter` (tab completes names and
attributes where `readline` exists).  Both print VPP's events as they come and share one
namespace.  ``-c CODE`` runs CODE in the shell's namespace and exits (for scripts and
tests).  The session is always traced (`pyvcl.api.live_trace`): into ``--trace FILE`` when
given, else into a temporary file that ``export(path)`` copies and that goes away with the
shell.  ``exit()``, Ctrl-D or the end of input detach and end with status 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from .common import add_attach_options, add_stack_options, stack_choice, start_tracing


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("repl", help="an interactive shell attached to VPP's session layer")
    add_stack_options(p)
    add_attach_options(p)
    p.add_argument("-c", dest="code", metavar="CODE", help="run CODE in the shell and exit")
    p.add_argument(
        "--plain",
        action="store_true",
        help="the standard code console even when IPython is installed (also PYVCL_REPL=plain)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.kernel:
        raise ValueError("the shell needs VPP: --kernel does not apply")
    temp = None
    if args.trace:
        start_tracing(args)
    else:  # traced anyway, into a file of our own, so that export() can give a real trace
        from ..api.live_trace import trace_to

        temp = tempfile.mkdtemp(prefix="pyvcl-repl-")
        trace_to(os.path.join(temp, "session.trace"))
    try:
        return _run(args)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    from ..repl import BANNER, Console, Prompt, Shell
    from ..repl_ipython import interact, wanted
    from ..vclsocket import VclApp

    choice = stack_choice(args)
    vcl = VclApp(choice.app_socket_path(), choice.attach_options(), timeout=args.timeout)
    shell = None
    try:
        shell = Shell(vcl, peer_args=_peer_args(args))
        console = Console(shell.namespace())
        if args.code is not None:
            console.runsource(args.code, "<-c>", "exec")
            shell.pump()
            return 0
        banner = BANNER.format(index=vcl.app.app_index, version=vcl.app.vpp_version)
        at_terminal = sys.stdin.isatty() and sys.stdout.isatty()
        if wanted(args.plain, os.environ, at_terminal):
            return interact(shell, banner)
        _completion(console.locals)
        saved = getattr(sys, "ps1", None)
        sys.ps1 = Prompt(shell.pump)
        try:
            console.interact(banner=banner, exitmsg="detached")
        except SystemExit as e:  # exit() / quit(): a code other than 0/None is the user's
            return e.code if isinstance(e.code, int) else 0
        finally:
            if saved is None:
                del sys.ps1
            else:
                sys.ps1 = saved
        return 0
    finally:
        try:
            if shell is not None:
                shell.close_peers()
        finally:
            vcl.close()


def _peer_args(args: argparse.Namespace) -> list[str]:
    """The options a ``pyvcl nc`` started by ``peer()`` attaches with: this shell's."""
    out = []
    for flag, value in (
        ("--vcl-config", args.vcl_config),
        ("--app-socket", args.app_socket),
        ("--runtime-dir", args.runtime_dir),
        ("--namespace-id", args.namespace_id),
        ("--scope", args.scope),
    ):
        if value:
            out += [flag, str(value)]
    if args.secret:
        out += ["--secret", str(args.secret)]
    return out


def _completion(namespace: dict[str, object]) -> None:
    try:
        import readline
        import rlcompleter
    except ImportError:  # (no readline on this build: no completion, the rest works)
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    readline.parse_and_bind("tab: complete")
