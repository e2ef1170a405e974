"""The same request from either face, `layerseg pretrain|finetune|adapt` and
`layerseg.pretrain|finetune|adapt`, goes through one application layer (rust/app): the same bad
request fails with the same message, and the same valid one trains with the same settings.
rust/cli/tests/faces.rs checks the request each face builds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import layerseg


def _cli_error(layerseg_bin: Path, *args: str | Path) -> str:
    """The one error line of a failing `layerseg` command, without its prefix."""
    argv = [str(layerseg_bin), *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("layerseg: error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0].removeprefix("layerseg: error: ")


def test_a_missing_model_fails_alike(layerseg_bin: Path, tmp_path: Path) -> None:
    model = tmp_path / "missing.safetensors"
    scan = tmp_path / "scan.nii.gz"
    expected = f"{model}: file not found"

    cli = _cli_error(
        layerseg_bin, "finetune", "--datalist", tmp_path, "--out", tmp_path / "a", "--model", model
    )
    with pytest.raises(FileNotFoundError) as python:
        layerseg.finetune(tmp_path, tmp_path / "b", model=model)
    assert cli == str(python.value) == expected

    cli = _cli_error(
        layerseg_bin, "adapt", "--images", scan, "--out", tmp_path / "c", "--model", model
    )
    with pytest.raises(FileNotFoundError) as python:
        layerseg.adapt(scan, tmp_path / "d", model=model)
    assert cli == str(python.value) == expected


def _card(run: Path) -> dict[str, Any]:
    """What a run's model card records of its request: no times, no measured losses."""
    card = json.loads((run / "model.json").read_text())
    card["training"].pop("period_loss_sum")  # measured, not asked for
    return {
        "config": card["config"],
        "profile": card["profile"],
        "step": card["step"],
        "training": card["training"],
        "data": [h["data"] for h in card["history"]],
    }


def test_the_same_pretraining_request_trains_alike_and_checks_its_run_folder(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    colin = sample_dirs["colin27"]
    scan, brain = colin / "image.nii.gz", colin / "brain.nii.gz"
    cli_run, python_run = tmp_path / "cli", tmp_path / "python"
    args: list[str | Path] = ["--profile", tiny_profile, "--healthy", scan, "--organ-masks", brain]
    args += ["--steps", "2", "--seed", "3", "--device", "cpu", "--checkpoint-every", "1"]
    proc = subprocess.run(
        [str(layerseg_bin), "pretrain", *map(str, args), "--out", str(cli_run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    request: dict[str, Any] = {
        "profile": str(tiny_profile),
        "organ_masks": brain,
        "steps": 2,
        "seed": 3,
        "device": "cpu",
        "checkpoint_every": 1,
    }
    layerseg.pretrain(scan, python_run, **request)
    assert _card(cli_run) == _card(python_run)

    # Either face refuses a run folder that already has checkpoints, with the same message,
    # before the scans are listed (a folder without any would fail there).
    empty = tmp_path / "empty"
    empty.mkdir()
    cli = _cli_error(
        layerseg_bin, "pretrain", *[empty if a == scan else a for a in args], "--out", cli_run
    )
    with pytest.raises(layerseg.LayerSegError) as python:
        layerseg.pretrain(empty, cli_run, **request)
    assert cli == str(python.value)
    assert "already has checkpoints" in cli
