"""Weights saved by the Rust BasicUNet load into MONAI's ``BasicUNet`` with ``strict=True``.

The other direction (MONAI's weights into ours) is ``rust/torch/tests/basic_unet_parity.rs``,
against golden files from ``tests/golden/make_basicunet_golden.py``. Here the Rust test
``writes_weights_for_python`` is run with ``LAYERSEG_ROUNDTRIP_DIR`` pointing at a temporary
folder: it initialises a network with tch, saves it as safetensors and records its output on the
golden input; MONAI must load the file strictly and reproduce that output.

The test drives ``cargo`` with the environment of the Makefile (this interpreter's venv and
``LIBTORCH_USE_PYTORCH=1``), so after ``cargo test --release`` it only runs the built binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.networks.nets.basic_unet import BasicUNet
from safetensors.torch import load_file

REPO = Path(__file__).absolute().parents[1]
GOLDEN = REPO / "tests" / "golden"
FEATURES = (4, 4, 8, 8, 16, 4)
TOLERANCE = 1e-5


def _cargo_env(out_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["VIRTUAL_ENV"] = sys.prefix
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["LIBTORCH_USE_PYTORCH"] = "1"
    env["LAYERSEG_ROUNDTRIP_DIR"] = str(out_dir)
    return env


@pytest.fixture(scope="module")
def rust_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cargo = shutil.which("cargo")
    assert cargo is not None, "cargo is needed to produce the Rust side of the round trip"
    out_dir = tmp_path_factory.mktemp("roundtrip")
    command = [
        cargo,
        "test",
        "--release",
        "--quiet",
        "-p",
        "layerseg-torch",
        "--test",
        "basic_unet_parity",
        "--",
        "--exact",
        "writes_weights_for_python",
    ]
    result = subprocess.run(
        command, cwd=REPO, env=_cargo_env(out_dir), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return out_dir


def _monai_net() -> BasicUNet:
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES).eval()


def test_rust_weights_load_strictly_into_monai(rust_files: Path) -> None:
    net = _monai_net()
    state = load_file(str(rust_files / "ours_weights.safetensors"))
    assert set(state) == set(net.state_dict())
    net.load_state_dict(state, strict=True)

    io = load_file(str(rust_files / "ours_io.safetensors"))
    with torch.no_grad():
        monai_out = net(io["input"])
    diff = (monai_out - io["output"]).abs().max().item()
    assert diff <= TOLERANCE, f"max |MONAI - ours| = {diff}"


def test_float32_output_and_gradients_equal_monais_on_this_cpu(rust_files: Path) -> None:
    """Our float32 pass on the golden weights against MONAI's float32 pass run here and now.

    Both sides call the same libtorch kernels on the same CPU, so they agree far more closely
    than either agrees with float64 (whose comparison, in the Rust test, holds on every CPU but
    must allow for float32's rounding): within 1e-5 of each result's largest magnitude.
    """
    net = _monai_net()
    net.load_state_dict(load_file(str(GOLDEN / "basicunet_weights.safetensors")), strict=True)
    golden_input = load_file(str(GOLDEN / "basicunet_io.safetensors"))["input"]
    y = net(golden_input)
    loss = y.square().mean() + torch.sigmoid(y[:, 2]).mean()
    params = dict(net.named_parameters())
    ours = load_file(str(rust_files / "ours_probe.safetensors"))
    names = [key.removeprefix("grad.") for key in ours if key.startswith("grad.")]
    grads = torch.autograd.grad(loss, [params[name] for name in names])
    monai = {"output": y.detach(), **{f"grad.{n}": g for n, g in zip(names, grads, strict=True)}}
    assert set(ours) == set(monai) and len(names) == 4
    for key, theirs in monai.items():
        diff = (ours[key] - theirs).abs().max().item()
        scale = theirs.abs().max().item()
        assert diff <= 1e-5 * scale, f"{key}: max |ours - MONAI| = {diff:.3e} (max {scale:.3e})"


def test_rust_init_follows_pytorch_defaults(rust_files: Path) -> None:
    """Convolutions uniform in +-1/sqrt(fan_in) with fan_in from weight dim 1; norms at 1 and 0."""
    state = load_file(str(rust_files / "ours_weights.safetensors"))
    for name, tensor in state.items():
        if ".adn.N." in name:
            expected = (
                torch.ones_like(tensor) if name.endswith("weight") else torch.zeros_like(tensor)
            )
            assert torch.equal(tensor, expected), name
            continue
        weight = state[name.rsplit(".", 1)[0] + ".weight"]
        fan_in = weight[0].numel()
        assert tensor.abs().max().item() <= fan_in**-0.5, name
        assert tensor.std().item() > 0.3 * fan_in**-0.5 or tensor.numel() < 8, name
