"""Recording a live process's VCL state as a snapshot (`pyvcl.snapshot_record`, ``pyvcl inspect
PID --snapshot PATH``), and reading it back with `pyvcl.snapshot`.

Against VPP: a pyvcl server and a C VCL server under LDP each hold an accepted connection whose
bytes they have not read, stopped (SIGSTOP) as in tests/test_procview.py; the snapshot, decoded
offline, shows the same unread bytes and queued events as the live view, from a few KB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyvcl.cli import main as cli_main
from pyvcl.procview import ProcessView, describe_process
from pyvcl.snapshot import (
    REGION_SEGMENT_HEADER,
    Snapshot,
    describe_snapshot,
    read_blob,
    snapshot_files,
)
from pyvcl.snapshot_record import live_summary, record_snapshot
from pyvcl.testing.held import held_connection, settled
from pyvcl.testing.vpp import VppInstance


def test_snapshot_does_not_go_with_watch(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["inspect", str(os.getpid()), "--snapshot", "x", "--watch"])
    assert code != 0 and "--snapshot records once" in capsys.readouterr().err


def test_bad_sample_sizes_are_refused() -> None:
    with ProcessView(os.getpid()) as view, pytest.raises(ValueError, match="0 or more"):
        record_snapshot(view, "unused", data_sample=-1)


@pytest.mark.vpp
@pytest.mark.parametrize(
    ("holder", "port", "unread"), [("pyvcl", 18781, 98_765), ("ldp", 18782, 45_678)]
)
def test_a_snapshot_shows_what_the_live_process_shows(
    vpp: VppInstance,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    holder: str,
    port: int,
    unread: int,
) -> None:
    with held_connection(vpp, tmp_path, holder, port=port, unread=unread) as server:
        live = settled(server.pid, unread)
        stem = tmp_path / "snap"
        args = ["inspect", str(server.pid), "--json", "--snapshot", str(stem)]
        assert cli_main([*args, "--note", "held"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert describe_process(server.pid)["fifos"] == live["fifos"]  # still stopped

    # Offline: the same unread bytes and queued events, decoded from the snapshot alone.
    out = describe_snapshot(stem)
    assert out["note"] == "held" and out["unresolved_fifo_refs"] == []
    rx = [f for f in out["fifos"] if f["found_via"][0]["field"] == "server_rx_fifo"]
    assert len(rx) == 1 and rx[0]["ok"] and rx[0]["bytes_present"] == unread
    assert set(bytes.fromhex(rx[0]["head_data"])) == {ord("u")}  # what the pusher sent
    by_role = {m["role"]: m for m in out["mqs"]}
    assert sorted(by_role) == ["app worker mq", "vpp worker mq 0"]
    (live_app,) = [m for m in shown["mqs"] if m["role"] == "app"]
    pending = by_role["app worker mq"]["queue"]["pending_handles"]
    assert by_role["app worker mq"]["queue"]["cursize"] == live_app["queued"] >= 1
    assert len(pending) == len(live_app["pending"])
    with Snapshot.load(stem) as snap:
        assert live_summary(out) == snap.meta["live"]
        summary = snap.meta["live"]
        assert sorted(f["unread"] for f in summary["fifos"]) == sorted(
            f["unread"] for f in shown["fifos"]
        )
        assert [m["pending"] for m in summary["mqs"] if m["role"] == "app worker mq"] == [
            [e["type_name"] for e in live_app["pending"]]
        ]
        headers = snap.regions_of(REGION_SEGMENT_HEADER)
        assert len(headers) == len(snap.segments) == len(shown["segments"])
    # Small: the regions, not the 256 MiB segments (the two 2048-slot queues are most of it:
    # 315 KB of VPP's and 86 KB of the app's, mostly zeros: gzipped, a few KB).
    packed = snapshot_files(stem)[1]
    assert packed.name.endswith(".bin.gz") and not stem.with_suffix(".bin").exists()
    assert len(read_blob(packed)) < 1 << 20 and packed.stat().st_size < 1 << 16
    assert stem.with_suffix(".json").stat().st_size < 20_000
