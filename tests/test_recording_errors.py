"""Malformed recordings: the real traces and snapshots, mutated field by field (keys deleted,
types changed, huge and negative numbers, truncated hex, a cut .bin).  The loaders raise
`RecordingError` and nothing else, and ``pyvcl decode`` (its main, in-process) prints one line
``pyvcl decode: FILE: what is wrong`` and exits 1 -- never a traceback.  The recordings are
the project's own (tests/fixtures: the app-socket frames of a `pyvcl nc` trace, a snapshot of
a listening pyvcl server) and, when ../shared is present, its C VCL recordings too."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvcl import snapshot as snapshot_module
from pyvcl.api.trace import load_trace
from pyvcl.cli import main
from pyvcl.errors import RecordingError
from pyvcl.snapshot import describe_snapshot, pack_blob, read_blob, snapshot_files

from .shared_data import has_shared, own_path, shared_path

DELETE = object()
TRUNCATE = object()  # a string cut to an odd length (hex: no longer whole bytes)
SHORTEN = object()  # a string cut to half, whole bytes (hex: a frame too short)
# What each value is replaced with: every JSON type, and numbers no field can hold.
BAD_VALUES: list[Any] = [DELETE, None, "x", {}, True, 1.5, -1, 2**64]
HEX_MUTATIONS: list[Any] = [TRUNCATE, SHORTEN, "zz" * 209]

# ../shared's: 4 events: ATTACH, ATTACH_REPLY with 3 fds and 4 mmaps, 2 SEND_FDS.
SHARED_TRACE = "vpp-v26.06", "traces", "sapi-client.json"
# Ours: the app-socket frames of a live trace (ATTACH, ATTACH_REPLY with 3 fds, SEND_FDS).
OWN_TRACE = "vpp-v26.06", "traces", "ct-nc-client.jsonl"
# The smallest: 2 segments, 4 regions (ours: 2 segment headers, then VPP's mq and the app's).
SNAPSHOTS = {"own": "ct-pyvcl-server-listening", "shared": "attach-ldp-idle"}


def _sources(shared: tuple[str, ...]) -> list[str]:
    return ["own", "shared"] if has_shared(*shared) else ["own"]


def _paths(doc: Any, keep: Any) -> Iterator[tuple[Any, ...]]:
    """Every path into ``doc`` (of lists, the first 3 elements) that ``keep`` accepts."""

    def walk(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if keep(path):
            yield path
        if isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, (*path, k))
        elif isinstance(value, list):
            for k, v in enumerate(value[:3]):
                yield from walk(v, (*path, k))

    yield from walk(doc, ())


def _mutated(doc: Any, path: tuple[Any, ...], how: Any) -> Any:
    new = copy.deepcopy(doc)
    if not path:
        return None if how is DELETE else how
    parent = new
    for k in path[:-1]:
        parent = parent[k]
    old = parent[path[-1]]
    if how is DELETE:
        del parent[path[-1]]
    elif how is TRUNCATE:
        parent[path[-1]] = old[: len(old) - 1 - len(old) % 2]
    elif how is SHORTEN:
        parent[path[-1]] = old[: len(old) // 4 * 2]
    else:
        parent[path[-1]] = how
    return new


def _name(how: Any) -> str:
    special = {id(DELETE): "deleted", id(TRUNCATE): "odd hex", id(SHORTEN): "short hex"}
    return special.get(id(how)) or repr(how)[:20]


def _path_params(doc: Any, keep: Any) -> list[Any]:
    return [pytest.param(p, id="/".join(map(str, p)) or "document") for p in _paths(doc, keep)]


def _mutations(path: tuple[Any, ...]) -> list[Any]:
    return BAD_VALUES + (HEX_MUTATIONS if path[-1:] == ("hex",) else [])


def _decode_prints_one_line(
    path: Path, capsys: pytest.CaptureFixture[str], names: Path | None = None
) -> str | None:
    """Run ``pyvcl decode`` in-process: None if it decoded, else its one error line, which
    names the file (``names``, by default ``path``) -- never a traceback or an exception."""
    code = main(["decode", str(path)])
    out, err = capsys.readouterr()
    if code == 0:
        assert out and not err
        return None
    assert code == 1 and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyvcl decode: {names or path}: "), err
    return lines[0]


# -- traces ------------------------------------------------------------------------------------
def _trace(source: str) -> dict[str, Any]:
    """A trace document (format of ../shared's traces, which `load_trace` reads): ours is the
    ``sapi`` records of a live trace, as ``events``."""
    if source == "shared":
        doc: dict[str, Any] = json.loads(shared_path(*SHARED_TRACE).read_text())
        return doc
    records = [json.loads(line) for line in own_path(*OWN_TRACE).read_text().splitlines()[1:]]
    keep = ("dir", "len", "hex", "fds")
    return {"events": [{k: r[k] for k in keep} for r in records if r["kind"] == "sapi"][:3]}


def _trace_paths() -> list[Any]:
    params = []
    for source in _sources(SHARED_TRACE):
        # Events 0-2 (ATTACH, ATTACH_REPLY with fds (and mmaps), SEND_FDS), the first fd and
        # mmap of each.
        for p in _path_params(_trace(source), lambda path: not set(path[2:]) & {1, 2}):
            params.append(pytest.param(source, p.values[0], id=f"{source}-{p.id}"))
    return params


@pytest.mark.parametrize(("source", "path"), _trace_paths())
def test_mutated_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, path: Any
) -> None:
    doc, file = _trace(source), tmp_path / "trace.json"
    for how in _mutations(path):
        file.write_text(json.dumps(_mutated(doc, path, how)))
        try:
            load_trace(file)
            loaded = True
        except RecordingError as e:
            assert e.path == file and str(e).startswith(f"{file}: "), _name(how)
            loaded = False
        assert (_decode_prints_one_line(file, capsys) is None) == loaded, _name(how)


# -- snapshots ---------------------------------------------------------------------------------
# The fields the loader reads (mqs, fifos and notes are the capture tool's own decode: unused).
_SNAPSHOT_KEYS = {"format", "name", "note", "vpp_version", "arch", "process", "segments", "regions"}
_MQ_REGION = 2  # regions[2] is an mq, with a role; regions[0] a segment header


def _snapshot_file(source: str, suffix: str) -> Path:
    parts = "vpp-v26.06", "snapshots", SNAPSHOTS[source] + suffix
    return shared_path(*parts) if source == "shared" else own_path(*parts)


def _snapshot_doc(source: str) -> dict[str, Any]:
    """The snapshot's JSON without its unused parts."""
    doc = json.loads(_snapshot_file(source, ".json").read_text())
    # As in the other snapshots, where the capture tool learned the handle.
    doc["segments"][0]["segment_handles"] = {"0x200000000": "inferred"}
    return {k: v for k, v in doc.items() if k in _SNAPSHOT_KEYS}


def _snapshot(directory: Path, source: str = "own") -> dict[str, Any]:
    """`_snapshot_doc`, with the .bin (unpacked if stored as .bin.gz) in ``directory`` as
    ``snap.bin``."""
    (directory / "snap.bin").write_bytes(
        read_blob(snapshot_files(_snapshot_file(source, ".json"))[1])
    )
    return _snapshot_doc(source)


# What the loader reads of a segment entry and of a region entry (their other keys are the
# capture tool's notes: mutating them changes nothing).
_SEGMENT_KEYS = {"index", "map_length", "map_file_offset", "memfd_name", "kind", "segment_handles"}
_REGION_KEYS = {"id", "what", "segment", "seg_offset", "fsh_offset", "length", "bin_offset"}


def _keep_snapshot_path(path: tuple[Any, ...]) -> bool:
    """The document, its keys, segment 0 with its keys (and ssvm_size), region 0 (a segment
    header) with its keys."""
    if len(path) <= 1 or path in (("segments", 0), ("regions", 0)):
        return True
    if path[1] != 0:
        return False
    if path[0] == "segments":
        return path[2:] in ((k,) for k in _SEGMENT_KEYS) or path[2:] == ("ssvm", "ssvm_size")
    return path[0] == "regions" and path[2:] in ((k,) for k in _REGION_KEYS)


def _snapshot_paths() -> list[Any]:
    params = []
    for source in _sources(("vpp-v26.06", "snapshots", SNAPSHOTS["shared"] + ".json")):
        doc = _snapshot_doc(source)
        assert doc["regions"][_MQ_REGION]["role"], "regions[2] must be an mq"
        for p in _path_params(doc, _keep_snapshot_path):
            params.append(pytest.param(source, p.values[0], id=f"{source}-{p.id}"))
        role = ("regions", _MQ_REGION, "role")
        params.append(pytest.param(source, role, id=f"{source}-regions/mq/role"))
    return params


@pytest.mark.parametrize(("source", "path"), _snapshot_paths())
def test_mutated_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, path: Any
) -> None:
    doc, file = _snapshot(tmp_path, source), tmp_path / "snap.json"
    for how in _mutations(path):
        file.write_text(json.dumps(_mutated(doc, path, how)))
        _check_snapshot(file, capsys, _name(how))


def _check_snapshot(file: Path, capsys: pytest.CaptureFixture[str], what: str = "") -> None:
    try:
        describe_snapshot(file)
        loaded = True
    except RecordingError as e:
        assert e.path == file and str(e).startswith(f"{file}: "), what
        loaded = False
    assert (_decode_prints_one_line(file, capsys) is None) == loaded, what


@pytest.mark.parametrize("cut", [0, 100, 30000])
def test_snapshot_with_a_cut_bin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cut: int
) -> None:
    file = tmp_path / "snap.json"
    file.write_text(json.dumps(_snapshot(tmp_path)))
    blob = (tmp_path / "snap.bin").read_bytes()
    (tmp_path / "snap.bin").write_bytes(blob[:cut])
    with pytest.raises(RecordingError, match=r"region \d+ .* lies outside the \d+-byte .bin file"):
        describe_snapshot(file)
    assert _decode_prints_one_line(file, capsys)


def test_snapshot_with_a_zeroed_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes that cannot be a segment (no fifo segment header): the snapshot is invalid."""
    file = tmp_path / "snap.json"
    file.write_text(json.dumps(_snapshot(tmp_path)))
    blob = bytearray((tmp_path / "snap.bin").read_bytes())
    blob[:4096] = bytes(4096)
    (tmp_path / "snap.bin").write_bytes(bytes(blob))
    with pytest.raises(RecordingError, match=r"segment 0: .* has no fifo segment header"):
        describe_snapshot(file)
    line = _decode_prints_one_line(file, capsys)
    assert line and _decode_prints_one_line(file.with_suffix(".bin"), capsys, file) == line


def _packed(directory: Path) -> tuple[Path, bytes]:
    """The own snapshot as ``snap.json`` + ``snap.bin.gz`` in ``directory``; the packed bytes."""
    file = directory / "snap.json"
    file.write_text(json.dumps(_snapshot(directory)))
    packed = pack_blob((directory / "snap.bin").read_bytes())
    (directory / "snap.bin").unlink()
    (directory / "snap.bin.gz").write_bytes(packed)
    return file, packed


def test_snapshot_packed_or_not_decodes_alike(tmp_path: Path) -> None:
    file = tmp_path / "snap.json"
    file.write_text(json.dumps(_snapshot(tmp_path)))
    plain = describe_snapshot(file)
    _packed(tmp_path)
    assert snapshot_files(file)[1].name == "snap.bin.gz"
    assert describe_snapshot(file) == plain
    assert describe_snapshot(tmp_path / "snap.bin.gz") == plain


@pytest.mark.parametrize("damage", ["cut", "flipped", "not-gzip", "empty"])
def test_snapshot_with_a_damaged_bin_gz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    file, packed = _packed(tmp_path)
    broken = {
        "cut": packed[: len(packed) // 2],
        "flipped": packed[:20] + bytes(b ^ 0xFF for b in packed[20:40]) + packed[40:],
        "not-gzip": b"plain bytes, not gzip",
        "empty": b"",
    }[damage]
    (tmp_path / "snap.bin.gz").write_bytes(broken)
    with pytest.raises(RecordingError, match=r"snap\.bin\.gz: .*gzip") as caught:
        describe_snapshot(file)
    assert caught.value.path == tmp_path / "snap.bin.gz"
    assert _decode_prints_one_line(file, capsys, tmp_path / "snap.bin.gz")


def test_snapshot_bin_gz_that_unpacks_too_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file that would unpack to more than a snapshot can hold (a bomb) is refused
    before it is all unpacked."""
    file, _ = _packed(tmp_path)
    monkeypatch.setattr(snapshot_module, "MAX_PACKED_BLOB", 1 << 16)
    (tmp_path / "snap.bin.gz").write_bytes(pack_blob(bytes(1 << 20)))
    with pytest.raises(RecordingError, match=r"unpacks to more than 65536 bytes"):
        describe_snapshot(file)


@pytest.mark.parametrize(
    "text",
    ["", "{", "[1, 2]", '{"events": 5}', "\xff", "[" * 100000, '{"regions": []}'],
    ids=["empty", "cut", "list", "events-int", "not-utf8", "deep", "snapshot-without-format"],
)
def test_not_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    file = tmp_path / "x.json"
    file.write_bytes(text.encode("latin-1"))
    file.with_suffix(".bin").write_bytes(b"")  # a snapshot needs one
    assert _decode_prints_one_line(file, capsys)
