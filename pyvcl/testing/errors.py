"""The harness's exceptions (`pyvcl.testing.vpp` re-exports them)."""

from __future__ import annotations

__all__ = ["VppCliError", "VppError", "VppStartError"]


class VppError(RuntimeError):
    """A private VPP instance could not be used (not running, CLI failed, ...)."""


class VppStartError(VppError):
    """VPP did not come up; the message carries the reason and the tail of its output."""


class VppCliError(VppError):
    """A CLI command failed; ``cmd`` and ``output`` say which and what VPP answered."""

    def __init__(self, message: str, cmd: str, output: str) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.output = output
