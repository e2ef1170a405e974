"""Shared fixtures: the real sample scans and the built binary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerseg import samples

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_dirs() -> dict[str, Path]:
    """Every dev sample scan, fetched once into the cache (``make samples``)."""
    return samples.fetch()


@pytest.fixture(scope="session")
def layerseg_bin() -> Path:
    # LAYERSEG_BIN points a second checkout (a git worktree) at an already built binary.
    path = Path(os.environ.get("LAYERSEG_BIN", REPO / "target" / "release" / "layerseg"))
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make build` first")
    return path
