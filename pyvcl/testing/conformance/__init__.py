"""One behavioural suite for "socket-like": the same checks over kernel sockets and over pyvcl.

A *stack* (`stacks.Stack`) gives listening and connecting sockets; every ``check_*`` function
(`checks`) takes one and asserts what a socket user relies on.  `tests/test_conformance.py`
runs them over the kernel (the reference), pyvcl cut-through, pyvcl through VPP's TCP stack
and the sockets of ``pyvcl run``; users can run them over their own setup the same way:

    from pyvcl.testing.conformance import CHECKS, KernelStack
    @pytest.mark.parametrize("check", CHECKS)
    def test_socket_like(check, my_stack): check(my_stack)
"""

from __future__ import annotations

from collections.abc import Callable

from .checks import SOCKET_CHECKS
from .stacks import Address, InterposedStack, KernelStack, Stack, VclStack, pair

CHECKS: list[Callable[[Stack], None]] = [*SOCKET_CHECKS]

__all__ = [
    "CHECKS",
    "SOCKET_CHECKS",
    "Address",
    "InterposedStack",
    "KernelStack",
    "Stack",
    "VclStack",
    "pair",
]
