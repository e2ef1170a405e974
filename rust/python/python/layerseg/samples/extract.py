"""Taking the pinned files out of an archive: wheels (zip), sdists (tar) and Debian packages
(``ar`` around a tar)."""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from layerseg.samples.catalogue import Archive
from layerseg.samples.files import CHUNK, SampleError


def _copy_stream(src: IO[bytes], dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


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
                            chunk = fh.read(min(CHUNK, remaining))
                            if not chunk:
                                raise SampleError(f"{what}: {deb.name} is truncated")
                            dst.write(chunk)
                            remaining -= len(chunk)
                    return out
                fh.seek(size + (size & 1), os.SEEK_CUR)
    except (OSError, ValueError) as exc:
        raise SampleError(f"{what}: cannot read Debian package {deb.name}: {exc}") from exc
    raise SampleError(f"{what}: {deb.name} has no data.tar member")


def extract(
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
