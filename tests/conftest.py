"""Shared fixtures: the real sample scans and the built binary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import layerseg
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


@pytest.fixture()
def tiny_profile(tmp_path: Path) -> Path:
    """brain-mri squashed onto a 32^3 grid, with a tiny network: for training tests that must
    take seconds. A test module that needs more changes overrides this fixture, asking for it."""
    profile = json.loads(layerseg.profile_json("brain-mri"))
    profile["name"] = "tiny-brain"
    profile["resample"]["target_size"] = [32, 32, 32]
    profile["inference"]["patch_size"] = [32, 32, 32]
    profile["network"]["features"] = [4, 4, 8, 8, 16, 4]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(profile))
    return path
