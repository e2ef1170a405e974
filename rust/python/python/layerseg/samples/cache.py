"""The sample cache: where it is, its lock, each sample's manifest (``sample.json``, the
completion marker), and ``fetch``, which downloads, checks, extracts and converts what is
missing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from layerseg import _layerseg
from layerseg.samples import catalogue
from layerseg.samples.catalogue import Sample, SampleFile
from layerseg.samples.download import download, registry_name
from layerseg.samples.extract import extract
from layerseg.samples.files import SampleError, log, sha256_file, verify_sha256, write_json_atomic

#: Bumped whenever the conversion changes; cached samples of another version are rebuilt.
SCHEMA_VERSION = 2


def default_cache() -> Path:
    """``$LAYERSEG_DATA`` if set, else ``~/.cache/layerseg/samples`` (layerseg-core's one
    definition, which ``layerseg demo`` and the Rust tests read too)."""
    return _layerseg.sample_cache()


def cache_root(cache: str | os.PathLike[str] | None) -> Path:
    return Path(cache).expanduser() if cache is not None else default_cache()


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


def _select(names: Iterable[str] | None) -> list[Sample]:
    if names is None:
        return list(catalogue.SAMPLES.values())
    if isinstance(names, str):
        names = [names]
    chosen: list[Sample] = []
    for name in names:
        if name not in catalogue.SAMPLES:
            raise SampleError(
                f"unknown sample {name!r}; known samples: {', '.join(catalogue.SAMPLES)}"
            )
        if catalogue.SAMPLES[name] not in chosen:
            chosen.append(catalogue.SAMPLES[name])
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
    return is_cached(_select([name])[0], cache_root(cache))


def is_cached(sample: Sample, root: Path) -> bool:
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
    info["sha256"] = sha256_file(path)
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
            "registry": registry_name(arch),
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
    write_json_atomic(meta, folder / "sample.json")
    log(
        f"{sample.name}: converted {', '.join(sample.file_names)} "
        f"in {time.monotonic() - t0:.1f} s -> {folder}"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def fetch(
    names: Iterable[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Fetch and convert samples (all when ``names`` is None); return ``{name: folder}``.

    Samples already complete in the cache are not fetched again. Archives are
    downloaded into a temporary folder inside the cache and deleted afterwards.
    """
    chosen = _select(names)
    root = cache_root(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SampleError(f"cannot create cache folder {root}: {exc}") from exc
    with _cache_lock(root):
        for stale in root.glob(".download-*"):  # left by a killed fetch (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        todo: dict[str, list[Sample]] = {}
        for sample in chosen:
            if is_cached(sample, root):
                log(f"{sample.name}: cached at {root / sample.name}")
            else:
                todo.setdefault(sample.archive.key, []).append(sample)
        for group in todo.values():
            archive = group[0].archive
            with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmpname:
                tmp = Path(tmpname)
                t0 = time.monotonic()
                log(f"downloading {archive.requirement} from {registry_name(archive)}")
                path = download(archive, tmp / "archive")
                size = _mb(path.stat().st_size)
                secs = time.monotonic() - t0
                log(f"downloaded {archive.filename} ({size}) in {secs:.1f} s")
                verify_sha256(path, archive.sha256)
                log(f"sha256 ok for {archive.filename}")
                for sample in group:
                    extracted = extract(
                        archive,
                        path,
                        sample.member_paths,
                        tmp / "extract" / sample.name,
                    )
                    log(
                        f"{sample.name}: extracted {len(extracted)} file(s) from {archive.filename}"
                    )
                    _build(sample, extracted, root / sample.name)
            log(f"removed {archive.filename} and temporary files")
    return {sample.name: root / sample.name for sample in chosen}


def sample_dir(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """The folder of sample ``name``, fetching it first if needed."""
    return fetch([name], cache)[name]
