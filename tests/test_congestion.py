"""pyvcl.testing.congestion: reading VPP's per-app "mq congested" counter from its CLI."""

from __future__ import annotations

from typing import Any

import pytest

from pyvcl.testing.congestion import (
    AppWorkerCongestion,
    app_congestion,
    congestion_report,
    parse_app_workers,
)

# ``show app 2`` on VPP v26.06 (workers 1) after the conformance suite's listen_again check
# failed: the server app's counter had wrapped.
WRAPPED = """\
app-name pyvcl-tcp-srv app-index 2 ns-index 1 seg-size 128m
rx-fifo-size 1m tx-fifo-size 1m max-fifo-memory 0 workers:

  wrk-index 2 app-index 2 map-index 0 api-client-index 65537 mq-cong 251
"""


def test_parse_names_each_worker_and_its_counter() -> None:
    assert parse_app_workers(WRAPPED) == [AppWorkerCongestion(2, "pyvcl-tcp-srv", 2, 251)]
    two = WRAPPED + "  wrk-index 5 app-index 2 map-index 1 api-client-index 65538 mq-cong 0\n"
    assert [w.wrk_index for w in parse_app_workers(two)] == [2, 5]
    assert parse_app_workers("No app with index 7") == []


def test_a_count_above_the_thread_count_is_the_wrap() -> None:
    (w,) = parse_app_workers(WRAPPED)
    assert w.wrapped(n_threads=2)
    assert not AppWorkerCongestion(2, "x", 2, 2).wrapped(n_threads=2)


class _FakeVpp:
    workers = 1

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def cli(self, cmd: str, check: bool = True) -> str:
        if cmd == "show app":
            return "Index     Name                Namespace\n2         pyvcl-tcp-srv       srv"
        assert cmd == "show app 2"
        return self.detail


def test_report_says_which_app_and_why() -> None:
    report = congestion_report(_FakeVpp(WRAPPED))  # type: ignore[arg-type]
    assert report is not None
    assert "app 2 'pyvcl-tcp-srv' worker 2: mq-cong 251 (2 VPP threads)" in report
    assert "wrapped" in report
    assert congestion_report(_FakeVpp(WRAPPED.replace("251", "0"))) is None  # type: ignore[arg-type]


@pytest.mark.vpp
def test_fresh_apps_are_not_congested(vpp_with_workers: Any) -> None:
    from pyvcl.testing.conformance import VclStack

    stack = VclStack(vpp_with_workers, "global", first_port=26900)
    try:
        workers = {w.app_name: w for w in app_congestion(vpp_with_workers)}
        assert {"pyvcl-tcp-srv", "pyvcl-tcp-cli"} <= set(workers), workers
        assert all(w.mq_congested == 0 for w in workers.values()), workers
        assert congestion_report(vpp_with_workers) is None
    finally:
        stack.close()


@pytest.mark.vpp
def test_a_stack_whose_counter_wrapped_attaches_its_apps_again(
    vpp_with_workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvcl.testing import congestion
    from pyvcl.testing.conformance import VclStack
    from pyvcl.testing.conformance.checks import check_echo

    stack = VclStack(vpp_with_workers, "local", first_port=26950)
    try:
        assert stack.reattach_if_vpp_wrapped() is None  # fresh apps: nothing to do
        before = stack.server_app.app.app_index
        old_server = stack.server_app
        real = congestion.app_congestion

        def wrapped_server(vpp: Any, app_indices: Any = None) -> list[AppWorkerCongestion]:
            out = real(vpp, app_indices)
            return [
                AppWorkerCongestion(w.app_index, w.app_name, w.wrk_index, 255)
                if w.app_index == before
                else w
                for w in out
            ]

        monkeypatch.setattr(congestion, "app_congestion", wrapped_server)
        found = stack.reattach_if_vpp_wrapped()
        assert found == "pyvcl-ct-srv mq-cong 255", found
        assert old_server.app.closed and stack.server_app is not old_server
        monkeypatch.undo()
        # (VPP may give the new app the old index; its worker is new, its counter zero)
        fresh = [stack.server_app.app.app_index, stack.client_app.app.app_index]
        assert [w.mq_congested for w in congestion.app_congestion(vpp_with_workers, fresh)] == [
            0,
            0,
        ]
        check_echo(stack)  # the new apps serve
    finally:
        stack.close()
