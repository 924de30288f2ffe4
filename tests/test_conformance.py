"""The socket-like behaviour suite (pyvcl.testing.conformance) over the kernel and pyvcl."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyvcl.testing.conformance import CHECKS, KernelStack, Stack, VclStack


@pytest.fixture(scope="module")
def vcl_ct(vpp: Any) -> Iterator[VclStack]:
    stack = VclStack(vpp, "local")
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def vcl_tcp(vpp: Any) -> Iterator[VclStack]:
    stack = VclStack(vpp, "global", first_port=23000)
    yield stack
    stack.close()


@pytest.fixture(
    params=[
        "kernel",
        pytest.param("pyvcl-ct", marks=pytest.mark.vpp),
        pytest.param("pyvcl-tcp", marks=pytest.mark.vpp),
    ]
)
def stack(request: pytest.FixtureRequest) -> Stack:
    if request.param == "kernel":
        return KernelStack()
    fixture = "vcl_ct" if request.param == "pyvcl-ct" else "vcl_tcp"
    result: Stack = request.getfixturevalue(fixture)
    return result


# Known differences from kernel TCP, each with the reason.
DIFFERENCES = {
    ("send_after_peer_close_is_broken_pipe", "pyvcl-tcp"): (
        "through VPP's TCP stack a peer's close and half-close both arrive as DISCONNECTED; "
        "pyvcl, like C VCL, keeps sending allowed (request/response over a half-closed "
        "connection must work) and VPP v26.06 sends no reset for data to a closed peer"
    ),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_socket_like(check: Callable[[Stack], None], stack: Stack) -> None:
    reason = DIFFERENCES.get((check.__name__.removeprefix("check_"), stack.name))
    if reason:
        pytest.xfail(reason)
    check(stack)
