"""VPP's per-app "mq congested" mark, read through the CLI: why an app's connects are refused
and its listeners drop every SYN although VPP and the app both look healthy.

VPP (v26.06 and v26.02, and master as of 2026-08) keeps, per app worker, a ``u8``
``mq_congested`` counter and a per-thread flag (``application.h``).  A VPP thread that cannot
take the app's mq lock within 100 tries, or finds a ring full, raises its flag and adds one
(``app_worker_set_mq_wrk_congested``); while the counter is non-zero, VPP refuses the app's
connects (``app_worker_connect_session``: ``SESSION_E_REFUSED``) and drops SYNs to its
listeners (``app_worker_init_accepted`` fails: ``tcp4-listen`` "Sessions couldn't be
allocated").  A flush that delivered all its events subtracts one when the counter was
non-zero *when the flush began* (``app_worker_flush_events_inline``), whether or not its own
thread had added one (``app_worker_unset_wrk_mq_congested`` does not look at the flag).  Two
threads flushing to the same app at once can therefore both subtract: the counter wraps to
255, and the app stays "congested" until some 255 further flushes bring it back to zero --
for an idle listener, never.

What marks an app in the first place: a control ring its app left full (no thread of it
consuming: `pyvcl.session.idle` exists for that), or a VPP thread that holds the app's mq
lock losing its CPU for the other's 100 ``usleep (1)`` tries.  A value above the number of
VPP threads can only be the wrap.  An app cannot clear it; a new attach gets a new app
worker, at zero.  docs/robustness.md (section 5, "An app VPP marks congested, for good")
tells the story with the measurements.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import VppError

if TYPE_CHECKING:
    from .vpp import VppInstance

__all__ = [
    "AppWorkerCongestion",
    "CounterWrappedWarning",
    "app_congestion",
    "congestion_report",
    "parse_app_workers",
]

# ``show app`` lists "Index  Name  Namespace" rows; ``show app <index>`` (format_application,
# verbose 1) names the app, then one line per worker (format_app_worker).
_APP_ROW = re.compile(r"^(\d+)\s+(\S+)", re.MULTILINE)
_APP_NAME = re.compile(r"^app-name (\S+) app-index (\d+)", re.MULTILINE)
_WORKER = re.compile(r"wrk-index (\d+) app-index (\d+) .*?mq-cong (\d+)")


class CounterWrappedWarning(UserWarning):
    """VPP's congestion counter for a test's app had wrapped, and the app was attached again."""


@dataclass(frozen=True)
class AppWorkerCongestion:
    """One app worker's ``mq_congested`` counter as VPP's CLI shows it."""

    app_index: int
    app_name: str
    wrk_index: int
    mq_congested: int

    def wrapped(self, n_threads: int) -> bool:
        """True when the counter is beyond what ``n_threads`` VPP threads can add (one each):
        only the unbalanced subtraction described in this module's notes gets it there."""
        return self.mq_congested > n_threads


def parse_app_workers(app_detail: str) -> list[AppWorkerCongestion]:
    """The workers listed in the output of ``show app <index>``."""
    name = _APP_NAME.search(app_detail)
    app_name = name.group(1) if name else "?"
    return [
        AppWorkerCongestion(int(m.group(2)), app_name, int(m.group(1)), int(m.group(3)))
        for m in _WORKER.finditer(app_detail)
    ]


def app_congestion(
    vpp: VppInstance, app_indices: Iterable[int] | None = None
) -> list[AppWorkerCongestion]:
    """The counters of the workers of the apps with these indices (default: every attached
    app), read now: one CLI call per app."""
    if app_indices is None:
        app_indices = [int(m.group(1)) for m in _APP_ROW.finditer(vpp.cli("show app"))]
    out: list[AppWorkerCongestion] = []
    for index in app_indices:
        out.extend(parse_app_workers(vpp.cli(f"show app {index}", check=False)))
    return out


def congestion_report(vpp: VppInstance) -> str | None:
    """For a failing test's report: the app workers VPP marks congested, saying which marks
    are the wrapped counter; None when none is marked (or the CLI cannot tell)."""
    try:
        workers = app_congestion(vpp)
    except (VppError, OSError):
        return None
    marked = [w for w in workers if w.mq_congested]
    if not marked:
        return None
    n_threads = vpp.workers + 1
    lines = []
    for w in marked:
        why = (
            "the counter wrapped (VPP bug, pyvcl.testing.congestion): VPP refuses this app's "
            "connects and drops SYNs to its listeners until ~that many more event flushes"
            if w.wrapped(n_threads)
            else "congested now: VPP refuses its connects and drops SYNs to its listeners"
        )
        lines.append(
            f"app {w.app_index} {w.app_name!r} worker {w.wrk_index}: mq-cong "
            f"{w.mq_congested} ({n_threads} VPP threads) -- {why}"
        )
    return "\n".join(lines)
