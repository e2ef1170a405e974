"""Brain extraction, measured: Dice against the sample scans' reference brain masks, also
after re-slicing each scan to 6.5 mm along each axis in turn, the brain volume, and the time.

    python benchmarks/brain_extraction.py [--thickness 6.5]

Each reference mask is re-sliced with its scan (benchmarks/thick_slices.py: partial-volume
averaging, thresholded at one half). MRHead and MRBrainTumor2 have no reference: their rows give
the volume and, for MRBrainTumor2, the share of the tumour label inside the extracted brain.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt

import layerseg
from layerseg.samples import sample_dir
from thick_slices import PLANES, thicken, voxel_axis

CASES = [
    ("colin27", "brain.nii.gz"),
    ("mni152", "brain.nii.gz"),
    ("itk_t1", "brain.nii.gz"),
    ("sri24", "brain.nii.gz"),
    ("mrhead", None),
    ("mrbraintumor2", "label.nii.gz"),
]


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def row(
    name: str,
    image: npt.NDArray[np.float32],
    affine: npt.NDArray[np.float64],
    reference: npt.NDArray[np.bool_] | None,
    is_tumour: bool,
) -> str:
    start = time.perf_counter()
    brain = layerseg.extract_brain(image, affine, device="cpu")
    seconds = time.perf_counter() - start
    mask = brain["mask"] > 0
    if reference is None:
        score = ""
    elif is_tumour:
        score = f"tumour inside {float((mask & reference).sum()) / reference.sum():.3f}"
    else:
        score = f"Dice {dice(mask, reference):.3f}"
    shape = "x".join(str(n) for n in image.shape)
    return f"| {name} | {shape} | {score} | {brain['litres']:.2f} L | {seconds:.1f} s |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thickness", type=float, default=6.5)
    args = parser.parse_args()
    print("| scan | voxels | against the reference | brain volume | time (2 cores) |")
    print("|---|---|---|---|---|")
    for name, reference_file in CASES:
        folder = sample_dir(name)
        image, affine = layerseg.read_image(folder / "image.nii.gz")
        reference = None
        if reference_file is not None:
            reference = layerseg.read_labels(folder / reference_file)[0] > 0
        is_tumour = reference_file == "label.nii.gz"
        print(row(name, image, affine, reference, is_tumour), flush=True)
        for plane in PLANES:
            axis = voxel_axis(affine, plane)
            thick, thick_affine = thicken(image, affine, axis, args.thickness)
            thick_reference = None
            if reference is not None:
                thick_reference = thicken(reference, affine, axis, args.thickness)[0] >= 0.5
            label = f"{name}, {args.thickness} mm {plane}"
            print(row(label, thick, thick_affine, thick_reference, is_tumour), flush=True)


if __name__ == "__main__":
    main()
