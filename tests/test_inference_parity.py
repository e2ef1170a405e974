"""Our sliding-window inference and metrics against MONAI's and scipy's on the same inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet
from safetensors.torch import load_file
from scipy import ndimage

import layerseg

GOLDEN = Path(__file__).parent / "golden"
FEATURES = (4, 4, 8, 8, 16, 4)


@pytest.fixture(scope="module")
def monai_net() -> BasicUNet:
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES)
    net.load_state_dict(load_file(str(GOLDEN / "basicunet_weights.safetensors")), strict=True)
    return net.eval()


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch"),
    [((48, 40, 36), (32, 32, 32), 0.5, 3), ((50, 25, 33), (32, 32, 32), 0.25, 1)],
)
def test_sliding_window_matches_monai(
    monai_net: BasicUNet,
    shape: tuple[int, int, int],
    roi: tuple[int, int, int],
    overlap: float,
    batch: int,
) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype(np.float32)
    with torch.no_grad():
        expected = sliding_window_inference(
            torch.from_numpy(volume)[None, None], roi, batch, monai_net,
            overlap=overlap, mode="gaussian", sigma_scale=0.125,
        )[0].numpy()
    ours = layerseg._layerseg.sliding_window(
        GOLDEN / "basicunet_weights.safetensors", volume, list(roi),
        overlap=overlap, batch_size=batch, features=list(FEATURES),
    )
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def test_pytorch_state_dict_weights_give_the_same_output() -> None:
    volume = np.random.default_rng(1).normal(size=(32, 32, 32)).astype(np.float32)
    a = layerseg._layerseg.sliding_window(GOLDEN / "basicunet_weights.safetensors", volume,
                                          [32, 32, 32], features=list(FEATURES))
    b = layerseg._layerseg.sliding_window(GOLDEN / "basicunet_weights.pt", volume,
                                          [32, 32, 32], features=list(FEATURES))
    np.testing.assert_array_equal(a, b)


def _medpy_style(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """medpy's dc, hd95 and assd written out with scipy (medpy itself is unmaintained)."""

    def surface(m: np.ndarray) -> np.ndarray:
        return m ^ ndimage.binary_erosion(m, ndimage.generate_binary_structure(3, 1))

    def directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        dt = ndimage.distance_transform_edt(~surface(b), sampling=spacing)
        return np.asarray(dt[surface(a)])

    d1, d2 = directed(pred, truth), directed(truth, pred)
    return {
        "dice": 2 * (pred & truth).sum() / (pred.sum() + truth.sum()),
        "hd95_mm": float(np.percentile(np.hstack((d1, d2)), 95)),
        "assd_mm": float((d1.mean() + d2.mean()) / 2),
    }


def test_evaluate_matches_scipy_reference(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    truth_path = sample_dirs["mrbraintumor2"] / "label.nii.gz"
    truth_img = nib.load(truth_path)
    truth = np.asarray(truth_img.dataobj) > 0
    # A plausible prediction: the tumour grown by two voxels, shifted, plus a false positive blob.
    pred = np.roll(ndimage.binary_dilation(truth, iterations=2), 3, axis=0)
    pred[10:14, 10:14, 10:14] = True
    pred_path = tmp_path / "pred.nii.gz"
    layerseg.write_labels(pred_path, pred.astype(np.uint8), truth_img.affine, reference=truth_path)
    out_json = tmp_path / "metrics.json"
    subprocess.run([layerseg_bin, "evaluate", "--pred", pred_path, "--truth", truth_path,
                    "--json", out_json], check=True, capture_output=True)
    metrics = json.loads(out_json.read_text())["cases"][0]["metrics"]
    ref = _medpy_style(pred, truth, truth_img.header.get_zooms()[:3])
    for key, value in ref.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key
    full = np.ones((3, 3, 3), bool)
    truth_labels, n_truth = ndimage.label(truth, full)
    pred_labels, n_pred = ndimage.label(pred, full)
    detected = len(np.unique(truth_labels[pred & (truth_labels > 0)]))
    touching = len(np.unique(pred_labels[truth & (pred_labels > 0)]))
    assert metrics["lesions"] == n_truth
    assert metrics["lesions_detected"] == detected
    assert metrics["false_positive_components"] == n_pred - touching >= 1
