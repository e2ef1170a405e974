"""benchmarks/fewshot.py: the same-scan split protocol of the few-shot rows, on a one-step run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_fewshot_trains_on_one_half_and_scores_the_other(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "fewshot"
    script = [sys.executable, str(REPO / "benchmarks" / "fewshot.py"), "--case", "lits117"]
    subprocess.run(
        [*script, "--steps", "1", "--folds", "0", "--device", "cpu", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    summary = json.loads((out / "fewshot.json").read_text())
    fold = summary["folds"]["fold-0"]
    assert set(fold) == {"zero-shot", "few-shot", "baseline"}
    assert fold["few-shot"]["steps"] == 1

    # fold 0 trains on the inferior half, below the tumour's median axial slice; the superior
    # half of its training scan is the inferior half's mirror image, nothing of the held-out one
    truth = np.asarray(nib.load(sample_dirs["lits117"] / "tumor.nii.gz").dataobj) > 0
    cut = int(np.median(np.nonzero(truth)[2]))  # LPS: axis 2 is inferior -> superior
    label = np.asarray(nib.load(out / "fold-0" / "data" / "label.nii.gz").dataobj) > 0
    assert label.shape == truth.shape
    assert (label[:, :, :cut] == truth[:, :, :cut]).all()
    above = truth.shape[2] - cut
    assert (label[:, :, cut:] == truth[:, :, cut - above : cut][:, :, ::-1]).all()
    # the held-out half's lesions are what the rows count
    assert fold["zero-shot"]["lesions"] == fold["baseline"]["lesions"] < 70
