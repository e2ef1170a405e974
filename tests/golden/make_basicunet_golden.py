"""Golden values for the Rust BasicUNet (rust/torch/tests/basic_unet_parity.rs).

Builds MONAI's ``BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES)``
with MONAI's other defaults and a fixed seed, gives the instance-norm affines random values (MONAI
starts them at 1 and 0, which would hide a missing affine), and writes next to this script:

- ``basicunet_weights.safetensors``: the state dict (float32), via ``safetensors.torch.save_file``;
- ``basicunet_weights.pt``: the same state dict, via ``torch.save`` (a flat ``{name: tensor}`` zip);
- ``basicunet_io.safetensors``: ``input`` (2, 1, 40, 18, 17, float32), and MONAI's results computed
  in **float64** (the float32 weights and input widened exactly): ``output`` (2, 3, 40, 18, 17)
  and, for the backward pass, ``grad.NAME`` of a few parameters for the loss
  ``probe_loss(output)``. The script prints how far MONAI's own float32 results lie from them
  on the machine that runs it.

Why float64: a float32 result depends on which kernels oneDNN and ATen pick for the CPU (AVX2,
AVX-512, AMX, ...), in the last bits and, after cancellation in the backward pass, in the
third digit. A float64 result differs between CPUs only around 1e-15 relative, so the Rust test
can check a float64 run of our network almost exactly, and a float32 run against a bound on
float32's rounding, whatever CPU either side ran on.

The input and the weights are read back from the existing files when they are there, so
rerunning the script on another CPU (whose random kernels may differ) changes only the float64
results' last bits. Delete the three files to draw new ones.

The input size is odd on purpose: MONAI replicate-pads the upsampled map by one voxel when pooling
dropped one (axis 0 at level 3, axis 1 at level 1, axis 2 at level 0), and the batch of two checks
that instance norm uses each sample's own statistics.

Run from the repository root: ``.venv/bin/python tests/golden/make_basicunet_golden.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets.basic_unet import BasicUNet
from safetensors.torch import load_file, save_file

FEATURES = (4, 4, 8, 8, 16, 4)
INPUT_SHAPE = (2, 1, 40, 18, 17)
SEED = 20240917
HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "basicunet_weights.safetensors"
IO = HERE / "basicunet_io.safetensors"
GRAD_NAMES = (
    "conv_0.conv_0.conv.weight",
    "down_4.convs.conv_1.adn.N.weight",
    "upcat_1.upsample.deconv.weight",
    "final_conv.bias",
)


def probe_loss(y: torch.Tensor) -> torch.Tensor:
    """A scalar that touches every output channel, for comparing gradients."""
    return y.square().mean() + torch.sigmoid(y[:, 2]).mean()


def build() -> BasicUNet:
    torch.manual_seed(SEED)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES)
    if WEIGHTS.exists():
        net.load_state_dict(load_file(str(WEIGHTS)), strict=True)
        return net.eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if ".adn.N." in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn_like(param))
    return net.eval()


def golden_input() -> torch.Tensor:
    if IO.exists():
        return load_file(str(IO))["input"]
    generator = torch.Generator().manual_seed(SEED + 1)
    return torch.randn(INPUT_SHAPE, generator=generator)


def results(net: BasicUNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """MONAI's output and probe gradients, in the precision of ``net`` and ``x``."""
    y = net(x)
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(probe_loss(y), [params[name] for name in GRAD_NAMES])
    out = {"output": y.detach()}
    for name, grad in zip(GRAD_NAMES, grads, strict=True):
        out[f"grad.{name}"] = grad
    return out


def main() -> None:
    net = build()
    state = {name: tensor.contiguous() for name, tensor in net.state_dict().items()}
    save_file(state, str(WEIGHTS))
    torch.save(state, HERE / "basicunet_weights.pt")

    x = golden_input()
    single = results(net, x)
    double = results(net.double(), x.double())
    io = {"input": x.contiguous()}
    for key, value in double.items():
        io[key] = value.contiguous()
        err = (single[key].double() - value).abs().max()
        scale = value.abs().max().item()
        print(f"{key}: max |float64| {scale:.3e}, float32 error {err.item():.3e}")
    save_file(io, str(IO))


if __name__ == "__main__":
    main()
