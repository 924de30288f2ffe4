"""One behavioural suite for "socket-like": the same checks over kernel sockets and over pyvcl.

A *stack* (`stacks.Stack`) gives listening and connecting sockets; every ``check_*`` function
takes one and asserts what a socket user relies on: the socket checks (`checks`: echo, EOF,
timeouts, non-blocking calls, selectors...) and the two-way stream checks held against trio's
``check_two_way_stream`` (`two_way`: duplex with random chunk sizes, flipped roles,
half-close then reply, a clogged stream).  `aio` runs the stream checks over asyncio streams
(`Streams`: pyvcl.aio's, or asyncio's own over a stack's sockets).

`tests/test_conformance.py` runs them over the kernel (the reference), pyvcl cut-through,
pyvcl through VPP's TCP stack and the sockets of ``pyvcl run``; users can run them over their
own setup the same way:

    from pyvcl.testing.conformance import ASYNC_CHECKS, CHECKS, KernelStack, streams_over
    @pytest.mark.parametrize("check", CHECKS)
    def test_socket_like(check, my_stack): check(my_stack)
    @pytest.mark.parametrize("check", ASYNC_CHECKS)
    def test_stream_like(check, my_stack): check(streams_over(my_stack))
"""

from __future__ import annotations

from collections.abc import Callable

from .aio import ASYNC_CHECKS, SocketStreams, Streams, VclStreams, streams_over
from .checks import SOCKET_CHECKS
from .stacks import Address, InterposedStack, KernelStack, Stack, VclStack, pair
from .two_way import STREAM_CHECKS

CHECKS: list[Callable[[Stack], None]] = [*SOCKET_CHECKS, *STREAM_CHECKS]

__all__ = [
    "ASYNC_CHECKS",
    "CHECKS",
    "SOCKET_CHECKS",
    "STREAM_CHECKS",
    "Address",
    "InterposedStack",
    "KernelStack",
    "SocketStreams",
    "Stack",
    "Streams",
    "VclStack",
    "VclStreams",
    "pair",
    "streams_over",
]
