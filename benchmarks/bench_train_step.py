"""One pretraining step, LayerSeg against PyTorch: same BasicUNet, batch, input size, losses, Adam.

Ours is the inner step of `layerseg pretrain` (forward, losses, backward, Adam, reading the
loss values), timed in Rust by ``layerseg_libtorch._native.bench_train_step``. PyTorch's is MONAI's
``BasicUNet`` with the losses of method.md section 5 and ``torch.optim.Adam`` with the paper's
settings, also reading the loss each step. Both train on a fixed batch already on the device,
after warm-up steps. Each side runs in its own process, so peak memory is its own: resident
memory on CPU, ``torch.cuda.max_memory_allocated`` on CUDA (our libtorch is PyTorch's, so the
allocator is the same).

    .venv/bin/python benchmarks/bench_train_step.py [--sizes 64 96] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FEATURES = (32, 32, 64, 128, 256, 32)


def _batch(
    size: int, batch: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same smooth background with a bright ball as the Rust side's fixed batch."""
    import torch

    z, y, x = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij")
    healthy, mask = [], []
    for i in range(batch):
        c = size * (0.4 + 0.05 * (i % 4))
        healthy.append(torch.sin((z + 2 * y + 3 * x) / 17.0))
        mask.append((((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2) < (size / 6.0) ** 2).float())
    h = torch.stack(healthy)[:, None].to(device)
    m = torch.stack(mask)[:, None].to(device)
    t = 2.0 * m
    return h * (1 - m) + t, h, t, m


def _losses(
    pred: torch.Tensor, healthy: torch.Tensor, tumour: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    import torch

    assert isinstance(pred, torch.Tensor)
    n_hat, s_hat, p = pred[:, 0:1], pred[:, 1:2], torch.sigmoid(pred[:, 2:3])
    dice = 1 - (2 * (p * mask).sum() + 1e-7) / (p.sum() + mask.sum() + 1e-7)
    total = dice + (n_hat - healthy).abs().mean() + (s_hat - tumour).abs().mean()
    inside = mask > 0.5
    if bool(inside.any()) and not bool(inside.all()):
        total = total + (n_hat[inside] - healthy[inside]).abs().mean()
        total = total + (s_hat[inside] - tumour[inside]).abs().mean()
    return total


def torch_step(size: int, batch: int, steps: int, warmup: int, device: str) -> float:
    import torch
    from monai.networks.nets.basic_unet import BasicUNet

    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES).to(device)
    net.train()
    adam = torch.optim.Adam(
        net.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=3e-5
    )
    image, healthy, tumour, mask = _batch(size, batch, device)

    def step() -> None:
        loss = _losses(net(image), healthy, tumour, mask)
        adam.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        adam.step()
        loss.item()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def ours_step(size: int, batch: int, steps: int, warmup: int, device: str) -> float:
    from layerseg._libtorch import native

    seconds: float = native().bench_train_step(
        size, batch=batch, features=FEATURES, steps=steps, warmup=warmup, device=device
    )
    return seconds


def child(side: str, size: int, batch: int, steps: int, warmup: int, device: str) -> None:
    import torch

    import layerseg  # noqa: F401  (maps libtorch the way the package does)

    run = ours_step if side == "ours" else torch_step
    seconds = run(size, batch, steps, warmup, device)
    if device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib}))


def measure(side: str, size: int, args: argparse.Namespace) -> dict[str, float]:
    argv = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--sizes",
        str(size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=["ours", "torch"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sizes[0], args.batch, args.steps, args.warmup, args.device)
        return
    import torch

    memory = "GPU peak allocated" if args.device.startswith("cuda") else "peak RSS"
    print(
        f"one training step, BasicUNet features {FEATURES}, batch {args.batch}, "
        f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"mean of {args.steps} steps after {args.warmup} warm-up"
    )
    print(
        f"{'input':>8} {'ours s/step':>12} {'torch s/step':>13} {'ours/torch':>11} "
        f"{'ours ' + memory:>22} {'torch ' + memory:>23}"
    )
    for size in args.sizes:
        ours = measure("ours", size, args)
        ref = measure("torch", size, args)
        print(
            f"{size:>5}^3 {ours['seconds']:>12.3f} {ref['seconds']:>13.3f} "
            f"{ours['seconds'] / ref['seconds']:>11.2f} {ours['peak_mib']:>18.0f} MiB "
            f"{ref['peak_mib']:>19.0f} MiB"
        )


if __name__ == "__main__":
    main()
