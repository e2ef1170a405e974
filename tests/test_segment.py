"""layerseg.segment and layerseg.evaluate from Python on real scans (the tiny golden network)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import layerseg

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = str(HERE / "data" / "tiny-brain.json")


@pytest.mark.parametrize("name", ["mrbraintumor2", "colin27", "mrhead"])
def test_outputs_land_on_the_input_grid(
    sample_dirs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    src = sample_dirs[name] / "image.nii.gz"
    out = tmp_path / "mask.nii.gz"
    calls: list[tuple[str, int, int]] = []
    result = layerseg.segment(
        src,
        model=MODEL,
        profile=PROFILE,
        out=out,
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    ref = nib.load(src)
    for key in ("mask", "probability", "healthy", "tumour"):
        assert result[key].shape == ref.shape, key
    assert result["mask"].dtype == np.uint8
    assert set(np.unique(result["mask"])) <= {0, 1}
    assert np.all((result["probability"] >= 0) & (result["probability"] <= 1))
    written = nib.load(out)
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), result["mask"])
    assert calls and calls[-1][1] == calls[-1][2], calls


def test_array_input_equals_path_input(sample_dirs: dict[str, Path]) -> None:
    src = sample_dirs["colin27"] / "image.nii.gz"
    img = nib.load(src)
    from_path = layerseg.segment(src, model=MODEL, profile=PROFILE)
    from_array = layerseg.segment(np.asarray(img.dataobj), img.affine, model=MODEL, profile=PROFILE)
    np.testing.assert_array_equal(from_path["probability"], from_array["probability"])


def test_cancel_from_the_progress_callback(sample_dirs: dict[str, Path]) -> None:
    def stop(what: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        layerseg.segment(
            sample_dirs["colin27"] / "image.nii.gz", model=MODEL, profile=PROFILE, progress=stop
        )


def test_bad_inputs_raise_value_errors(sample_dirs: dict[str, Path]) -> None:
    img = nib.load(sample_dirs["colin27"] / "image.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float32)
    with pytest.raises(ValueError, match="3D"):
        layerseg.segment(data[..., 0], img.affine, model=MODEL, profile=PROFILE)
    bad = data.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layerseg.segment(bad, img.affine, model=MODEL, profile=PROFILE)
    with pytest.raises(ValueError, match="another grid"):
        layerseg.segment(
            data, img.affine, model=MODEL, profile=PROFILE, organ_mask=np.ones((5, 5, 5), np.uint8)
        )
    # The default-width brain-mri network does not fit the tiny weights.
    with pytest.raises(ValueError, match=r"do not fit|mismatch|shape"):
        layerseg.segment(data, img.affine, model=MODEL, profile="brain-mri")


def test_evaluate_on_paths_and_arrays(sample_dirs: dict[str, Path]) -> None:
    label = sample_dirs["mrbraintumor2"] / "label.nii.gz"
    perfect = layerseg.evaluate(label, label)
    assert perfect["dice"] == 1.0 and perfect["hd95_mm"] == 0.0
    truth = np.asarray(nib.load(label).dataobj)
    empty = layerseg.evaluate(np.zeros_like(truth), truth, spacing=(0.9375, 0.9375, 1.2))
    assert empty["dice"] == 0.0 and empty["hd95_mm"] is None
    assert empty["lesions_missed"] == empty["lesions"] > 0
    both_empty = layerseg.evaluate(np.zeros_like(truth), np.zeros_like(truth), spacing=(1, 1, 1))
    assert both_empty["dice"] == 1.0 and both_empty["hd95_mm"] is None
