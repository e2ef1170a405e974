"""Seed corpora for the fuzz targets, cut from the real sample scans and the built-in profiles.

Each NIfTI seed keeps the sample's own 348-byte header (qform, sform, pixdim, datatype, units)
with only dim[] changed, followed by a small block cropped from the middle of its voxel data,
so seeds stay a few KB. Written as .nii and .nii.gz. Run: python fuzz/make_seeds.py
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np

from layerseg import samples

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DTYPES = {2: "u1", 4: "<i2", 8: "<i4", 16: "<f4", 64: "<f8", 256: "i1", 512: "<u2"}
CROP = (10, 9, 7)


def cut(raw: bytes, crop: tuple[int, ...] = CROP, volumes: int = 1) -> bytes:
    header = bytearray(raw[:348])
    dims = struct.unpack_from("<8h", header, 40)
    datatype = struct.unpack_from("<h", header, 70)[0]
    offset = int(struct.unpack_from("<f", header, 108)[0])
    shape = dims[1 : 1 + dims[0]][:3]
    data = np.frombuffer(raw, DTYPES[datatype], int(np.prod(shape)), offset)
    vol = data.reshape(shape, order="F")
    lo = [(n - c) // 2 for n, c in zip(shape, crop, strict=True)]
    block = vol[tuple(slice(a, a + c) for a, c in zip(lo, crop, strict=True))]
    blocks = [block + v for v in range(volumes)]
    ndim = 3 if volumes == 1 else 4
    struct.pack_into("<8h", header, 40, ndim, *crop, volumes, 1, 1, 1)
    body = b"".join(np.asarray(b, DTYPES[datatype]).tobytes(order="F") for b in blocks)
    return bytes(header) + raw[348:offset] + body


def main() -> None:
    out = HERE / "seeds" / "nifti_read"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, folder in sorted(samples.fetch().items()):
        for path in sorted(folder.glob("*.nii.gz")):
            raw = gzip.decompress(path.read_bytes())
            stem = f"{name}-{path.name.removesuffix('.nii.gz')}"
            seed = cut(raw)
            (out / f"{stem}.nii").write_bytes(seed)
            (out / f"{stem}.nii.gz").write_bytes(gzip.compress(seed, mtime=0))
            if name == "mrbraintumor2" and path.name == "image.nii.gz":
                four_d = cut(raw, volumes=2)
                (out / f"{stem}-4d.nii.gz").write_bytes(gzip.compress(four_d, mtime=0))
                # The real file cut short: a truncated gzip stream.
                (out / f"{stem}-truncated.nii.gz").write_bytes(path.read_bytes()[:3000])
    profiles = HERE / "seeds" / "profile_parse"
    if profiles.exists():
        shutil.rmtree(profiles)
    profiles.mkdir(parents=True)
    for path in sorted((REPO / "rust" / "core" / "profiles").glob("*.json")):
        shutil.copy(path, profiles / path.name)
    print(f"{len(list(out.iterdir()))} NIfTI seeds, {len(list(profiles.iterdir()))} profiles")


if __name__ == "__main__":
    main()
