"""One validation layer: the same bad input through the CLI, the Python API and the MONAI
transforms gets the same refusal (or warning), before any work is done (issue 21). Real scans,
the tiny golden network."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.compose import Compose
from monai.transforms.io.array import LoadImage
from monai.transforms.utility.array import EnsureChannelFirst

import layerseg
from layerseg.monai import (
    BrainExtraction,
    BrainExtractiond,
    KeepInRegiond,
    LayerRule,
    RandTumourSynthesis,
    RandTumourSynthesisd,
    TumourMask,
    TumourMaskd,
)

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


# --- The MONAI transforms give the same refusals and warnings (issue 21) -----------------------


def _load(*paths: Path) -> list[Any]:
    """Channel-first MetaTensors with their affines and file names, as a bundle loads them."""
    load = Compose([LoadImage(reader="NibabelReader", image_only=True), EnsureChannelFirst()])
    return [load(str(p)) for p in paths]


def _after(text: str, start: str) -> str:
    """The message from `start` to the end of its line."""
    assert start in text, text
    return text[text.index(start) :].splitlines()[0]


GRID = "it is on another grid than the scan: "


def test_a_brain_mask_shifted_30_mm_is_refused_alike_by_cli_python_and_monai(
    itk: tuple[Path, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """The MONAI transforms took a mask on another grid as it came (a tumour placed, a search
    region cut, 30 mm off); they now refuse it with the CLI's words: field, amount, remedy."""
    scan, brain = itk
    shifted = _shifted(brain, tmp_path / "brain_shifted.nii.gz", (30.0, 0.0, 0.0))
    proc = _cli(
        layerseg_bin, "segment", scan, "--out", tmp_path / "m.nii.gz", "--model", MODEL,
        "--profile", PROFILE, "--organ-mask", shifted,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    expected = _after(proc.stderr, GRID)
    assert "origin shifted by (30.000, 0.000, 0.000) mm" in expected and "Resample" in expected
    with pytest.raises(layerseg.LayerSegError) as python:
        layerseg.segment(scan, model=MODEL, profile=PROFILE, organ_mask=shifted)
    assert _after(str(python.value), GRID) == expected

    image, good, bad = _load(scan, brain, shifted)
    synth = RandTumourSynthesisd("image", profile=PROFILE, organ_key="brain", prob=1.0)
    with pytest.raises(layerseg.LayerSegError) as monai:
        synth({"image": image, "brain": bad})
    assert _after(str(monai.value), GRID) == expected
    assert str(monai.value).startswith(f"organ_mask ({shifted}): ")
    # Refused whatever the draw: prob 0 blends nothing but checks the same.
    with pytest.raises(layerseg.LayerSegError, match="origin shifted by"):
        RandTumourSynthesis(profile=PROFILE, prob=0.0)(image, organ_mask=bad)

    # The search region and the layer rule, on the scan's grid after Invertd.
    pred = image.clone()
    with pytest.raises(layerseg.LayerSegError) as keep:
        KeepInRegiond("pred", region_key="brain", exact_key=None)({"pred": pred, "brain": bad})
    assert _after(str(keep.value), "origin shifted") == _after(expected, "origin shifted")
    assert str(keep.value).startswith(f"region 'brain' ({shifted}): it is on another grid than")
    rule = LayerRule(PROFILE, residual_sign="brighter")
    with pytest.raises(layerseg.LayerSegError, match=r"residual .*origin shifted by \(30\.000"):
        rule(pred > 1e9, residual=bad.float())
    with pytest.raises(layerseg.LayerSegError, match=r"region .*origin shifted by \(30\.000"):
        rule(pred > 1e9, residual=pred, region=bad)

    # On the same grid, or without an affine (taken to be on the image's), all goes through.
    out = synth({"image": image, "brain": good})
    assert out["tumour_mask"].shape == image.shape
    RandTumourSynthesis(profile=PROFILE, prob=0.0)(image, organ_mask=np.asarray(bad))
    KeepInRegiond("pred", region_key="brain", exact_key=None)({"pred": pred, "brain": good})


def test_another_voxel_size_and_shape_are_named_alike_by_python_and_monai(
    itk: tuple[Path, Path], tmp_path: Path
) -> None:
    scan, brain = itk
    img = nib.load(brain)
    coarse = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine @ np.diag([2, 1, 1, 1])), coarse)
    cut = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), cut)
    image, coarse_t, cut_t = _load(scan, coarse, cut)
    for path, mask, field in ((coarse, coarse_t, "voxel size "), (cut, cut_t, "shape ")):
        with pytest.raises(layerseg.LayerSegError) as python:
            layerseg.segment(scan, model=MODEL, profile=PROFILE, organ_mask=path)
        with pytest.raises(layerseg.LayerSegError) as monai:
            RandTumourSynthesis(profile=PROFILE)(image, organ_mask=mask)
        expected = _after(str(python.value), GRID)
        assert expected.startswith(GRID + field), expected
        assert _after(str(monai.value), GRID) == expected


@pytest.mark.parametrize("threshold", [5.0, -0.1])
def test_a_threshold_outside_0_1_is_refused_alike_by_cli_python_and_monai(
    itk: tuple[Path, Path], layerseg_bin: Path, tmp_path: Path, threshold: float
) -> None:
    scan, _ = itk
    proc = _cli(
        layerseg_bin, "segment", scan, "--out", tmp_path / "m.nii.gz", "--model", MODEL,
        "--profile", PROFILE, f"--threshold={threshold}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    expected = _after(proc.stderr, "invalid configuration: threshold")
    assert f"threshold {threshold:g} is outside [0, 1]" in expected
    with pytest.raises(layerseg.LayerSegError) as python:
        layerseg.segment(scan, model=MODEL, profile=PROFILE, threshold=threshold)
    assert str(python.value) == expected
    with pytest.raises(layerseg.LayerSegError) as monai:
        TumourMaskd("pred", threshold=threshold, profile=PROFILE)
    assert str(monai.value) == expected


def test_the_threshold_transform_thresholds_as_segment_does() -> None:
    p = MetaTensor(torch.tensor([0.2, 0.5, 0.7]).reshape(1, 3, 1, 1), affine=torch.eye(4) * 2)
    out = TumourMaskd("pred", profile=PROFILE)({"pred": p})["pred"]  # the profile's 0.5
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, p.affine)
    assert out.flatten().tolist() == [0.0, 1.0, 1.0]
    assert TumourMask(0.6)(p.numpy()).flatten().tolist() == [0.0, 0.0, 1.0]
    assert TumourMask(0.0)(p).all() and TumourMask(1.0)(p).sum() == 0


def test_a_ct_under_an_mri_profile_warns_alike_in_cli_python_and_monai(
    sample_dirs: dict[str, Path], itk: tuple[Path, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    ct = sample_dirs["totalseg_ct"] / "image.nii.gz"
    proc = _cli(
        layerseg_bin, "segment", ct, "--out", tmp_path / "m.nii.gz", "--model", MODEL,
        "--profile", PROFILE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = _after(proc.stderr, "values go down to")
    assert "like a CT in Hounsfield units, but profile tiny-brain is for MRI" in expected
    with pytest.warns(UserWarning) as python:
        layerseg.segment(ct, model=MODEL, profile=PROFILE)
    assert [str(w.message).endswith(expected) for w in python] == [True]
    (image,) = _load(ct)
    extract = BrainExtractiond("image", enabled=False, profile=PROFILE)
    with pytest.warns(UserWarning) as monai:
        extract({"image": image})
    assert [str(w.message) for w in monai] == [f"{ct}: {expected}"]
    # An MRI under the same profile, or a CT with the check off, warns of nothing.
    (mri,) = _load(itk[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BrainExtraction(enabled=False, profile=PROFILE)(mri)
        BrainExtraction(enabled=False)(image)
