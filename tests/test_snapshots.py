"""pyvcl's decoders against shared-memory snapshots of real VCL apps (VPP v26.06).

The project's own snapshots (tests/fixtures/vpp-v26.06/snapshots, recorded by
`pyvcl.snapshot_record` from live pyvcl and C VCL servers: tools/record_fixtures.py) are in
every clone: decoded, each shows what the live process showed when it was recorded (queue
depths, pending events, each fifo's head, tail and unread bytes), and nothing in it is
inconsistent.  The robustness tests corrupt copies of them.

When ../shared is present, its snapshots of C VCL's test apps are an independent cross-check:
each (``../shared/vpp-v26.06/snapshots/NAME.bin`` + ``NAME.json``) is rebuilt with
`pyvcl.snapshot` and decoded with `pyvcl.shmview`; the result is compared with the JSON's
independent decode, walking the JSON so every field it gives is checked.  Naming differences
are mapped here: event type names (JSON ``IO_EVT_RX`` = C enumerator minus ``SESSION_``, pyvcl
``IO_RX``), ``payload_record`` -> ``payload_type``, hex ip46 fields (JSON ``ip`` + ``ip_str``,
pyvcl ``ip_raw`` + ``ip``), ``rpc_fp``/``rpc_arg`` -> ``rpc_args.fp``/``.arg``.

The snapshots hold only some regions of each segment: list walks that leave them stop with
``NotCapturedError``; there the test checks the prefix that was walked and that the next
element the JSON names really lies outside the captured bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pyvcl import shmview as ins
from pyvcl.errors import SharedMemoryError
from pyvcl.shmview import chunk_size
from pyvcl.snapshot import (
    REGION_FIFO_DATA,
    ROLE_APP_MQ,
    NotCapturedError,
    Snapshot,
    SnapshotSegment,
    describe_snapshot,
    read_blob,
)
from pyvcl.snapshot_record import live_summary
from pyvcl.wire.enums import C_ENUMS, SessionEvent
from pyvcl.wire.fifo import CHUNK_DATA_OFFSET, SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from pyvcl.wire.mq import SVM_MSG_Q_SHARED_QUEUE
from pyvcl.wire.segment import FIFO_SEGMENT_SLICE, FREE_LIST_OFFSET_BITS, FS_CHUNK_VEC_LEN

from .segment_fixtures import SNAPSHOTS, own_snapshot_names, snapshot_names
from .shared_data import OWN, cross_check, has_shared, shared_path

NAMES = snapshot_names()  # ../shared's, when present
OWN_NAMES = own_snapshot_names()

_EVENT_C_NAME = C_ENUMS["session_evt_type_t"][1]
MISSING = object()
# Keys of a JSON fifo that describe how the capture tool found it, not the fifo.
FIFO_META = {
    "index",
    "segment",
    "region",
    "found_via",
    "head_window_region",
    "chunks",
    "chain_checks",
}


class Checker:
    """Collects every comparison; a test fails once, listing all mismatches."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.mismatches: list[str] = []

    def eq(self, path: str, ours: Any, theirs: Any) -> None:
        self.count += 1
        if ours is MISSING or ours != theirs:
            shown = "<missing>" if ours is MISSING else repr(ours)
            self.mismatches.append(f"{path}: pyvcl {shown} != json {theirs!r}")

    def true(self, path: str, cond: bool, what: str = "") -> None:
        self.count += 1
        if not cond:
            self.mismatches.append(f"{path}: {what or 'check failed'}")

    def done(self, expect_any: bool = True) -> None:
        print(f"{self.name}: {self.count} comparisons")
        assert self.count > 0 or not expect_any
        assert not self.mismatches, f"{self.name}:\n" + "\n".join(self.mismatches[:60])


@contextmanager
def loaded(
    name: str, area: str = "", *, own: bool = False
) -> Iterator[tuple[Snapshot, dict[str, Any], Checker]]:
    path = (
        OWN.joinpath(*SNAPSHOTS, f"{name}.json") if own else shared_path(*SNAPSHOTS, f"{name}.json")
    )
    meta = json.loads(path.read_text())
    with Snapshot.load(path) as snap:
        yield snap, meta, Checker(f"{area}[{name}]")


def get(d: dict[str, Any], key: str) -> Any:
    return d.get(key, MISSING)


def type_name_eq(chk: Checker, path: str, ours: Any, theirs: str) -> None:
    """JSON names events by C enumerator minus ``SESSION_``; pyvcl by its enum member."""
    chk.eq(path, _EVENT_C_NAME(ours) if isinstance(ours, str) else ours, "SESSION_" + theirs)


# -- segments ---------------------------------------------------------------------------------
def check_walk(
    chk: Checker,
    path: str,
    seg: SnapshotSegment,
    ours: dict[str, Any],
    count: int,
    offsets: list[int],
    element_size: int,
) -> None:
    """A list walk against the JSON's full walk (``count``, first ``offsets``)."""
    walked = ours["first_offsets"]
    n = min(len(walked), len(offsets))
    chk.eq(f"{path}.offsets", walked[:n], offsets[:n])
    if ours["complete"]:
        chk.eq(f"{path}.count", ours["count"], count)
        return
    # Incomplete only because the snapshot lacks the next element.
    chk.eq(f"{path}.error_kind", ours.get("error_kind"), NotCapturedError.__name__)
    chk.true(f"{path}.walked", ours["walked"] < count, "walk stopped after the list's end")
    if ours["walked"] < len(offsets):
        missing = offsets[ours["walked"]]
        chk.true(f"{path}.uncaptured", not seg.captured(missing, element_size), "element captured")


@cross_check(*SNAPSHOTS)
@pytest.mark.parametrize("name", NAMES)
def test_segments(name: str) -> None:
    with loaded(name, "segments") as (snap, meta, chk):
        chk.eq("n_segments", len(snap.segments), len(meta["segments"]))
        mq_offsets = {
            (m["segment"], m["role"]): m["fsh_offset"] for m in meta["mqs"] if "role" in m
        }
        for js in meta["segments"]:
            seg = snap.segment(js["index"])
            p = f"seg{js['index']}"
            ours = ins.describe_segment(seg)
            json.dumps(ours)
            chk.eq(f"{p}.name", ours["name"], js["memfd_name"])
            chk.eq(f"{p}.size", ours["size"], js["map_length"])
            chk.eq(f"{p}.fsh_offset", ours["fsh_offset"], js["fsh_offset"])
            handles = [int(h, 16) for h in js.get("segment_handles", {})]
            chk.eq(f"{p}.handle", ours["handle"], handles[0] if handles else None)
            for part in ("ssvm", "fsh"):
                for k, v in js[part].items():
                    chk.eq(f"{p}.{part}.{k}", get(ours[part], k), v)
            chk.eq(f"{p}.problems", ours["problems"], [])
            chk.eq(f"{p}.n_slices", len(ours["slices"]), len(js["slices"]))
            for jsl, osl in zip(js["slices"], ours["slices"], strict=False):
                check_slice(chk, f"{p}.slice{jsl['index']}", seg, jsl, osl)
            vpp_mqs = [
                off
                for (s, role), off in sorted(mq_offsets.items())
                if s == js["index"] and role.startswith("vpp worker mq")
            ]
            chk.eq(f"{p}.vpp_mqs", ours["vpp_mqs"], vpp_mqs)
        chk.done()


def check_slice(
    chk: Checker, p: str, seg: SnapshotSegment, js: dict[str, Any], ours: dict[str, Any]
) -> None:
    for k, v in js.items():
        if k not in ("free_chunk_lists", "free_fifo_list"):
            chk.eq(f"{p}.{k}", get(ours, k), v)
    chk.eq(f"{p}.n_lists", len(ours["free_chunk_lists"]), len(js["free_chunk_lists"]))
    for jl, ol in zip(js["free_chunk_lists"], ours["free_chunk_lists"], strict=False):
        lp = f"{p}.fl{jl['fl_index']}"
        for k in ("fl_index", "chunk_size", "head_word", "head_offset", "tag"):
            chk.eq(f"{lp}.{k}", ol[k], jl[k])
        chk.eq(
            f"{lp}.tagged",
            (ol["tag"] << FREE_LIST_OFFSET_BITS) | ol["head_offset"],
            jl["head_word"],
        )
        check_walk(chk, lp, seg, ol, jl["count"], jl["first_offsets"], SVM_FIFO_CHUNK.size)
        if ol["complete"]:
            chk.eq(f"{lp}.bytes", ol["bytes"], jl["bytes"])
    # The capture tool walked every list: its totals must match the slice counter, which is
    # what describe_slice checks when it can walk them itself.
    listed = sum(jl["count"] * jl["chunk_size"] for jl in js["free_chunk_lists"])
    chk.eq(f"{p}.json_list_bytes", listed, ours["n_fl_chunk_bytes"])
    chk.eq(f"{p}.problems", ours["problems"], [])
    jf, of = js["free_fifo_list"], ours["free_fifo_list"]
    chk.eq(f"{p}.free_fifo_list.head", of["head"], js["free_fifos"])
    check_walk(
        chk, f"{p}.free_fifo_list", seg, of, jf["count"], jf["offsets"], SVM_FIFO_SHARED.size
    )


# -- message queues ---------------------------------------------------------------------------
def compare_payload(chk: Checker, p: str, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    for k, v in theirs.items():
        if isinstance(v, dict):  # a nested transport_endpoint_t
            compare_payload(chk, f"{p}.{k}", v, ours.get(k, {}))
        elif k.endswith("_str"):  # JSON's formatted address = pyvcl's field
            chk.eq(f"{p}.{k}", get(ours, k[:-4]), v)
        elif isinstance(v, str) and k + "_str" in theirs:  # JSON's hex bytes = pyvcl's _raw
            chk.eq(f"{p}.{k}", get(ours, k + "_raw"), v)
        else:  # ints, host-order ports (+ *_raw), formatted endpoint ips, names
            chk.eq(f"{p}.{k}", get(ours, k), v)


def compare_slot(chk: Checker, p: str, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    for k, v in theirs.items():
        if k == "type_name":
            type_name_eq(chk, f"{p}.type_name", get(ours, "type_name"), v)
        elif k == "payload_record":
            chk.eq(f"{p}.payload_record", get(ours, "payload_type"), v)
        elif k == "payload":
            compare_payload(chk, f"{p}.payload", v, ours.get("payload", {}))
        elif k.startswith("rpc_"):
            chk.eq(f"{p}.{k}", ours.get("rpc_args", {}).get(k[4:], MISSING), v)
        else:
            chk.eq(f"{p}.{k}", get(ours, k), v)


@cross_check(*SNAPSHOTS)
@pytest.mark.parametrize("name", NAMES)
def test_mqs(name: str) -> None:
    with loaded(name, "mqs") as (snap, meta, chk):
        described = {}
        for m in meta["mqs"]:
            p = f"mq{m['index']}({m['role']})"
            ours = ins.describe_mq(snap.segment(m["segment"]), m["fsh_offset"])
            json.dumps(ours)
            described[m["index"]] = ours
            for k in (
                "fsh_offset",
                "length",
                "n_rings",
                "queue_fsh_offset",
                "queue_data_fsh_offset",
            ):
                chk.eq(f"{p}.{k}", ours[k], m[k])
            chk.eq(f"{p}.problems", ours["problems"], [])
            for k, v in m["queue"].items():
                if isinstance(v, dict):  # mutex / condvar words
                    for word, value in v.items():
                        chk.eq(f"{p}.queue.{k}.{word}", get(ours["queue"][k], word), value)
                else:
                    chk.eq(f"{p}.queue.{k}", get(ours["queue"], k), v)
            chk.eq(f"{p}.rings", len(ours["rings"]), len(m["rings"]))
            for jr, orr in zip(m["rings"], ours["rings"], strict=False):
                rp = f"{p}.ring{jr['index']}"
                for k, v in jr.items():
                    if k == "slots":
                        continue
                    if k == "used_slots":
                        chk.eq(f"{rp}.used_slots", len(orr["slots"]), v)
                    elif k == "event_counts":
                        ours_counts = {_EVENT_C_NAME(t): n for t, n in orr[k].items()}
                        chk.eq(
                            rp + ".event_counts",
                            ours_counts,
                            {"SESSION_" + t: n for t, n in v.items()},
                        )
                    else:
                        chk.eq(f"{rp}.{k}", get(orr, k), v)
                chk.eq(f"{rp}.problems", orr["problems"], [])
                by_elt = {s["elt"]: s for s in orr["slots"]}
                chk.eq(f"{rp}.elts", sorted(by_elt), [s["elt"] for s in jr["slots"]])
                for js in jr["slots"]:
                    compare_slot(chk, f"{rp}.elt{js['elt']}", js, by_elt.get(js["elt"], {}))
        # Every fifo the JSON found through an mq event is among pyvcl's fifo_refs.
        for f in meta["fifos"]:
            for via in f["found_via"]:
                refs = ins.fifo_refs(described[via["mq"]])
                match = [
                    r
                    for r in refs
                    if (r["ring"], r["elt"], r["field"]) == (via["ring"], via["elt"], via["field"])
                ]
                vp = f"fifo{f['index']}.found_via({via['field']}@{via['elt']})"
                chk.eq(vp + ".matches", len(match), 1)
                for r in match:
                    chk.eq(vp + ".fifo", r["fifo"], f["fsh_offset"])
                    for k in ("live", "session_handle", "segment_handle"):
                        chk.eq(f"{vp}.{k}", r[k], via[k])
                    type_name_eq(chk, vp + ".event", r["event"], via["event"])
        chk.done()


# -- fifos ------------------------------------------------------------------------------------
@cross_check(*SNAPSHOTS)
@pytest.mark.parametrize("name", NAMES)
def test_fifos(name: str) -> None:
    with loaded(name, "fifos") as (snap, meta, chk):
        blob = read_blob(snap.bin_path)
        regions = {r.id: r for r in snap.regions}
        for f in meta["fifos"]:
            p = f"fifo{f['index']}@seg{f['segment']}+{f['fsh_offset']:#x}"
            seg = snap.segment(f["segment"])
            ours = ins.describe_fifo(seg, f["fsh_offset"], peek=256)
            json.dumps(ours)
            for k, v in f.items():
                if k in FIFO_META:
                    continue
                if k == "on_free_fifo_list" and ours[k] is None:
                    # The free list left the captured bytes before reaching this fifo: a
                    # freed header is the one without chunks.
                    chk.eq(
                        f"{p}.free_list_error",
                        ours["free_fifo_list_error"]["error_kind"],
                        "NotCapturedError",
                    )
                    chk.eq(f"{p}.{k}(chunkless)", ours["start_chunk"] == 0, v)
                    continue
                chk.eq(f"{p}.{k}", get(ours, k), v)
            chk.eq(f"{p}.n_chunks", len(ours["chunks"]), len(f["chunks"]))
            for i, (jc, oc) in enumerate(zip(f["chunks"], ours["chunks"], strict=False)):
                for k, v in jc.items():
                    if k != "region":
                        chk.eq(f"{p}.chunk{i}.{k}", get(oc, k), v)
            chk.eq(f"{p}.ok", ours["ok"], f["chain_checks"] == ["ok"])
            chk.eq(f"{p}.problems", ours["problems"], [])
            chk.true(f"{p}.chain_complete", ours["chain_complete"], "chain walk incomplete")
            if "head_window_region" in f:
                r = regions[f["head_window_region"]]
                chk.eq(f"{p}.window.what", r.what, REGION_FIFO_DATA)
                window = blob[r.bin_offset : r.bin_offset + min(r.length, ours["bytes_present"])]
                chk.eq(f"{p}.head_data", ours.get("head_data"), window.hex())
        chk.done(expect_any=bool(meta["fifos"]))


# -- the project's own snapshots ----------------------------------------------------------------
UNREAD = 123_457  # tools/record_fixtures.py: what the pusher sends the holder
# What each state shows (tools/record_fixtures.py): the app mq's pending events, and the
# unread bytes of the fifos the state is about (by role).
STATES: dict[str, tuple[list[str], dict[str, int]]] = {
    "server-listening": ([], {}),
    "server-unread": (["IO_RX"], {"server_rx_fifo": UNREAD, "server_tx_fifo": 0}),
    "server-full": (["IO_RX"], {"server_rx_fifo": 4_000_000, "server_tx_fifo": 0}),
    "client-blocked": ([], {"ct_tx_fifo": 4_000_000, "ct_rx_fifo": 0}),
    "server-closing": (["IO_RX", "CTRL_DISCONNECTED"], {"server_rx_fifo": 1000}),
}


def _state(name: str) -> str:
    """``ct-pyvcl-server-full`` -> ``server-full``."""
    return name.split("-", 2)[2]


def test_own_snapshots_cover_the_states() -> None:
    assert {_state(n) for n in OWN_NAMES} == set(STATES), OWN_NAMES
    assert {n.split("-")[0] for n in OWN_NAMES} == {"ct", "tcp"}
    assert any("-ldp-" in n for n in OWN_NAMES) and any("-pyvcl-" in n for n in OWN_NAMES)


@pytest.mark.parametrize("name", OWN_NAMES)
def test_own_snapshot_shows_what_the_live_process_showed(name: str) -> None:
    """Decoded from the few KB the recorder kept, the snapshot shows the queue depths, pending
    events and fifo positions that `pyvcl.procview` read from the live process."""
    with loaded(name, own=True) as (snap, meta, _):
        assert live_summary(describe_snapshot(snap)) == meta["live"]
        pending, unread = STATES[_state(name)]
        (app,) = [m for m in meta["live"]["mqs"] if m["role"] == ROLE_APP_MQ]
        vpp = [m for m in meta["live"]["mqs"] if m["role"].startswith("vpp worker mq")]
        assert vpp and all(m["queued"] == 0 for m in vpp)
        got = app["pending"]
        if name.startswith("tcp-") and "CTRL_DISCONNECTED" in pending and len(got) > len(pending):
            # VPP's TCP stack may have sent the session's CLEANUP too by the time it was
            # recorded (tools/record_fixtures.py waits 0.5 s after the peer's close).
            assert got[len(pending) :] == ["CTRL_CLEANUP"]
            got = got[: len(pending)]
        assert got == pending and app["queued"] == len(app["pending"])
        fifos = {f["role"]: f for f in meta["live"]["fifos"]}
        for role, n in unread.items():
            assert fifos[role]["unread"] == n == fifos[role]["tail"] - fifos[role]["head"]
        assert bool(fifos) == bool(unread)


@pytest.mark.parametrize("name", OWN_NAMES)
def test_own_snapshot_decodes_cleanly(name: str) -> None:
    """Every segment, queue and fifo decodes with no problem; every fifo is found through the
    events that name it (in the segment whose handle the recorder learned from them); the
    bytes at each fifo's head are those of its ``fifo-data-at-head`` region."""
    with loaded(name, own=True) as (snap, _, _):
        out = describe_snapshot(snap, peek=256)
        json.dumps(out)
        assert [s.get("problems") for s in out["segments"]] == [[]] * len(snap.segments)
        assert [s["kind"] for s in out["segments"]].count("vpp-mqs") == 1
        assert sorted(m["role"] for m in out["mqs"]) == [ROLE_APP_MQ, "vpp worker mq 0"]
        for mq in out["mqs"]:
            assert mq["problems"] == [] and "error" not in mq
            for ring in mq["rings"]:
                assert all("error" not in slot for slot in ring["slots"]), ring["slots"]
        assert out["unresolved_fifo_refs"] == []
        captured = sorted((r.segment, r.fsh_offset) for r in snap.fifo_regions())
        assert sorted((f["segment"], f["fsh_offset"]) for f in out["fifos"]) == captured
        blob = read_blob(snap.bin_path)
        heads = snap.regions_of(REGION_FIFO_DATA)
        assert len(heads) == sum(1 for f in out["fifos"] if f["bytes_present"])
        for f in out["fifos"]:
            assert f["ok"] and f["chain_complete"] and f["found_via"], f
            if not f["bytes_present"]:
                continue
            (head,) = [
                r
                for r in heads
                if r.segment == f["segment"]
                and r.fsh_offset
                == f["head_covered_by"]
                + CHUNK_DATA_OFFSET
                + (f["head"] - f["chunks"][0]["start_byte"])
            ]
            window = blob[head.bin_offset : head.bin_offset + head.length]
            assert bytes.fromhex(f["head_data"]) == window[: len(f["head_data"]) // 2]
            # The pusher sends bytes(range(256)) over and over, from stream position 0.
            assert window[:4] == bytes((f["head"] + k) % 256 for k in range(4))


# -- robustness: corrupted copies of a real snapshot ---------------------------------------------
def real(own: str, shared: str) -> list[Any]:
    """A snapshot of the project's fixtures, and of ../shared's when present: (name, own)."""
    params = [pytest.param(own, True, id=own)]
    if has_shared(*SNAPSHOTS, f"{shared}.json"):
        params.append(pytest.param(shared, False, id=f"shared-{shared}"))
    return params


def _full_fifo(snap: Snapshot) -> tuple[SnapshotSegment, dict[str, Any]]:
    """The fifo with the longest chunk chain (as `describe_snapshot` finds the fifos)."""
    f = max(describe_snapshot(snap)["fifos"], key=lambda f: len(f.get("chunks", [])))
    return snap.segment(f["segment"]), f


@pytest.mark.parametrize(("name", "own"), real("ct-pyvcl-client-blocked", "ct-full-client-blocked"))
def test_corrupt_chains_and_lists_end_in_errors(name: str, own: bool) -> None:
    with loaded(name, own=own) as (snap, _, _):
        seg, f = _full_fifo(snap)
        chunks = [c["fsh_offset"] for c in f["chunks"]]
        lengths = [c["length"] for c in f["chunks"]]
        assert len(chunks) > 2
        nxt = SVM_FIFO_CHUNK["next"]
        # A cycle: the last chunk links back to the second.
        nxt.put(seg.view, seg.at(chunks[-1], SVM_FIFO_CHUNK.size), chunks[1])
        d = ins.describe_fifo(seg, f["fsh_offset"])
        assert not d["chain_complete"] and not d["ok"]
        assert "loops back" in d["chain_error"]["error"]
        assert len(d["chunks"]) == len(chunks)
        # Out of bounds: a link past the end of the segment.
        nxt.put(seg.view, seg.at(chunks[-1], SVM_FIFO_CHUNK.size), seg.size * 2)
        d = ins.describe_fifo(seg, f["fsh_offset"])
        assert d["chain_error"]["error_kind"] == "SharedMemoryError"
        # A broken start_byte sequence is reported, not raised.
        nxt.put(seg.view, seg.at(chunks[-1], SVM_FIFO_CHUNK.size), 0)
        SVM_FIFO_CHUNK["start_byte"].put(seg.view, seg.at(chunks[3], SVM_FIFO_CHUNK.size), 1)
        d = ins.describe_fifo(seg, f["fsh_offset"])
        assert d["chain_complete"] and any("starts at 1" in m for m in d["problems"])
        # A free list whose captured head chunk points at itself.
        heads = FIFO_SEGMENT_SLICE["free_chunks"]
        words = list(heads.get(seg.view, seg.slice_at(0)))
        # The list of the chain's second chunk's size (a walk checks each chunk's length).
        fl = next(i for i in range(FS_CHUNK_VEC_LEN) if chunk_size(i) == lengths[1])
        words[fl] = (7 << FREE_LIST_OFFSET_BITS) | chunks[1]
        heads.put(seg.view, seg.slice_at(0), words)
        nxt.put(seg.view, seg.at(chunks[1], SVM_FIFO_CHUNK.size), chunks[1])
        entry = ins.describe_segment(seg)["slices"][0]["free_chunk_lists"][fl]
        assert entry["tag"] == 7 and entry["head_offset"] == chunks[1]
        assert not entry["complete"] and "loops back" in entry["error"]


@pytest.mark.parametrize(("name", "own"), real("ct-pyvcl-client-blocked", "ct-full-client-blocked"))
def test_bad_top_level_offsets_raise(name: str, own: bool) -> None:
    with loaded(name, own=own) as (snap, _, _):
        region = snap.mq_regions()[0]
        seg = snap.segment(region.segment)
        m = ins.describe_mq(seg, region.fsh_offset)
        with pytest.raises(SharedMemoryError):
            ins.describe_mq(seg, seg.size)
        with pytest.raises(NotCapturedError):
            ins.describe_fifo(seg, m["fsh_offset"] + m["length"] + 4096)
        # An absurd maxsize makes the handle array overrun the segment.
        q = seg.at(m["queue_fsh_offset"], SVM_MSG_Q_SHARED_QUEUE.size)
        SVM_MSG_Q_SHARED_QUEUE["maxsize"].put(seg.view, q, 0xFFFFFFF)
        with pytest.raises(SharedMemoryError):
            ins.describe_mq(seg, m["fsh_offset"])


@pytest.mark.parametrize(("name", "own"), real("ct-pyvcl-server-listening", "attach-ldp-idle"))
def test_snapshot_segments_are_sparse_and_checked(name: str, own: bool) -> None:
    with loaded(name, own=own) as (snap, meta, _):
        for seg, js in zip(snap.segments, meta["segments"], strict=True):
            assert seg.size == js["map_length"] and seg.fsh == js["fsh_offset"]
            assert seg.captured(-seg.fsh, seg.fsh)  # the header region
            assert not seg.captured(seg.size - seg.fsh - 1, 1)
            with pytest.raises(NotCapturedError):
                seg.at(seg.size - seg.fsh - 64, 8)
        assert Path(snap.path).name == meta["name"] == snap.name


@cross_check(*SNAPSHOTS)
@pytest.mark.parametrize("name", NAMES)
def test_describe_snapshot(name: str) -> None:
    """The all-in-one view `pyvcl decode` prints: serialisable, and it finds the JSON's fifos
    through the same events."""
    with loaded(name, "describe") as (snap, meta, chk):
        out = describe_snapshot(snap)
        json.dumps(out)
        chk.eq("segments", len(out["segments"]), len(meta["segments"]))
        chk.eq("mqs", [m["role"] for m in out["mqs"]], [m["role"] for m in meta["mqs"]])
        ours = {(f["segment"], f["fsh_offset"]): f for f in out["fifos"]}
        for f in meta["fifos"]:
            o = ours.get((f["segment"], f["fsh_offset"]), {})
            p = f"fifo{f['index']}"
            chk.eq(p + ".ok", o.get("ok"), True)
            vias = {(v["mq"], v["ring"], v["elt"], v["field"]) for v in o.get("found_via", [])}
            chk.eq(
                p + ".found_via",
                vias,
                {(v["mq"], v["ring"], v["elt"], v["field"]) for v in f["found_via"]},
            )
        # Refs into segments VPP announced and later deleted are the JSON's "no longer mapped".
        gone = [n for n in meta["notes"] if "no longer mapped" in n]
        chk.eq("unresolved_fifo_refs", len(out["unresolved_fifo_refs"]), len(gone))
        chk.done()


@pytest.mark.parametrize(("name", "own"), real("ct-pyvcl-server-unread", "ct-client-connected"))
@pytest.mark.parametrize("event_type", ["CTRL_APP_ADD_SEGMENT", "CTRL_APP_DEL_SEGMENT"])
def test_describe_snapshot_reports_a_control_event_in_an_io_slot(
    event_type: str, name: str, own: bool
) -> None:
    """A segment event type in an IO ring slot (no payload there) is a problem of that mq in
    the output, not a KeyError."""
    with loaded(name, own=own) as (snap, _, _):
        region = next(r for r in snap.mq_regions() if r.info.get("role") == ROLE_APP_MQ)
        seg = snap.segment(region.segment)
        ring = ins.describe_mq(seg, region.fsh_offset)["rings"][0]
        assert ring["slots"], "the app mq's IO ring must have held an event"
        elt = ring["slots"][0]["elt"]
        seg.view[seg.at(ring["data_fsh_offset"] + elt * ring["elsize"], 1)] = SessionEvent[
            event_type
        ]
        out = describe_snapshot(snap)
        (mq,) = [m for m in out["mqs"] if m["role"] == ROLE_APP_MQ]
        (slot,) = [s for s in mq["rings"][0]["slots"] if s["elt"] == elt]
        reported = [p for p in mq["problems"] if f"ring 0 slot {elt}:" in p]
        assert reported or "error" in slot, (mq["problems"], slot)
        if reported:
            assert "without its payload" in reported[0]
