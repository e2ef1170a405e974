"""Golden values for the Rust BasicUNet (rust/torch/tests/basic_unet_parity.rs).

Builds MONAI's ``BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES)``
with MONAI's other defaults and a fixed seed, gives the instance-norm affines random values (MONAI
starts them at 1 and 0, which would hide a missing affine), and writes next to this script:

- ``basicunet_weights.safetensors``: the state dict, via ``safetensors.torch.save_file``;
- ``basicunet_weights.pt``: the same state dict, via ``torch.save`` (a flat ``{name: tensor}`` zip);
- ``basicunet_io.safetensors``: ``input`` (2, 1, 40, 18, 17), MONAI's ``output`` (2, 3, 40, 18, 17)
  and, for the backward pass, ``grad.NAME`` of a few parameters for the loss ``probe_loss(output)``.

The input size is odd on purpose: MONAI replicate-pads the upsampled map by one voxel when pooling
dropped one (axis 0 at level 3, axis 1 at level 1, axis 2 at level 0), and the batch of two checks
that instance norm uses each sample's own statistics.

Run from the repository root: ``.venv/bin/python tests/golden/make_basicunet_golden.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets.basic_unet import BasicUNet
from safetensors.torch import save_file

FEATURES = (4, 4, 8, 8, 16, 4)
INPUT_SHAPE = (2, 1, 40, 18, 17)
SEED = 20240917
HERE = Path(__file__).resolve().parent
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
    with torch.no_grad():
        for name, param in net.named_parameters():
            if ".adn.N." in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn_like(param))
    return net.eval()


def main() -> None:
    net = build()
    state = {name: tensor.contiguous() for name, tensor in net.state_dict().items()}
    save_file(state, str(HERE / "basicunet_weights.safetensors"))
    torch.save(state, HERE / "basicunet_weights.pt")

    generator = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(INPUT_SHAPE, generator=generator)
    y = net(x)
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(probe_loss(y), [params[name] for name in GRAD_NAMES])
    io = {"input": x, "output": y.detach().contiguous()}
    for name, grad in zip(GRAD_NAMES, grads, strict=True):
        io[f"grad.{name}"] = grad.contiguous()
    save_file(io, str(HERE / "basicunet_io.safetensors"))
    print(f"{len(state)} tensors, output {tuple(y.shape)}, |y| max {y.abs().max().item():.4f}")


if __name__ == "__main__":
    main()
