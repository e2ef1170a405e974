"""`layerseg pretrain` killed with SIGKILL at 20 moments and resumed each time with --resume.

A tiny network on colin27 squashed onto 32^3 writes a checkpoint every second step. Of the
kills, a third land at a random moment of the steps, a third wait until a checkpoint is being
staged (a `.tmp-` folder in `checkpoints/`) and fire at once, and a third land anywhere, start-up
included. After every kill each checkpoint on disk
must be complete and readable, the newest must never be older than before, and the resumed
process must continue from exactly the newest one.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from safetensors.numpy import load_file

KILLS = 20
STEPS = 400  # more than the kills will let it reach; the last run is not killed
FINAL_STEPS_AFTER = 3


@pytest.fixture()
def tiny_profile(tiny_profile: Path) -> Path:
    """The shared tiny profile, one patch per step."""
    profile = json.loads(tiny_profile.read_text())
    profile["training"]["batch_size"] = 1
    tiny_profile.write_text(json.dumps(profile))
    return tiny_profile


def _checkpoints(run: Path) -> dict[int, Path]:
    root = run / "checkpoints"
    if not root.is_dir():
        return {}
    found = {}
    for entry in root.iterdir():
        m = re.fullmatch(r"step-(\d{9})", entry.name)
        if m:
            found[int(m.group(1))] = entry
    return found


def _assert_complete(folder: Path, step: int, names: set[str] | None) -> set[str]:
    """A checkpoint folder holds a card for its step and finite weights that all parse."""
    card = json.loads((folder / "card.json").read_text())
    assert card["step"] == step, folder
    weights = load_file(folder / "weights.safetensors")
    assert weights, folder
    assert all(np.isfinite(t).all() for t in weights.values()), folder
    if names is not None:
        assert set(weights) == names, folder
    if card["optimizer_state"]:
        moments = load_file(folder / "optimizer.safetensors")
        assert moments and all(np.isfinite(t).all() for t in moments.values()), folder
    return set(weights)


def _assert_metrics_sane(run: Path) -> None:
    """Every complete line of metrics.jsonl is JSON; only a last line cut by the kill may not be."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return
    lines = path.read_text().split("\n")
    for line in lines[:-1]:
        json.loads(line)


def _wait_for_staging(run: Path, proc: subprocess.Popen[str], limit_s: float) -> bool:
    """Polls until a checkpoint is being staged; True if one was seen before `limit_s`."""
    root = run / "checkpoints"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(n.startswith(".tmp-") for n in os.listdir(root)):
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    return False


def _first_step(stderr: str) -> int | None:
    m = re.search(r"^layerseg: step (\d+):", stderr, re.MULTILINE)
    return int(m.group(1)) if m else None


def test_sigkill_at_random_moments_then_resume(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tiny_profile: Path, tmp_path: Path
) -> None:
    colin = sample_dirs["colin27"]
    run = tmp_path / "run"
    argv = [
        str(layerseg_bin),
        "pretrain",
        "--profile",
        str(tiny_profile),
        "--healthy",
        str(colin / "image.nii.gz"),
        "--organ-masks",
        str(colin / "brain.nii.gz"),
        "--out",
        str(run),
        "--features",
        "4,4,8,8,16,4",
        "--checkpoint-every",
        "2",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    rng = random.Random(20260611)
    newest = 0
    names: set[str] | None = None
    checked_resumes = 0
    in_staging = 0
    for kill in range(KILLS):
        resume = ["--resume"] if kill > 0 else []
        proc = subprocess.Popen(
            [*argv, "--steps", str(STEPS), *resume],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        lines: list[str] = []
        stepping = threading.Event()

        def read(stream: IO[str], lines: list[str], stepping: threading.Event) -> None:
            for line in stream:
                lines.append(line)
                if line.startswith("layerseg: step "):
                    stepping.set()

        reader = threading.Thread(target=read, args=(proc.stderr, lines, stepping))
        reader.start()
        mode = kill % 3
        if mode == 2:
            # Anywhere, start-up included (reading scans, synthesising validation samples).
            time.sleep(rng.uniform(0.1, 3.0))
        else:
            assert stepping.wait(timeout=120), "".join(lines)
            if mode == 1 and _wait_for_staging(run, proc, 10.0):
                in_staging += 1  # killed while a checkpoint is being written
            elif mode == 0:
                time.sleep(rng.uniform(0.0, 2.0))  # somewhere in the steps
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=60)
        stderr = "".join(lines)
        assert proc.returncode == -signal.SIGKILL, stderr

        first = _first_step(stderr)
        if kill > 0 and newest == 0:
            assert "to resume from: starting from scratch" in stderr, stderr
        elif kill > 0 and first is not None:
            # The resumed process continued from exactly the newest checkpoint before it (its
            # first step is always reported).
            assert first == newest + 1, (kill, first, newest, stderr)
            checked_resumes += 1
        found = _checkpoints(run)
        for step, folder in found.items():
            names = _assert_complete(folder, step, names)
        latest = max(found, default=0)
        assert latest >= newest, f"kill {kill}: newest checkpoint went from {newest} to {latest}"
        newest = latest
        _assert_metrics_sane(run)

    assert checked_resumes >= KILLS // 2, checked_resumes
    assert in_staging >= 3, in_staging
    assert newest > 0
    print(f"{KILLS} kills: {in_staging} while a checkpoint was staged, {checked_resumes} resumes")
    # A last resume runs to the end: the metrics hold each step once, in order.
    total = newest + FINAL_STEPS_AFTER
    done = subprocess.run(
        [*argv, "--steps", str(total), "--resume"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"finished at step {total} (from {newest})" in done.stdout, done.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, total + 1))
    _assert_complete(_checkpoints(run)[total], total, names)
    model = load_file(run / "model.safetensors")
    assert set(model) == names
