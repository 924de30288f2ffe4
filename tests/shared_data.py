"""Where the ground truth extracted from real VPP builds lives (../shared beside the checkout)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(os.environ.get("PYVCL_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"ground-truth data {path} not present (set PYVCL_SHARED_DIR)")
    return path


def load_json(*parts: str) -> Any:
    return json.loads(shared_path(*parts).read_text())
