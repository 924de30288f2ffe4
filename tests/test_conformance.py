"""The socket-like behaviour suite (pyvcl.testing.conformance) over the kernel and pyvcl: the
socket and two-way stream checks over each stack's sockets, and the stream checks again over
asyncio streams (pyvcl.aio for pyvcl's socket API, asyncio's own for the others)."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyvcl.testing.conformance import (
    ASYNC_CHECKS,
    CHECKS,
    InterposedStack,
    KernelStack,
    Stack,
    Streams,
    VclStack,
    streams_over,
)
from pyvcl.testing.conformance.two_way import check_clogged_stream, check_duplex_random_chunks
from pyvcl.testing.congestion import CounterWrappedWarning


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
    stack = vcl_stacks[name]
    wrapped = stack.reattach_if_vpp_wrapped()
    if wrapped:  # a VPP bug (pyvcl.testing.congestion), not this check's to fail on
        warnings.warn(
            CounterWrappedWarning(f"{name}: VPP's counter wrapped ({wrapped}); apps re-attached"),
            stacklevel=1,
        )
    return stack


# Known differences from kernel TCP, each with the reason.
DIFFERENCES = {
    (check, "pyvcl-ct"): (
        "VPP v26.06 passes no half-close on cut-through sessions: the peer never sees "
        "shutdown(SHUT_WR) / write_eof() as EOF, only the close (docs/async.md)"
    )
    for check in ("half_close_then_reply", "aio_half_close_then_reply")
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_socket_like(check: Callable[[Stack], None], stack: Stack) -> None:
    check(stack)


@pytest.mark.parametrize(
    "check", ASYNC_CHECKS, ids=[c.__name__.removeprefix("check_") for c in ASYNC_CHECKS]
)
def test_stream_like(check: Callable[[Streams], None], stack: Stack) -> None:
    check(streams_over(stack))


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


# -- the suite catches what it is for ------------------------------------------------------------
class _Tampered:
    """A kernel socket whose ``recv`` flips the byte at stream offset ``flip_at``, or whose
    ``send`` swallows everything at once (no back-pressure)."""

    def __init__(self, sock: socket.socket, flip_at: int | None, swallow: bool) -> None:
        self._sock, self._flip_at, self._swallow, self._received = sock, flip_at, swallow, 0

    def recv(self, n: int) -> bytes:
        data = bytearray(self._sock.recv(n))
        at = None if self._flip_at is None else self._flip_at - self._received
        if at is not None and 0 <= at < len(data):
            data[at] ^= 0xFF
        self._received += len(data)
        return bytes(data)

    def send(self, data: bytes) -> int:
        return len(data) if self._swallow else self._sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _TamperedStack(KernelStack):
    def __init__(self, flip_at: int | None = None, swallow: bool = False) -> None:
        self.flip_at, self.swallow = flip_at, swallow

    def connect(self, address: Any, timeout: float | None = None) -> Any:
        return _Tampered(super().connect(address, timeout), self.flip_at, self.swallow)


def test_duplex_names_the_direction_and_offset_of_a_corrupted_byte() -> None:
    with pytest.raises(
        AssertionError, match=r"^accepting -> connecting: byte 123457 of \d+ differs"
    ):
        check_duplex_random_chunks(_TamperedStack(flip_at=123457))


def test_clogged_stream_fails_without_back_pressure() -> None:
    with pytest.raises(AssertionError, match=r"connecting -> accepting: .* without EAGAIN"):
        check_clogged_stream(_TamperedStack(swallow=True))
