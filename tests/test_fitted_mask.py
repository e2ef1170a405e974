"""A model fine-tuned (or adapted) on labels is segmented with its own mask: its card's history
says so, and every face reads it (README, "The layer rule"). The shipped liver model stands in
for a fine-tuned one by carrying a card with a `finetune` record; its weights are unchanged, so
its default output must equal the shipped model's `--raw-mask` output, and differ from the
shipped model's default (LiTS-117: the rule drops 8 of the 26 lesions it finds)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "liver-ct.safetensors"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tuned")
    weights = folder / "tuned.safetensors"
    shutil.copyfile(SHIPPED, weights)
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    card["history"] = [
        *card.get("history", []),
        {
            "kind": "finetune",
            "from_step": card["step"],
            "to_step": card["step"],
            "wall_time_s": 0.0,
            "device": "cpu",
            "layerseg_version": card["layerseg_version"],
            "data": None,
        },
    ]
    weights.with_suffix(".json").write_text(json.dumps(card))
    return weights


def segment(
    layerseg_bin: Path, scan: Path, out: Path, *extra: str
) -> tuple[np.ndarray, subprocess.CompletedProcess[str]]:
    organ = scan.parent / "liver.nii.gz"
    cmd = [str(layerseg_bin), "segment", str(scan), "--profile", "liver-ct", "--device", "cpu"]
    cmd += ["--organ-mask", str(organ), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return np.asarray(nib.load(out).dataobj), proc


def test_a_finetuned_models_own_mask_is_its_segmentation_in_every_face(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tuned: Path, tmp_path: Path
) -> None:
    scan = sample_dirs["lits117"] / "image.nii.gz"
    raw, _ = segment(layerseg_bin, scan, tmp_path / "raw.nii.gz", "--raw-mask")
    ruled, _ = segment(layerseg_bin, scan, tmp_path / "ruled.nii.gz")
    assert not np.array_equal(raw, ruled), "the layer rule changed nothing on LiTS-117"

    own, proc = segment(layerseg_bin, scan, tmp_path / "own.nii.gz", "--model", str(tuned))
    assert np.array_equal(own, raw)
    assert "fine-tuned on labels, so its own mask is used" in proc.stderr

    import layerseg
    from layerseg import monai as lsm

    organ = sample_dirs["lits117"] / "liver.nii.gz"
    api = layerseg.segment(scan, model=tuned, profile="liver-ct", organ_mask=organ, device="cpu")
    assert np.array_equal(api["mask"], raw)
    # The MONAI face, on this process's torch, reads the same card.
    mask = lsm.segment(scan, weights=tuned, profile="liver-ct", organ_mask=organ, device="cpu")
    agree = np.mean((mask["mask"] > 0) == (raw > 0))
    assert agree > 0.9999, f"layerseg.monai.segment differs from the CLI on {1 - agree:.2%}"
