"""Simulate a clinical 2D acquisition: thick slices along one axis, with partial-volume averaging.

Each new slice averages the scan over its own thickness (a box profile, as a 2D sequence's
slice integrates), taken at slice centres `thickness` apart; the affine moves with it, so the
thick scan lies exactly where the original did. A label map goes through the same averaging and
is thresholded at one half.

    python benchmarks/thick_slices.py IMAGE.nii.gz OUT.nii.gz --axis axial --thickness 6.5 \
        [--labels LABEL.nii.gz LABEL_OUT.nii.gz]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

# The anatomical direction a named acquisition plane's slices are stacked along.
PLANES = {"sagittal": "LR", "coronal": "PA", "axial": "IS"}


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """`nib.load` typed as the NIfTI image it returns for the benchmarks' .nii/.nii.gz files
    (nibabel types it as a bare FileBasedImage, without affine, dataobj or get_fdata)."""
    return cast(nib.Nifti1Image, nib.load(path))


def voxel_axis(affine: npt.NDArray[np.float64], plane: str) -> int:
    """The voxel axis that runs along `plane`'s slice direction (e.g. axial: inferior-superior)."""
    codes = nib.aff2axcodes(affine)
    return next(i for i, code in enumerate(codes) if code in PLANES[plane])


def thicken(
    data: npt.NDArray[np.floating | np.bool_],
    affine: npt.NDArray[np.float64],
    axis: int,
    thickness: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """`data` re-sliced along voxel `axis` at `thickness` mm: (new data, new affine)."""
    spacing = float(np.linalg.norm(affine[:3, axis]))
    factor = thickness / spacing
    if factor <= 1.0:
        return data.astype(np.float32), affine
    averaged = ndimage.uniform_filter1d(
        data.astype(np.float32), size=max(1, round(factor)), axis=axis, mode="nearest"
    )
    count = int(data.shape[axis] // factor)
    centres = (np.arange(count) + 0.5) * factor - 0.5
    shape = list(data.shape)
    shape[axis] = count
    grid = [np.arange(n, dtype=np.float64) for n in shape]
    grid[axis] = centres
    coords = np.meshgrid(*grid, indexing="ij")
    thick = ndimage.map_coordinates(averaged, coords, order=1, mode="nearest")
    new_affine = affine.copy()
    new_affine[:3, axis] = affine[:3, axis] * factor
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * (factor - 1.0) / 2.0
    return thick.astype(np.float32), new_affine


def keep_slices(
    arrays: Sequence[npt.NDArray[Any]],
    affine: npt.NDArray[np.float64],
    axis: int,
    centre: int,
    slices: int,
) -> tuple[list[npt.NDArray[Any]], npt.NDArray[np.float64]]:
    """Partial coverage: `slices` slices along voxel `axis` of each array (all on one grid),
    centred on slice `centre` and clipped to the scan, and the affine moved to the first one."""
    first = min(max(centre - slices // 2, 0), max(arrays[0].shape[axis] - slices, 0))
    keep = [slice(None)] * 3
    keep[axis] = slice(first, first + slices)
    moved = affine.copy()
    moved[:3, 3] += affine[:3, axis] * first
    return [a[tuple(keep)] for a in arrays], moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--axis", choices=sorted(PLANES), default="axial")
    parser.add_argument("--thickness", type=float, default=6.5, help="slice thickness (mm)")
    parser.add_argument("--labels", nargs=2, type=Path, metavar=("LABELS", "LABELS_OUT"))
    args = parser.parse_args()
    image = load_nifti(args.image)
    axis = voxel_axis(image.affine, args.axis)
    data, affine = thicken(image.get_fdata(), image.affine, axis, args.thickness)
    nib.save(nib.Nifti1Image(data, affine), args.out)
    print(f"{args.out}: {data.shape}, {args.thickness} mm {args.axis} slices (voxel axis {axis})")
    if args.labels:
        source, target = args.labels
        labels = load_nifti(source)
        thick, _ = thicken(labels.get_fdata() > 0, labels.affine, axis, args.thickness)
        nib.save(nib.Nifti1Image((thick >= 0.5).astype(np.uint8), affine), target)
        print(f"{target}: {int((thick >= 0.5).sum())} label voxels")


if __name__ == "__main__":
    main()
