"""Segmenting a real scan end to end: LayerSeg against a MONAI pipeline, same weights, one run.

Both read MRBrainTumor2 (256x256x130), extract the brain (the MONAI side calls
`layerseg.extract_brain`, the same deepbet networks: MONAI has no brain extractor), crop to the
brain's box, resize to 128^3, z-score the non-zero voxels, run the default-width BasicUNet with
Gaussian sliding-window inference, take the sigmoid of the mask channel, map it back, threshold
inside the brain and write a NIfTI mask. Neither applies the layer rule (ours runs with
`--raw-mask`; the rule is a few array passes). Each side runs in its own process so peak
resident memory is its own.

    .venv/bin/python benchmarks/bench_segment.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[1]


def monai_pipeline(image: str, weights: str, out: str) -> None:
    import torch
    from monai.inferers.utils import sliding_window_inference
    from monai.networks.nets.basic_unet import BasicUNet
    from monai.transforms.croppad.array import CropForeground, SpatialCrop
    from monai.transforms.intensity.array import NormalizeIntensity
    from monai.transforms.io.array import LoadImage, SaveImage
    from monai.transforms.spatial.array import Resize
    from safetensors.torch import load_file

    import layerseg

    net = BasicUNet(
        spatial_dims=3, in_channels=1, out_channels=3, features=(32, 32, 64, 128, 256, 32)
    )
    net.load_state_dict(load_file(weights), strict=True)
    net.eval()
    img = LoadImage(image_only=True, ensure_channel_first=True)(image)
    extracted = layerseg.extract_brain(img[0].numpy(), img.affine.numpy(), device="cpu")
    brain = torch.as_tensor(extracted["mask"])[None] > 0
    start, end = CropForeground(select_fn=lambda x: x > 0, allow_smaller=True).compute_bounding_box(
        brain
    )
    cropped = SpatialCrop(roi_start=start, roi_end=end)(img)
    # MONAI types its array transforms' output as array-or-tensor: a MetaTensor here.
    x = cast(
        torch.Tensor,
        NormalizeIntensity(nonzero=True)(Resize((128, 128, 128), mode="trilinear")(cropped)),
    )
    with torch.no_grad():
        # One tensor, as the network returns (not a tuple or dict of them).
        y = cast(
            torch.Tensor,
            sliding_window_inference(
                x[None], (128, 128, 128), 1, net, overlap=0.25, mode="gaussian"
            ),
        )
    prob = Resize(tuple(cropped.shape[1:]), mode="trilinear")(torch.sigmoid(y[0, 2:3]))
    full = torch.zeros_like(img)
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, end, strict=True))
    # Bound first: mypy (target 3.10) takes a starred tuple inside [...] for 3.11 syntax.
    index = (slice(None), *box)
    full[index] = prob
    mask = ((full > 0.5) & brain).to(torch.uint8)
    SaveImage(
        output_dir=str(Path(out).parent),
        output_postfix="",
        separate_folder=False,
        output_dtype="uint8",
        resample=False,
    )(mask)


def run_isolated(args: list[str]) -> tuple[float, float]:
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:])\n"
        "w = time.perf_counter() - t\n"
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{args[:2]} failed:\n{proc.stderr[-2000:]}")
    wall, rss = proc.stdout.split()[-2:]
    return float(wall), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--monai-only", nargs=3, metavar=("IMAGE", "WEIGHTS", "OUT"))
    args = parser.parse_args()
    if args.monai_only:
        monai_pipeline(*args.monai_only)
        return

    import torch
    from monai.networks.nets.basic_unet import BasicUNet
    from safetensors.torch import save_file

    from layerseg import samples

    image = str(samples.sample_dir("mrbraintumor2") / "image.nii.gz")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = BasicUNet(
            spatial_dims=3, in_channels=1, out_channels=3, features=(32, 32, 64, 128, 256, 32)
        )
        weights = str(Path(tmp) / "weights.safetensors")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
        ours_cmd = [
            str(REPO / "target/release/layerseg"),
            "segment",
            image,
            "--out",
            str(Path(tmp) / "ours.nii.gz"),
            "--model",
            weights,
            "--profile",
            "brain-mri",
            "--device",
            "cpu",
            "--raw-mask",
        ]
        monai_cmd = [
            sys.executable,
            __file__,
            "--monai-only",
            image,
            weights,
            str(Path(tmp) / "image.nii.gz"),
        ]
        results: dict[str, list[tuple[float, float]]] = {"layerseg": [], "monai": []}
        for _ in range(args.repeat):
            results["layerseg"].append(run_isolated(ours_cmd))
            results["monai"].append(run_isolated(monai_cmd))
    best = {k: min(w for w, _ in v) for k, v in results.items()}
    peak = {k: max(m for _, m in v) for k, v in results.items()}
    print(
        f"segment MRBrainTumor2 256x256x130 end to end, {torch.get_num_threads()} threads, "
        f"best of {args.repeat}"
    )
    for k in ("layerseg", "monai"):
        print(f"  {k:9s} {best[k]:7.2f} s   peak RSS {peak[k]:7.0f} MiB")
    print(f"  ratio (MONAI / LayerSeg) {best['monai'] / best['layerseg']:.2f}x")


if __name__ == "__main__":
    main()
