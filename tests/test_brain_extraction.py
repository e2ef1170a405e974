"""Automatic brain extraction and the layer rule through the CLI and Python (issue 16).

The network is the tiny golden one, under a copy of the tiny test profile that asks for brain
extraction and a layer rule, so every run takes seconds; the brain extractor is the shipped one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import layerseg
from layerseg.monai import fill_enclosed

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    tiny = json.loads((HERE / "data" / "tiny-brain.json").read_text())
    tiny["name"] = "tiny-brain-extraction"
    # The golden network's mask is close to one half everywhere: a low threshold gives it a
    # mask to cut, and a margin of 0 keeps exactly the voxels whose residual (image minus
    # healthy layer) is above its median in the brain.
    tiny["inference"]["threshold"] = 0.01
    tiny["inference"]["brain_extraction"] = True
    tiny["inference"]["layer_rule"] = {
        "residual_sign": "brighter",
        "margin": 0.0,
        "min_lesion_mm3": 0.0,
    }
    path = tmp_path_factory.mktemp("profile") / "tiny-brain-extraction.json"
    path.write_text(json.dumps(tiny))
    return str(path)


def _cli(layerseg_bin: Path, profile: str, *args: object) -> subprocess.CompletedProcess[str]:
    cmd = [str(layerseg_bin), "segment", *map(str, args), "--model", str(MODEL)]
    cmd += ["--profile", profile, "--device", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True)


def _voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_auto_is_the_default_and_keeps_the_mask_in_the_saved_brain(
    sample_dirs: dict[str, Path], layerseg_bin: Path, profile: str, tmp_path: Path
) -> None:
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    proc = _cli(layerseg_bin, profile, scan, "--out", tmp_path / "auto.nii.gz",
                "--save-organ-mask", tmp_path / "brain.nii.gz")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    brain = _voxels(tmp_path / "brain.nii.gz") > 0
    reference = _voxels(sample_dirs["itk_t1"] / "brain.nii.gz") > 0
    dice = 2 * (brain & reference).sum() / (brain.sum() + reference.sum())
    assert dice > 0.95, dice
    mask = _voxels(tmp_path / "auto.nii.gz") > 0
    assert mask.any() and not (mask & ~brain).any()

    proc = _cli(layerseg_bin, profile, scan, "--out", tmp_path / "none.nii.gz",
                "--organ-mask", "none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    whole = _voxels(tmp_path / "none.nii.gz") > 0
    assert (whole & ~brain).sum() > 1000, "without extraction the search leaves the brain"


def test_a_mask_file_wins_over_extraction(
    sample_dirs: dict[str, Path], layerseg_bin: Path, profile: str, tmp_path: Path
) -> None:
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    reference = nib.load(sample_dirs["itk_t1"] / "brain.nii.gz")
    half = np.asarray(reference.dataobj).copy()
    half[: half.shape[0] // 2] = 0
    organ = tmp_path / "half.nii.gz"
    nib.save(nib.Nifti1Image(half, reference.affine, reference.header), organ)
    proc = _cli(layerseg_bin, profile, scan, "--out", tmp_path / "m.nii.gz",
                "--organ-mask", organ, "--save-organ-mask", tmp_path / "used.nii.gz")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(_voxels(tmp_path / "used.nii.gz"), half)
    assert not (_voxels(tmp_path / "m.nii.gz")[: half.shape[0] // 2]).any()


def test_an_implausible_brain_warns_names_the_file_and_goes_on_without_it(
    sample_dirs: dict[str, Path], layerseg_bin: Path, profile: str, tmp_path: Path
) -> None:
    # The same head with voxels a quarter the size: a brain of about 1.5 / 64 L.
    src = nib.load(sample_dirs["itk_t1"] / "image.nii.gz")
    affine = src.affine.copy()
    affine[:3, :3] /= 4
    scan = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj), affine), scan)
    proc = _cli(layerseg_bin, profile, scan, "--out", tmp_path / "m.nii.gz",
                "--save-organ-mask", tmp_path / "brain.nii.gz")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{scan}: brain extraction gave 0.02 L, outside the 0.8 to 2.2 L" in proc.stderr
    assert "segmenting without a brain mask" in proc.stderr
    assert (tmp_path / "m.nii.gz").exists()
    assert not (tmp_path / "brain.nii.gz").exists()
    with pytest.warns(UserWarning, match="0.02 L"):
        result = layerseg.segment(scan, model=MODEL, profile=profile, device="cpu")
    assert "organ_mask" not in result


def test_a_scan_that_cuts_the_brain_keeps_the_part_it_holds(
    sample_dirs: dict[str, Path], layerseg_bin: Path, profile: str, tmp_path: Path
) -> None:
    """Partial coverage, as clinical 2D acquisitions have it: 20 axial slices (3 mm, ITK T1 is
    LSA) through the middle of the brain hold well under the 0.8 L of a whole adult brain, yet
    the mask reaches the scan's faces, so it is kept by every face, not taken for a failure."""
    src = nib.load(sample_dirs["itk_t1"] / "image.nii.gz")
    reference = _voxels(sample_dirs["itk_t1"] / "brain.nii.gz") > 0
    planes = np.flatnonzero(reference.any(axis=(0, 2)))
    first = (planes[0] + planes[-1]) // 2 - 10
    part = src.slicer[:, first : first + 20, :]
    scan = tmp_path / "slab.nii.gz"
    nib.save(part, scan)
    proc = _cli(layerseg_bin, profile, scan, "--out", tmp_path / "m.nii.gz",
                "--save-organ-mask", tmp_path / "brain.nii.gz")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "brain extraction gave" not in proc.stderr, proc.stderr
    brain = _voxels(tmp_path / "brain.nii.gz") > 0
    truth = reference[:, first : first + 20, :]
    dice = 2 * (brain & truth).sum() / (brain.sum() + truth.sum())
    assert dice > 0.95, dice  # 0.98 measured (the README's brain-extraction table)
    mask = _voxels(tmp_path / "m.nii.gz") > 0
    assert mask.any() and not (mask & ~brain).any()

    found = layerseg.extract_brain(scan, device="cpu")
    assert found["cut_by_scan"] and found["plausible"], found["implausible"]
    assert found["litres"] < 0.8
    np.testing.assert_array_equal(found["mask"] > 0, brain)


def test_the_layer_rule_keeps_only_voxels_brighter_than_the_healthy_layer_typically_is(
    sample_dirs: dict[str, Path], profile: str
) -> None:
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    ruled = layerseg.segment(scan, model=MODEL, profile=profile, device="cpu")
    raw = layerseg.segment(scan, model=MODEL, profile=profile, device="cpu", raw_mask=True)
    np.testing.assert_array_equal(ruled["organ_mask"], raw["organ_mask"])
    np.testing.assert_array_equal(ruled["residual"], raw["residual"])
    kept, network = ruled["mask"] > 0, raw["mask"] > 0
    assert kept.sum() < network.sum()
    # Departures count from the median residual inside the region searched (the brain); what
    # the kept voxels enclose inside the brain is filled.
    brain = raw["organ_mask"] > 0
    typical = np.median(raw["residual"][brain])
    departing = network & (raw["residual"] - typical > 0)
    np.testing.assert_array_equal(kept, fill_enclosed(departing) & brain)
    assert (kept & ~departing).any(), "the rule's holes are filled"


def test_python_organ_mask_choices(sample_dirs: dict[str, Path], profile: str) -> None:
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    auto = layerseg.segment(scan, model=MODEL, profile=profile, device="cpu")
    brain = layerseg.extract_brain(scan, device="cpu")
    assert brain["plausible"] and 1.3 < brain["litres"] < 1.7
    assert not brain["cut_by_scan"], "the whole head holds its brain whole"
    np.testing.assert_array_equal(auto["organ_mask"], brain["mask"])
    assert "organ_mask" not in layerseg.segment(
        scan, model=MODEL, profile=profile, device="cpu", organ_mask="none"
    )
    # None is "not given": the default, as in the CLI and finetune (a wrapper forwarding an
    # optional mask must not switch brain extraction off).
    unset = layerseg.segment(scan, model=MODEL, profile=profile, device="cpu", organ_mask=None)
    np.testing.assert_array_equal(unset["organ_mask"], brain["mask"])


def test_both_python_faces_read_organ_mask_alike(tmp_path: Path) -> None:
    """`layerseg.segment` and `layerseg.monai.segment` read `organ_mask` through one helper:
    None and "auto" extract the brain, "none" searches the whole scan, a file or array wins."""
    from layerseg.api import _organ_choice

    assert _organ_choice(None) == _organ_choice("auto") == (True, None, None)
    assert _organ_choice("none") == (False, None, None)
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 2:4, 3:5] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    layerseg.write_labels(tmp_path / "organ.nii.gz", mask, affine)
    extract, organ, organ_affine = _organ_choice(tmp_path / "organ.nii.gz")
    assert not extract and organ_affine is not None
    np.testing.assert_array_equal(organ, mask)
    np.testing.assert_allclose(organ_affine, affine)
    extract, organ, organ_affine = _organ_choice(mask.astype(bool))
    assert not extract and organ_affine is None and organ is not None and organ.dtype == np.uint8
