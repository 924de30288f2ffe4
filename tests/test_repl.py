"""``pyvcl repl`` (`pyvcl.repl`): the shell attached to VPP.

The VPP test is the newcomer's walk: in the shell, listen; accept a connection from
``pyvcl nc``; look at the rx fifo and take its bytes out by hand; see each event decoded; exit
with status 0 -- typed into a real terminal (a pty), as a person would.  The others check the
pieces that need no VPP: the fifo drawing, the hexdump, one-line errors, and message names.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyvcl.fifo import Fifo
from pyvcl.repl import Console, FifoView, MqView, Peer, Shell, _event_type, hexdump
from pyvcl.session.core import State
from pyvcl.session.idle import PERIOD
from pyvcl.testing.vpp import VppInstance
from pyvcl.vclsocket import VclApp
from pyvcl.wire.enums import SessionEvent

from .fifo_fixtures import alloc_fifo
from .mq_fixtures import build_mq
from .segment_fixtures import make_segment

TIMEOUT = 20.0
# Terminal control sequences (CSI, OSC, keypad modes), left out of what `Terminal` saw.
_ANSI = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[=>78])")


# -- without VPP ------------------------------------------------------------------------------
def test_a_fifo_is_drawn_with_head_tail_and_unread_bytes() -> None:
    seg = make_segment(16 << 20)
    f = Fifo(seg, alloc_fifo(seg, 64 << 10))
    f.enqueue(b"x" * 3000)
    f.dequeue(1000)
    text = FifoView(f, "rx").render()
    assert "2000 bytes unread" in text and "head 1000  tail 3000" in text
    bar = re.search(r"\|([^|]*)\|", text)
    assert bar is not None
    cells = bar.group(1)
    assert cells.index("H") < cells.index("T") and "#" in cells[cells.index("H") :]
    assert cells.endswith(".")  # room after the tail
    assert repr(FifoView(f, "rx")) == f"<rx fifo @{f.offset:#x}: 2000 bytes unread>"


def test_a_queue_is_shown_with_its_rings_and_pending_messages_and_left_as_it_was() -> None:
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        _, _, mq = build_mq(8, ((8, 18), (4, 256)), eventfd=efd)
        view = MqView(mq, "app")
        assert not view.signalled() and repr(view) == f"<app mq @{mq.offset:#x}: 0 pending>"
        mq.send_ctrl(SessionEvent.CTRL_CLEANUP, handle=7, type=1)
        mq.send_io(SessionEvent.IO_RX, 3)
        text = view.render()
        assert "queue: 2 of 8 handles pending, head 0  tail 2" in text
        assert "ring 0 (IO_EVT): 8 slots of 18 bytes, 1 in use, head 0  tail 1" in text
        assert "ring 1 (CTRL_EVT): 4 slots of 256 bytes, 1 in use, head 0  tail 1" in text
        assert text.splitlines()[-2:] == [
            "  [1:0] CTRL_CLEANUP handle=7 type=1",
            "  [0:0] IO_RX session_index=3",
        ]
        # Looking takes nothing and resets nothing: the messages and the signal are still there.
        assert view.signalled() and mq.size_now() == 2
        assert [e.name for e in view.pending()] == ["CTRL_CLEANUP", "IO_RX"]
        assert view.wait_pending(2, timeout=0) is view
        assert [e.name for e in mq.drain()] == ["CTRL_CLEANUP", "IO_RX"]
        assert "queue: 0 of 8 handles pending, head 2  tail 2" in view.render()
    finally:
        os.close(efd)


def test_a_peer_takes_input_gives_output_and_finishes_at_the_end_of_its_input() -> None:
    echo = "import sys; data = sys.stdin.read(); sys.stdout.write(data); sys.exit(len(data))"
    p = Peer([sys.executable, "-c", echo])
    try:
        p.send("abc")
        assert p.proc.poll() is None  # still reading its input
        assert p.finish() == 3
        assert p.output() == b"abc"
        assert p.finish() == 3  # again: nothing left to close
    finally:
        p.close()


def test_hexdump(capsys: pytest.CaptureFixture[str]) -> None:
    hexdump(b"GET / HTTP/1.0\r\n\x00\x01")
    assert capsys.readouterr().out.splitlines() == [
        "0000  47 45 54 20 2f 20 48 54 54 50 2f 31 2e 30 0d 0a  GET / HTTP/1.0..",
        "0010  00 01                                            ..",
    ]


def test_bad_input_gets_one_line_and_the_session_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console = Console({"f": FifoView})
    console.push("int('x')")
    console.push("1 + 1")
    err = capsys.readouterr()
    assert "! ValueError: invalid literal for int()" in err.err
    assert "Traceback" not in err.err and err.out.strip() == "2"


def test_message_names() -> None:
    assert _event_type("listen") == _event_type("CTRL_LISTEN") == SessionEvent.CTRL_LISTEN
    with pytest.raises(ValueError, match="no session event named 'LISTNE'"):
        _event_type("LISTNE")


# -- against VPP, through a terminal -----------------------------------------------------------
class Terminal:
    """A program on a pty: `type` a line, `expect` a pattern in what it printed since."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.execvpe(argv[0], argv, env)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.seen)
            if m:
                self.seen = self.seen[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout} s; the screen:\n{self.seen}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child is gone
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"ended before {pattern!r}; the screen:\n{self.seen}")
                self.seen += _ANSI.sub("", chunk.decode(errors="replace").replace("\r", ""))

    def type(self, line: str, end: str = "\n") -> None:
        """Type ``line`` and ``end`` (Enter is "\\r" to prompt_toolkit, in raw mode)."""
        os.write(self.fd, (line + end).encode())

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:  # (keep the pty drained, or the child can block writing)
                if select.select([self.fd], [], [], 0.05)[0]:
                    os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the shell did not end")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def nc_sending(attach: list[str], port: int, data: bytes) -> subprocess.Popen[bytes]:
    """``pyvcl nc`` connected to 127.0.0.1:``port``, having sent ``data``; its stdin is left
    open, so it stays connected until killed."""
    nc = subprocess.Popen(
        [sys.executable, "-m", "pyvcl", "nc", *attach, "127.0.0.1", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, VCL_CONFIG=""),
    )
    assert nc.stdin is not None
    nc.stdin.write(data)
    nc.stdin.flush()
    return nc


@pytest.mark.vpp
def test_listen_accept_and_read_the_rx_fifo_by_hand(vpp: VppInstance, tmp_path: Path) -> None:
    sock = str(vpp.app_socket())
    attach = ["--app-socket", sock, "--scope", "local"]
    env = dict(os.environ, VCL_CONFIG="", TERM="dumb")
    # (--plain: the standard console even where IPython is installed; test_repl_ipython.py
    # drives IPython's)
    shell = Terminal([sys.executable, "-m", "pyvcl", "repl", "--plain", *attach], env)
    nc = None
    try:
        shell.expect(r"attached to VPP as app \d+")
        shell.expect(">>> ")
        shell.type('l = listen("127.0.0.1", 18790)')
        shell.expect(r">> CTRL_LISTEN .*port=18790 .*ip='127.0.0.1'")
        shell.expect(r"<< CTRL_BOUND .*retval=0 .*lcl_port=18790")
        nc = nc_sending(attach, 18790, b"hello from nc\n")
        shell.type("c = accept(l)")
        shell.expect(r"<< CTRL_ACCEPTED .*server_rx_fifo=\d+")
        shell.expect(r">> CTRL_ACCEPTED_REPLY .*retval=0")
        shell.type("rx = fifo(c)")
        for _ in range(50):  # until the 14 bytes are in
            shell.type("rx")
            got = shell.expect(r"<rx fifo @0x[0-9a-f]+: (\d+) bytes unread>")
            if got.group(1) == "14":
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the 14 bytes never reached the rx fifo")
        shell.type("rx.show()")
        shell.expect(r"14 bytes unread")
        shell.expect(r"chunk @0x[0-9a-f]+ \[0, \+\d+\) \|H#*T?\.*")
        shell.type("rx.read(100)")
        shell.expect(re.escape(r"b'hello from nc\n'"))
        shell.type("rx")
        shell.expect(r": 0 bytes unread>")
        shell.type('msg("LISTEN", prot=6)')  # a typo: one line, and the shell goes on
        shell.expect(r"! ValueError: session_listen_msg_t has no field prot")
        shell.type("len(history) >= 4")
        shell.expect("True")
        trace = tmp_path / "session.trace"
        shell.type(f"export({str(trace)!r})")
        shell.expect(r"PosixPath\(.*session.trace'\)")
        shell.type("exit()")
        assert shell.wait() == 0
        # The export is a real trace: pyvcl decode renders the walk, in order.
        timeline = subprocess.run(
            [sys.executable, "-m", "pyvcl", "decode", str(trace)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        order = ["CTRL_LISTEN", "CTRL_BOUND", "CTRL_ACCEPTED", "CTRL_ACCEPTED_REPLY", "IO_RX"]
        at = [timeline.find(name) for name in order]
        assert -1 not in at and at == sorted(at), timeline
    finally:
        shell.close()
        if nc is not None:
            nc.kill()
            nc.wait()


@pytest.mark.vpp
def test_ctrl_c_ends_a_blocking_read_and_the_session_goes_on(vpp: VppInstance) -> None:
    """Ctrl-C while ``read`` waits for bytes: KeyboardInterrupt, the prompt again, and the
    connection still works.  The terminal sends SIGINT to its whole foreground process
    group: the ``peer`` runs in a session of its own, or it would die with the first Ctrl-C."""
    sock = str(vpp.app_socket())
    attach = ["--app-socket", sock, "--scope", "local"]
    env = dict(os.environ, VCL_CONFIG="", TERM="dumb")
    shell = Terminal([sys.executable, "-m", "pyvcl", "repl", "--plain", *attach], env)
    try:
        shell.expect(">>> ")
        shell.type('l = listen("127.0.0.1", 18791)')
        shell.expect(r"<< CTRL_BOUND .*retval=0")
        shell.type('p = peer("127.0.0.1", 18791)')
        shell.type("c = accept(l)")
        shell.expect(r">> CTRL_ACCEPTED_REPLY .*retval=0")
        shell.expect(">>> ")
        for _ in range(3):
            shell.type("read(c, timeout=60)")
            time.sleep(0.5)  # (in the wait by now)
            os.write(shell.fd, b"\x03")  # Ctrl-C, as the terminal sends it
            shell.expect("KeyboardInterrupt")
            shell.expect(">>> ")
        shell.type('p.send("still here\\n")')
        shell.type("read(c, timeout=10)")
        shell.expect(re.escape(r"b'still here\n'"))
        shell.type("exit()")
        assert shell.wait() == 0
    finally:
        shell.close()


# -- the shell and the app's idle drain (in this process) ------------------------------------
@pytest.fixture
def shell_on(vpp: VppInstance) -> Iterator[tuple[Shell, io.StringIO]]:
    sock = str(vpp.app_socket())
    vcl = VclApp(sock, scope_local=True, scope_global=False)
    out = io.StringIO()
    shell = Shell(vcl, out=out, peer_args=["--app-socket", sock, "--scope", "local"])
    try:
        yield shell, out
    finally:
        try:
            shell.close_peers()
        finally:
            vcl.close()


def _until(ready: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


@pytest.mark.vpp
def test_events_handled_while_the_shell_is_busy_print_at_its_next_pump(
    shell_on: tuple[Shell, io.StringIO],
) -> None:
    """While a statement waits on something else (``p.finish()`` waits for the peer to
    exit), the app's idle drain handles VPP's events; the shell prints them at its next
    pump, after the statement's output, never in the middle of it (the tour's listings
    depend on it: chapter 7 once printed the peer's DISCONNECTED before ``p.finish()``'s 0)."""
    shell, out = shell_on
    listener = shell.listen("127.0.0.1", 18793)
    p = shell.peer("127.0.0.1", 18793, "bye\n")
    c = shell.accept(listener)
    assert c.recv(16) == b"bye\n"
    shell.pump()
    out.seek(0)
    out.truncate()
    assert p.finish() == 0
    # Nobody in this thread consumes now: only the idle drain can take the DISCONNECTED.
    _until(lambda: c.session.state is State.PEER_CLOSED, "the idle drain took DISCONNECTED")
    assert out.getvalue() == ""
    assert shell.history[-1]["type"] == "CTRL_DISCONNECTED"  # (kept in order, with its time)
    shell.pump()
    assert out.getvalue().startswith("<< CTRL_DISCONNECTED ")


@pytest.mark.vpp
def test_wait_pending_keeps_the_idle_drain_off_until_the_shells_pump(
    shell_on: tuple[Shell, io.StringIO],
) -> None:
    """``mq().wait_pending(n)`` is for looking at messages as they wait: the idle drain
    leaves them there (however long the look takes) until the shell's next pump takes them."""
    shell, out = shell_on
    listener = shell.listen("127.0.0.1", 18794)
    shell.peer("127.0.0.1", 18794, "hi\n")
    view = shell.mq().wait_pending(2)
    time.sleep(5 * PERIOD)  # (the drain would have taken them after two looks)
    assert [ev.name for ev in view.pending()][:2] == ["CTRL_APP_ADD_SEGMENT", "CTRL_ACCEPTED"]
    shell.pump()
    assert view.pending() == []
    assert "<< CTRL_ACCEPTED " in out.getvalue()
    assert not shell.vcl.idle_drain.held
    shell.accept(listener)
