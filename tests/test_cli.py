"""The pyvcl command as a user runs it: no VPP needed, except where the vpp fixture is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyvcl.cli import main

from .shared_data import cross_check, has_shared, own_path, shared_path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyvcl", *args], capture_output=True, text=True, timeout=120
    )


def test_status_without_vpp_falls_back(tmp_path: Path) -> None:
    p = run("status", "--app-socket", str(tmp_path / "none"))
    assert p.returncode == 0
    assert "VPP not reachable" in p.stdout and "kernel sockets" in p.stdout
    assert run("status", "--app-socket", str(tmp_path / "none"), "--require-vpp").returncode == 1


def test_attach_without_vpp_is_one_clear_line(tmp_path: Path) -> None:
    p = run("attach", "--app-socket", str(tmp_path / "none"))
    assert p.returncode == 1
    assert p.stderr.startswith("pyvcl attach: no VPP app socket at") and "Traceback" not in p.stderr


@cross_check("vpp-v26.06", "traces")
def test_decode_trace(capsys: pytest.CaptureFixture[str]) -> None:
    trace = shared_path("vpp-v26.06", "traces", "sapi-client-noevfd.json")
    assert main(["decode", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "ATTACH_REPLY" in out and "VPP_MQ_SEGMENT" in out and "SEND_FDS" in out
    assert main(["decode", "--json", str(trace)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[1]["fields"]["fd_flags"]["names"] == ["VPP_MQ_SEGMENT", "MEMFD_SEGMENT"]


def test_decode_own_trace(capsys: pytest.CaptureFixture[str]) -> None:
    trace = own_path("vpp-v26.06", "traces", "ct-nc-client-noevfd.jsonl")
    assert main(["decode", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "ATTACH_REPLY" in out and "CTRL_CONNECTED" in out and "SEND_FDS" in out
    assert main(["decode", "--json", str(trace)]) == 0
    data = json.loads(capsys.readouterr().out)["records"]
    assert data[1]["fields"]["fd_flags"]["names"] == ["VPP_MQ_SEGMENT", "MEMFD_SEGMENT"]


@pytest.mark.parametrize(
    "where",
    [("own", "ct-pyvcl-server-unread.bin.gz")]
    + ([("shared", "ct-server-connected.bin")] if has_shared("vpp-v26.06", "snapshots") else []),
    ids=lambda w: w[0],
)
def test_decode_snapshot(capsys: pytest.CaptureFixture[str], where: tuple[str, str]) -> None:
    find = own_path if where[0] == "own" else shared_path
    snap = find("vpp-v26.06", "snapshots", where[1])
    assert main(["decode", "--json", str(snap)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["segments"] and data["mqs"] and data["fifos"]


def test_decode_garbage_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"events": [{"dir": "vpp->app", "len": 3, "hex": "020000"}]}')
    p = run("decode", str(bad))
    assert p.returncode == 1 and "209" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    ("name", "missing"),
    [("absent.json", "absent.json"), ("dir", "dir"), ("snap.bin", "snap.json")],
    ids=["missing", "directory", "bin-without-json"],
)
def test_decode_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, missing: str
) -> None:
    """One line naming the file that cannot be read, exit 1, no traceback."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "snap.bin").write_bytes(b"")
    assert main(["decode", str(tmp_path / name)]) == 1
    out, err = capsys.readouterr()
    assert not out and len(err.splitlines()) == 1
    assert err.startswith(f"pyvcl decode: {tmp_path / missing}: ")


@pytest.mark.parametrize("eventfd", ["--use-mq-eventfd", "--no-use-mq-eventfd"])
def test_attach_against_vpp(vpp: Any, eventfd: str) -> None:
    p = run("attach", "--app-socket", str(vpp.app_socket()), eventfd, "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["attach_reply"]["retval"] == 0
    roles = [s["role"] for s in data["segments"]]
    assert roles == ["vpp-mq", "first"]
    assert data["app_mq"]["mode"] == ("eventfd" if eventfd == "--use-mq-eventfd" else "condvar")
    assert data["app_mq"]["queue"]["maxsize"] == 2048
    # The ctrl mq is the main thread's, or with workers the first worker's.
    assert [mq["ctrl"] for mq in data["vpp_mqs"]].count(True) == 1
    text = run("attach", "--app-socket", str(vpp.app_socket()), eventfd)
    assert text.returncode == 0 and "message queues:" in text.stdout


def test_status_and_attach_through_a_namespace(vpp: Any) -> None:
    vpp.add_app_namespace("clins", 77)
    runtime = str(vpp.app_socket().parent.parent)
    p = run("status", "--runtime-dir", runtime, "--namespace-id", "clins", "--require-vpp")
    assert p.returncode == 0 and "VPP reachable" in p.stdout
    p = run("attach", "--runtime-dir", runtime, "--ns", "clins", "--secret", "1")
    assert p.returncode == 0 and "(namespace " in p.stdout and "(namespace 0," not in p.stdout
