"""`layerseg demo` and the no-learning baseline reproduce the README's results table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest

# (case, Dice, HD95 mm, lesions detected) as the README's "Shipped models and results" states them.
TABLE = [
    ("mrbraintumor2", 0.5376, 4.6, 1),
    ("lits117", 0.6006, 36.1, 18),
]
# The same for benchmarks/baseline.py: (case, modality, truth, organ mask, Dice, HD95, detected).
BASELINE = [
    ("mrbraintumor2", "mri", "label.nii.gz", None, 0.0, 119.4, 0),
    ("lits117", "ct", "tumor.nii.gz", "liver.nii.gz", 0.5235, 11.8, 24),
]
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("case", "dice", "hd95", "detected"), TABLE)
def test_demo_reproduces_the_results_table(
    layerseg_bin: Path,
    sample_dirs: dict[str, Path],
    tmp_path: Path,
    case: str,
    dice: float,
    hd95: float,
    detected: int,
) -> None:
    proc = subprocess.run(
        [str(layerseg_bin), "demo", "--case", case, "--out", str(tmp_path), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    for suffix in ("_mask.nii.gz", "_overlay.png", "_metrics.json"):
        assert (tmp_path / f"{case}{suffix}").stat().st_size > 0
    metrics = json.loads((tmp_path / f"{case}_metrics.json").read_text())["cases"][0]["metrics"]
    assert metrics["dice"] == pytest.approx(dice, abs=5e-4)
    assert metrics["hd95_mm"] == pytest.approx(hd95, abs=0.05)
    assert metrics["lesions_detected"] == detected
    assert f"{metrics['dice']:.4f}" in proc.stdout


def test_demo_reads_the_cache_and_names_the_fetch_command(
    layerseg_bin: Path, tmp_path: Path
) -> None:
    """The demo never fetches: from an empty cache it names the command that does; once that
    command has run, the demo goes on (here to the missing model, which it names)."""
    cache = tmp_path / "cache"
    env = {**os.environ, "LAYERSEG_DATA": str(cache)}
    out = tmp_path / "out"
    demo = [str(layerseg_bin), "demo", "--out", str(out), "--model", str(tmp_path / "no.pt")]
    proc = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 1
    fetch = "python -m layerseg.samples fetch --only mrbraintumor2"
    assert f"{cache / 'mrbraintumor2'}: the mrbraintumor2 sample is not fetched" in proc.stderr
    assert fetch in proc.stderr
    assert not cache.exists()
    subprocess.run(
        [sys.executable, *fetch.split()[1:]], check=True, capture_output=True, env=env, timeout=900
    )
    proc = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 1
    assert "no.pt: file not found" in proc.stderr
    assert not (out / "mrbraintumor2_mask.nii.gz").exists()


@pytest.mark.parametrize(
    ("case", "modality", "truth", "organ", "dice", "hd95", "detected"), BASELINE
)
def test_baseline_reproduces_the_results_table(
    layerseg_bin: Path,
    sample_dirs: dict[str, Path],
    tmp_path: Path,
    case: str,
    modality: str,
    truth: str,
    organ: str | None,
    dice: float,
    hd95: float,
    detected: int,
) -> None:
    """The table's baseline rows, and the check the results must pass: the model beats them."""
    folder = sample_dirs[case]
    mask = tmp_path / "baseline.nii.gz"
    organ_args = ["--organ-mask", str(folder / organ)] if organ else []
    baseline = [sys.executable, str(REPO / "benchmarks" / "baseline.py"), "--modality", modality]
    subprocess.run(
        [*baseline, str(folder / "image.nii.gz"), *organ_args, "--out", str(mask)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = tmp_path / "baseline.json"
    evaluate = [str(layerseg_bin), "evaluate", "--pred", str(mask), "--truth", str(folder / truth)]
    subprocess.run(
        [*evaluate, *organ_args, "--json", str(report)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    metrics = json.loads(report.read_text())["cases"][0]["metrics"]
    assert metrics["dice"] == pytest.approx(dice, abs=5e-4)
    assert metrics["hd95_mm"] == pytest.approx(hd95, abs=0.05)
    assert metrics["lesions_detected"] == detected
    ours = next(row[1] for row in TABLE if row[0] == case)
    assert ours > dice + 0.05


# The table's ablation rows (issue 16): MRBrainTumor2 with brain extraction and the layer rule
# each alone and neither, its clinical re-slicing (6.5 mm axial, benchmarks/thick_slices.py) with
# both and with neither, its partial coverage (30 axial slices round the tumour) with the
# defaults and without extraction, and LiTS-117 without the rule: (name, case, extra `segment`
# flags, acquisition, Dice, HD95 mm, lesions detected).
ABLATION = [
    (
        "brain, neither",
        "mrbraintumor2",
        ["--organ-mask", "none", "--raw-mask"],
        "as stored",
        0.1717,
        78.7,
        27,
    ),
    ("brain, extraction alone", "mrbraintumor2", ["--raw-mask"], "as stored", 0.3473, 16.9, 24),
    (
        "brain, layer rule alone",
        "mrbraintumor2",
        ["--organ-mask", "none"],
        "as stored",
        0.0899,
        73.5,
        1,
    ),
    ("brain 6.5 mm, both", "mrbraintumor2", [], "6.5 mm", 0.8610, 4.8, 1),
    (
        "brain 6.5 mm, neither",
        "mrbraintumor2",
        ["--organ-mask", "none", "--raw-mask"],
        "6.5 mm",
        0.2580,
        86.7,
        3,
    ),
    ("brain 30 slices, both", "mrbraintumor2", [], "30 slices", 0.7126, 5.6, 1),
    (
        "brain 30 slices, no extraction",
        "mrbraintumor2",
        ["--organ-mask", "none"],
        "30 slices",
        0.0232,
        37.4,
        1,
    ),
    ("liver, no layer rule", "lits117", ["--raw-mask"], "as stored", 0.6004, 35.3, 26),
]


@pytest.mark.parametrize(
    ("name", "case", "flags", "acquisition", "dice", "hd95", "detected"), ABLATION
)
def test_ablation_rows_reproduce_the_table(
    layerseg_bin: Path,
    sample_dirs: dict[str, Path],
    tmp_path: Path,
    name: str,
    case: str,
    flags: list[str],
    acquisition: str,
    dice: float,
    hd95: float,
    detected: int,
) -> None:
    folder = sample_dirs[case]
    scan = folder / "image.nii.gz"
    truth = folder / ("label.nii.gz" if case == "mrbraintumor2" else "tumor.nii.gz")
    organ = [] if case == "mrbraintumor2" else ["--organ-mask", str(folder / "liver.nii.gz")]
    if acquisition == "6.5 mm":
        thick_scan, thick_truth = tmp_path / "thick.nii.gz", tmp_path / "thick_label.nii.gz"
        reslice = [sys.executable, str(REPO / "benchmarks" / "thick_slices.py"), str(scan)]
        reslice += [str(thick_scan), "--axis", "axial", "--thickness", "6.5"]
        reslice += ["--labels", str(truth), str(thick_truth)]
        subprocess.run(reslice, check=True, capture_output=True, timeout=300)
        scan, truth = thick_scan, thick_truth
    elif acquisition == "30 slices":
        cut_scan, cut_truth = tmp_path / "cut.nii.gz", tmp_path / "cut_label.nii.gz"
        for whole, part in ((scan, cut_scan), (truth, cut_truth)):
            nib.save(nib.Nifti1Image.from_filename(whole).slicer[:, :, 76:106], part)
        scan, truth = cut_scan, cut_truth
    profile = "brain-mri" if case == "mrbraintumor2" else "liver-ct"
    mask, report = tmp_path / "mask.nii.gz", tmp_path / "report.json"
    segment = [str(layerseg_bin), "segment", str(scan), "--out", str(mask), "--profile", profile]
    proc = subprocess.run(
        [*segment, "--device", "cpu", *organ, *flags], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr
    evaluate = [str(layerseg_bin), "evaluate", "--pred", str(mask), "--truth", str(truth)]
    subprocess.run(
        [*evaluate, *organ, "--json", str(report)], check=True, capture_output=True, timeout=300
    )
    metrics = json.loads(report.read_text())["cases"][0]["metrics"]
    assert metrics["dice"] == pytest.approx(dice, abs=5e-4), name
    assert metrics["hd95_mm"] == pytest.approx(hd95, abs=0.05), name
    assert metrics["lesions_detected"] == detected, name
