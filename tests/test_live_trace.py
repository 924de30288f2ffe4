"""Live traces (PYVCL_TRACE, --trace): recording, loading, the decode timeline and replay through
the session core.  The unit tests record in-memory queues; the last tests trace ``pyvcl nc``
moving 1 MiB through a real VPP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pyvcl.api import live_trace
from pyvcl.api.live_trace import Tracer
from pyvcl.api.sapi import encode_frame
from pyvcl.api.timeline import CoreCall, Note, load_timeline, parse_timeline
from pyvcl.api.trace import TraceMessage, load_trace
from pyvcl.errors import LocalError, RecordingError
from pyvcl.mq.events import encode_ctrl
from pyvcl.mq.queue import MessageQueue
from pyvcl.session.core import SessionLayer, State
from pyvcl.session.replay import replay, watch_layer
from pyvcl.wire.addr import ip_to_wire, port_to_wire
from pyvcl.wire.enums import MqRing, SapiMsgType
from pyvcl.wire.enums import SessionEvent as E

from .mq_fixtures import build_mq
from .test_nc import ROOT
from .test_nc import nc as nc  # the fixture

MIB = 1 << 20
HANDLE = 0x100000007  # thread 1, VPP session index 7
VPP_MQ = 0x140


def _decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyvcl", "decode", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def _connected(context: int) -> bytes:
    ip, is_ip4 = ip_to_wire("127.0.0.1")
    return encode_ctrl(
        E.CTRL_CONNECTED, context=context, retval=0, handle=HANDLE, vpp_event_queue_address=VPP_MQ,
        segment_handle=0x200000000, server_rx_fifo=0x1000, server_tx_fifo=0x2000,
        lcl={"ip": ip, "is_ip4": is_ip4, "port": port_to_wire(40000)},
    )  # fmt: skip


def _recorded_run(path: Path) -> tuple[Tracer, SessionLayer]:
    """A client's life on in-memory queues, traced: connect, CONNECTED, data events both
    ways, the peer's DISCONNECTED, close, CLEANUP.  VPP's side is played by the test (it
    sends on the app's queue); the app's actions go to a queue standing for VPP's."""
    tracer = Tracer(str(path))
    seg, off, app_mq = build_mq(64)
    vpp_side = MessageQueue(seg, off)  # VPP's own view of the app's queue: not traced
    seg, off, vpp_mq = build_mq(64)
    vpp_reads = MessageQueue(seg, off)
    tracer.watch_queue(app_mq, "app")
    tracer.watch_queue(vpp_mq, "vpp0")
    layer = SessionLayer(client_index=3)
    watch_layer(layer, tracer)

    def handle_all() -> None:
        for ev in app_mq.drain():
            for a in layer.handle_event(ev):
                vpp_mq.send_ctrl(a.event_type, **a.fields)

    s = layer.new_session()
    for a in layer.connect(s, "127.0.0.1", 9000):
        vpp_mq.send_ctrl(a.event_type, **a.fields)
    vpp_side.send(_connected(s.index))
    handle_all()
    assert s.state is State.READY
    vpp_mq.send_io(E.IO_TX, s.vpp_index)
    vpp_side.send_io(E.IO_RX, s.index)
    vpp_side.send_io(E.IO_TX, s.index)
    vpp_side.send(encode_ctrl(E.CTRL_DISCONNECTED, handle=HANDLE))
    handle_all()
    for a in layer.close(s):
        vpp_mq.send_ctrl(a.event_type, **a.fields)
    vpp_side.send(encode_ctrl(E.CTRL_CLEANUP, handle=HANDLE, type=1))
    handle_all()
    assert len(vpp_reads.drain()) == 3  # CONNECT, IO_TX, DISCONNECTED_REPLY
    tracer.close()
    return tracer, layer


# -- recording and loading -------------------------------------------------------------------
def test_records_every_message_with_time_and_session(tmp_path: Path) -> None:
    tracer, _ = _recorded_run(tmp_path / "t")
    timeline = load_timeline(tracer.path)
    assert timeline.header["pid"] == os.getpid() and not timeline.truncated
    mq = [r for r in timeline.records if isinstance(r, TraceMessage)]
    got = [(m.direction, m.queue, m.type_name, m.session) for m in mq]
    assert got == [
        ("app->vpp", "vpp0", "CTRL_CONNECT", {"index": 0}),
        ("vpp->app", "app", "CTRL_CONNECTED", {"index": 0, "handle": HANDLE}),
        ("app->vpp", "vpp0", "IO_TX", {"vpp_index": 7}),
        ("vpp->app", "app", "IO_RX", {"index": 0}),
        ("vpp->app", "app", "IO_TX", {"index": 0}),
        ("vpp->app", "app", "CTRL_DISCONNECTED", {"handle": HANDLE}),
        ("app->vpp", "vpp0", "CTRL_DISCONNECTED_REPLY", {"handle": HANDLE}),
        ("vpp->app", "app", "CTRL_CLEANUP", {"handle": HANDLE}),
    ]
    assert [m.ring for m in mq[:3]] == [MqRing.CTRL_EVT, MqRing.CTRL_EVT, MqRing.IO_EVT]
    assert mq[1].fields["context"] == 0 and mq[1].fields["handle"] == HANDLE
    times = [r.t for r in timeline.records]
    assert times == sorted(times) and [r.index for r in timeline.records] == list(
        range(len(timeline.records))
    )
    calls = [r.call for r in timeline.records if isinstance(r, CoreCall)]
    assert calls == ["init", "new_session", "connect", "handle_event", "handle_event",
                     "handle_event", "handle_event", "close", "handle_event"]  # fmt: skip
    # Each core call of an event names the mq record the event was drained in.
    for c in timeline.records:
        if isinstance(c, CoreCall) and c.call == "handle_event":
            assert c.event is not None and c.index > c.event


def test_replay_reproduces_the_core(tmp_path: Path) -> None:
    tracer, live = _recorded_run(tmp_path / "t")
    result = replay(load_timeline(tracer.path))
    assert result.mismatches == [] and result.calls == 8 and result.events == 5
    assert result.layer is not None and result.layer.sessions.keys() == live.sessions.keys()


def test_replay_reports_a_different_outcome(tmp_path: Path) -> None:
    """An edited record -- or a core that changed -- shows as a mismatch, naming the call."""
    tracer, _ = _recorded_run(tmp_path / "t")
    lines = Path(tracer.path).read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec.get("call") == "close":
            rec["actions"][0]["type"] = "CTRL_RESET_REPLY"
            rec["states"] = {"0": "ready"}
            lines[i] = json.dumps(rec)
    edited = tmp_path / "edited"
    edited.write_text("\n".join(lines) + "\n")
    mismatches = replay(load_timeline(edited)).mismatches
    assert len(mismatches) == 2 and all(m.call == "close" for m in mismatches)
    assert "CTRL_DISCONNECTED_REPLY" in str(mismatches[0]) and "closing" in str(mismatches[1])


def test_threads_share_one_ordered_file(tmp_path: Path) -> None:
    tracer = Tracer(str(tmp_path / "t"))
    _, _, mq = build_mq(4096)
    tracer.watch_queue(mq, "vpp0")
    errors: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            for _ in range(300):
                mq.send_io(E.IO_TX, index)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    tracer.close()
    records = load_timeline(tracer.path).records
    assert len(records) == 1200
    assert [r.t for r in records] == sorted(r.t for r in records)
    per = [sum(1 for r in records if isinstance(r, TraceMessage) and r.session == {"vpp_index": i})
           for i in range(4)]  # fmt: skip
    assert per == [300] * 4


def test_a_forked_child_does_not_write_into_the_parents_file(tmp_path: Path) -> None:
    path = tmp_path / "t"
    tracer = Tracer(str(path))
    os.register_at_fork(after_in_child=tracer._forked)
    tracer.record("note", what="parent, before the fork")  # buffered at the fork
    pid = os.fork()
    if pid == 0:  # the child: record, flush, and leave at once
        code = 0
        try:
            tracer.record("note", what="child")
            tracer.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tracer.record("note", what="parent, after")
    tracer.close()
    parent = load_timeline(path)
    assert [r.fields["what"] for r in parent.records if isinstance(r, Note)] == [
        "parent, before the fork",
        "parent, after",
    ]
    child = load_timeline(f"{path}.{pid}")
    assert child.header["pid"] == pid
    assert [r.fields["what"] for r in child.records if isinstance(r, Note)] == ["child"]


def test_an_unwritable_trace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="PYVCL_TRACE: cannot write the trace"):
        Tracer(str(tmp_path / "no-such-dir" / "t"))


def test_tracing_off_wraps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, nothing is swapped in: the queues and the core keep their own methods (the data
    path runs the code it runs without tracing, no check added)."""
    monkeypatch.delenv(live_trace.ENV, raising=False)
    monkeypatch.setattr(live_trace, "_looked", False)
    monkeypatch.setattr(live_trace, "_tracer", None)
    assert live_trace.active() is None
    layer = SessionLayer(1)
    watch_layer(layer)
    assert "handle_event" not in vars(layer)


def test_sapi_frames_and_old_traces(tmp_path: Path) -> None:
    """sapi records are the recorded traces' events: `load_trace` reads their frames from a
    live trace, and a recorded trace (one JSON object) still loads as before."""
    frame = encode_frame(SapiMsgType.ATTACH_REPLY, bytes(8))
    tracer = Tracer(str(tmp_path / "live"))
    tracer.record("sapi", dir="vpp->app", len=len(frame), hex=frame.hex(), fds=[])
    tracer.close()
    (live,) = load_trace(tracer.path)
    assert live.type == SapiMsgType.ATTACH_REPLY and live.t is not None and live.kind == "sapi"
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"events": [{"dir": "vpp->app", "len": 209, "hex": frame.hex()}]}))
    (msg,) = load_trace(old)
    assert msg.type == SapiMsgType.ATTACH_REPLY and msg.t is None
    text = _decode(str(old))
    assert text.returncode == 0 and text.stdout.startswith("#0 vpp->app  ATTACH_REPLY")


# -- hostile files -------------------------------------------------------------------------------
HEADER = json.dumps({"format": live_trace.FORMAT, "version": 1, "pid": 1})
IO = (
    '"dir":"app->vpp","queue":"vpp0","ring":0,"len":18,"hex":"010007000000000000000000000000000000"'
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"seq":0,"t":0.1,"kind":"mq",' + IO + "}\nnot json\n", "line 3: not valid JSON"),
        ('{"seq":5,"t":0.1,"kind":"mq",' + IO + "}\n", "line 2: 'seq' is 5, expected 0"),
        ('{"seq":0,"t":-1,"kind":"mq",' + IO + "}\n", "line 2: 't' is -1"),
        ('{"seq":0,"t":0,"kind":"disk"}\n', "line 2: 'kind' is 'disk'"),
        (
            '{"seq":0,"t":0,"kind":"mq",' + IO.replace('"ring":0', '"ring":1') + "}\n",
            "line 2: IO event type 1 in ring 1",
        ),
        ('{"seq":0,"t":0,"kind":"mq",' + IO.replace("18", "17", 1) + "}\n", "'len' is 17"),
        (
            '{"seq":0,"t":0,"kind":"core","call":"handle_event","event":5}\n',
            "line 2: 'event' is 5, outside 0..0",
        ),
        (
            '{"seq":0,"t":0,"kind":"mq",' + IO + '}\n{"seq":1,"t":0,"kind":"core",'
            '"call":"handle_event","event":0}\n',
            "'event' 0 is not a VPP->app mq record",
        ),
        ('{"seq":0,"t":0,"kind":"core","call":"fly"}\n', "line 2: 'call' is 'fly'"),
    ],
)
def test_bad_records_name_their_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.trace"
    path.write_text(HEADER + "\n" + body)
    with pytest.raises(RecordingError) as info:
        load_timeline(path)
    assert info.value.path == path and message in str(info.value), str(info.value)
    p = _decode(str(path))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1 and str(path) in p.stderr, p.stderr


def test_a_last_line_cut_short_is_dropped(tmp_path: Path) -> None:
    whole = '{"seq":0,"t":0,"kind":"mq",' + IO + "}\n"
    timeline = parse_timeline((HEADER + "\n" + whole + whole[:30]).encode())
    assert timeline.truncated and len(timeline.records) == 1
    path = tmp_path / "cut.trace"
    path.write_text(HEADER + "\n" + whole + whole[:30])
    assert "cut short" in _decode(str(path)).stdout


# -- real VPP ------------------------------------------------------------------------------------
def _order(text: str, wanted: list[str]) -> list[int]:
    """Line numbers of the first line containing each of ``wanted``, searched in order."""
    lines, found, start = text.splitlines(), [], 0
    for w in wanted:
        n = next((i for i in range(start, len(lines)) if w in lines[i]), None)
        assert n is not None, f"no {w!r} after line {start}:\n{text}"
        found.append(n)
        start = n + 1
    return found


def test_vpp_nc_1mib_trace(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """A trace of pyvcl nc moving 1 MiB through cut-through (``--trace`` on the listener,
    ``PYVCL_TRACE`` on the sender), as `pyvcl decode` shows it: attach, connect, connected,
    IO events, disconnect and cleanup in order; replayed through a fresh session core, it
    gives the same actions and states."""
    sock, data = str(vpp.app_socket()), os.urandom(MIB)
    src, out = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    srv_trace, cli_trace = tmp_path / "srv.trace", tmp_path / "cli.trace"
    with open(out, "wb") as f:
        srv = nc(
            "-v", "--trace", str(srv_trace), "--app-socket", sock, "-l", "127.0.0.1", "25011",
            stdout=f,
        )  # fmt: skip
    srv.wait_for("listening on 127.0.0.1:25011")
    with open(src, "rb") as f:
        cli = nc("--app-socket", sock, "-q", "0", "127.0.0.1", "25011", stdin=f,
                 PYVCL_TRACE=str(cli_trace))  # fmt: skip
    assert cli.wait(60) == 0, cli.err()
    assert srv.wait(30) == 0, srv.err()
    assert out.read_bytes() == data

    text = _decode(str(cli_trace))
    assert text.returncode == 0, text.stderr
    _order(text.stdout, [
        "app->vpp  sapi       ATTACH ", "vpp->app  sapi       ATTACH_REPLY",
        "core       connect", "app->vpp  mq   vpp0  CTRL_CONNECT ",
        "vpp->app  mq   app   CTRL_CONNECTED", "app->vpp  mq   vpp0  IO_TX",
        "core       close", "app->vpp  mq   vpp0  CTRL_DISCONNECT ",
        "vpp->app  mq   app   CTRL_CLEANUP", "CTRL_APP_DETACH", "what=app closed",
    ])  # fmt: skip
    text = _decode(str(srv_trace))
    assert text.returncode == 0, text.stderr
    _order(text.stdout, [
        "ATTACH ", "ATTACH_REPLY", "CTRL_LISTEN ", "CTRL_BOUND", "CTRL_ACCEPTED ",
        "core       accept", "CTRL_ACCEPTED_REPLY", "vpp->app  mq   app   IO_RX",
        "CTRL_DISCONNECTED ", "CTRL_DISCONNECTED_REPLY", "CTRL_CLEANUP", "CTRL_APP_DETACH",
    ])  # fmt: skip

    for path in (cli_trace, srv_trace):
        timeline = load_timeline(path)
        mq = [r for r in timeline.records if isinstance(r, TraceMessage) and r.kind == "mq"]
        io = [r for r in mq if r.type < E.CTRL_RPC]
        assert io and all(r.session for r in io)
        result = replay(timeline)
        assert result.mismatches == [], "\n".join(map(str, result.mismatches))
        assert result.calls >= 4 and result.events >= 1

    # The accepted session alone: its messages and core calls, not the listener's BOUND.
    one = _decode("--session", "1", str(srv_trace))
    assert one.returncode == 0, one.stderr
    body = one.stdout.splitlines()[3:]
    assert body and all(re.search(r"[ ,]s1([ ,]|$)", line) for line in body), one.stdout
    assert "CTRL_ACCEPTED_REPLY" in one.stdout and "CTRL_BOUND" not in one.stdout
    as_json = _decode("--json", "--session", "1", str(srv_trace))
    doc = json.loads(as_json.stdout)
    assert doc["header"]["pid"] == srv.proc.pid
    assert doc["records"] and all(1 in r["sessions"] for r in doc["records"])


def test_vpp_run_trace(vpp: Any, nc: Any, tmp_path: Path) -> None:
    """``pyvcl run --trace``: an unmodified program's connection, interposed (its pump thread
    polls the app mq too), recorded and replayed."""
    sock, trace = str(vpp.app_socket()), tmp_path / "run.trace"
    srv = nc("-v", "--app-socket", sock, "-l", "127.0.0.1", "25012")
    srv.wait_for("listening on 127.0.0.1:25012")
    code = (
        "import socket\n"
        "s = socket.create_connection(('127.0.0.1', 25012))\n"
        "s.sendall(b'hello')\n"
        "s.close()\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "pyvcl", "run", "--trace", str(trace), "--app-socket", sock,
         "--no-fallback", "-c", code],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert srv.wait(30) == 0, srv.err()
    assert srv.proc.stdout.read() == b"hello"
    timeline = load_timeline(trace)
    names = [r.type_name for r in timeline.records if isinstance(r, TraceMessage)]
    assert names[:2] == ["ATTACH", "ATTACH_REPLY"]
    assert names.index("CTRL_CONNECT") < names.index("CTRL_CONNECTED") < names.index("IO_TX")
    result = replay(timeline)
    assert result.mismatches == [] and result.events >= 1


def test_vpp_attach_wraps_only_when_tracing(vpp: Any, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:  # fmt: skip
    """Untraced, an attached app's socket and queues keep their own methods; traced, the
    recording wrappers are on that app's objects alone."""
    from pyvcl.app import App

    monkeypatch.delenv(live_trace.ENV, raising=False)
    monkeypatch.setattr(live_trace, "_looked", False)
    monkeypatch.setattr(live_trace, "_tracer", None)
    with App.attach(vpp.app_socket()) as plain:
        objects = [plain.sapi, plain.app_mq, *plain.vpp_mqs]
        assert not any({"recv", "send_raw", "send_io", "drain"} & set(vars(o)) for o in objects)
    monkeypatch.setenv(live_trace.ENV, str(tmp_path / "t"))
    monkeypatch.delenv(live_trace.OWNER_ENV, raising=False)
    monkeypatch.setattr(live_trace, "_looked", False)
    with App.attach(vpp.app_socket()) as traced:
        assert {"recv", "send_raw"} <= set(vars(traced.sapi))
        assert all({"send", "send_io", "drain"} <= set(vars(q)) for q in traced.vpp_mqs)
        assert {"drain"} <= set(vars(traced.app_mq))
    tracer = live_trace.active()
    assert tracer is not None
    tracer.close()
    types = [r.type_name for r in load_timeline(tmp_path / "t").records
             if isinstance(r, TraceMessage)]  # fmt: skip
    assert types[:2] == ["ATTACH", "ATTACH_REPLY"] and "CTRL_APP_DETACH" in types
