"""Where the ground truth and the recordings the tests read live.

Two places, the same layout (``vpp-<version>/layouts.json``, ``vpp-v26.06/traces/``,
``vpp-v26.06/snapshots/``):

- `SHARED`: ``../shared`` beside the checkout (or ``PYVCL_SHARED_DIR``), data extracted from
  real VPP builds and recorded from C VCL's own test apps by other tools.  Not in the repo; when
  present, the tests cross-check against it too.
- `OWN`: ``tests/fixtures``, in the repo (tests/fixtures/README.md): a copy of the layouts,
  and snapshots and traces the project recorded with its own recorder
  (``tools/record_fixtures.py``).  Every clone has them, so those tests never skip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

SHARED = Path(os.environ.get("PYVCL_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
OWN = Path(__file__).resolve().parent / "fixtures"


def shared_path(*parts: str) -> Path:
    """``parts`` in the shared data, else in the project's fixtures (for the files both have,
    such as the layouts); the test is skipped when neither has it."""
    for root in (SHARED, OWN):
        path = root.joinpath(*parts)
        if path.exists():
            return path
    pytest.skip(f"ground-truth data {SHARED.joinpath(*parts)} not present (set PYVCL_SHARED_DIR)")


def own_path(*parts: str) -> Path:
    """``parts`` in the project's fixtures, which every clone has (an error if missing)."""
    path = OWN.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: re-record it with tools/record_fixtures.py")
    return path


def has_shared(*parts: str) -> bool:
    return SHARED.joinpath(*parts).exists()


T = TypeVar("T", bound=Callable[..., Any])


def cross_check(*parts: str) -> Callable[[T], T | None]:
    """Decorator for a test that compares with ../shared (``parts`` in it): without it the test
    is not collected at all -- it is an extra check, not a skipped one, since the same
    properties are checked on the project's fixtures in every clone (``pytest_report_header``
    in tests/conftest.py says whether ../shared was found)."""

    def keep_if_shared(test: T) -> T | None:
        return test if has_shared(*parts) else None

    return keep_if_shared


def load_json(*parts: str) -> Any:
    return json.loads(shared_path(*parts).read_text())
