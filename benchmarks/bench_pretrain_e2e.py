"""Pretraining end to end: iterations per second with synthesis on the fly, one run.

- LayerSeg: ``layerseg pretrain`` (Rust synthesis workers feeding a bounded queue, tch step).
- Peer: a PyTorch ``DataLoader`` whose dataset runs the NumPy/SciPy synthesis of
  ``benchmarks/synthesis_numpy.py`` (the synthesis benchmark's peer), feeding MONAI's BasicUNet
  with the same losses and ``torch.optim.Adam``.

Same healthy scan (Colin27 with its brain mask), same texture scan (MRBrainTumor2), same grid
(the brain box resized to SIZE^3), same network width and batch. Steps per second are measured
after the first step, so start-up and warm-up are left out. Each side runs in its own process.

    .venv/bin/python benchmarks/bench_pretrain_e2e.py [--size 64] [--steps 12] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FEATURES = [8, 8, 16, 32, 64, 8]


def crop_resize(data: Any, keep: Any, size: int) -> Any:
    import numpy as np
    from scipy import ndimage

    nz = np.argwhere(keep)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    box = data[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    return ndimage.zoom(box, [size / s for s in box.shape], order=1).astype(np.float32)


def torch_side(size: int, steps: int, workers: int, batch: int) -> float:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.networks.nets.basic_unet import BasicUNet

    sys.path.insert(0, str(HERE))
    from bench_train_step import _losses
    from layerseg.samples import sample_dir
    from synthesis_numpy import synthesize

    colin, tumour_scan = sample_dir("colin27"), sample_dir("mrbraintumor2")
    brain = np.asarray(cast(nib.Nifti1Image, nib.load(colin / "brain.nii.gz")).dataobj) > 0
    healthy = crop_resize(
        np.asarray(cast(nib.Nifti1Image, nib.load(colin / "image.nii.gz")).dataobj) * brain,
        brain,
        size,
    )
    tex = np.asarray(
        cast(nib.Nifti1Image, nib.load(tumour_scan / "image.nii.gz")).dataobj, dtype=np.float32
    )
    texture = crop_resize(tex, tex != 0, size)

    def zscore(a: Any) -> Any:
        nz = a[a != 0]
        return (a - nz.mean()) / max(float(nz.std()), 1e-2) if nz.size else a

    class Synthetic(torch.utils.data.Dataset[tuple[Any, ...]]):
        def __len__(self) -> int:
            return 1 << 30

        def __getitem__(self, i: int) -> tuple[Any, ...]:
            out = synthesize(healthy, texture, np.random.default_rng(i))
            mask = out["mask"].astype(np.float32)
            layers = [zscore(out["image"]), zscore(healthy), zscore(out["tumour"]) * mask, mask]
            return tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in layers)

    loader = torch.utils.data.DataLoader(
        Synthetic(), batch_size=batch, num_workers=workers, persistent_workers=workers > 0
    )
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=tuple(FEATURES))
    adam = torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-8, weight_decay=3e-5)
    times = []
    for n, (image, h, t, m) in enumerate(loader):
        loss = _losses(net(image), h, t, m)
        adam.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        adam.step()
        loss.item()
        times.append(time.perf_counter())
        if n + 1 == steps:
            break
    return (len(times) - 1) / (times[-1] - times[0])


def ours_side(size: int, steps: int, workers: int, batch: int) -> float:
    from layerseg import profile_json
    from layerseg.samples import sample_dir

    profile = json.loads(profile_json("brain-mri"))
    profile["name"] = f"bench-{size}"
    profile["network"]["features"] = FEATURES
    profile["resample"]["target_size"] = [size] * 3
    profile["inference"]["patch_size"] = [size] * 3
    colin, tumour_scan = sample_dir("colin27"), sample_dir("mrbraintumor2")
    with tempfile.TemporaryDirectory() as tmp:
        profile_path = Path(tmp) / "profile.json"
        profile_path.write_text(json.dumps(profile))
        run = Path(tmp) / "run"
        cmd = [
            str(REPO / "target/release/layerseg"),
            "pretrain",
            "--profile",
            str(profile_path),
            "--healthy",
            str(colin / "image.nii.gz"),
            "--organ-masks",
            str(colin / "brain.nii.gz"),
            "--textures",
            str(tumour_scan / "image.nii.gz"),
            "--out",
            str(run),
            "--steps",
            str(steps),
            "--batch",
            str(batch),
            "--workers",
            str(workers),
            "--checkpoint-every",
            str(10 * steps),
            "--device",
            "cpu",
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        walls: list[float] = [
            json.loads(line)["wall_time_s"]
            for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line
        ]
    return (len(walls) - 1) / (walls[-1] - walls[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--child", choices=["ours", "torch"])
    args = parser.parse_args()
    if args.child:
        side_fn = ours_side if args.child == "ours" else torch_side
        rate = side_fn(args.size, args.steps, args.workers, args.batch)
        rss = (
            max(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            )
            / 1024
        )
        print(json.dumps({"steps_per_s": rate, "peak_rss_mib": rss}))
        return
    results = {}
    for side in ("ours", "torch"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                side,
                "--size",
                str(args.size),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--workers",
                str(args.workers),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"pretraining end to end, {args.size}^3, batch {args.batch}, features {FEATURES}, "
        f"{args.workers} data worker(s), {args.steps} steps (rate after the first)"
    )
    for side, label in (("ours", "layerseg"), ("torch", "pytorch+numpy")):
        r = results[side]
        print(
            f"  {label:14s} {r['steps_per_s']:6.3f} steps/s   peak RSS {r['peak_rss_mib']:7.0f} MiB"
        )
    print(f"  ratio {results['ours']['steps_per_s'] / results['torch']['steps_per_s']:.2f}x")


if __name__ == "__main__":
    main()
