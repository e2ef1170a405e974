"""How a smooth intensity bias, as an MRI receive coil leaves it, moves the default segmentation.

Multiplies a scan by `exp(s * x)`, with x running from -1 to 1 across the grid along one voxel
axis (each direction both ways), segments it with the defaults (brain extraction, layer rule)
and scores it against the label; `s = 0.3` spans 0.74 to 1.35 over the field of view. A
radial field (brighter in the middle) and Rician noise at 5 % of the foreground mean are
scored too. Nothing is chosen on it: it measures robustness on a dev case::

    python benchmarks/bias_fields.py [--case mrbraintumor2] [--strengths 0.15 0.3] [--profile P]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import nibabel as nib
import numpy as np
import numpy.typing as npt

import layerseg
from layerseg.samples import sample_dir

F32 = npt.NDArray[np.float32]


def fields(
    shape: tuple[int, ...], codes: tuple[str, ...], strengths: list[float]
) -> dict[str, Callable[[F32], F32]]:
    """Name -> the change, for every axis, sign and strength, the radial field and the noise."""
    grid = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    out: dict[str, Callable[[F32], F32]] = {"none": lambda x: x}
    for s in strengths:
        for axis, code in enumerate(codes):
            for sign, towards in ((1.0, code), (-1.0, OPPOSITE[code])):
                field = np.exp(sign * s * grid[axis]).astype(np.float32)
                out[f"{s:.2f} brighter towards {towards}"] = times(field)
    radial = np.exp(0.2 - 0.4 * sum(g * g for g in grid)).astype(np.float32)
    out["radial, brighter in the middle (0.61 to 1.22)"] = times(radial)

    def rician(x: F32) -> F32:
        rng = np.random.default_rng(0)
        sigma = 0.05 * float(x[x > 0].mean())
        a = x + sigma * rng.standard_normal(x.shape)
        b = sigma * rng.standard_normal(x.shape)
        return np.sqrt(a * a + b * b).astype(np.float32)

    out["Rician noise, 5 % of the foreground mean"] = rician
    return out


def times(field: F32) -> Callable[[F32], F32]:
    """The change that multiplies a scan by `field`."""

    def change(x: F32) -> F32:
        return x * field

    return change


OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="mrbraintumor2")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.15, 0.3])
    parser.add_argument("--profile", default="brain-mri", help="a profile name or file")
    args = parser.parse_args()
    folder = sample_dir(args.case)
    image, affine = layerseg.read_image(folder / "image.nii.gz")
    truth = layerseg.read_labels(folder / "label.nii.gz")[0] > 0
    sx, sy, sz = (float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    codes = tuple(str(c) for c in nib.aff2axcodes(affine))
    print(f"{args.case}: {image.shape}, axes {''.join(codes)}, profile {args.profile}")
    print(f"{'change':48s} {'Dice':>6s} {'voxels':>7s}  seconds")
    for name, change in fields(image.shape, codes, args.strengths).items():
        start = time.perf_counter()
        seg = layerseg.segment(change(image), affine, profile=args.profile, device="cpu")
        mask = seg["mask"] > 0
        score = layerseg.evaluate(mask, truth, spacing=(sx, sy, sz))
        print(
            f"{name:48s} {score['dice']:6.3f} {int(mask.sum()):7d}  "
            f"{time.perf_counter() - start:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
