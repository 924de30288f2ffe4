"""How a program under ``pyvcl run`` leaves VPP when it exits (`pyvcl.interpose.leave`):
the sessions it left open are closed and the app detached, as its trace shows; never a hang,
and always the program's own exit status, also with daemon threads blocked in VPP socket
calls, after VPP died, in a forked child, and on Ctrl-C.  Against a real VPP; every process
is bounded by a timeout (a hang fails the test, it never blocks the suite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyvcl.api.timeline import Note, load_timeline
from pyvcl.api.trace import TraceMessage
from pyvcl.session.replay import replay

from .test_nc import ROOT
from .test_nc import nc as nc  # the fixture

# Longest a program's exit may take here: leaving is bounded by about 3 s (EXIT_TIMEOUT plus
# the detach's sync and goodbye); anything longer is the hang these tests are about.
EXIT_LIMIT = 15.0

pytestmark = pytest.mark.vpp


def _listener(nc: Any, sock: str, port: int) -> Any:
    """A ``pyvcl nc -l`` on 127.0.0.1:``port`` for the program to connect to, listening."""
    srv = nc("--app-socket", sock, "-v", "-l", "127.0.0.1", str(port))
    srv.wait_for(f"listening on 127.0.0.1:{port}")
    return srv


def _run(sock: str, code: str, trace: Path | None = None, **kw: Any) -> subprocess.Popen[str]:
    options = ["--trace", str(trace)] if trace is not None else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCL_", "PYVCL_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "pyvcl", "run", *options, "--app-socket", sock, "--no-fallback",
         "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        start_new_session=True, **kw,
    )  # fmt: skip


def _connected_until_told(
    nc: Any, sock: str, trace: Path, port: int, status: int, send: bytes = b""
) -> subprocess.Popen[str]:
    """A program that connects to a listener on ``port`` (sending ``send``), says so, and on
    a line from stdin exits with ``status``, the connection still open."""
    _listener(nc, sock, port)
    p = _run(sock, f"""
        import socket, sys
        s = socket.create_connection(("127.0.0.1", {port}))
        s.sendall({send!r})
        print("connected", flush=True)
        sys.stdin.readline()
        sys.exit({status})
    """, trace, stdin=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "connected"
    return p


def _finish(p: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Exit status, stdout and stderr; fails the test (killing the program) if it has not
    ended within EXIT_LIMIT."""
    try:
        out, err = p.communicate(stdin, timeout=EXIT_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"the program did not exit within {EXIT_LIMIT} s:\n{out}\n{err}")
    return p.returncode, out, err


def _decode(trace: Path) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "pyvcl", "decode", str(trace)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


def _in_order(text: str, wanted: list[str]) -> None:
    lines, start = text.splitlines(), 0
    for w in wanted:
        n = next((i for i in range(start, len(lines)) if w in lines[i]), None)
        assert n is not None, f"no {w!r} after line {start}:\n{text}"
        start = n + 1


def _sent(trace: Path) -> list[str]:
    """The types of the messages the app sent, in order."""
    records = load_timeline(trace).records
    return [
        r.type_name for r in records if isinstance(r, TraceMessage) and r.direction == "app->vpp"
    ]


def test_exit_closes_open_sessions_and_detaches(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """A program that connects, sends and exits with sys.exit(3) without closing its socket
    (and leaves a listener open): its trace, as `pyvcl decode` renders it, ends with the
    session's disconnect and cleanup, the listener's unlisten and the app's detach; the peer
    got the bytes and then EOF; the status is 3; the trace replays through the core."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    srv = _listener(nc, sock, 25101)
    status, _, err = _finish(_run(sock, """
        import socket, sys
        listener = socket.create_server(("127.0.0.1", 25102))
        s = socket.create_connection(("127.0.0.1", 25101))
        s.sendall(b"hello")
        sys.exit(3)
    """, trace))  # fmt: skip
    assert status == 3, err
    assert srv.wait(30) == 0, srv.err()  # (nc -l ends at the peer's EOF)
    assert srv.proc.stdout.read() == b"hello"

    text = _decode(trace)
    _in_order(text, [
        "CTRL_LISTEN ", "CTRL_BOUND", "CTRL_CONNECT ", "CTRL_CONNECTED", "IO_TX",
        "core       close", "core       close", "vpp->app  mq   app   CTRL_CLEANUP",
        "CTRL_APP_DETACH", "what=app detached at exit",
    ])  # fmt: skip
    sent = _sent(trace)
    assert sent[-1] == "CTRL_APP_DETACH" and sent.count("CTRL_APP_DETACH") == 1, sent
    assert "CTRL_DISCONNECT" in sent, sent
    # The listener's own UNLISTEN, besides the detach's probe (an UNLISTEN of no session).
    assert sent.count("CTRL_UNLISTEN") == 2, sent
    timeline = load_timeline(trace)
    notes = [r.fields.get("what") for r in timeline.records if isinstance(r, Note)]
    assert notes[-1] == "app detached at exit", notes
    result = replay(timeline)
    assert result.mismatches == [], "\n".join(map(str, result.mismatches))


def test_exit_with_daemon_threads_blocked_in_vpp_calls(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """Daemon threads blocked in recv, in accept and in select on interposed sockets when the
    program exits: the exit ends within the bound, with the program's status, without a
    traceback from those threads, and the app still detaches."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    srv = _listener(nc, sock, 25103)
    status, out, err = _finish(_run(sock, """
        import selectors, socket, sys, threading, time
        s = socket.create_connection(("127.0.0.1", 25103))
        listener = socket.create_server(("127.0.0.1", 25104))
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ)
        blocked = [
            threading.Thread(target=s.recv, args=(10,), daemon=True),
            threading.Thread(target=listener.accept, daemon=True),
            threading.Thread(target=sel.select, daemon=True),
        ]
        for t in blocked:
            t.start()
        time.sleep(0.5)
        print("alive", sum(t.is_alive() for t in blocked), flush=True)
        sys.exit(5)
    """, trace))  # fmt: skip
    assert status == 5, err
    assert out.strip() == "alive 3", (out, err)
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert srv.wait(30) == 0, srv.err()
    assert _sent(trace)[-1] == "CTRL_APP_DETACH"


def test_exit_after_vpp_died(vpp_factory: Any, nc: Any, tmp_path: Path) -> None:
    """VPP SIGKILLed under a connected program, which then exits with sys.exit(4): nothing is
    said to the dead VPP (no detach in the trace), the exit is prompt, the status 4."""
    own = vpp_factory()
    sock, trace = str(own.app_socket()), tmp_path / "run.trace"
    p = _connected_until_told(nc, sock, trace, 25105, status=4, send=b"x")
    assert own.pid is not None
    os.kill(own.pid, signal.SIGKILL)
    own.stop()
    status, _, err = _finish(p, "go\n")
    assert status == 4, err
    assert "Traceback" not in err, err
    assert "CTRL_APP_DETACH" not in _sent(trace)


def test_exit_with_vpp_frozen(vpp_factory: Any, nc: Any, tmp_path: Path) -> None:
    """VPP stopped (SIGSTOP: alive, its app socket open, answering nothing) under a program
    that exits with sys.exit(9) and a connection open: leaving gives up at its bounds, the
    status is 9, and what was sent in the meantime is in the trace."""
    own = vpp_factory()
    sock, trace = str(own.app_socket()), tmp_path / "run.trace"
    p = _connected_until_told(nc, sock, trace, 25109, status=9)
    assert own.pid is not None
    os.kill(own.pid, signal.SIGSTOP)
    try:
        status, _, err = _finish(p, "go\n")
    finally:
        os.kill(own.pid, signal.SIGCONT)
    assert status == 9, err
    sent = _sent(trace)
    assert "CTRL_DISCONNECT" in sent and sent[-1] == "CTRL_APP_DETACH", sent


def test_a_forked_child_leaves_the_parents_app_alone(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """A forked child that never used an interposed socket exits (sys.exit(6)) while its
    parent holds a connection: the child's exit is prompt with its own status, says nothing
    to VPP (no trace file of its own), and the parent's connection goes on working."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    srv = _listener(nc, sock, 25106)
    status, out, err = _finish(_run(sock, """
        import os, socket, sys
        s = socket.create_connection(("127.0.0.1", 25106))
        s.sendall(b"before ")
        pid = os.fork()
        if pid == 0:
            sys.exit(6)
        _, child = os.waitpid(pid, 0)
        s.sendall(b"after")
        s.close()
        print("child", os.waitstatus_to_exitcode(child), flush=True)
        sys.exit(7)
    """, trace))  # fmt: skip
    assert status == 7, err
    assert out.strip() == "child 6", (out, err)
    assert srv.wait(30) == 0, srv.err()
    assert srv.proc.stdout.read() == b"before after"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("run.trace.")] == []
    assert _sent(trace).count("CTRL_APP_DETACH") == 1


def test_a_forked_child_that_connects_leaves_with_its_own_app(
    vpp: Any, nc: Any, tmp_path: Path
) -> None:
    """A forked child that connects (attaching an app of its own) and exits with sys.exit(2)
    without closing: it closes its session and detaches its own app (its trace, FILE.PID),
    and its parent's app is left alone (the parent's trace has one detach, its own)."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    srv = _listener(nc, sock, 25110)
    status, out, err = _finish(_run(sock, """
        import os, socket, sys
        own = socket.create_server(("127.0.0.1", 25111))
        pid = os.fork()
        if pid == 0:
            s = socket.create_connection(("127.0.0.1", 25110))
            s.sendall(b"child")
            sys.exit(2)
        _, child = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(child), flush=True)
    """, trace))  # fmt: skip
    assert status == 0, err
    assert out.split() == ["child", "2"], (out, err)
    assert srv.wait(30) == 0, srv.err()
    assert srv.proc.stdout.read() == b"child"
    children = [p for p in tmp_path.iterdir() if p.name.startswith("run.trace.")]
    assert len(children) == 1, children
    sent = _sent(children[0])
    assert "CTRL_DISCONNECT" in sent and sent[-1] == "CTRL_APP_DETACH", sent
    sent = _sent(trace)
    assert "CTRL_DISCONNECT" not in sent and sent.count("CTRL_APP_DETACH") == 1, sent


def test_exit_by_ctrl_c_does_not_leave(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """An uncaught KeyboardInterrupt: the process dies by SIGINT, as python's would, without
    the goodbye (as C VCL, whose exit handlers a signal skips)."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    _listener(nc, sock, 25107)
    status, _, err = _finish(_run(sock, """
        import socket
        s = socket.create_connection(("127.0.0.1", 25107))
        raise KeyboardInterrupt
    """, trace))  # fmt: skip
    assert status == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    sent = _sent(trace)
    assert "CTRL_CONNECT" in sent and "CTRL_APP_DETACH" not in sent, sent


def test_a_python_child_leaves_too(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """A Python program started by the program under ``pyvcl run`` (booted the same way)
    connects and exits with sys.exit(8) without closing: it detaches in its own trace file
    (FILE.PID), and its parent sees its status."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    srv = _listener(nc, sock, 25108)
    child = (
        "import socket, sys; "
        "s = socket.create_connection(('127.0.0.1', 25108)); s.sendall(b'child'); sys.exit(8)"
    )
    status, out, err = _finish(_run(sock, f"""
        import subprocess, sys
        p = subprocess.run([sys.executable, "-c", {child!r}])
        print("child", p.returncode, flush=True)
    """, trace))  # fmt: skip
    assert status == 0, err
    assert out.split() == ["child", "8"], (out, err)
    assert srv.wait(30) == 0, srv.err()
    assert srv.proc.stdout.read() == b"child"
    children = [p for p in tmp_path.iterdir() if p.name.startswith("run.trace.")]
    assert len(children) == 1, children
    sent = _sent(children[0])
    assert "CTRL_DISCONNECT" in sent and sent[-1] == "CTRL_APP_DETACH", sent
