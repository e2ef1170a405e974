"""device/: the GPU window's kit and command, rehearsed on the CPU with our own binary.

The real kit holds a binary built against the GPU machine's torch (device/build_kit.sh 2.11.0,
a 10-minute build); here the kit packs target/release/layerseg for this venv's torch, and
window.sh runs with LAYERSEG_DEVICE=cpu and a deadline already past, so both runs stop before
their first step and still checkpoint, export and pack.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def test_kit_and_window_pack_both_models_with_their_history(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    kit, out = tmp_path / "kit", tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, LAYERSEG_KIT_BINARY=str(layerseg_bin), LAYERSEG_KIT_DIR=str(kit))
    version = torch.__version__.split("+")[0]
    built = subprocess.run(
        [REPO / "device" / "build_kit.sh", version],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "of the 64 MiB a device call carries" in built.stdout
    assert (kit / "bin" / "TORCH_VERSION").read_text().strip() == version

    env = dict(os.environ, OUT=str(out), LAYERSEG_DEVICE="cpu")
    window = subprocess.run(
        [kit / "window.sh", "1ms"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert window.returncode == 0, window.stdout + window.stderr
    assert "stopped before the time limit" in (out / "brain.log").read_text()
    parts = sorted(out.glob("runs.tar.part-*"))
    assert all(p.stat().st_size <= 15 * 2**20 for p in parts)
    joined = tmp_path / "runs.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        # The "data" filter came with Python 3.12 and the 3.8-3.11 security releases (3.11.4
        # and later); Debian 12's Python 3.11.2 lacks it.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path / "runs", filter="data")
        else:
            tar.extractall(tmp_path / "runs")
    for run, shipped in (("brain", "brain-mri"), ("liver", "liver-ct")):
        card = json.loads((tmp_path / "runs" / run / "model.json").read_text())
        before = json.loads((REPO / "models" / f"{shipped}.json").read_text())
        kinds = [(r["kind"], r["from_step"], r["to_step"]) for r in card["history"]]
        assert kinds == [
            ("unrecorded", 0, before["step"]),
            ("pretrain", before["step"], before["step"]),
        ]
        assert card["history"][1]["device"] == "cpu"


def test_window_refuses_a_machine_with_another_torch(tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    (kit / "bin").mkdir(parents=True)
    (kit / "bin" / "TORCH_VERSION").write_text("2.11.0\n")
    window = kit / "window.sh"
    window.write_bytes((REPO / "device" / "window.sh").read_bytes())
    window.chmod(0o755)
    env = dict(os.environ, OUT=str(tmp_path))
    proc = subprocess.run([window, "8m"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "the kit's layerseg was built for 2.11.0: rebuild it" in proc.stderr
