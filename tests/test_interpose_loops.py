"""uvloop's ways of choosing a loop give asyncio's while interposition is on
(pyvcl.interpose.loops): patched at once when uvloop is imported already, through an import
hook otherwise, and put back by `uninstall`.  Against VPP: tests/test_run_programs.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from pyvcl.interpose import loops

uvloop = pytest.importorskip("uvloop")


def test_an_imported_uvloop_is_patched_and_put_back(capsys: pytest.CaptureFixture[str]) -> None:
    originals = {name: getattr(uvloop, name) for name in loops.PATCHED}
    loops.install()
    try:
        assert all(getattr(uvloop, n) is not originals[n] for n in loops.PATCHED)
        loop = uvloop.new_event_loop()
        try:
            assert not isinstance(loop, uvloop.Loop)
        finally:
            loop.close()

        async def which() -> str:
            return type(asyncio.get_running_loop()).__name__

        assert uvloop.run(which()) == "_UnixSelectorEventLoop"
        assert isinstance(uvloop.EventLoopPolicy(), asyncio.DefaultEventLoopPolicy)
        assert uvloop.run(which(), loop_factory=originals["new_event_loop"]) != "Loop"
    finally:
        loops.uninstall()
    assert all(getattr(uvloop, n) is originals[n] for n in loops.PATCHED)
    assert capsys.readouterr().err.count(loops.NOTICE) <= 1  # once per process at most


def test_uvloop_imported_later_is_patched_by_the_import_hook() -> None:
    code = (
        "import sys; from pyvcl.interpose import loops; loops.install();"
        "assert 'uvloop' not in sys.modules; import uvloop, asyncio;"
        "uvloop.install();"
        "print(type(asyncio.get_event_loop_policy()).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == type(asyncio.DefaultEventLoopPolicy()).__name__  # not uvloop's
    assert loops.NOTICE in out.stderr
