"""`pyvcl.interpose.leave` without VPP: what it skips, and that it never raises out of the
exit.  (Against a real VPP: tests/test_run_exit.py.)"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from pyvcl.errors import VppUnreachable
from pyvcl.fallback import KernelApp
from pyvcl.interpose import leave


class _App:
    """An `OpportunisticApp` stand-in that counts how often it is looked at."""

    def __init__(self, backend: Any = None, closed: bool = False, error: Any = None) -> None:
        self._backend, self._error, self.closed_flag, self.looks = backend, error, closed, 0

    @property
    def closed(self) -> bool:
        self.looks += 1
        return self.closed_flag

    @property
    def backend(self) -> Any:
        self.looks += 1
        if self._error is not None:
            raise self._error
        return self._backend


def _holding(monkeypatch: pytest.MonkeyPatch, *apps: Any) -> None:
    import pyvcl.interpose

    monkeypatch.setattr(pyvcl.interpose, "held_apps", lambda: list(apps))


def test_nothing_to_leave_without_vpp() -> None:
    deadline = time.monotonic() + 1
    assert not leave.leave(_App(closed=True), deadline)
    assert not leave.leave(_App(KernelApp()), deadline)
    assert not leave.leave(_App(error=VppUnreachable("gone")), deadline)


def test_a_failure_never_leaves_the_exit_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    broken, after = _App(error=RuntimeError("a bug")), _App(closed=True)
    _holding(monkeypatch, broken, after)
    monkeypatch.delattr(sys, "last_value", raising=False)
    leave.at_exit()  # (no exception)
    assert broken.looks and after.looks  # the next app was still looked at


def test_ctrl_c_skips_leaving(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _App(closed=False, error=AssertionError("must not be looked at"))
    _holding(monkeypatch, app)
    monkeypatch.setattr(sys, "last_value", KeyboardInterrupt(), raising=False)
    leave.at_exit()
    assert app.looks == 0


def test_a_second_ctrl_c_ends_it_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _App(error=KeyboardInterrupt()), _App(closed=True)
    _holding(monkeypatch, first, second)
    monkeypatch.delattr(sys, "last_value", raising=False)
    leave.at_exit()
    assert first.looks and second.looks == 0
