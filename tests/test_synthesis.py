"""Tumour synthesis from Python: the numpy API and the MONAI transform inside a real Compose."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from layerseg._layerseg import LayerSegError, profile_json, synthesize
from layerseg.monai import RandTumourSynthesis, RandTumourSynthesisd


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine)


def test_numpy_api_layers_and_determinism(sample_dirs: dict[str, Path]) -> None:
    image, affine = _load(sample_dirs["totalseg_ct"] / "image.nii.gz")
    liver = np.asarray(nib.load(str(sample_dirs["totalseg_ct"] / "liver.nii.gz")).dataobj)
    # The tumour recipe alone; the acquisition randomisation has its own test below.
    a = synthesize(image, affine, profile="liver-ct", organ_mask=liver, seed=4, acquisition=False)
    b = synthesize(image, affine, profile="liver-ct", organ_mask=liver, seed=4, acquisition=False)
    for key in ("image", "healthy", "tumour", "mask"):
        assert a[key].shape == image.shape
        np.testing.assert_array_equal(a[key], b[key])
    assert a["mask"].dtype == np.uint8 and a["mask"].any()
    assert not (a["mask"].astype(bool) & (liver == 0)).any()
    np.testing.assert_array_equal(a["healthy"], image)
    params = json.loads(a["params"])
    assert params["profile"] == "liver-ct" and params["seed"] == 4
    assert "acquisition" not in params
    drop = image - a["image"]
    assert drop.min() >= -1e-3 and drop.max() <= params["intensity"]["drop_hu"] + 1e-3


def _every_step(name: str, folder: Path) -> str:
    """A copy of a built-in profile whose acquisition steps all happen."""
    profile = json.loads(profile_json(name))
    for step in profile["synthesis"]["acquisition"].values():
        if isinstance(step, dict):
            step["probability"] = 1.0
    path = folder / f"{name}-every-step.json"
    path.write_text(json.dumps(profile))
    return str(path)


def test_numpy_api_acquisition(sample_dirs: dict[str, Path], tmp_path: Path) -> None:
    image, affine = _load(sample_dirs["totalseg_ct"] / "image.nii.gz")
    liver = np.asarray(nib.load(str(sample_dirs["totalseg_ct"] / "liver.nii.gz")).dataobj)
    profile = _every_step("liver-ct", tmp_path)
    a = synthesize(image, affine, profile=profile, organ_mask=liver, seed=4)
    b = synthesize(image, affine, profile=profile, organ_mask=liver, seed=4)
    plain = synthesize(image, affine, profile=profile, organ_mask=liver, seed=4, acquisition=False)
    for key in ("image", "healthy", "tumour", "mask"):
        np.testing.assert_array_equal(a[key], b[key])
    params = json.loads(a["params"])
    acq = params.pop("acquisition")
    # The same tumour as without the randomisation, every drawn value recorded.
    assert params == json.loads(plain["params"])
    assert set(acq) >= {"slice_axis", "slice_thickness", "contrast", "noise", "coverage"}
    assert 1.0 <= acq["slice_thickness"]["thickness_mm"] <= 5.0
    # The healthy layer is degraded as the image is: equal wherever no tumour is near.
    assert not np.array_equal(a["healthy"], image)
    far = np.ones(image.shape, bool)
    idx = np.argwhere(a["mask"] | plain["mask"])
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    far[lo[0] : hi[0], lo[1] : hi[1], :] = False
    far[:, lo[1] : hi[1], lo[2] : hi[2]] = False
    far[lo[0] : hi[0], :, lo[2] : hi[2]] = False
    np.testing.assert_array_equal(a["image"][far], a["healthy"][far])
    band = [slice(None)] * 3
    axis, cov = acq["slice_axis"], acq["coverage"]
    band[axis] = slice(cov["first"], cov["end"])
    outside = np.ones(image.shape, bool)
    outside[tuple(band)] = False
    assert (a["image"][outside] == -1024).all() and not a["mask"][outside].any()
    inside = a["mask"].astype(bool)
    np.testing.assert_array_equal(a["tumour"][inside], a["image"][inside])


def test_numpy_api_errors(sample_dirs: dict[str, Path]) -> None:
    image, affine = _load(sample_dirs["colin27"] / "image.nii.gz")
    with pytest.raises(LayerSegError, match="organ mask: is empty"):
        synthesize(image, affine, organ_mask=np.zeros(image.shape, np.uint8))
    with pytest.raises(
        LayerSegError, match="another grid than the healthy scan: shape 181x217x181 vs 4x4x4"
    ):
        synthesize(image, affine, organ_mask=np.ones((4, 4, 4), np.uint8))
    with pytest.raises(LayerSegError, match="all voxels are zero"):
        synthesize(image, affine, texture=np.zeros((8, 8, 8), np.float32))
    with pytest.raises(LayerSegError, match="no built-in profile"):
        synthesize(image, affine, profile="kidney-mri")


def _pipeline(
    seed: int, prob: float = 1.0, acquisition: bool = False, profile: str = "brain-mri"
) -> Compose:
    keys = ["image", "brain", "texture"]
    return Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            RandTumourSynthesisd(
                "image",
                profile=profile,
                organ_key="brain",
                texture_key="texture",
                params_key="synthesis",
                prob=prob,
                acquisition=acquisition,
            ),
        ]
    ).set_random_state(seed)


def test_monai_compose_on_real_scans(sample_dirs: dict[str, Path]) -> None:
    case = {
        "image": str(sample_dirs["colin27"] / "image.nii.gz"),
        "brain": str(sample_dirs["colin27"] / "brain.nii.gz"),
        "texture": str(sample_dirs["mrbraintumor2"] / "image.nii.gz"),
    }
    out = _pipeline(7)(case)
    image, mask = out["image"], out["tumour_mask"]
    assert isinstance(image, MetaTensor) and image.shape == (1, 181, 217, 181)
    assert isinstance(mask, MetaTensor) and mask.dtype == torch.uint8
    assert torch.allclose(image.affine, out["brain"].affine)
    brain = out["brain"] > 0
    assert mask.any() and not (mask.bool() & ~brain).any()
    inside = mask.bool()
    assert torch.equal(out["image_tumour"][inside], image[inside])
    assert not out["image_tumour"][~inside].any()
    assert 1.0 <= out["synthesis"]["intensity"]["ratio"] <= 3.0

    again = _pipeline(7)(case)
    assert torch.equal(again["image"], image) and torch.equal(again["tumour_mask"], mask)
    other = _pipeline(8)(case)
    assert not torch.equal(other["tumour_mask"], mask)


def test_monai_transform_applies_the_acquisition(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    case = {
        "image": str(sample_dirs["colin27"] / "image.nii.gz"),
        "brain": str(sample_dirs["colin27"] / "brain.nii.gz"),
        "texture": str(sample_dirs["mrbraintumor2"] / "image.nii.gz"),
    }
    profile = _every_step("brain-mri", tmp_path)
    on = _pipeline(5, acquisition=True, profile=profile)(case)
    off = _pipeline(5, acquisition=False, profile=profile)(case)
    acq = on["synthesis"]["acquisition"]
    assert {"slice_thickness", "gamma", "bias_field", "noise", "coverage"} <= set(acq)
    assert "acquisition" not in off["synthesis"]
    assert off["synthesis"]["tumours"] == on["synthesis"]["tumours"]
    source = LoadImaged("image", image_only=True)(dict(case))["image"]
    assert torch.equal(off["image_healthy"][0], source)
    assert not torch.equal(on["image_healthy"][0], source)
    # Background far from the head (no slab reaches anatomy) stays 0 in both layers: no noise.
    for layer in ("image", "image_healthy"):
        assert not on[layer][0][:15, :15, :15].any() and not on[layer][0][-15:, -15:, -15:].any()
    mask = on["tumour_mask"].bool()
    assert mask.any()
    assert torch.equal(on["image_tumour"][mask], on["image"][mask])
    again = _pipeline(5, acquisition=True, profile=profile)(case)
    assert torch.equal(again["image"], on["image"])
    assert torch.equal(again["image_healthy"], on["image_healthy"])


def test_monai_prob_zero_passes_through(sample_dirs: dict[str, Path]) -> None:
    case = {
        "image": str(sample_dirs["colin27"] / "image.nii.gz"),
        "brain": str(sample_dirs["colin27"] / "brain.nii.gz"),
        "texture": str(sample_dirs["mrbraintumor2"] / "image.nii.gz"),
    }
    out = _pipeline(1, prob=0.0)(case)
    assert torch.equal(out["image"], out["image_healthy"])
    assert not out["tumour_mask"].any() and out["synthesis"] is None


def test_array_transform_on_numpy() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((1, 40, 40, 40), np.float32)
    img[:, 5:35, 5:35, 5:35] = 100 + rng.normal(0, 5, (1, 30, 30, 30)).astype(np.float32)
    t = RandTumourSynthesis(profile="brain-mri", acquisition=False)
    t.set_random_state(3)
    image, healthy, _tumour, mask = t(img, affine=np.eye(4))
    assert isinstance(image, np.ndarray) and image.shape == img.shape
    np.testing.assert_array_equal(healthy, img)
    assert mask.dtype == np.uint8 and mask.any()
    assert t.params is not None and t.params["tumours"][0]["base_radius_mm"] > 0
