"""``pyvcl repl`` at IPython's prompt, when IPython is installed (it is never required).

The same `pyvcl.repl.Shell` and namespace as the standard console, with the same rules:

- every event VPP sends is printed as it is handled.  While the prompt waits for a line, an
  input hook (`EventHook`) sleeps on the app mq's eventfd as well as on the terminal, and
  handles the events the moment VPP signals them.  It prints them through the stdout that
  prompt_toolkit has patched for the prompt's lifetime, so each line appears *above* the prompt
  and the line being typed is redrawn intact below it.  Before and after each cell the events
  queued meanwhile are handled too (IPython's ``pre_run_cell`` / ``post_run_cell``), so what
  came while a cell ran is printed before the next prompt, as the standard console does;
- pyvcl's errors and bad arguments print one line starting with ``!`` and the session goes on;
- ``exit()`` or Ctrl-D detach (no "really exit?" question) and the shell ends with status 0;
  ``exit(n)`` ends it with status n, as in the standard console.

IPython is imported by name at run time (`importlib`), not with an ``import`` statement:
pyvcl must install, import and type-check where it is absent.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import select
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .errors import VclError
from .repl import ONE_LINE_ERRORS, Shell

__all__ = ["EventHook", "available", "interact", "wanted"]

PACKAGE = "IPython"
SHELL_MODULE = "IPython.terminal.interactiveshell"
HOOKS_MODULE = "IPython.terminal.pt_inputhooks"
HOOK_NAME = "pyvcl"  # the name the input hook is registered under (``%gui`` shows it)
# How long the idle prompt sleeps between looks when nothing signals: a queue without an
# eventfd (mutex/condvar mode) is looked at this often, and so is VPP's going away.
IDLE_LOOK_S = 0.25


def available() -> bool:
    """Whether IPython's terminal shell can be imported here."""
    return _shell_module() is not None


def wanted(plain: bool, environ: Mapping[str, str], interactive: bool) -> bool:
    """Whether ``pyvcl repl`` runs IPython: installed, a person at a terminal
    (``interactive``: stdin and stdout are ttys), and neither ``--plain`` nor
    ``PYVCL_REPL=plain`` asking for the standard console."""
    if plain or environ.get("PYVCL_REPL", "").lower() == "plain" or not interactive:
        return False
    return available()


def _shell_module() -> ModuleType | None:
    try:
        # The package first: a submodule imported before is found in sys.modules even when
        # the package has since been blocked there (None: how a test says "not installed").
        importlib.import_module(PACKAGE)
        return importlib.import_module(SHELL_MODULE)
    except ImportError:
        return None


class EventHook:
    """prompt_toolkit's input hook while IPython's prompt waits: handle (and print) VPP's
    events as they come, and return as soon as the terminal (or the prompt's own event loop)
    has something -- ``context.fileno()`` becomes readable then."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.failed = False  # VPP went away (said once): stop looking until the next cell

    def __call__(self, context: Any) -> None:
        wake = context.fileno()
        mq = self.shell.app.app_mq
        evfd = None if mq is None else mq.eventfd
        while not context.input_is_ready():
            fds = [wake] if evfd is None or self.failed else [wake, evfd]
            ready, _, _ = select.select(fds, [], [], IDLE_LOOK_S)
            if wake in ready:
                return
            if not self.failed:
                self._handle(signalled=evfd is not None and evfd in ready)

    def _handle(self, signalled: bool) -> None:
        try:
            if signalled:
                self.shell.worker.pump_signalled()  # (resets the eventfd: select sleeps again)
                self.shell.show_pending()  # (the idle drain signals after it handled some)
            else:
                self.shell.pump()
        except VclError as e:
            self.failed = True
            print(f"! {type(e).__name__}: {e}", flush=True)


def interact(shell: Shell, banner: str) -> int:
    """Run IPython's shell on ``shell``'s namespace until ``exit()`` or Ctrl-D; 0."""
    module = _shell_module()
    if module is None:
        raise ImportError("IPython is not installed")
    hooks = importlib.import_module(HOOKS_MODULE)
    ip = module.TerminalInteractiveShell.instance(
        user_ns=shell.namespace(), confirm_exit=False, term_title=False
    )
    try:
        hook = EventHook(shell)
        hooks.register(HOOK_NAME, hook)
        with contextlib.redirect_stdout(io.StringIO()):  # ("Installed pyvcl event loop hook.")
            ip.enable_gui(HOOK_NAME)

        def pump_between_cells(_info: object) -> None:
            hook.failed = False
            try:
                shell.pump()
            except VclError as e:
                print(f"! {type(e).__name__}: {e}", flush=True)

        ip.events.register("pre_run_cell", pump_between_cells)
        ip.events.register("post_run_cell", pump_between_cells)
        ip.set_custom_exc(ONE_LINE_ERRORS, _one_line)
        leaving = _Exit(ip)
        ip.user_ns["exit"] = ip.user_ns["quit"] = leaving
        ip.show_banner(banner + "\n")
        ip.mainloop()
        print("detached", flush=True)
        return leaving.status
    finally:
        module.TerminalInteractiveShell.clear_instance()


class _Exit:
    """``exit(status)`` / ``quit(status)`` as the standard console has them (IPython's own
    take no status): end the shell, which then ends with ``status`` (0 by default)."""

    def __init__(self, ip: Any) -> None:
        self._ip = ip
        self.status = 0

    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D to detach and leave"

    def __call__(self, status: int = 0) -> None:
        if not isinstance(status, int):
            raise TypeError(f"exit status must be an int, not {type(status).__name__}")
        self.status = status
        self._ip.ask_exit()


def _one_line(
    _ip: object, etype: type, value: BaseException, _tb: object, **_kw: object
) -> list[str]:
    """IPython's handler for `pyvcl.repl.ONE_LINE_ERRORS`: the line the standard console
    prints, printed here (IPython drops what a handler returns when the error came from
    running the cell); nothing more to show."""
    print(f"! {etype.__name__}: {value}", file=sys.stderr, flush=True)
    return []
