"""Each sample's conversion to NIfTI (``.nii.gz``): copies, binary masks on the image's header,
and the MRC reader and spacing estimate for the LiTS crop."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from layerseg.samples.files import SampleError, atomic_path, copy_atomic


def _load_nifti(path: Path, what: str) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise SampleError(f"{what}: cannot read {path.name} as NIfTI: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image):
        raise SampleError(f"{what}: {path.name} is {type(img).__name__}, expected NIfTI-1")
    return img


def _check_same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, what: str) -> None:
    if a.shape != b.shape:
        raise SampleError(f"{what}: grids differ: shapes {a.shape} vs {b.shape}")
    if not np.allclose(a.affine, b.affine, rtol=0.0, atol=1e-4):
        raise SampleError(f"{what}: grids differ: affines\n{a.affine}\nvs\n{b.affine}")


def _save_like(data: npt.NDArray[Any], ref: nib.Nifti1Image, dst: Path) -> None:
    """Save ``data`` on ``ref``'s header (same qform/sform and codes; dtype replaced)."""
    if data.shape != ref.shape:
        raise SampleError(f"{dst.name}: shape {data.shape} differs from the reference {ref.shape}")
    hdr = ref.header.copy()
    hdr.set_data_dtype(data.dtype)
    if data.dtype == np.uint8:
        hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0
        hdr["intent_code"] = 0
    # affine=None: nibabel keeps the header's qform and sform (and their codes) untouched
    out = nib.Nifti1Image(data, None, header=hdr)
    with atomic_path(dst) as tmp:
        nib.save(out, str(tmp))


def _binary(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(mask, dtype=np.uint8)


def convert_mrbraintumor2(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    what = "mrbraintumor2"
    img = _load_nifti(src["image"], what)
    lab = _load_nifti(src["label"], what)
    _check_same_grid(img, lab, what)
    copy_atomic(src["image"], out / "image.nii.gz")
    data = np.asarray(lab.dataobj)
    present = sorted(int(v) for v in np.unique(data))
    _save_like(_binary(data == 1), img, out / "label.nii.gz")
    return {"source_label_values": present, "kept_label_value": 1}


def _copy_image(src: Mapping[str, Path], out: Path, what: str) -> dict[str, Any]:
    _load_nifti(src["image"], what)  # validate
    copy_atomic(src["image"], out / "image.nii.gz")
    return {}


def convert_mrhead(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    return _copy_image(src, out, "mrhead")


def convert_mrbraintumor1(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    return _copy_image(src, out, "mrbraintumor1")


_MRC_HEADER_BYTES = 1024
_MRC_MODES: dict[int, str] = {2: "<f4", 6: "<u2"}


def _read_mrc(path: Path, mode: int, what: str) -> npt.NDArray[Any]:
    """Read a plain little-endian MRC volume as a (section, row, column) array."""
    head = np.fromfile(path, dtype="<i4", count=_MRC_HEADER_BYTES // 4)
    if head.size != _MRC_HEADER_BYTES // 4:
        raise SampleError(f"{what}: {path.name} is too short for an MRC header")
    nx, ny, nz, got_mode = (int(v) for v in head[:4])
    nsymbt = int(head[23])
    if got_mode != mode:
        raise SampleError(f"{what}: {path.name}: MRC mode {got_mode}, expected {mode}")
    if tuple(int(v) for v in head[16:19]) != (1, 2, 3):
        raise SampleError(
            f"{what}: {path.name}: unexpected MRC axis mapping {head[16:19].tolist()}"
        )
    dtype = np.dtype(_MRC_MODES[mode])
    count = nx * ny * nz
    data = np.fromfile(path, dtype=dtype, offset=_MRC_HEADER_BYTES + nsymbt)
    if data.size != count:
        raise SampleError(f"{what}: {path.name}: {data.size} values, expected {nx}x{ny}x{nz}")
    return data.reshape(nz, ny, nx)


#: LiTS-117 crop orientation, found from the anatomy: array axis 0 runs patient right -> left,
#: axis 1 anterior -> posterior, axis 2 inferior -> superior (axial slices are arr[:, :, k]),
#: i.e. LPS. The voxel size is not stored; see _lits_spacing_mm.
_LITS_AXES = np.array([-1.0, -1.0, 1.0])

#: Reference adult liver volume (CT volumetry puts normal livers at about 1.2-1.8 L).
_REFERENCE_LIVER_ML = 1500.0


def _lits_spacing_mm(liver_voxels: int) -> float:
    """Isotropic voxel size that gives the crop's liver the reference adult volume.

    The MRC header stores a cell size of 0 and the crop was resampled, so the spacing is
    unknown. The crop spans the liver's bounding box on every axis; scaling it so the liver
    (labels 1 and 2) holds 1.5 L uses anatomy only, not the tumour labels. 1 mm, assumed
    before, made it a 0.62 L liver and every lesion about 1.35 times too small.
    """
    return float((_REFERENCE_LIVER_ML * 1000.0 / liver_voxels) ** (1.0 / 3.0))


def convert_lits117(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    what = "lits117"
    img = _read_mrc(src["image"], 2, what)
    lab = _read_mrc(src["label"], 6, what)
    if img.shape != (128, 128, 128) or lab.shape != img.shape:
        raise SampleError(f"{what}: unexpected shapes {img.shape} / {lab.shape}, expected 128^3")
    lo, hi = float(img.min()), float(img.max())
    if lo < -32768 or hi > 32767:
        raise SampleError(f"{what}: HU range {lo}..{hi} does not fit int16")
    labels = sorted(int(v) for v in np.unique(lab))
    if not set(labels) <= {0, 1, 2}:
        raise SampleError(f"{what}: unexpected label values {labels}")
    hu = np.rint(img).astype(np.int16)
    del img
    spacing = _lits_spacing_mm(int(np.count_nonzero(lab)))
    affine = np.diag([*(_LITS_AXES * spacing), 1.0])
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = f"LiTS-117 crop; spacing estimated {spacing:.3f} mm".encode()
    ref = nib.Nifti1Image(hu, affine, header=hdr)
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=1)
    with atomic_path(out / "image.nii.gz") as tmp:
        nib.save(ref, str(tmp))
    _save_like(_binary(lab >= 1), ref, out / "liver.nii.gz")
    _save_like(_binary(lab == 2), ref, out / "tumor.nii.gz")
    return {
        "source_label_values": labels,
        "source_hu_range": [lo, hi],
        "mrc_voxel_size": "0 (not stored)",
        "estimated_spacing_mm": round(spacing, 4),
    }


def _image_and_mask(
    src: Mapping[str, Path], out: Path, what: str, mask_above: float
) -> dict[str, Any]:
    """The image as it is, and `mask > mask_above` as a uint8 brain mask on the image's header."""
    img = _load_nifti(src["image"], what)
    mask = _load_nifti(src["brain"], what)
    _check_same_grid(img, mask, what)
    copy_atomic(src["image"], out / "image.nii.gz")
    _save_like(_binary(np.asarray(mask.dataobj) > mask_above), img, out / "brain.nii.gz")
    return {}


def convert_colin27(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    # ch2bet is the skull-stripped T1: every voxel left in it is brain.
    return _image_and_mask(src, out, "colin27", 0.0)


def convert_mni152(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    # The mask is stored as scaled int16 with values 0 and 0.99999...: threshold at one half.
    return _image_and_mask(src, out, "mni152", 0.5)


def convert_itk_t1(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    # The skull strip holds tissue classes 4-6 inside the brain and 0 outside.
    return _image_and_mask(src, out, "itk_t1", 0.0)


def convert_sri24(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    what = "sri24"
    img = _load_nifti(src["image"], what)
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SampleError(f"{what}: expected a 3D T1, got shape {data.shape}")
    ref = nib.Nifti1Image(data.astype(np.int16), img.affine, img.header)
    ref.header.set_data_shape(data.shape)
    _save_like(data.astype(np.int16), ref, out / "image.nii.gz")
    _save_like(_binary(data > 0), ref, out / "brain.nii.gz")
    return {"source_shape": list(img.shape)}


def convert_totalseg_ct(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    what = "totalseg_ct"
    img = _load_nifti(src["image"], what)
    seg = _load_nifti(src["seg"], what)
    _check_same_grid(img, seg, what)
    data = np.asarray(img.dataobj)
    lo, hi = int(data.min()), int(data.max())
    if lo < -32768 or hi > 32767 or not np.issubdtype(data.dtype, np.integer):
        raise SampleError(
            f"{what}: CT values {lo}..{hi} ({data.dtype}) do not fit int16 losslessly"
        )
    _save_like(data.astype(np.int16), img, out / "image.nii.gz")
    del data
    _save_like(_binary(np.asarray(seg.dataobj) == 5), img, out / "liver.nii.gz")
    return {"source_dtype": str(img.get_data_dtype()), "source_hu_range": [lo, hi]}
