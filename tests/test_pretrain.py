"""layerseg.pretrain and `layerseg pretrain` on the real sample scans, with a tiny network."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import layerseg
import layerseg.monai

TINY = ["--features", "4,4,8,8,16,4"]


def _steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss" in r]


def test_pretrain_from_python_with_progress_and_resume(
    sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    colin = sample_dirs["colin27"]
    calls: list[tuple[str, int, int]] = []
    run = tmp_path / "run"
    result = layerseg.pretrain(
        [colin / "image.nii.gz"],
        run,
        profile=str(tiny_profile),
        organ_masks=[colin / "brain.nii.gz"],
        steps=6,
        device="cpu",
        checkpoint_every=3,
        validate_on=sample_dirs["mrhead"] / "image.nii.gz",
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    assert result["outcome"] == "finished"
    assert (result["started_at"], result["step"]) == (0, 6)
    assert result["validation"] is not None and result["validation_real"] is not None
    assert result["steps_per_s"] > 0 and 0 <= result["waiting_share"] <= 1
    assert calls[-1] == ("pretrain", 6, 6)
    assert Path(result["model"]).is_file()
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    more = layerseg.pretrain(
        colin / "image.nii.gz",
        run,
        profile=str(tiny_profile),
        organ_masks=colin / "brain.nii.gz",
        steps=8,
        device="cpu",
        resume=True,
    )
    assert (more["started_at"], more["step"]) == (6, 8)
    assert _steps(run) == list(range(1, 9))


def test_cancel_from_the_callback_saves_a_checkpoint(
    sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    class Stop(Exception):
        pass

    def stop(what: str, done: int, total: int) -> None:
        if done >= 2:
            raise Stop

    run = tmp_path / "run"
    with pytest.raises(Stop):
        layerseg.pretrain(
            sample_dirs["mrhead"] / "image.nii.gz",
            run,
            profile=str(tiny_profile),
            steps=50,
            device="cpu",
            progress=stop,
        )
    assert list((run / "checkpoints").iterdir())
    again = layerseg.pretrain(
        sample_dirs["mrhead"] / "image.nii.gz",
        run,
        profile=str(tiny_profile),
        steps=4,
        device="cpu",
        resume=True,
    )
    assert again["started_at"] >= 2 and again["step"] == 4


def _cli(layerseg_bin: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [str(layerseg_bin), "pretrain", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_cli_trains_and_refuses_bad_input_before_training(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    scan = sample_dirs["mrhead"] / "image.nii.gz"
    run = tmp_path / "run"
    ok = _cli(
        layerseg_bin,
        "--profile",
        tiny_profile,
        "--healthy",
        scan,
        "--out",
        run,
        "--steps",
        "2",
        "--device",
        "cpu",
        *TINY,
    )
    assert ok.returncode == 0, ok.stderr
    assert (run / "curves.png").is_file()

    wider = _cli(
        layerseg_bin,
        "--profile",
        tiny_profile,
        "--healthy",
        scan,
        "--out",
        run,
        "--steps",
        "4",
        "--device",
        "cpu",
        "--resume",
        "--features",
        "8,8,8,8,16,8",
    )
    _one_line_error(wider, "another network width")
    assert _steps(run) == [1, 2]

    empty = tmp_path / "empty"
    empty.mkdir()
    none = _cli(layerseg_bin, "--healthy", empty, "--out", tmp_path / "r1", "--device", "cpu")
    _one_line_error(none, "no healthy scans", str(empty))

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a scan")
    listing = tmp_path / "scans.txt"
    listing.write_text(f"{scan}\n# a comment\nbroken.nii.gz\n")
    bad = _cli(
        layerseg_bin,
        "--profile",
        tiny_profile,
        "--healthy",
        listing,
        "--out",
        tmp_path / "r2",
        "--device",
        "cpu",
        *TINY,
    )
    _one_line_error(bad, str(broken))
    assert not (tmp_path / "r2" / "metrics.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cli_cuda_without_a_gpu(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    proc = _cli(
        layerseg_bin,
        "--healthy",
        sample_dirs["mrhead"] / "image.nii.gz",
        "--out",
        tmp_path / "run",
        "--device",
        "cuda",
    )
    _one_line_error(proc, "device cuda was asked for", "no CUDA GPU")


def test_cli_window_warm_start_time_limit_and_history(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    """One GPU window's command, on the CPU: continue a model, stop before --max-time, export,
    and keep every session in the card's history."""
    scan = sample_dirs["mrhead"] / "image.nii.gz"
    common = ["--profile", tiny_profile, "--healthy", scan, "--device", "cpu", *TINY]
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _cli(layerseg_bin, *common, "--out", first, "--steps", "2").returncode == 0

    more = _cli(
        layerseg_bin,
        *common,
        "--out",
        second,
        "--init-from",
        first / "model.safetensors",
        "--steps",
        "4",
        "--max-time",
        "10m",
        "--seed",
        "3",
    )
    assert more.returncode == 0, more.stderr
    assert "finished at step 4 (from 2)" in more.stdout
    assert _steps(second) == [3, 4]

    stopped = _cli(
        layerseg_bin,
        *common,
        "--out",
        third,
        "--init-from",
        second / "model.safetensors",
        "--max-time",
        "0.001",
    )
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped before the time limit" in stopped.stdout
    card = json.loads((third / "model.json").read_text())
    spans = [(r["kind"], r["from_step"], r["to_step"]) for r in card["history"]]
    assert spans == [("pretrain", 0, 2), ("pretrain", 2, 4), ("pretrain", 4, 4)]
    assert card["history"][1]["data"] == {"healthy": [str(scan)], "textures": [], "seed": 3}
    assert card["step"] == 4

    already = _cli(
        layerseg_bin,
        *common,
        "--out",
        tmp_path / "d",
        "--init-from",
        third / "model.safetensors",
        "--steps",
        "4",
    )
    _one_line_error(already, "already trained for 4 steps")
    shipped = _cli(
        layerseg_bin, "--healthy", scan, "--out", tmp_path / "e", "--init-from", "shipped", *TINY
    )
    _one_line_error(shipped, "brain-mri.safetensors", "another network width")
    bad_time = _cli(layerseg_bin, *common, "--out", tmp_path / "f", "--max-time", "soon")
    assert bad_time.returncode == 2 and "--max-time" in bad_time.stderr


def test_python_continues_a_model_until_its_time_limit(
    sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    """layerseg.pretrain's init_from and max_time are the CLI's --init-from and --max-time."""
    colin = sample_dirs["colin27"]
    common = {"profile": str(tiny_profile), "organ_masks": colin / "brain.nii.gz", "device": "cpu"}
    first = layerseg.pretrain(colin / "image.nii.gz", tmp_path / "a", steps=2, **common)
    second = layerseg.pretrain(
        colin / "image.nii.gz", tmp_path / "b", init_from=first["model"], steps=3, **common
    )
    assert (second["outcome"], second["started_at"], second["step"]) == ("finished", 2, 3)
    third = layerseg.pretrain(
        colin / "image.nii.gz", tmp_path / "c", init_from=second["model"], max_time=1e-3, **common
    )
    assert (third["outcome"], third["step"]) == ("time_limit", 3)
    card = json.loads((tmp_path / "c" / "model.json").read_text())
    assert [(r["from_step"], r["to_step"]) for r in card["history"]] == [(0, 2), (2, 3), (3, 3)]
    with pytest.raises(layerseg.LayerSegError, match="max_time must be a positive"):
        layerseg.pretrain(colin / "image.nii.gz", tmp_path / "d", max_time=0, **common)


def test_a_model_runs_only_on_the_grid_it_was_trained_on(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    """The card records how the profile made the network's input (normalisation, region, grid,
    window). A profile that keeps the name but resamples otherwise is refused, naming the
    section, by segment (CLI, Python, MONAI path) and by a warm start; nothing is written."""
    scan = sample_dirs["mrhead"] / "image.nii.gz"
    run = tmp_path / "run"
    trained = _cli(
        layerseg_bin,
        "--profile",
        tiny_profile,
        "--healthy",
        scan,
        "--out",
        run,
        "--steps",
        "1",
        "--device",
        "cpu",
        *TINY,
    )
    assert trained.returncode == 0, trained.stderr
    model = run / "model.safetensors"
    profile = json.loads(tiny_profile.read_text())
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["input"] == {
        "normalisation": profile["normalisation"],
        "roi": profile["roi"],
        "resample": profile["resample"],
        "patch_size": profile["inference"]["patch_size"],
    }

    profile["resample"] = {"target_size": None, "target_spacing_mm": [6.0, 6.0, 6.0]}
    other = tmp_path / "same-name-other-grid.json"
    other.write_text(json.dumps(profile))
    words = ["model.safetensors", "cannot run under profile tiny-brain", "resample was"]
    out = tmp_path / "mask.nii.gz"
    segment = [str(layerseg_bin), "segment", str(scan), "--out", str(out), "--model", str(model)]
    proc = subprocess.run([*segment, "--profile", str(other)], capture_output=True, text=True)
    _one_line_error(proc, *words)
    assert not out.exists()
    warm = _cli(
        layerseg_bin,
        "--profile",
        other,
        "--healthy",
        scan,
        "--out",
        tmp_path / "warm",
        "--init-from",
        model,
        "--steps",
        "2",
        "--device",
        "cpu",
        *TINY,
    )
    _one_line_error(warm, *words)
    refused = "resample was .* in training"
    with pytest.raises(layerseg.LayerSegError, match=refused):
        layerseg.segment(scan, model=model, profile=str(other), device="cpu")
    with pytest.raises(layerseg.LayerSegError, match=refused):
        layerseg.monai.segment(scan, weights=model, profile=str(other), device="cpu")

    same = subprocess.run(
        [*segment, "--profile", str(tiny_profile)], capture_output=True, text=True
    )
    assert same.returncode == 0, same.stderr
