"""benchmarks/compare_models.py: the before/after rows and the shipping rule of a GPU window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import compare_models  # noqa: E402


def test_the_rule_needs_no_worse_row_and_one_better() -> None:
    assert compare_models.better([0.5, 0.8], [0.5, 0.81])
    assert not compare_models.better([0.5, 0.8], [0.5, 0.8])
    assert not compare_models.better([0.5, 0.8], [0.9, 0.79])


def test_the_shipped_model_against_itself_is_kept(
    layerseg_bin: Path, sample_dirs: dict[str, Path]
) -> None:
    shipped = REPO / "models" / "liver-ct.safetensors"
    before = shipped.read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "compare_models.py"),
            "--liver",
            str(shipped),
            "--layerseg",
            str(layerseg_bin),
            "--ship",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    row = next(line for line in proc.stdout.splitlines() if "LiTS-117" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == cells[3] and 0.5 < float(cells[2]) < 0.7, row
    assert "liver-ct: keep the shipped model" in proc.stdout
    assert shipped.read_bytes() == before


def test_a_candidate_without_its_card_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compare_models.py"), "--brain", str(weights)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "model.json" in proc.stderr
