"""``pyvcl inspect PID`` (`pyvcl.procview`): a running app's VCL state, read from outside.

Without VPP: the queue scan on built segments (and on garbage), the errors for a missing
process, one we may not look into and one with no VCL segments.  With VPP: a pyvcl server
and a C VCL server under LDP, each holding an accepted connection it has not read, stopped
(SIGSTOP) so that nothing takes their events: the exact unread byte count of each rx fifo
and the IO event queued in each app's own message queue.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyvcl.cli import main as cli_main
from pyvcl.errors import LocalError
from pyvcl.fifo import ChunkAllocator
from pyvcl.procview import ProcessView, describe_process, find_mqs, vcl_processes
from pyvcl.testing.held import held_connection, settled
from pyvcl.testing.vpp import VppInstance
from pyvcl.wire.mq import SVM_MSG_Q_SHARED, SVM_MSG_Q_SHARED_QUEUE

from .mq_fixtures import build_mq
from .segment_fixtures import make_segment

READY_S = 20.0


# -- without VPP ------------------------------------------------------------------------------
def test_the_scan_finds_a_queue_placed_by_the_allocator() -> None:
    seg, off, _mq = build_mq(64)
    assert find_mqs(seg) == [off]


def test_the_scan_finds_nothing_in_noise() -> None:
    seg = make_segment(1 << 20)
    a = ChunkAllocator(seg)
    start = seg.fsh + a.alloc_aligned(a.n_free_bytes())  # all of it allocated...
    seg.view[start:] = os.urandom(seg.size - start)  # ...and noise
    assert find_mqs(seg) == []


def test_a_header_that_looks_right_over_garbage_is_not_taken() -> None:
    seg = make_segment(1 << 20)
    a = ChunkAllocator(seg)
    off = a.alloc_aligned(a.n_free_bytes())
    m = seg.fsh + off
    seg.view[m:] = os.urandom(seg.size - m)
    # Words that pass the scan's first look: 2 rings, 16 handles of 8 bytes, indices in range;
    # what follows (the handles and ring headers) is noise.
    q = m + SVM_MSG_Q_SHARED.size
    seg.view[m : m + 4] = (2).to_bytes(4, "little")
    for name, value in (("head", 0), ("tail", 0), ("cursize", 0), ("maxsize", 16), ("elsize", 8)):
        at = q + SVM_MSG_Q_SHARED_QUEUE.offset(name)
        seg.view[at : at + 4] = value.to_bytes(4, "little")
    assert find_mqs(seg) == []


def test_no_such_process() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(LocalError) as e:
        describe_process(p.pid)
    assert e.value.errno == errno.ESRCH and str(p.pid) in str(e.value)


def test_no_permission_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str) -> list[str]:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "listdir", refuse)
    with pytest.raises(LocalError) as e:
        ProcessView(os.getpid())
    assert e.value.errno == errno.EACCES and "permission denied" in str(e.value)


def test_a_process_without_segments(capsys: pytest.CaptureFixture[str]) -> None:
    # A memfd that is not a segment is listed as skipped, never mapped as one.
    fd = os.memfd_create("not-a-segment")
    try:
        os.write(fd, os.urandom(mmap.PAGESIZE))
        state = describe_process(os.getpid())
        assert state["segments"] == [] and state["mqs"] == [] and state["fifos"] == []
        assert any(s["name"] == "not-a-segment" for s in state["skipped"])
        assert cli_main(["inspect", str(os.getpid())]) == 1
        assert "has no VCL segments" in capsys.readouterr().err
    finally:
        os.close(fd)


# -- against VPP ------------------------------------------------------------------------------
def _fifo_of(state: dict[str, Any], role: str) -> dict[str, Any]:
    found = [f for f in state["fifos"] if f["role"] == role]
    assert len(found) == 1, state["fifos"]
    return found[0]


@pytest.mark.vpp
@pytest.mark.parametrize(
    ("holder", "port", "unread"), [("pyvcl", 18771, 123_457), ("ldp", 18772, 54_321)]
)
def test_unread_bytes_and_queued_events_of_a_stopped_server(
    vpp: VppInstance,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    holder: str,
    port: int,
    unread: int,
) -> None:
    with held_connection(vpp, tmp_path, holder, port=port, unread=unread) as server:
        state = settled(server.pid, unread)
        rx = _fifo_of(state, "server_rx_fifo")
        assert rx["unread"] == unread and rx["tail"] - rx["head"] == unread
        assert _fifo_of(state, "server_tx_fifo")["unread"] == 0
        roles = sorted(mq["role"] for mq in state["mqs"])
        assert roles == ["app", "vpp"], state["mqs"]
        app_mq = next(mq for mq in state["mqs"] if mq["role"] == "app")
        assert app_mq["queued"] >= 1
        assert "IO_RX" in [e.get("type_name") for e in app_mq["pending"]]
        # The listing without a PID names it, and not VPP.
        listed = {p["pid"]: p for p in vcl_processes()}
        assert server.pid in listed and "hold.py" in listed[server.pid]["command"]
        assert all(p["name"] != "vpp_main" for p in listed.values())
        assert cli_main(["inspect"]) == 0
        assert str(server.pid) in capsys.readouterr().out
        # The command, both forms.
        assert cli_main(["inspect", str(server.pid), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["fifos"]
        assert cli_main(["inspect", str(server.pid), "--peek", "4"]) == 0
        text = capsys.readouterr().out
        assert f"{unread} bytes unread" in text and "b'uuuu'" in text
        assert "IO_RX" in text
