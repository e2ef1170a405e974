"""Our sliding-window inference and metrics against MONAI's on the same inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
from monai.networks.nets import BasicUNet
from safetensors.torch import load_file
from scipy import ndimage

import layerseg
from layerseg._libtorch import native

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
            torch.from_numpy(volume)[None, None],
            roi,
            batch,
            monai_net,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=0.125,
        )[0].numpy()
    ours = native().sliding_window(
        GOLDEN / "basicunet_weights.safetensors",
        volume,
        list(roi),
        overlap=overlap,
        batch_size=batch,
        features=list(FEATURES),
    )
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def test_pytorch_state_dict_weights_give_the_same_output() -> None:
    volume = np.random.default_rng(1).normal(size=(32, 32, 32)).astype(np.float32)
    a = native().sliding_window(
        GOLDEN / "basicunet_weights.safetensors", volume, [32, 32, 32], features=list(FEATURES)
    )
    b = native().sliding_window(
        GOLDEN / "basicunet_weights.pt", volume, [32, 32, 32], features=list(FEATURES)
    )
    np.testing.assert_array_equal(a, b)


def test_evaluate_matches_monai_metrics(
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
    subprocess.run(
        [layerseg_bin, "evaluate", "--pred", pred_path, "--truth", truth_path, "--json", out_json],
        check=True,
        capture_output=True,
    )
    metrics = json.loads(out_json.read_text())["cases"][0]["metrics"]
    spacing = [float(z) for z in truth_img.header.get_zooms()[:3]]
    p, t = (torch.from_numpy(m)[None, None].float() for m in (pred, truth))
    assert metrics["dice"] == pytest.approx(compute_dice(p, t).item(), abs=1e-6)
    hd95 = compute_hausdorff_distance(p, t, percentile=95, spacing=spacing).item()
    assert metrics["hd95_mm"] == pytest.approx(hd95, abs=1e-3)
    asd = compute_average_surface_distance(p, t, symmetric=True, spacing=spacing).item()
    assert metrics["assd_mm"] == pytest.approx(asd, abs=1e-3)
    full = np.ones((3, 3, 3), bool)
    truth_labels, n_truth = ndimage.label(truth, full)
    pred_labels, n_pred = ndimage.label(pred, full)
    detected = len(np.unique(truth_labels[pred & (truth_labels > 0)]))
    touching = len(np.unique(pred_labels[truth & (pred_labels > 0)]))
    assert metrics["lesions"] == n_truth
    assert metrics["lesions_detected"] == detected
    assert metrics["false_positive_components"] == n_pred - touching >= 1
