"""Shared pieces of the sample fetcher: its error, its log line, sha256 checks and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PROG = "layerseg.samples"
CHUNK = 1 << 20


class SampleError(RuntimeError):
    """A sample could not be fetched, verified or converted."""


def log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str) -> str:
    """Check ``path`` against the ``expected`` sha256 hex digest; return the digest.

    Raises :class:`SampleError` naming the file when it is missing or differs.
    """
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"{p.name}: file not found at {p}")
    actual = sha256_file(p)
    if actual != expected.lower():
        raise SampleError(
            f"{p.name}: sha256 mismatch: expected {expected.lower()}, got {actual} "
            f"({p.stat().st_size} bytes); the download is corrupt or not the pinned archive"
        )
    return actual


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
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


def copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_json_atomic(obj: Mapping[str, Any], dst: Path) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
