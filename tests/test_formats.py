"""NRRD and MetaImage in and out, against ITK's own reader and writer (SimpleITK from PyPI):
the same voxels, data types and geometry as the NIfTI the scans come from (issue 21)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import layerseg

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = str(HERE / "data" / "tiny-brain.json")
# Three orientations: LPS, PIR, LSA.
CASES = ["mrbraintumor2", "mrhead", "itk_t1"]
LPS = np.diag([-1.0, -1.0, 1.0])


def _itk_image(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """An ITK image of nibabel's [i, j, k] array and RAS affine (ITK stores LPS geometry)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).flatten().tolist())
    image.SetOrigin((LPS @ affine[:3, 3]).tolist())
    return image


def _ras_affine(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS @ np.array(image.GetOrigin())
    return affine


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_we_read_what_itk_writes(
    sample_dirs: dict[str, Path], tmp_path: Path, case: str, ext: str
) -> None:
    ref = nib.load(sample_dirs[case] / "image.nii.gz")
    data = np.asarray(ref.dataobj)
    path = tmp_path / f"scan{ext}"
    sitk.WriteImage(_itk_image(data, ref.affine), str(path), useCompression=ext != ".nhdr")
    ours, affine = layerseg.read_image(path)
    np.testing.assert_array_equal(ours, data.astype(np.float32))
    np.testing.assert_allclose(affine, ref.affine, atol=1e-5)
    assert layerseg.read_image(sample_dirs[case] / "image.nii.gz")[0].dtype == ours.dtype


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_itk_reads_what_we_write(
    sample_dirs: dict[str, Path], tmp_path: Path, case: str, ext: str
) -> None:
    src = sample_dirs[case] / "image.nii.gz"
    data, affine = layerseg.read_image(src)
    labels = (data > np.percentile(data, 90)).astype(np.uint8) * 3
    layerseg.write_image(tmp_path / f"image{ext}", data, affine)
    layerseg.write_labels(tmp_path / f"labels{ext}", labels, affine)
    for name, expected, pixel in (
        ("image", data, sitk.sitkFloat32),
        ("labels", labels, sitk.sitkUInt8),
    ):
        theirs = sitk.ReadImage(str(tmp_path / f"{name}{ext}"))
        assert theirs.GetPixelID() == pixel, name
        np.testing.assert_array_equal(sitk.GetArrayFromImage(theirs).transpose(2, 1, 0), expected)
        np.testing.assert_allclose(_ras_affine(theirs), affine, atol=1e-5)
    # And back through ours: the label values survive.
    back, back_affine = layerseg.read_image(tmp_path / f"labels{ext}")
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)


def test_segment_reads_and_writes_nrrd(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """A 3D Slicer user's day: an .nrrd scan in, an .nrrd mask out, on the scan's grid."""
    ref = nib.load(sample_dirs["itk_t1"] / "image.nii.gz")
    scan = tmp_path / "scan.nrrd"
    sitk.WriteImage(_itk_image(np.asarray(ref.dataobj), ref.affine), str(scan), True)
    out = tmp_path / "mask.nrrd"
    proc = subprocess.run(
        [str(layerseg_bin), "segment", str(scan), "--out", str(out), "--model", str(MODEL),
         "--profile", PROFILE],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mask = sitk.ReadImage(str(out))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == ref.shape
    np.testing.assert_allclose(_ras_affine(mask), ref.affine, atol=1e-5)


def test_unwritable_formats_and_dicom_are_refused_with_what_to_do(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    data, affine = layerseg.read_image(scan)
    with pytest.raises(layerseg.LayerSegError, match=r"unsupported output format: name it"):
        layerseg.write_image(tmp_path / "scan.png", data, affine)
    assert not (tmp_path / "scan.png").exists()

    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    proc = subprocess.run(
        [str(layerseg_bin), "info", str(dicom / "IM0001")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "dcm2niix" in proc.stderr, proc.stderr
    with pytest.raises(layerseg.LayerSegError, match="dcm2niix"):
        layerseg.read_image(dicom)
    proc = subprocess.run(
        [str(layerseg_bin), "segment", str(dicom), "--out", str(tmp_path / "masks")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "a folder of DICOM files" in proc.stderr, proc.stderr
