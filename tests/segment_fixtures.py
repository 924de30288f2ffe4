"""Fifo segments built in memory as VPP builds them, and the recorded snapshots of real VPP
memory: what the fifo, mq and session fixtures (`fifo_fixtures`, `mq_fixtures`, `fake_vpp`)
share.

- `make_segment` formats a buffer (an anonymous MAP_SHARED mmap, so a forked child shares it;
  or a bytearray) the way ``ssvm_server_init`` + ``fifo_segment_init`` leave a fresh memfd
  (`pyvcl.testing.vppshm.format_segment`).
- `load_snapshot` loads a snapshot of the shared data, `load_own_snapshot` one of the
  project's own fixtures, with `pyvcl.snapshot.Snapshot.load` (segments rebuilt sparsely;
  bytes that were not captured raise ``NotCapturedError``).
"""

from __future__ import annotations

import mmap
from typing import Any

from pyvcl.segment import Segment
from pyvcl.snapshot import Snapshot, find_snapshots
from pyvcl.testing.vppshm import format_segment

from .shared_data import OWN, SHARED, shared_path


def make_segment(
    size: int = 4 << 20,
    *,
    n_slices: int = 1,
    n_mqs: int = 0,
    pct_first_alloc: int = 0,
    shared: bool = True,
    name: str = "test-seg",
) -> Segment:
    """A fresh fifo segment of ``size`` bytes (the whole ssvm mapping)."""
    buf: Any = mmap.mmap(-1, size) if shared else bytearray(size)
    format_segment(buf, n_slices=n_slices, n_mqs=n_mqs, pct_first_alloc=pct_first_alloc)
    return Segment(buf, name=name)


# -- snapshots of real VPP memory ------------------------------------------------------------
SNAPSHOTS = "vpp-v26.06", "snapshots"
"""Where the snapshots lie in the shared data."""


def snapshot_names() -> list[str]:
    """Names of the shared data's snapshots (none if it is absent)."""
    return [p.name for p in find_snapshots(SHARED.joinpath(*SNAPSHOTS))]


def own_snapshot_names() -> list[str]:
    """Names of the project's own snapshots (tests/fixtures), in every clone."""
    names = [p.name for p in find_snapshots(OWN.joinpath(*SNAPSHOTS))]
    assert names, "tests/fixtures holds no snapshot: re-record with tools/record_fixtures.py"
    return names


def load_snapshot(name: str) -> Snapshot:
    """Snapshot ``name`` of the shared data (the test is skipped when it is absent)."""
    return Snapshot.load(shared_path(*SNAPSHOTS, f"{name}.json"))


def load_own_snapshot(name: str) -> Snapshot:
    """Snapshot ``name`` of the project's own fixtures."""
    return Snapshot.load(OWN.joinpath(*SNAPSHOTS, f"{name}.json"))
