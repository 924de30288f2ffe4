"""The socket-like behaviour suite (pyvcl.testing.conformance) over the kernel and pyvcl."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pyvcl.testing.conformance import CHECKS, InterposedStack, KernelStack, Stack, VclStack


@pytest.fixture(scope="module")
def vcl_stacks() -> Iterator[dict[str, VclStack]]:
    """The pyvcl stacks made so far in this module, closed at its end."""
    made: dict[str, VclStack] = {}
    yield made
    for s in made.values():
        s.close()


# Each pyvcl stack: its topology, and whether its VPP runs a worker thread.
PYVCL_STACKS = {
    "pyvcl-ct": ("local", False, 21000),
    "pyvcl-tcp": ("global", False, 23000),
    "pyvcl-ct-workers": ("local", True, 21500),
    "pyvcl-tcp-workers": ("global", True, 23500),
    "run-ct": ("local", False, 22000),  # the sockets of `pyvcl run` (pyvcl.interpose)
    "run-tcp": ("global", False, 24000),
}


@pytest.fixture(
    params=["kernel", *(pytest.param(name, marks=pytest.mark.vpp) for name in PYVCL_STACKS)]
)
def stack(request: pytest.FixtureRequest, vcl_stacks: dict[str, VclStack]) -> Stack:
    name = request.param
    if name == "kernel":
        return KernelStack()
    if name not in vcl_stacks:
        scope, workers, port = PYVCL_STACKS[name]
        vpp = request.getfixturevalue("vpp_with_workers" if workers else "vpp")
        kind = InterposedStack if name.startswith("run-") else VclStack
        vcl_stacks[name] = kind(vpp, scope, first_port=port)
        vcl_stacks[name].name = name
    return vcl_stacks[name]


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
    check(stack)


@pytest.fixture(autouse=True)
def _known_differences(request: pytest.FixtureRequest) -> None:
    """A strict xfail marker on each (check, stack) pair listed in DIFFERENCES."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return
    check, stack = callspec.params.get("check"), callspec.params.get("stack")
    name = getattr(check, "__name__", "").removeprefix("check_")
    stack_name = str(stack).removesuffix("-workers").replace("run-", "pyvcl-")
    reason = DIFFERENCES.get((name, stack_name))
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
