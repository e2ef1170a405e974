"""The one-off check of issue 18 in a venv with another torch release (README, "Installing the
Python package"): the torch-free parts and ``layerseg.monai.segment`` work there, and the
libtorch runtime refuses with both versions named.

Run with that venv's Python, after ``pip install --no-deps dist/*.whl`` into it and, in this
checkout's venv, ``layerseg segment $S/mrbraintumor2/image.nii.gz --out RUNTIME_MASK``::

    LAYERSEG_MODELS=models OTHER/bin/python benchmarks/other_torch_check.py RUNTIME_MASK
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import monai
import numpy as np
import torch

import layerseg
from layerseg import monai as lsm
from layerseg.samples import default_cache

SCAN = default_cache() / "mrbraintumor2"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, int(a.sum()) + int(b.sum())))


def main(runtime_mask: Path) -> None:
    print("python", sys.version.split()[0], "torch", torch.__version__, "monai", monai.__version__)
    data, affine = layerseg.read_image(SCAN / "image.nii.gz")
    print("synthesize: mask voxels", int(layerseg.synthesize(data, affine, seed=1)["mask"].sum()))
    out = lsm.RandTumourSynthesisd("image", mask_key="mask").set_random_state(0)(
        {"image": torch.from_numpy(data[None])}
    )
    print("RandTumourSynthesisd: mask voxels", int(np.asarray(out["mask"]).sum()))
    print(
        "evaluate, label against itself:",
        layerseg.evaluate(SCAN / "label.nii.gz", SCAN / "label.nii.gz")["dice"],
    )
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = lsm.segment(SCAN / "image.nii.gz", device="cpu", out=Path(tmp) / "mask.nii.gz")
    print(
        f"layerseg.monai.segment: {int(result['mask'].sum())} voxels in {time.time() - start:.0f} s"
    )
    reference, _ = layerseg.read_labels(runtime_mask)
    print("Dice against layerseg segment (torch 2.13.0 runtime):", dice(result["mask"], reference))
    truth, _ = layerseg.read_labels(SCAN / "label.nii.gz")
    norms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = (float(norms[0]), float(norms[1]), float(norms[2]))
    scores = layerseg.evaluate(result["mask"], truth == 1, spacing=spacing)
    print("Dice against the truth (label 1):", scores["dice"])
    try:
        layerseg.segment(SCAN / "image.nii.gz")
    except ImportError as e:
        print("layerseg.segment:", e)
    else:
        raise AssertionError("the libtorch runtime loaded next to another torch")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
