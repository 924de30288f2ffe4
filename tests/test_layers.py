"""Layers import downward only (docs/architecture.md, "The layers").

Every ``import`` in pyvcl/ -- at module level or inside a function -- is read with `ast`, and
each one that crosses from one part of the package to another must go to a lower layer.  The
order below is the architecture's; a new module must be placed in it (the test says so), and
an upward import fails with the file and line that made it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyvcl"

# Lowest first.  A part is a top-level module or subpackage of pyvcl; parts on one line are
# siblings and do not import each other.
LAYERS: list[set[str]] = [
    {"errors", "interrupts"},  # import nothing of pyvcl when imported (see UPWARD below)
    {"wire", "recording"},  # declarations; the checked JSON of recordings
    {"atomics"},
    {"segment"},
    {"fifo", "mq"},
    {"api", "shmview", "vppversion"},
    {"app", "config", "snapshot", "procview"},  # procview: another process's segments
    {"snapshot_record"},  # a snapshot of what procview maps
    {"session"},
    {"vclsocket"},
    {"selector", "fallback", "repl"},
    {"repl_ipython"},  # the repl's Shell at IPython's prompt
    {"socket", "aio", "stack"},
    {"interpose"},
    {"cli", "_boot"},
    {"__main__", "testing", "pyvcl"},  # "pyvcl": the package's own __init__
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

# The known upward imports, each made inside a function at call time, and why.
UPWARD = {
    # errors.session_error names the session_error_t enumerator; the enum is declared once, in
    # wire, and wire's checks raise errors' exceptions, so errors must be below it.
    ("errors", "wire"),
}


def _part(module: str) -> str:
    """``pyvcl.mq.queue`` -> ``mq``; ``pyvcl`` -> ``pyvcl``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[str, int]]:
    """The pyvcl modules ``path`` imports (absolute names), with their line numbers."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = list(rel[:-1])  # what a relative import is relative to (also for __init__)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            if node.module:
                found.append((".".join([*base, node.module]), node.lineno))
            else:  # from . import fallback: each name is a module
                found.extend((".".join([*base, a.name]), node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return [(t, line) for t, line in found if t == "pyvcl" or t.startswith("pyvcl.")]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(rel[:-1] if path.name == "__init__.py" else rel)


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer() -> None:
    parts = {_part(_module(p)) for p in SOURCES}
    assert parts - RANK.keys() == set(), "place the new module in tests/test_layers.py LAYERS"
    assert RANK.keys() - parts == set(), "LAYERS names a part that no longer exists"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    here = _part(_module(path))
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {here} (layer {RANK[here]}) imports {target} "
        f"(layer {RANK[_part(target)]})"
        for target, line in _imports(path)
        if _part(target) != here
        and RANK[_part(target)] >= RANK[here]
        and (here, _part(target)) not in UPWARD
    ]
    assert wrong == []


def test_the_known_upward_imports_are_still_made() -> None:
    """An exception nobody needs any more is removed from UPWARD, so it cannot hide a new one."""
    made = {
        (_part(_module(p)), _part(t))
        for p in SOURCES
        for t, _ in _imports(p)
        if _part(t) != _part(_module(p))
    }
    assert made >= UPWARD


def test_errors_imports_nothing_of_pyvcl_when_imported() -> None:
    """The bottom layer: its module body imports no other part of pyvcl."""
    tree = ast.parse((PACKAGE / "errors.py").read_text())
    top = [
        n
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("pyvcl"))
    ]
    assert top == []
