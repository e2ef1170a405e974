"""The MONAI Label app (monailabel_app/) behind a real `monailabel start_server`, driven by MONAI
Label's own client: infer, save a label, train, infer again, next sample, bad requests, stop.

The loop follows benchmarks/fewshot.py's half split of LiTS-117: the saved label is the
truth of the inferior half (on the mirrored-half scan, as fewshot trains), and Dice is scored
on the superior half of the whole scan, inside the liver. MRBrainTumor2 is the second study.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ML_VENV = REPO / ".venv-monailabel"
sys.path.insert(0, str(REPO / "benchmarks"))
from fewshot import axial_axis, half_slices, save_mirrored_half  # noqa: E402

# A few steps keep the test within minutes on two CPU cores; see the README's MONAI Label
# section for what they buy.
TRAIN = {"steps": 6, "validate_every": 6, "lr": 3e-3, "batch": 1, "device": "cpu"}


def _client_class() -> Any:
    # MONAI Label lives in its own environment (numpy<2); its client is plain Python
    # (stdlib + requests), so it is imported from there, after everything of ours.
    site = next((ML_VENV / "lib").glob("python3*/site-packages"), None)
    if site is None:
        pytest.fail(f"{ML_VENV} is missing: run `make monailabel-env`")
    sys.path.append(str(site))
    from monailabel.client import MONAILabelClient

    return MONAILabelClient


def _client_error() -> Any:
    from monailabel.client import MONAILabelClientException

    return MONAILabelClientException


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dice(pred: np.ndarray[Any, Any], truth: np.ndarray[Any, Any], region: Any) -> float:
    p, t = pred[region] > 0, truth[region] > 0
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * float((p & t).sum()) / total


@pytest.fixture(scope="module")
def case(sample_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Studies: lits117 (whole scan), lits117_inferior (the training half, mirrored) with their
    liver masks in organs/, and mrbraintumor2; the training half's truth outside the studies."""
    root = tmp_path_factory.mktemp("monailabel")
    studies, organs = root / "studies", root / "studies" / "organs"
    organs.mkdir(parents=True)
    lits, brain = sample_dirs["lits117"], sample_dirs["mrbraintumor2"]
    img = nib.load(lits / "image.nii.gz")
    truth = np.asarray(nib.load(lits / "tumor.nii.gz").dataobj) > 0
    axis = axial_axis(img)
    cut = int(np.median(np.nonzero(truth)[axis]))
    for name, src in (
        ("lits117", lits / "image.nii.gz"),
        ("mrbraintumor2", brain / "image.nii.gz"),
    ):
        (studies / f"{name}.nii.gz").symlink_to(src)
    (organs / "lits117.nii.gz").symlink_to(lits / "liver.nii.gz")
    save_mirrored_half(lits / "image.nii.gz", axis, cut, True, studies / "lits117_inferior.nii.gz")
    save_mirrored_half(lits / "liver.nii.gz", axis, cut, True, organs / "lits117_inferior.nii.gz")
    label = root / "lits117_inferior_label.nii.gz"
    save_mirrored_half(lits / "tumor.nii.gz", axis, cut, True, label)
    lab = nib.load(label)
    binary = (np.asarray(lab.dataobj) > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(binary, lab.affine, lab.header), label)
    wrong = root / "wrong_grid.nii.gz"
    nib.save(nib.Nifti1Image(binary[:, :, :100], lab.affine), wrong)
    liver = np.asarray(nib.load(lits / "liver.nii.gz").dataobj) > 0
    held_out = np.zeros(truth.shape, bool)
    held_out[half_slices(truth.shape, axis, cut)[1]] = True
    return {
        "root": root,
        "studies": studies,
        "label": label,
        "wrong": wrong,
        "truth": truth,
        "held_out": held_out & liver,
    }


@pytest.fixture(scope="module")
def server(case: dict[str, Any], layerseg_bin: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    log = (case["root"] / "server.log").open("w")
    env = dict(os.environ, LAYERSEG_BIN=str(layerseg_bin))
    proc = subprocess.Popen(
        [
            str(ML_VENV / "bin" / "monailabel"),
            "start_server",
            "--app",
            str(REPO / "monailabel_app"),
            "--studies",
            str(case["studies"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--conf",
            "model_dir",
            str(case["root"] / "model"),
            "--conf",
            "device",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    client = _client_class()(url)
    deadline = time.monotonic() + 180
    while True:
        try:
            client.info()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"server did not start:\n{(case['root'] / 'server.log').read_text()}")
            time.sleep(1)
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def _infer_dice(client: Any, case: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    path, params = client.infer("liver-ct", "lits117", {})
    pred = np.asarray(nib.load(path).dataobj)
    assert pred.shape == case["truth"].shape
    return _dice(pred, case["truth"], case["held_out"]), params


def test_infer_label_train_infer_next_sample_stop(
    server: tuple[str, subprocess.Popen[str]], case: dict[str, Any]
) -> None:
    url, proc = server
    client = _client_class()(url)
    error = _client_error()
    info = client.info()
    assert set(info["models"]) == {"brain-mri", "liver-ct"}
    assert set(info["trainers"]) == {"brain-mri", "liver-ct"}
    assert {"layerseg", "random"} <= set(info["strategies"])

    zero_shot, params = _infer_dice(client, case)
    assert params["model"] == "shipped" and params["recomposition_l1"] > 0
    assert zero_shot > 0.3, f"zero-shot held-out Dice {zero_shot:.3f}"
    healthy, _ = client.infer("liver-ct", "lits117", {"output": "healthy"})
    assert np.asarray(nib.load(healthy).dataobj).dtype == np.float32

    saved = client.save_label("lits117_inferior", str(case["label"]), tag="final")
    assert saved["image"] == "lits117_inferior"

    # bad requests: MONAI Label's error replies, and the server goes on
    with pytest.raises(error, match=r"500|no model"):
        client.infer("no-such-model", "lits117", {})
    with pytest.raises(error, match=r"no such image|not in the datastore"):
        client.infer("liver-ct", "no-such-image", {})
    with pytest.raises(error, match=r"shape \[128, 128, 100\] differs"):
        client.save_label("lits117", str(case["wrong"]), tag="final")
    assert "lits117" in client.datastore()["objects"]
    assert not client.datastore()["objects"]["lits117"]["labels"]

    client.train_start("liver-ct", TRAIN)
    deadline = time.monotonic() + 900
    while client.train_status(check_if_running=True):
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(2)
    status = client.train_status()
    assert status["status"] == "DONE", status
    stats = client.info()["train_stats"]["liver-ct"]
    assert stats["cases"] == 1 and stats["steps"] == TRAIN["steps"], stats
    model = Path(stats["model"])
    assert model.exists()

    tuned, params = _infer_dice(client, case)
    assert params["model"] == str(model)
    print(f"held-out Dice: zero-shot {zero_shot:.4f}, after one label {tuned:.4f}")
    (case["root"] / "dice.json").write_text(json.dumps({"zero": zero_shot, "tuned": tuned}))
    assert tuned > zero_shot, f"held-out Dice fell: {zero_shot:.4f} -> {tuned:.4f}"

    nxt = client.next_sample("layerseg", {})
    assert nxt["id"] in {"lits117", "mrbraintumor2"}
    ranking = nxt["ranking"]
    assert set(ranking) == {"lits117", "mrbraintumor2"}
    assert ranking[nxt["id"]] == max(ranking.values())
    assert client.next_sample("random", {})["id"] in ranking

    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
