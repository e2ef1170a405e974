"""One validation layer: the same bad input through the CLI and the Python API gets the same
refusal, before any work is done (issue 21). Real scans, the tiny golden network."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import layerseg

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = str(HERE / "data" / "tiny-brain.json")


def _cli(layerseg_bin: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(layerseg_bin), *map(str, args)], capture_output=True, text=True)


def _shifted(src: Path, out: Path, shift_mm: tuple[float, float, float]) -> Path:
    """A copy of `src` whose grid is moved by `shift_mm` (same voxels, shape, size and axes)."""
    img = nib.load(src)
    affine = img.affine.copy()
    affine[:3, 3] += shift_mm
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), out)
    return out


@pytest.fixture(scope="module")
def itk(sample_dirs: dict[str, Path]) -> tuple[Path, Path]:
    return sample_dirs["itk_t1"] / "image.nii.gz", sample_dirs["itk_t1"] / "brain.nii.gz"


def test_an_organ_mask_on_a_shifted_grid_is_refused_by_both_faces(
    itk: tuple[Path, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    scan, brain = itk
    shifted = _shifted(brain, tmp_path / "brain_shifted.nii.gz", (30.0, 0.0, 0.0))
    expected = "on another grid than the scan: origin shifted by (30.000, 0.000, 0.000) mm"
    proc = _cli(
        layerseg_bin, "segment", scan, "--out", tmp_path / "m.nii.gz", "--model", MODEL,
        "--profile", PROFILE, "--organ-mask", shifted,
    )  # fmt: skip
    assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
    assert "Resample" in proc.stderr
    with pytest.raises(layerseg.LayerSegError, match=r"origin shifted by \(30\.000, 0\.000"):
        layerseg.segment(scan, model=MODEL, profile=PROFILE, organ_mask=shifted)
    assert not (tmp_path / "m.nii.gz").exists()


def test_a_truth_on_a_shifted_grid_is_refused_by_both_faces(
    itk: tuple[Path, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    _, brain = itk
    shifted = _shifted(brain, tmp_path / "truth.nii.gz", (0.0, 0.0, -50.0))
    proc = _cli(layerseg_bin, "evaluate", "--pred", brain, "--truth", shifted)
    assert proc.returncode == 1, proc.stderr
    assert "origin shifted by (0.000, 0.000, 50.000) mm" in proc.stderr, proc.stderr
    with pytest.raises(layerseg.LayerSegError, match=r"origin shifted by \(0\.000, 0\.000, 50"):
        layerseg.evaluate(brain, shifted)
    # Arrays carry no grid: they are taken to be on the truth's grid, as before.
    mask = np.asarray(nib.load(brain).dataobj)
    assert layerseg.evaluate(mask, shifted)["dice"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("threshold", 5.0, "threshold 5 is outside [0, 1]"),
        ("threshold", -0.1, "threshold -0.1 is outside [0, 1]"),
        ("overlap", 1.5, "overlap 1.5 is outside [0, 1)"),
        ("overlap", 1.0, "overlap 1 is outside [0, 1)"),
    ],
)
def test_nonsense_settings_are_refused_by_both_faces(
    itk: tuple[Path, Path],
    layerseg_bin: Path,
    tmp_path: Path,
    flag: str,
    value: float,
    message: str,
) -> None:
    scan, _ = itk
    out = tmp_path / "m.nii.gz"
    proc = _cli(
        layerseg_bin, "segment", scan, "--out", out, "--model", MODEL, "--profile", PROFILE,
        f"--{flag}={value}",
    )  # fmt: skip
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "progress" not in proc.stderr and not out.exists()
    with pytest.raises(layerseg.LayerSegError) as info:
        layerseg.segment(scan, model=MODEL, profile=PROFILE, out=out, **{flag: value})
    assert message in str(info.value)
    assert not out.exists()


def test_a_truth_label_absent_from_the_file_is_refused(
    sample_dirs: dict[str, Path], layerseg_bin: Path
) -> None:
    truth = sample_dirs["mrbraintumor2"] / "label.nii.gz"
    proc = _cli(layerseg_bin, "evaluate", "--pred", truth, "--truth", truth, "--truth-label", 7)
    assert proc.returncode == 1
    assert "--truth-label 7 does not occur in it" in proc.stderr, proc.stderr
    assert "labels present" in proc.stderr


def test_python_warns_like_the_cli_when_a_ct_meets_an_mri_profile(
    sample_dirs: dict[str, Path],
) -> None:
    ct = sample_dirs["totalseg_ct"] / "image.nii.gz"
    with pytest.warns(UserWarning, match="profile"):
        layerseg.segment(ct, model=MODEL, profile=PROFILE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layerseg.segment(sample_dirs["itk_t1"] / "image.nii.gz", model=MODEL, profile=PROFILE)


def test_an_unknown_profile_is_named_with_the_built_in_ones(
    itk: tuple[Path, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """`--profile brain` blamed a missing brain.safetensors; now it lists the profiles."""
    scan, _ = itk
    proc = _cli(layerseg_bin, "segment", scan, "--out", tmp_path / "m.nii.gz", "--profile", "brain")
    assert proc.returncode == 1
    assert "no built-in profile" in proc.stderr and "brain-mri, liver-ct" in proc.stderr
    assert "safetensors" not in proc.stderr
    with pytest.raises(layerseg.LayerSegError, match="brain-mri, liver-ct"):
        layerseg.segment(scan, profile="brain")


def test_help_gives_every_default_of_segment(layerseg_bin: Path) -> None:
    text = _cli(layerseg_bin, "segment", "--help").stdout
    for needle in ("auto (CUDA when a GPU is visible", "0.5 for the", "0.25", "[0, 1)"):
        assert needle in text, needle
