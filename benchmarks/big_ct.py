"""A 512x512x400 CT for the peak-memory check in docs/reliability.md.

totalseg_ct (122x101x112 at 3 mm) resampled onto 512x512x400 over the same field of view
(0.72x0.59x0.84 mm): linear for the image (int16), nearest for the liver mask (uint8).
Usage: python benchmarks/big_ct.py OUT_DIR  (writes image.nii.gz and liver.nii.gz, ~100 MB)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from scipy import ndimage

from layerseg import samples

SHAPE = (512, 512, 400)


def main(out: Path) -> None:
    src = samples.fetch(["totalseg_ct"])["totalseg_ct"]
    out.mkdir(parents=True, exist_ok=True)
    for name, order, dtype in [("image", 1, np.int16), ("liver", 0, np.uint8)]:
        img = cast(nib.Nifti1Image, nib.load(src / f"{name}.nii.gz"))
        data = np.asarray(img.dataobj)
        factors = np.array([n / o for n, o in zip(SHAPE, data.shape, strict=True)])
        big = ndimage.zoom(data, factors, order=order, output=dtype, grid_mode=True, mode="nearest")
        linear = img.affine[:3, :3]
        affine = img.affine.copy()
        affine[:3, :3] = linear / factors
        # Same field of view: voxel centres move by half the change of voxel size.
        affine[:3, 3] = img.affine[:3, 3] + linear @ (0.5 / factors - 0.5)
        result = nib.Nifti1Image(big, affine)
        result.header.set_data_dtype(dtype)
        nib.save(result, out / f"{name}.nii.gz")
        print(out / f"{name}.nii.gz", big.shape, result.header.get_zooms())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
