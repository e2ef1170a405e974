"""The package split (issue 18): `import layerseg` and `layerseg.monai` load no libtorch, and
segmenting through MONAI on this process's torch (`layerseg.monai.segment`, deepbet through
`torch.jit`) gives the mask of `layerseg segment` on a real whole-head scan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerseg
from layerseg import monai as lsm


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_importing_layerseg_and_its_monai_half_loads_no_libtorch_runtime() -> None:
    proc = run_python(
        "import sys, layerseg, layerseg.monai\n"
        "print('layerseg_libtorch' in sys.modules, 'layerseg_libtorch._native' in sys.modules)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_the_libtorch_runtime_names_both_torch_versions_when_they_differ() -> None:
    """The check that runs before the extension is loaded, against a torch that reports
    another release (the real other release is checked once by hand; README)."""
    proc = run_python(
        "import torch\n"
        "torch.__version__ = '2.9.1+cpu'\n"
        "import layerseg\n"
        "try:\n"
        "    layerseg.runtime()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout
    assert "torch 2.13.0" in message and "torch 2.9.1+cpu" in message, message
    assert "layerseg.monai.segment" in message and "torch==2.13.0" in message, message


def test_one_exception_class_from_both_extensions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(layerseg.LayerSegError) as free:
        layerseg.profile_json(str(bad))
    assert str(bad) in str(free.value)
    with pytest.raises(layerseg.LayerSegError, match="device"):
        layerseg.pretrain([], tmp_path / "run", device="tpu")


@pytest.mark.parametrize("slab", [False, True], ids=["whole head", "20-slice slab"])
def test_brain_extraction_on_this_torch_equals_the_libtorch_runtime(
    sample_dirs: dict[str, Path], tmp_path: Path, slab: bool
) -> None:
    """A whole T1c head, and partial coverage (a brain the scan cuts, kept at any volume)."""
    scan = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    if slab:
        scan = tmp_path / "slab.nii.gz"
        image, affine = layerseg.read_image(sample_dirs["itk_t1"] / "image.nii.gz")
        # ITK T1 is LSA: 20 planes of its second voxel axis (3 mm, superior-inferior) through
        # the middle of the brain (planes 25 to 94).
        shift = np.eye(4)
        shift[1, 3] = 50
        layerseg.write_image(scan, image[:, 50:70, :], affine @ shift)
    ours = lsm.extract_brain(scan, device="cpu")
    runtime = layerseg.extract_brain(scan, device="cpu")
    assert ours["plausible"] and runtime["plausible"]
    assert ours["cut_by_scan"] is runtime["cut_by_scan"] is slab
    assert dice(ours["mask"], runtime["mask"]) >= 0.999
    assert ours["litres"] == pytest.approx(runtime["litres"], rel=1e-3)


def test_monai_segment_matches_layerseg_segment_on_mrbraintumor2(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Defaults (brain extraction, layer rule) on the shipped brain model: Dice >= 0.999."""
    scan = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    ours = lsm.segment(scan, device="cpu", out=tmp_path / "monai.nii.gz")
    runtime = layerseg.segment(scan, device="cpu")
    assert runtime["mask"].sum() > 1000
    assert dice(ours["mask"], runtime["mask"]) >= 0.999, (
        ours["mask"].sum(),
        runtime["mask"].sum(),
    )
    assert dice(ours["organ_mask"], runtime["organ_mask"]) >= 0.999
    written, _ = layerseg.read_labels(tmp_path / "monai.nii.gz")
    assert np.array_equal(written, ours["mask"])
    truth = sample_dirs["mrbraintumor2"] / "label.nii.gz"
    scores = layerseg.evaluate(tmp_path / "monai.nii.gz", truth)
    assert scores["dice"] == pytest.approx(
        layerseg.evaluate(runtime["mask"], layerseg.read_labels(truth)[0] == 1, spacing=(1, 1, 1))[
            "dice"
        ],
        abs=0.01,
    )


def test_monai_segment_refuses_bad_settings_as_layerseg_segment_does(
    sample_dirs: dict[str, Path],
) -> None:
    scan = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    with pytest.raises(layerseg.LayerSegError, match=r"threshold 1.5 is outside \[0, 1\]"):
        lsm.segment(scan, organ_mask="none", threshold=1.5, device="cpu")
    with pytest.raises(layerseg.LayerSegError, match="overlap"):
        lsm.segment(scan, organ_mask="none", overlap=1.0, device="cpu")
