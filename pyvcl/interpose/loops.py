"""uvloop under ``pyvcl run``: asyncio's own event loop in its place.

uvloop runs asyncio programs on libuv, which does a socket's IO from C on its descriptor, and
creates, binds and connects sockets there too.  An interposed socket's descriptor only
signals readiness and carries no bytes (docs/run.md), so under uvloop a server believes it
listens while VPP never hears of it, and a client's connection goes nowhere: nothing fails,
nothing works.  asyncio's standard loop goes through the socket objects (and, for waiting,
through the pumping selectors of `pyvcl.interpose.selecting`), so it runs over VPP.

While interposition is on, uvloop's ways of choosing its loop give asyncio's standard one:
``uvloop.new_event_loop``, ``uvloop.EventLoopPolicy``, ``uvloop.install`` and
``uvloop.run`` (a ``loop_factory`` of the program's own is kept).  ``uvloop.Loop`` itself is
left alone, for ``isinstance`` checks; a program that makes a ``uvloop.Loop()`` directly is
not helped.  The first time one of them is used, one line on stderr says so.  uvloop is
patched when interposition starts if it is imported already, else when it is imported (an
import hook); `uninstall` puts everything back.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Coroutine, Sequence
from types import ModuleType
from typing import Any

__all__ = ["install", "uninstall"]

MODULE = "uvloop"
NOTICE = (
    "uvloop does its IO on descriptors, which carry no data here: asyncio's own loop runs instead"
)
PATCHED = ("new_event_loop", "EventLoopPolicy", "install", "run")

_originals: dict[str, Any] = {}
_told = False


def _tell() -> None:
    global _told
    if not _told:
        _told = True
        from .boot import say

        say(NOTICE)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    _tell()
    return asyncio.new_event_loop()


class _Policy(asyncio.DefaultEventLoopPolicy):
    """What ``uvloop.EventLoopPolicy()`` gives under pyvcl run: asyncio's default policy."""

    def __init__(self) -> None:
        _tell()
        super().__init__()


def _install() -> None:
    _tell()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def _run(
    main: Coroutine[Any, Any, Any],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    debug: bool | None = None,
    **_ignored: Any,
) -> Any:
    _tell()
    if loop_factory is None or loop_factory is _originals.get("new_event_loop"):
        return asyncio.run(main, debug=debug)
    runner_class = getattr(asyncio, "Runner", None)  # (Python 3.11+, as uvloop.run needs)
    if runner_class is None:
        raise RuntimeError("uvloop.run(loop_factory=...) needs Python 3.11")
    with runner_class(debug=debug, loop_factory=loop_factory) as runner:
        return runner.run(main)


_REPLACEMENTS: dict[str, Any] = {
    "new_event_loop": _new_event_loop,
    "EventLoopPolicy": _Policy,
    "install": _install,
    "run": _run,
}


def _patch(module: ModuleType) -> None:
    for name in PATCHED:
        if hasattr(module, name) and name not in _originals:
            _originals[name] = getattr(module, name)
            setattr(module, name, _REPLACEMENTS[name])


class _Hook(importlib.abc.MetaPathFinder):
    """Patches uvloop right after it is first imported."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


_hook = _Hook()


def install() -> None:
    """Patch uvloop now if it is imported, else when it is (idempotent)."""
    module = sys.modules.get(MODULE)
    if module is not None:
        _patch(module)
    elif _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)


def uninstall() -> None:
    """Put uvloop's own functions back and stop watching for its import."""
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)
    module = sys.modules.get(MODULE)
    if module is not None:
        for name, value in _originals.items():
            setattr(module, name, value)
    _originals.clear()
