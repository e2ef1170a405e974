"""Brain extraction, measured: Dice against the sample scans' reference brain masks, also
after re-slicing each scan to 6.5 mm along each axis in turn and on partial coverage, the brain
volume, whether the mask is kept (plausible), and the time.

    python benchmarks/brain_extraction.py [--thickness 6.5] [--slices 20 40]

Each reference mask is re-sliced with its scan (benchmarks/thick_slices.py: partial-volume
averaging, thresholded at one half). Partial coverage, as clinical 2D acquisitions have it: the
scan, as stored and re-sliced to the thickness axially, cut to each number of axial slices it
has more than, centred on the reference mask (the scan's centre for MRHead), the reference cut
alike. MRHead and MRBrainTumor2 have no brain reference: their rows give the volume and, for
MRBrainTumor2, the share of the tumour label inside the extracted brain.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt

import layerseg
from choose_layer_rule import dice
from layerseg.samples import sample_dir
from thick_slices import PLANES, keep_slices, thicken, voxel_axis

CASES = [
    ("colin27", "brain.nii.gz"),
    ("mni152", "brain.nii.gz"),
    ("itk_t1", "brain.nii.gz"),
    ("sri24", "brain.nii.gz"),
    ("mrhead", None),
    ("mrbraintumor2", "label.nii.gz"),
]


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
        inside = float((mask & reference).sum()) / max(int(reference.sum()), 1)
        score = f"tumour inside {inside:.3f}"
    else:
        score = f"Dice {dice(mask, reference):.3f}"
    shape = "x".join(str(n) for n in image.shape)
    kept = "yes" if brain["plausible"] else f"no: {brain['implausible']}"
    if brain["cut_by_scan"]:
        kept += " (cut by the scan)"
    litres = f"{brain['litres']:.2f} L"
    return f"| {name} | {shape} | {score} | {litres} | {kept} | {seconds:.1f} s |"


def cut(
    image: npt.NDArray[np.float32],
    affine: npt.NDArray[np.float64],
    reference: npt.NDArray[np.bool_] | None,
    slices: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.bool_] | None]:
    """`slices` axial slices centred on the reference (the scan's centre without one)."""
    axis = voxel_axis(affine, "axial")
    if reference is not None and reference.any():
        others = tuple(a for a in range(3) if a != axis)
        planes = np.flatnonzero(reference.any(axis=others))
        centre = (int(planes[0]) + int(planes[-1]) + 1) // 2
    else:
        centre = image.shape[axis] // 2
    arrays = [image] if reference is None else [image, reference]
    parts, moved = keep_slices(arrays, affine, axis, centre, slices)
    part = None if reference is None else parts[1]
    return np.ascontiguousarray(parts[0]), moved, part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thickness", type=float, default=6.5)
    parser.add_argument("--slices", type=int, nargs="+", default=[20, 40])
    args = parser.parse_args()
    print("| scan | voxels | against the reference | brain volume | kept | time (2 cores) |")
    print("|---|---|---|---|---|---|")
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
            if plane == "axial":
                for n in (n for n in args.slices if n < thick.shape[axis]):
                    part = cut(thick, thick_affine, thick_reference, n)
                    label = f"{name}, {args.thickness} mm axial, {n} slices"
                    print(row(label, *part, is_tumour), flush=True)
        for n in (n for n in args.slices if n < image.shape[voxel_axis(affine, "axial")]):
            part = cut(image, affine, reference, n)
            print(row(f"{name}, {n} axial slices", *part, is_tumour), flush=True)


if __name__ == "__main__":
    main()
