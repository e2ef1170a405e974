"""FLOPs of one pretraining step, counted by PyTorch's FlopCounterMode on meta tensors.

The physical bound of issue 17's throughput aim: one step (forward, backward) of the default
BasicUNet on a batch at the profile's grid, against a GPU's peak.

    python benchmarks/step_flops.py [--batch 2] [--size 128] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import json

import torch
from monai.networks.nets.basic_unet import BasicUNet
from torch.utils.flop_counter import FlopCounterMode

import layerseg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)"
    )
    args = parser.parse_args()
    features = tuple(json.loads(layerseg.profile_json("brain-mri"))["network"]["features"])
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=features).to("meta")
    image = torch.randn(args.batch, 1, args.size, args.size, args.size, device="meta")
    with FlopCounterMode(display=False) as forward:
        net(image)
    with FlopCounterMode(display=False) as step:
        net(image).sum().backward()
    f, s = forward.get_total_flops() / 1e12, step.get_total_flops() / 1e12
    print(f"BasicUNet{features}, batch {args.batch} at {args.size}^3:")
    print(f"  forward {f:.2f} TFLOP, forward + backward {s:.2f} TFLOP per step")
    for rate in (4.5, 15.0):
        used = rate * s
        share = 100 * used / args.peak_tflops
        print(f"  {rate:4.1f} steps/s = {used:5.1f} TFLOP/s = {share:.1f} % of peak")
    print(f"  at peak: {args.peak_tflops / s:.0f} steps/s")


if __name__ == "__main__":
    main()
