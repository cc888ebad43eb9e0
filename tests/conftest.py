from __future__ import annotations

from pathlib import Path

import pytest

from hal0.paths import Paths, resolve_paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A private HAL0_HOME tree for one test."""
    return resolve_paths({"HAL0_HOME": str(tmp_path / "home")})
