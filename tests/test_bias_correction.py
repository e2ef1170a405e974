"""N4 bias correction (`layerseg_core::bias`) on a real head scan, from Python and as the MONAI
transform the bundle runs; `benchmarks/bias_correction.py` measures it against SimpleITK's N4.
The built-in profiles do not correct by default (README, "Bias correction"), so the tests use
the brain profile with the section added, at ITK's defaults."""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from scipy import ndimage

import layerseg
from layerseg._layerseg import correct_bias, profile_json
from layerseg.monai import BiasCorrectiond

F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def colin(sample_dirs: dict[str, Path]) -> tuple[F32, npt.NDArray[np.bool_]]:
    """Colin27 and its brain mask, cropped to the mask's box and shrunk to 64^3."""
    folder = sample_dirs["colin27"]
    image = layerseg.read_image(folder / "image.nii.gz")[0]
    brain = layerseg.read_labels(folder / "brain.nii.gz")[0] > 0
    box = ndimage.find_objects(brain.astype(np.uint8))[0]
    zoom = [64 / n for n in image[box].shape]
    image = ndimage.zoom(image[box], zoom, order=1).astype(np.float32)
    brain = ndimage.zoom(brain[box].astype(np.uint8), zoom, order=0) > 0
    return np.maximum(image, 0.0), brain


@pytest.fixture(scope="module")
def corrected_profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    profile = json.loads(profile_json("brain-mri"))
    profile["inference"]["bias_correction"] = {}
    path = tmp_path_factory.mktemp("profile") / "brain-mri-n4.json"
    path.write_text(json.dumps(profile))
    return str(path)


def field(shape: tuple[int, ...]) -> F32:
    """A smooth field brighter towards one corner, 0.78 to 1.28 over the grid."""
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    return np.exp(0.1 * x + 0.08 * y * y - 0.07 * x * z).astype(np.float32)


def log_std(a: F32, b: F32, inside: npt.NDArray[np.bool_]) -> float:
    ok = inside & (a > 0) & (b > 0)
    return float(np.std(np.log(a[ok]) - np.log(b[ok])))


def test_a_drawn_field_is_undone_on_a_real_head(
    colin: tuple[F32, npt.NDArray[np.bool_]], corrected_profile: str
) -> None:
    image, brain = colin
    drawn = field(image.shape)
    reference, own = correct_bias(image, brain, corrected_profile)
    corrected, estimated = correct_bias(image * drawn, brain, corrected_profile)
    assert own is not None and estimated is not None
    before = log_std(image * drawn, image, brain)
    after = log_std(corrected, reference, brain)
    assert before > 0.05
    assert after < 0.1 * before, (after, before)
    # The field's log has mean 0 in the brain, and the input is not touched.
    assert abs(float(np.log(estimated[brain & (image > 0)]).mean())) < 1e-3
    assert not np.shares_memory(corrected, image)


def test_the_monai_transform_is_the_same_correction(
    colin: tuple[F32, npt.NDArray[np.bool_]], corrected_profile: str
) -> None:
    image, brain = colin
    biased = image * field(image.shape)
    data: dict[Hashable, torch.Tensor] = {
        "image": torch.from_numpy(biased[None]),
        "brain": torch.from_numpy(brain[None]),
    }
    transform = BiasCorrectiond("image", mask_key="brain", profile=corrected_profile)
    out = BiasCorrectiond("image", mask_key="brain", profile=corrected_profile, field_key="field")(
        data
    )
    expected, estimated = correct_bias(biased, brain, corrected_profile)
    assert isinstance(out["image"], torch.Tensor)
    np.testing.assert_array_equal(out["image"][0].numpy(), expected)
    assert estimated is not None
    np.testing.assert_array_equal(out["field"][0].numpy(), estimated)
    # A profile without the section corrects nothing.
    same = BiasCorrectiond("image", mask_key="brain")(data)
    np.testing.assert_array_equal(same["image"][0].numpy(), biased)
    with pytest.raises(ValueError, match="grid of 'brain'"):
        transform({"image": data["image"], "brain": data["brain"][:, :32]})


def test_the_public_function_takes_settings_and_checks_them(
    colin: tuple[F32, npt.NDArray[np.bool_]], corrected_profile: str
) -> None:
    image, brain = colin
    biased = image * field(image.shape)
    out = layerseg.correct_bias(biased, brain)
    expected, _ = correct_bias(biased, brain, corrected_profile)
    np.testing.assert_array_equal(out["image"], expected)
    one = layerseg.correct_bias(biased, brain, settings={"levels": 1})
    assert one["field"] is not None and not np.array_equal(one["image"], expected)
    # The built-in profile corrects nothing; a profile file with the section does.
    assert layerseg.correct_bias(biased, brain, profile="brain-mri")["field"] is None
    by_file = layerseg.correct_bias(biased, brain, profile=corrected_profile)
    np.testing.assert_array_equal(by_file["image"], expected)
    with pytest.raises(layerseg.LayerSegError, match="bias_correction"):
        layerseg.correct_bias(biased, brain, settings={"levels": 0})
    with pytest.raises(layerseg.LayerSegError, match="unknown field"):
        layerseg.correct_bias(biased, brain, settings={"level": 2})
    with pytest.raises(ValueError, match="mask must be a 3D array"):
        layerseg.correct_bias(biased, brain[0])
