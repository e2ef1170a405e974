"""Foundation checks against the reference reader (nibabel) on real scans, and linking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import layerseg

CASES = [
    ("mrbraintumor2", "image.nii.gz", "LPS"),
    ("colin27", "image.nii.gz", "RAS"),
    ("mrhead", "image.nii.gz", "PIR"),
    ("totalseg_ct", "image.nii.gz", "RAS"),
]


@pytest.mark.parametrize(("name", "file", "axcodes"), CASES)
def test_read_agrees_with_nibabel(
    sample_dirs: dict[str, Path], name: str, file: str, axcodes: str
) -> None:
    path = sample_dirs[name] / file
    ref = nib.load(path)
    data, affine = layerseg.read_image(path)
    expected = np.asarray(ref.get_fdata(dtype=np.float64))
    assert data.shape == expected.shape
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(affine, ref.affine, rtol=0, atol=1e-6)
    assert "".join(nib.aff2axcodes(affine)) == axcodes


@pytest.mark.parametrize(("name", "file", "axcodes"), CASES[:2])
def test_round_trip_keeps_voxels_and_geometry(
    sample_dirs: dict[str, Path], tmp_path: Path, name: str, file: str, axcodes: str
) -> None:
    src = sample_dirs[name] / file
    data, affine = layerseg.read_image(src)
    out = tmp_path / "copy.nii.gz"
    layerseg.write_image(out, data, affine, reference=src)
    ref, back = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(ref.get_fdata(), np.float32))
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-6)
    # Both xforms survive, so any viewer (qform- or sform-first) overlays the two exactly.
    np.testing.assert_allclose(back.get_qform(), ref.get_qform(), atol=1e-6)
    np.testing.assert_allclose(back.get_sform(), ref.get_sform(), atol=1e-6)
    assert back.header["qform_code"] == ref.header["qform_code"]
    assert back.header["sform_code"] == ref.header["sform_code"]


def test_mask_written_for_a_scan_overlays_it(sample_dirs: dict[str, Path], tmp_path: Path) -> None:
    src = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    data, affine = layerseg.read_image(src)
    mask = (data > 300).astype(np.uint8)
    out = tmp_path / "mask.nii.gz"
    layerseg.write_labels(out, mask, affine, reference=src)
    back = nib.load(out)
    assert back.get_data_dtype() == np.uint8
    assert back.shape == nib.load(src).shape
    np.testing.assert_allclose(back.affine, nib.load(src).affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj), mask)


def test_info_json_agrees_with_nibabel(sample_dirs: dict[str, Path], layerseg_bin: Path) -> None:
    path = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    out = subprocess.run([layerseg_bin, "info", "--json", path], capture_output=True, check=True)
    info = json.loads(out.stdout)
    ref = nib.load(path)
    data = ref.get_fdata()
    assert info["shape"] == list(ref.shape)
    np.testing.assert_allclose(info["spacing_mm"], ref.header.get_zooms(), atol=1e-6)
    assert info["orientation"] == "".join(nib.aff2axcodes(ref.affine))
    assert info["datatype"] == str(ref.get_data_dtype())
    assert info["range"] == [data.min(), data.max()]


def test_console_script_runs_the_same_cli(sample_dirs: dict[str, Path]) -> None:
    path = sample_dirs["colin27"] / "brain.nii.gz"
    ok = subprocess.run(
        [sys.executable, "-m", "layerseg", "info", "--json", str(path)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["orientation"] == "RAS"
    bad = subprocess.run(
        [sys.executable, "-m", "layerseg", "info", "/missing.nii"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "layerseg: error: /missing.nii: file not found"


def test_python_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.nii"):
        layerseg.read_image(tmp_path / "missing.nii")
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"\0" * 400)
    with pytest.raises(layerseg.LayerSegError, match=r"junk\.nii"):
        layerseg.read_image(junk)
    with pytest.raises(ValueError, match="affine"):
        layerseg.write_image(tmp_path / "x.nii", np.zeros((2, 2, 2), np.float32), np.eye(3))


def _ldd(path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    return subprocess.run(
        ["ldd", str(path)], capture_output=True, text=True, env=env, check=True
    ).stdout


def test_binary_finds_libtorch_and_keeps_cuda_backend(layerseg_bin: Path) -> None:
    out = _ldd(layerseg_bin)
    assert "not found" not in out, out
    torch_lib = Path(__import__("torch").__file__).parent / "lib"
    assert f"libtorch_cpu.so => {torch_lib}" in out
    if (torch_lib / "libtorch_cuda.so").exists():
        assert "libtorch_cuda.so =>" in out


def test_only_the_libtorch_extension_links_libtorch() -> None:
    from layerseg._libtorch import native

    free = _ldd(Path(layerseg._layerseg.__file__))
    assert "torch" not in free and "c10" not in free and "not found" not in free, free
    # The runtime needs libtorch and finds it through the torch it imports first (an installed
    # wheel also through its $ORIGIN/../torch/lib rpath; tests/test_wheel.py).
    dynamic = subprocess.run(
        ["readelf", "-d", native().__file__], check=True, capture_output=True, text=True
    ).stdout
    assert "[libtorch_cpu.so]" in dynamic and "$ORIGIN/../torch/lib" in dynamic, dynamic
    assert "CUDA backend loaded" in layerseg.runtime() or "not loaded" in layerseg.runtime()
