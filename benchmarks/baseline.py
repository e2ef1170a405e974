"""The no-learning baseline of the results table: a fixed intensity threshold inside the organ.

The rule was fixed before any label was looked at, from the modality alone:
- MRI (enhancing or FLAIR-bright lesions): robust z-score of the region's intensities
  (median, 1.4826 * MAD); voxels above z = 2.5; the largest connected component is kept.
- CT (hypodense liver lesions): voxels below z = -2.0 inside the liver; components smaller
  than 100 mm^3 are dropped.
The region is the organ mask when one is given, else the head/body foreground
(voxels above 10 % of the 99th percentile).

    python benchmarks/baseline.py --modality mri SCAN.nii.gz --out MASK.nii.gz
    python benchmarks/baseline.py --modality ct SCAN.nii.gz --organ-mask LIVER.nii.gz --out M.nii.gz

Score it with `layerseg evaluate --pred MASK --truth LABEL`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

MRI_Z = 2.5
CT_Z = -2.0
CT_MIN_MM3 = 100.0


def default_region(image: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """The head/body foreground, where no organ mask is given."""
    return np.asarray(image > 0.1 * float(np.percentile(image, 99)))


def baseline_mask(
    image: npt.NDArray[np.floating], region: npt.NDArray[np.bool_], modality: str, voxel_mm3: float
) -> npt.NDArray[np.uint8]:
    values = image[region]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median))) or float(values.std()) or 1.0
    z = (image - median) / spread
    if modality == "mri":
        candidate = region & (z > MRI_Z)
        labels, n = ndimage.label(candidate)
        if n == 0:
            return candidate.astype(np.uint8)
        sizes = ndimage.sum_labels(candidate, labels, index=np.arange(1, n + 1))
        largest: npt.NDArray[np.uint8] = (labels == 1 + int(np.argmax(sizes))).astype(np.uint8)
        return largest
    candidate = region & (z < CT_Z)
    labels, n = ndimage.label(candidate)
    sizes = ndimage.sum_labels(candidate, labels, index=np.arange(1, n + 1)) * voxel_mm3
    keep = np.flatnonzero(sizes >= CT_MIN_MM3) + 1
    return np.isin(labels, keep).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scan", type=Path)
    parser.add_argument("--modality", choices=["mri", "ct"], required=True)
    parser.add_argument("--organ-mask", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    img = cast(nib.Nifti1Image, nib.load(str(args.scan)))
    image = np.asarray(img.dataobj, dtype=np.float32)
    if args.organ_mask is not None:
        region = np.asarray(cast(nib.Nifti1Image, nib.load(str(args.organ_mask))).dataobj) > 0
        if region.shape != image.shape:
            print(f"{args.organ_mask}: not on the scan's grid", file=sys.stderr)
            return 1
    else:
        region = default_region(image)
    voxel_mm3 = float(np.prod(img.header.get_zooms()[:3]))
    mask = baseline_mask(image, region, args.modality, voxel_mm3)
    out = nib.Nifti1Image(mask, img.affine, img.header)
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1, 0)
    nib.save(out, str(args.out))
    print(f"{args.out}: {int(mask.sum())} voxels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
