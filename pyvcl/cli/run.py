"""``pyvcl run``: run an unmodified Python program with VPP as its network stack.

    pyvcl run [OPTIONS] (-m MODULE | -c CODE | SCRIPT | -) [ARGS...]

The program runs in this interpreter as ``python`` would run it: ``sys.argv``, ``__main__``
(runpy), ``sys.path[0]``, exit status, signals, warnings, tracebacks (without the runner's
frames).  Options end at the program: everything after SCRIPT, ``-m MODULE`` or ``-c CODE``
is the program's.  Before it starts, the runner chooses the stack as ``pyvcl nc`` does
(`pyvcl.stack`), hands the choice down to Python child processes (`pyvcl.interpose.boot`)
and enables interposition (`pyvcl.interpose.enable`).  docs/run.md has the whole story.

Exit status: the program's; 1 when the stack cannot be opened (VPP not reachable with
``--no-fallback`` or when named, a bad vcl.conf, ...), 2 on a usage error or a script that
cannot be opened -- in all three cases before the program starts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any, NoReturn

from .common import add_attach_options, add_stack_options, stack_choice, start_tracing

PROG = "pyvcl run"
USAGE = f"{PROG} [OPTIONS] (-m MODULE | -c CODE | SCRIPT | -) [ARGS...]"
DESCRIPTION = (
    "Run a Python program in this interpreter, as python would, with VPP's host stack as "
    "its network stack for TCP (AF_INET/AF_INET6 stream) sockets; kernel sockets when VPP "
    "is not reachable and no VPP was named.  Python child processes inherit the mode."
)
EPILOG = (
    "program: -m MODULE runs a module as python -m does, -c CODE a string, SCRIPT a file "
    "(or a directory or zip with __main__.py; else a Python program on PATH, such as a "
    "console script; a python interpreter's name before the program is left out), - the "
    "program on stdin; the ARGS after it "
    "are the program's, options included.  Environment: PYVCL_RUN (the mode, JSON) and "
    "PYTHONPATH (pyvcl's boot directory first) are set for child processes."
)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so that the runner can try where its options end."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="store_true", help="say which stack is used")
    add_stack_options(p)
    add_attach_options(p)
    p.set_defaults(use_mq_eventfd=None)
    return p


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Only for ``pyvcl --help``: `pyvcl.cli.main` hands ``run``'s arguments to `main`, since
    argparse cannot stop at the program."""
    sub.add_parser("run", help="run a Python program with VPP as its network stack", add_help=False)


# -- the command line --------------------------------------------------------------------------
class Program:
    """What to run: ``kind`` is "module", "code", "script" or "stdin"."""

    def __init__(self, kind: str, target: str, args: list[str]) -> None:
        self.kind = kind
        self.target = target
        self.args = args


def _starts_program(token: str) -> bool:
    return token in ("-", "--") or not token.startswith("-") or token[:2] in ("-m", "-c")


def split_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.Namespace, Program]:
    """The runner's options and the program.  The options are the shortest prefix of
    ``argv`` that parses and is followed by the start of a program, so an option's value
    (``--app-socket PATH``) is never taken for a script.  Raises `_UsageError`."""
    argv = list(argv)
    for k, token in enumerate(argv):
        if not _starts_program(token):
            continue
        try:
            args = parser.parse_args(argv[:k])
        except _UsageError:
            continue
        return args, _program(argv[k:])
    parser.parse_args(argv)  # the error in the options, or --help
    raise _UsageError("no program: give -m MODULE, -c CODE, SCRIPT or -")


def _program(rest: list[str]) -> Program:
    first = rest[0]
    if first[:2] in ("-m", "-c"):
        kind = "module" if first[1] == "m" else "code"
        if len(first) > 2:
            return Program(kind, first[2:], rest[1:])
        if len(rest) < 2:
            raise _UsageError(f"argument {first}: expected one argument")
        return Program(kind, rest[1], rest[2:])
    if first == "--":
        if len(rest) < 2:
            raise _UsageError("no program after --")
        return Program("script", rest[1], rest[2:])
    if first == "-":
        return Program("stdin", "-", rest[1:])
    return Program("script", first, rest[1:])


_PYTHON_NAME = re.compile(r"python[0-9.]*$")
_ELF = b"\x7fELF"


def resolve_script(program: Program) -> Program:
    """What SCRIPT means, as a user typing it means it (`_UsageError` if nothing fits):

    - a file (or directory, or zip) that exists: that;
    - a name without a slash that is not here: the Python program of that name on PATH, as a
      console script is run (``pyvcl run uvicorn app:app``): ``sys.argv[0]`` is its path;
    - a Python interpreter (``pyvcl run python3 -m http.server``): left out, since the
      program runs in this one; what follows is the program, as for ``pyvcl run`` itself;
    - any other executable: refused, saying what runs it instead.
    """
    target = program.target
    path = target
    if not os.path.exists(target):
        found = shutil.which(target) if os.sep not in target else None
        if found is None:
            raise _UsageError(f"can't open file {os.path.abspath(target)!r}: no such file")
        path = found
    if os.path.isdir(path):
        return program
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as e:
        raise _UsageError(f"can't open file {os.path.abspath(path)!r}: {e.strerror}") from None
    if head.startswith(_ELF):
        if not _PYTHON_NAME.match(os.path.basename(path)):
            raise _UsageError(
                f"{target!r} is not a Python program: pyvcl run runs Python programs in its "
                "own interpreter (a C program runs over VPP under C VCL's LDP, docs/run.md)"
            )
        if not program.args or (
            program.args[0].startswith("-") and not _starts_program(program.args[0])
        ):
            raise _UsageError(
                f"after {target!r}, give the program (-m MODULE, -c CODE, SCRIPT or -); "
                "options of the interpreter go before -m pyvcl"
            )
        inner = _program(program.args)
        return resolve_script(inner) if inner.kind == "script" else inner
    if path != target:  # found on PATH: only a Python script will do
        first_line = head.split(b"\n", 1)[0]
        if not (first_line.startswith(b"#!") and b"python" in first_line):
            raise _UsageError(f"{target!r} on PATH ({path}) is not a Python program")
        return Program("script", path, program.args)
    return program


def main(argv: Sequence[str]) -> int:
    """``pyvcl run``: the program's exit status (its SystemExit propagates as it is)."""
    import atexit

    from ..interpose import boot

    # Registered before anything else can be (pyvcl's data path registers logging's
    # shutdown): atexit runs last what was registered first.
    atexit.register(_die_by_sigint_if_interrupted)
    parser = build_parser()
    try:
        args, program = split_command_line(parser, argv)
        choice = stack_choice(args)
        choice.check()
    except (_UsageError, ValueError) as e:
        parser.print_usage(sys.stderr)
        boot.say(str(e))
        return 2
    if program.kind == "script":
        try:
            program = resolve_script(program)
        except _UsageError as e:
            boot.say(str(e))
            return 2
    boot.hand_down(choice)
    start_tracing(args)
    try:
        app = boot.from_environment(strict=True)
    except Exception as e:
        boot.say(_describe(e))
        return 1
    if args.verbose and app is None:
        boot.say("using kernel sockets")
    return run_program(program)


def _describe(error: BaseException) -> str:
    from ..errors import VppUnreachable

    if isinstance(error, VppUnreachable):
        return f"VPP not reachable: {error.strerror}"
    if isinstance(error, (OSError, ValueError)) or type(error).__module__.startswith("pyvcl"):
        return str(error)
    return f"{type(error).__name__}: {error}"


# -- running it --------------------------------------------------------------------------------
def run_program(program: Program) -> int:
    """Run ``program`` as python would; its exit status.  SystemExit propagates (the
    interpreter prints and exits as for plain python); other uncaught exceptions go to
    ``sys.excepthook`` without the runner's frames."""
    try:
        _execute(program)
    except SystemExit:
        raise
    except BaseException as e:
        return _uncaught(e, program)
    return 0


def _execute(program: Program) -> None:
    import runpy

    safe_path = getattr(sys.flags, "safe_path", False)  # python -P: no sys.path[0]
    if program.kind == "module":
        sys.argv = ["-m", *program.args]
        _set_path0(None if safe_path else os.getcwd())
        # (python runs it in its own __main__, which has __annotations__)
        runpy.run_module(
            program.target, {"__annotations__": {}}, run_name="__main__", alter_sys=True
        )
    elif program.kind == "script":
        sys.argv = [program.target, *program.args]
        path = os.path.abspath(program.target)  # (python gives __main__ an absolute __file__)
        if _runs_as_importer(path):  # a directory or zip: runpy puts it on sys.path itself
            _set_path0(None)
            runpy.run_path(path, run_name="__main__")
            return
        _set_path0(None if safe_path else os.path.dirname(os.path.realpath(path)))
        _run_source_file(path)
    else:
        if program.kind == "code":
            argv0, source, filename = "-c", program.target, "<string>"
        else:
            argv0, source, filename = "-", sys.stdin.read(), "<stdin>"
        sys.argv = [argv0, *program.args]
        _set_path0(None if safe_path else "")
        from importlib.machinery import BuiltinImporter

        attributes: dict[str, Any] = {"__loader__": BuiltinImporter}  # (what python gives)
        if program.kind == "stdin":
            attributes.update(__file__=filename, __cached__=None)
        _exec_as_main(compile(source, filename, "exec"), **attributes)


def _set_path0(entry: str | None) -> None:
    """Replace the runner's own ``sys.path[0]`` (its script's or cwd) with the program's."""
    if not getattr(sys.flags, "safe_path", False) and sys.path:
        del sys.path[0]
    if entry is not None:
        sys.path.insert(0, entry)


def _runs_as_importer(path: str) -> bool:
    if os.path.isdir(path):
        return True
    if path.endswith(".py"):
        return False
    import zipfile

    return zipfile.is_zipfile(path)


def _run_source_file(path: str) -> None:
    """As python runs a script: in a fresh ``__main__`` with the loader python gives it (not
    runpy.run_path, which would turn ``sys.argv[0]`` into ``__file__``)."""
    import io
    from importlib.machinery import SourceFileLoader

    with io.open_code(path) as f:
        source = f.read()
    _exec_as_main(
        compile(source, path, "exec"),
        __file__=path,
        __cached__=None,
        __loader__=SourceFileLoader("__main__", path),
    )


def _exec_as_main(code: Any, **attributes: Any) -> None:
    """Run ``code`` as the ``__main__`` module (a new one, left in place as python does)."""
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update(attributes, __builtins__=builtins, __annotations__={})
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


# -- how it ended -----------------------------------------------------------------------------
_interrupted = False


def _runner_files() -> set[str]:
    import runpy

    return {__file__, runpy.run_path.__code__.co_filename}


def _program_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading frames of the runner, runpy and the import machinery."""
    ours = _runner_files()
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename not in ours and not filename.startswith("<frozen importlib"):
            break
        tb = tb.tb_next
    return tb


def _uncaught(error: BaseException, program: Program) -> int:
    global _interrupted
    tb = _program_traceback(error.__traceback__)
    if tb is None and isinstance(error, ImportError) and program.kind == "module":
        from ..interpose import boot

        boot.say(str(error))  # runpy's own: no module by that name, a package without __main__
        return 1
    error = error.with_traceback(tb)
    sys.last_type, sys.last_value, sys.last_traceback = type(error), error, tb
    sys.excepthook(type(error), error, tb)
    if isinstance(error, KeyboardInterrupt):
        _interrupted = True  # python ends by SIGINT: so will we, once the exit work is done
        return 130
    return 1


def _die_by_sigint_if_interrupted() -> None:
    if not _interrupted:
        return
    import signal

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
