"""layerseg.finetune and layerseg.adapt from Python, on real sample scans, with the tiny golden
BasicUNet (tests/golden/make_basicunet_golden.py) on a 32^3 grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import layerseg

GOLDEN = Path(__file__).parent / "golden" / "basicunet_weights.safetensors"


@pytest.fixture()
def tiny_profile(tiny_profile: Path) -> Path:
    """The shared tiny profile, with adaptation thresholds loose enough for an untrained model."""
    profile = json.loads(tiny_profile.read_text())
    profile["adaptation"]["max_recomposition_l1"] = 10.0
    profile["adaptation"]["min_label_voxels"] = 1
    tiny_profile.write_text(json.dumps(profile))
    return tiny_profile


def test_finetune_reports_progress_and_the_best_dice(
    sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    case = sample_dirs["mrbraintumor2"]
    datalist = tmp_path / "list.json"
    entry = {"image": str(case / "image.nii.gz"), "label": str(case / "label.nii.gz")}
    datalist.write_text(json.dumps({"training": [entry]}))
    calls: list[tuple[str, int, int]] = []
    report = layerseg.finetune(
        datalist,
        tmp_path / "run",
        profile=str(tiny_profile),
        model=GOLDEN,
        steps=4,
        validate_every=2,
        device="cpu",
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    assert calls[-1] == ("finetune", 4, 4)
    (fold,) = report["folds"]
    assert fold["validated_on_training"] is True
    assert fold["steps"] == 4
    assert 0.0 <= fold["best_dice"] <= 1.0
    assert fold["best_dice"] >= fold["start_dice"]
    assert Path(fold["model"]).is_file()
    assert json.loads((tmp_path / "run" / "finetune.json").read_text()) == report


def test_finetune_errors_name_every_missing_file(tiny_profile: Path, tmp_path: Path) -> None:
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}]}))
    with pytest.raises(layerseg.LayerSegError, match="2 missing files") as info:
        layerseg.finetune(
            datalist, tmp_path / "run", profile=str(tiny_profile), model=GOLDEN, device="cpu"
        )
    assert str(tmp_path / "a.nii.gz") in str(info.value)
    assert str(tmp_path / "a_seg.nii.gz") in str(info.value)
    with pytest.raises(FileNotFoundError):
        layerseg.finetune(datalist, tmp_path / "run", model=tmp_path / "none.safetensors")


def test_adapt_is_deterministic_for_a_seed(
    sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    scans = [sample_dirs["mrbraintumor2"] / "image.nii.gz", sample_dirs["mrhead"] / "image.nii.gz"]

    def run(out: Path) -> dict[str, Any]:
        return layerseg.adapt(
            scans,
            out,
            profile=str(tiny_profile),
            model=GOLDEN,
            rounds=1,
            steps=2,
            device="cpu",
            seed=3,
        )

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    (round_a,) = first["rounds"]
    (round_b,) = second["rounds"]
    assert round_a["before"] == round_b["before"]
    assert round_a["after"] == round_b["after"]
    # keep_fraction 0.5 of two scans: the one with the lower recomposition error.
    (kept,) = round_a["kept"]
    errors = {c["name"]: c["recomposition_l1"] for c in round_a["before"]["cases"]}
    assert kept == min(errors, key=errors.__getitem__)
    pseudo, pseudo_affine = layerseg.read_labels(
        tmp_path / "a" / "round-1" / "pseudo" / f"{kept}.nii.gz"
    )
    # Same-named files are told apart by their folder: mrhead/image.nii.gz is mrhead_image.
    image, affine = layerseg.read_image(next(p for p in scans if kept == f"{p.parent.name}_image"))
    assert pseudo.shape == image.shape
    assert np.allclose(pseudo_affine, affine)
    assert set(np.unique(pseudo).tolist()) <= {0, 1}
