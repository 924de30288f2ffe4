"""``pyvcl repl`` on IPython (`pyvcl.repl_ipython`), and without it.

Against VPP, through a pty as a person types: IPython's prompt comes up on the shell's
namespace; an ACCEPTED that VPP sends while the prompt sits idle is printed, decoded, without
a key pressed; the bytes are read; a mistake gets one line; ``exit()`` ends with status 0.
With IPython blocked from importing, the same command gives the standard console; without an
eventfd the idle prompt still looks at the queue; Ctrl-D detaches with status 0.  Without
VPP: when IPython is chosen, and the event hook's way of waking.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from pyvcl.repl_ipython import EventHook, available, wanted
from pyvcl.testing.vpp import VppInstance

from .test_repl import Terminal, nc_sending

needs_ipython = pytest.mark.skipif(
    not available(), reason="IPython is not installed (pyvcl repl then uses the code console)"
)
# A script that runs ``python -m pyvcl ARGS`` with IPython's import blocked, as where it is
# not installed.
WITHOUT_IPYTHON = (
    "import runpy, sys; sys.modules['IPython'] = None; sys.argv[0] = 'pyvcl'; "
    "runpy.run_module('pyvcl', run_name='__main__', alter_sys=True)"
)


# -- without VPP ------------------------------------------------------------------------------
@needs_ipython
def test_ipython_is_chosen_only_at_a_terminal_and_unless_plain_is_asked() -> None:
    assert wanted(plain=False, environ={}, interactive=True)
    assert not wanted(plain=True, environ={}, interactive=True)
    assert not wanted(plain=False, environ={"PYVCL_REPL": "plain"}, interactive=True)
    assert not wanted(plain=False, environ={}, interactive=False)  # a pipe, a script


def test_without_ipython_the_standard_console_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)  # (None there: the import fails)
    assert not available()
    assert not wanted(plain=False, environ={}, interactive=True)


class _Context:
    """What prompt_toolkit gives an input hook: a pipe readable when input is ready."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def input_is_ready(self) -> bool:
        return False


class _Queue:
    def __init__(self, eventfd: int) -> None:
        self.eventfd = eventfd


class _Shell:
    """The parts of a `pyvcl.repl.Shell` the hook uses, counting what it is asked."""

    def __init__(self, eventfd: int, context: _Context) -> None:
        self.app = type("App", (), {"app_mq": _Queue(eventfd)})()
        self.worker = self
        self.signalled = 0
        self.eventfd, self.context = eventfd, context

    def pump_signalled(self) -> bool:
        os.eventfd_read(self.eventfd)
        self.signalled += 1
        if self.signalled == 2:  # the second signal handled: now a key is pressed
            os.write(self.context.w, b"x")
        else:
            os.eventfd_write(self.eventfd, 1)  # VPP signals again
        return True

    def show_pending(self) -> None:
        pass

    def pump(self) -> None:  # (not for a signalled eventfd: a key, so that the test ends)
        os.write(self.context.w, b"x")


def test_the_idle_prompt_handles_each_signal_and_returns_when_a_key_comes() -> None:
    efd = os.eventfd(1, os.EFD_NONBLOCK)  # VPP signalled already
    context = _Context()
    try:
        shell: Any = _Shell(efd, context)
        EventHook(shell)(context)  # (returns only once the pipe is readable)
        assert shell.signalled == 2
    finally:
        for fd in (efd, context.r, context.w):
            os.close(fd)


# -- against VPP, through a terminal -----------------------------------------------------------
def _terminal(argv: list[str], tmp_path: Path) -> Terminal:
    env = dict(
        os.environ,
        VCL_CONFIG="",
        TERM="xterm",
        IPYTHONDIR=str(tmp_path / "ipython"),  # (its history database: not the user's)
        PROMPT_TOOLKIT_NO_CPR="1",  # (no cursor position request left unanswered)
    )
    env.pop("PYVCL_REPL", None)
    term = Terminal(argv, env)
    fcntl.ioctl(term.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    return term


@needs_ipython
@pytest.mark.vpp
def test_ipython_shows_events_at_the_idle_prompt_and_exits_with_status_0(
    vpp: VppInstance, tmp_path: Path
) -> None:
    attach = ["--app-socket", str(vpp.app_socket()), "--scope", "local"]
    shell = _terminal([sys.executable, "-m", "pyvcl", "repl", *attach], tmp_path)
    nc = None
    try:
        shell.expect(r"attached to VPP as app \d+")
        shell.expect(r"In \[1\]: ")
        shell.type('l = listen("127.0.0.1", 18791)', end="\r")
        shell.expect(r">> CTRL_LISTEN .*port=18791 .*ip='127.0.0.1'")
        shell.expect(r"<< CTRL_BOUND .*retval=0 .*lcl_port=18791")
        shell.expect(r"In \[2\]: ")
        # Half a line typed, then the prompt sits idle while nc connects: VPP's ACCEPTED is
        # printed as it comes, above the prompt, which is drawn again with the half line.
        shell.type("1 +", end="")
        nc = nc_sending(attach, 18791, b"hello from nc\n")
        shell.expect(r"<< CTRL_ACCEPTED .*server_rx_fifo=\d+")
        shell.expect(r"In \[2\]: 1 \+")
        shell.type(" 2", end="\r")
        shell.expect(r"Out\[2\]: 3")  # (the line typed was not disturbed)
        shell.type("c = accept(l)", end="\r")
        shell.expect(r">> CTRL_ACCEPTED_REPLY .*retval=0")
        shell.type("read(c, 100, timeout=10)", end="\r")
        shell.expect(r"Out\[\d+\]: " + r"b'hello from nc\\n'")
        shell.type('msg("LISTEN", prot=6)', end="\r")  # a typo: one line, and it goes on
        shell.expect(r"! ValueError: session_listen_msg_t has no field prot")
        shell.type("len(history) >= 4", end="\r")
        shell.expect(r"Out\[\d+\]: True")
        trace = tmp_path / "session.trace"
        shell.type(f"export({str(trace)!r})", end="\r")
        shell.expect(r"Out\[\d+\]: PosixPath\(.*session.trace'\)")
        shell.type("exit()", end="\r")
        shell.expect("detached")
        assert shell.wait() == 0
        timeline = subprocess.run(
            [sys.executable, "-m", "pyvcl", "decode", str(trace)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "CTRL_ACCEPTED" in timeline  # the export is a real trace
    finally:
        shell.close()
        if nc is not None:
            nc.kill()
            nc.wait()


@pytest.mark.vpp
def test_without_ipython_the_terminal_gets_the_standard_console(
    vpp: VppInstance, tmp_path: Path
) -> None:
    attach = ["--app-socket", str(vpp.app_socket()), "--scope", "local"]
    argv = [sys.executable, "-c", WITHOUT_IPYTHON, "repl", *attach]
    shell = _terminal(argv, tmp_path)
    try:
        shell.expect(r"attached to VPP as app \d+")
        shell.expect(">>> ")
        shell.type("import sys; sys.modules['IPython'] is None")
        shell.expect("True")
        shell.type("exit()")
        assert shell.wait() == 0
    finally:
        shell.close()


@needs_ipython
@pytest.mark.vpp
def test_ipython_without_an_eventfd_still_shows_events_and_ctrl_d_ends_with_status_0(
    vpp: VppInstance, tmp_path: Path
) -> None:
    attach = ["--app-socket", str(vpp.app_socket()), "--scope", "local"]
    argv = [sys.executable, "-m", "pyvcl", "repl", "--no-use-mq-eventfd", *attach]
    shell = _terminal(argv, tmp_path)
    nc = None
    try:
        shell.expect(r"In \[1\]: ")
        shell.type('l = listen("127.0.0.1", 18792)', end="\r")
        shell.expect(r"<< CTRL_BOUND .*retval=0 .*lcl_port=18792")
        shell.expect(r"In \[2\]: ")
        # (the idle prompt looks at the queue: no eventfd wakes it)
        nc = nc_sending(attach, 18792, b"hello from nc\n")
        shell.expect(r"<< CTRL_ACCEPTED .*server_rx_fifo=\d+")
        # The prompt drawn again below the event: only then is the terminal raw again.
        # (prompt_toolkit prints above the prompt with the terminal in cooked mode, where
        # the line discipline takes a Ctrl-D for itself: a key typed meanwhile is lost.)
        shell.expect(r"In \[2\]: ")
        shell.type("\x04", end="")  # Ctrl-D: no question asked
        shell.expect("detached")
        assert shell.wait() == 0
    finally:
        shell.close()
        if nc is not None:
            nc.kill()
            nc.wait()


@needs_ipython
@pytest.mark.vpp
def test_ipython_exit_with_a_status_ends_with_it(vpp: VppInstance, tmp_path: Path) -> None:
    attach = ["--app-socket", str(vpp.app_socket()), "--scope", "local"]
    shell = _terminal([sys.executable, "-m", "pyvcl", "repl", *attach], tmp_path)
    try:
        shell.expect(r"In \[1\]: ")
        shell.type("exit", end="\r")  # (shown, not called: it says how to leave)
        shell.expect("Use exit\\(\\) or Ctrl-D")
        shell.expect(r"In \[2\]: ")
        shell.type("exit(3)", end="\r")
        shell.expect("detached")
        assert shell.wait() == 3
    finally:
        shell.close()
