"""pyvcl.session.idle: the thread that takes VPP's messages when none of the app's threads
does (a full control ring makes VPP refuse the app's connects)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pyvcl.session.idle import IdleDrain


class _Mq:
    def __init__(self) -> None:
        self.size, self.head, self.resignals = 0, 0, 0

    def size_now(self) -> int:
        return self.size

    def head_now(self) -> int:
        return self.head

    def resignal(self) -> None:
        self.resignals += 1


class _Worker:
    def __init__(self, mq: _Mq) -> None:
        self.app = type("App", (), {"app_mq": mq, "closed": False})()
        self.free = True  # no thread is the poller
        self.drained = 0

    def drain_unattended(self) -> bool:
        if not self.free:
            return False
        self.drained += 1
        mq = self.app.app_mq
        mq.head, mq.size = (mq.head + mq.size) % 2048, 0
        return True


@pytest.fixture
def parts() -> Any:
    mq = _Mq()
    worker = _Worker(mq)
    drain = IdleDrain(worker, period=3600)  # (the thread never looks by itself here)
    yield mq, worker, drain
    drain.stop()


def test_messages_nobody_took_for_a_period_are_drained(parts: Any) -> None:
    mq, worker, drain = parts
    assert not drain.look()  # empty
    mq.size = 3
    assert not drain.look()  # first sight: a consumer may be about to take them
    assert drain.look()  # still there, head unmoved: nobody did
    assert worker.drained == 1 and drain.drains == 1
    assert mq.resignals == 1  # whoever sleeps on the eventfd re-checks


def test_a_consumer_at_work_is_left_alone(parts: Any) -> None:
    mq, worker, drain = parts
    mq.size = 3
    assert not drain.look()  # first sight
    mq.head, mq.size = 3, 2  # a consumer took three; two more came
    assert not drain.look()  # the head moved: stand aside
    assert worker.drained == 0
    assert drain.look()  # unmoved for a whole period now: nobody is taking them
    assert worker.drained == 1


def test_a_poller_keeps_its_role(parts: Any) -> None:
    mq, worker, drain = parts
    worker.free = False  # a thread is the poller (it will take them)
    mq.size = 2
    assert not drain.look() and not drain.look()
    assert worker.drained == 0 and mq.resignals == 0


def test_a_hold_leaves_the_queue_as_it_is_until_released(parts: Any) -> None:
    mq, worker, drain = parts
    mq.size = 2
    drain.hold()
    for _ in range(3):
        assert not drain.look()
    assert worker.drained == 0 and mq.size == 2
    drain.release()
    assert not drain.look()  # first sight after the hold: a whole period is owed again
    assert drain.look()
    assert worker.drained == 1


def test_the_thread_looks_by_itself_and_stops() -> None:
    mq = _Mq()
    worker = _Worker(mq)
    drain = IdleDrain(worker, period=0.01)
    try:
        mq.size = 5
        deadline = time.monotonic() + 5
        while worker.drained == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.drained == 1 and mq.size == 0
    finally:
        drain.stop()
    assert not drain.running
