"""The catalog screenshot (slicer_module/Screenshot01.png) and the script that renders it
offscreen with slicer-core and VTK (slicer_module/screenshot.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from test_slicer import MODEL, PROFILE, THRESHOLD, run_cli

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "slicer_module" / "Screenshot01.png"
SCRIPT = REPO / "slicer_module" / "screenshot.py"
BAR_PX = 6


def panels(path: Path, size: int) -> list[np.ndarray]:
    """3D, axial, sagittal, coronal (Four-Up order), each without its view bar."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    step = size + BAR_PX + 2
    assert rgb.shape == (2 * step - 2, 2 * size + 2, 3)
    tops = [row * step + BAR_PX for row in (0, 1)]
    lefts = [col * (size + 2) for col in (0, 1)]
    return [rgb[top : top + size, left : left + size] for top in tops for left in lefts]


def tumour_pixels(panel: np.ndarray) -> int:
    """Pixels in the Tumor segment's red (0.85, 0.25, 0.2), shaded or blended."""
    r, g, b = (panel[..., i].astype(int) for i in range(3))
    return int(((r > 120) & (r - g > 70) & (r - b > 70)).sum())


def check_picture(path: Path, size: int) -> dict[str, str]:
    views = panels(path, size)
    for name, panel in zip(("3D", "axial", "sagittal", "coronal"), views, strict=True):
        assert tumour_pixels(panel) > 20, f"{path}: no tumour in the {name} view"
    for name, panel in zip(("axial", "sagittal", "coronal"), views[1:], strict=True):
        grey = panel[..., 0].astype(float)
        assert grey.std() > 20, f"{path}: the {name} view shows no scan"
    return dict(Image.open(path).text)  # type: ignore[attr-defined]


def test_the_committed_screenshot_shows_the_layerseg_segment() -> None:
    assert SCREENSHOT.stat().st_size < 300_000
    text = check_picture(SCREENSHOT, 400)
    assert "mrbraintumor2" in text["Title"]
    assert text["Segments"] == "Tumor, Brain"
    assert int(text["TumourVoxels"]) > 1000


def test_the_script_renders_the_modules_segment(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The script, run on the sample with the tiny test network, draws the segment the module
    brings into the scene, and that segment has the CLI's voxel count."""
    scan = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    out = tmp_path / "shot.png"
    argv = [sys.executable, str(SCRIPT), "--out", str(out), "--scan", str(scan)]
    argv += ["--cli", str(layerseg_bin), "--size", "160", "--profile", PROFILE]
    argv += ["--model", str(MODEL), "--threshold", str(THRESHOLD)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (
        "screenshot.py failed (it needs offscreen OpenGL: EGL through Mesa):\n"
        + proc.stderr[-3000:]
    )
    text = check_picture(out, 160)
    expected, _ = run_cli(layerseg_bin, scan, tmp_path / "mask.nii.gz")
    assert int(text["TumourVoxels"]) == int(expected.sum()) > 0
