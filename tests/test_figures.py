"""Issue 21: figures a clinician can read, from `evaluate --figures` (the same drawing serves
`demo`, `segment --overlay` and `synthesize --preview`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

GREEN = (40, 230, 60)
RED = (255, 40, 40)


def _evaluate(layerseg_bin: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(layerseg_bin), "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _count(rgb: np.ndarray, color: tuple[int, int, int]) -> int:
    return int((rgb == np.array(color, dtype=np.uint8)).all(axis=-1).sum())


def test_evaluate_figure_shows_the_scan_the_legend_and_the_case(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Before: red/green outlines on black, 392 px wide, named after the truth file (tumor)."""
    case = sample_dirs["lits117"]
    figures, csv = tmp_path / "figures", tmp_path / "metrics.csv"
    proc = _evaluate(
        layerseg_bin,
        "--pred", case / "liver.nii.gz",
        "--truth", case / "tumor.nii.gz",
        "--image", case / "image.nii.gz",
        "--figures", figures,
        "--csv", csv,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The case is named by the prediction, or its folder when the file name is generic.
    assert proc.stdout.splitlines()[1].split()[0] == "lits117"
    assert csv.read_text().splitlines()[1].startswith("lits117,")
    assert [p.name for p in figures.iterdir()] == ["lits117.png"]
    rgb = np.asarray(Image.open(figures / "lits117.png").convert("RGB"))
    height, width, _ = rgb.shape
    assert width >= 600, rgb.shape
    # Anatomy: a good share of the figure is mid-grey (r == g == b), not black.
    r, g, b = (rgb[..., c].astype(int) for c in range(3))
    grey = (r == g) & (g == b) & (r > 40) & (r < 220)
    assert grey.mean() > 0.2, grey.mean()
    # Truth in green and prediction in red, outlined in the panels and shown in the legend
    # (a 16 x 16 swatch each in the bottom rows).
    for color in (GREEN, RED):
        assert _count(rgb[: height - 40], color) > 200, color
        assert _count(rgb[height - 40 :], color) >= 256, color
    # The title carries text (white), which a figure without a title has not.
    assert _count(rgb[:20], (255, 255, 255)) > 100


def test_evaluate_figure_without_a_scan_says_so(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    case = sample_dirs["mrbraintumor2"]
    label = case / "label.nii.gz"
    proc = _evaluate(layerseg_bin, "--pred", label, "--truth", label, "--figures", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--figures without --image" in proc.stderr
    assert (tmp_path / "mrbraintumor2.png").stat().st_size > 1000
