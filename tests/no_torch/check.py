"""Run by `make test-no-torch` inside a fresh venv holding the torch-free `layerseg` wheel, numpy
and nibabel, and no torch: the parts of LayerSeg that need no libtorch must work there, and the
parts that do must say what to install. Exits non-zero (an AssertionError) on any failure.

Usage: python tests/no_torch/check.py SCAN.nii.gz LABEL.nii.gz WORKDIR
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main(scan: Path, label: Path, work: Path) -> None:
    assert importlib.util.find_spec("torch") is None, "this venv must not hold torch"
    import layerseg
    from layerseg import _layerseg

    assert "torch" not in sys.modules

    linked = subprocess.run(
        ["ldd", _layerseg.__file__], check=True, capture_output=True, text=True
    ).stdout
    assert "torch" not in linked and "c10" not in linked, f"links libtorch:\n{linked}"

    data, affine = layerseg.read_image(scan)
    reference = nib.load(scan)
    assert data.shape == reference.shape[:3]
    assert np.allclose(affine, reference.affine, atol=1e-4)
    truth, _ = layerseg.read_labels(label)

    out = work / "copy.nii.gz"
    layerseg.write_labels(out, truth, affine, reference=scan)
    copy = nib.load(out)
    assert np.array_equal(np.asarray(copy.dataobj), truth)
    assert np.allclose(copy.affine, reference.affine, atol=1e-4)

    profile = json.loads(layerseg.profile_json("liver-ct"))
    assert profile["name"] == "liver-ct" and profile["modality"] == "ct"

    tumour = layerseg.synthesize(data, affine, profile="brain-mri", seed=3)
    again = layerseg.synthesize(data, affine, profile="brain-mri", seed=3)
    assert tumour["mask"].any() and tumour["image"].shape == data.shape
    assert np.array_equal(tumour["image"], again["image"]), "synthesis is not deterministic"

    same = layerseg.evaluate(out, label)
    assert same["dice"] == 1.0, same
    half = truth.copy()
    half[: half.shape[0] // 2] = 0
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    scored = layerseg.evaluate(half, truth, spacing=spacing)
    assert 0.0 < scored["dice"] < 1.0, scored

    for call in (
        lambda: layerseg.segment(scan),
        lambda: layerseg.runtime(),
        lambda: layerseg.run_cli(["layerseg", "--help"]),
    ):
        try:
            call()
        except ImportError as e:
            assert "layerseg[libtorch]" in str(e), e
        else:
            raise AssertionError("the libtorch half ran without layerseg_libtorch installed")

    command = subprocess.run(
        [str(Path(sys.executable).with_name("layerseg")), "info", str(scan)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert command.returncode == 1 and "layerseg[libtorch]" in command.stderr, command

    print(
        f"torch-free layerseg {layerseg.__version__}: read, write, profiles, synthesis "
        f"(mask {int(tumour['mask'].sum())} voxels) and evaluate (Dice {scored['dice']:.3f}) "
        "work without torch"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
