"""The soak tool (pyvcl.testing.soak) on a few cycles: each phase passes its own checks on a
real VPP, so the documented long run (docs/robustness.md) keeps working.  Cut-through only:
through VPP's TCP stack each connect/close half waits out TIME_WAIT (about 10 s)."""

from __future__ import annotations

from typing import Any

from pyvcl.testing import soak
from pyvcl.testing.hoststack import topology


def test_soak_phases_pass_on_a_few_cycles(vpp: Any) -> None:
    topo = topology(vpp, "ct")
    soak.connect_close(topo, 5, 33050, rss_slack=4.0)  # first use imports and maps things
    records = [
        soak.connect_close(topo, 40, 33000, rss_slack=4.0),
        soak.attach_detach(topo, 10, rss_slack=4.0),
        soak.bytes_through(topo, 1 / 64, 33001),
    ]
    for rec in records:
        assert rec.ok, (rec.phase, rec.problems)
    assert records[2].extra["bytes"] == 1 << 24
