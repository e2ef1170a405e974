"""Output faults for `layerseg segment` and `layerseg synthesize`: a read-only output folder, a
full disk, and two processes writing the same output. Each ends in a clear error or one complete
file; never a partial file, a leftover temporary, or a touched input.

The read-only folder and the full disk are real file systems: a tmpfs mounted read-only, or with
a few hundred KB, inside a private mount namespace (`unshare -rm`, no root needed where user
namespaces are enabled).
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = HERE / "data" / "tiny-brain.json"


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k none $d && umount $d && rmdir $d"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True)
    return proc.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="needs unshare -rm and tmpfs mounts (user namespaces)"
)


def _in_tmpfs(
    folder: Path, options: str, argv: list[str | Path]
) -> subprocess.CompletedProcess[str]:
    """Runs `argv` with a fresh tmpfs (mount `options`) on `folder`, in a private namespace."""
    script = (
        f"mount -t tmpfs -o {shlex.quote(options)} none {shlex.quote(str(folder))} && "
        f"exec {shlex.join(map(str, argv))}"
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _assert_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("layerseg: error")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert "panicked" not in proc.stderr


def _segment(layerseg_bin: Path, scan: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        layerseg_bin,
        "segment",
        scan,
        "--out",
        out,
        "--model",
        MODEL,
        "--profile",
        PROFILE,
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture()
def scan(sample_dirs: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of a real scan, so that any change to it is seen."""
    copy = tmp_path / "input" / "colin27.nii.gz"
    copy.parent.mkdir()
    shutil.copy(sample_dirs["colin27"] / "image.nii.gz", copy)
    return copy


@needs_namespaces
def test_read_only_output_folder(layerseg_bin: Path, scan: Path, tmp_path: Path) -> None:
    before = _digest(scan)
    out = tmp_path / "ro"
    out.mkdir()
    argv = ["env", "LAYERSEG_PROGRESS=lines", *_segment(layerseg_bin, scan, out / "mask.nii.gz")]
    proc = _in_tmpfs(out, "ro,size=1m", argv)
    _assert_clear_error(proc, str(out), "Read-only file system")
    assert "layerseg: progress" not in proc.stderr  # refused before the network ran
    synth = _in_tmpfs(
        out,
        "ro,size=1m",
        [layerseg_bin, "synthesize", "--healthy", scan, "--out", out / "cases", "--count", "1"],
    )
    _assert_clear_error(synth, str(out / "cases"), "Read-only file system")
    assert _digest(scan) == before


@needs_namespaces
@pytest.mark.parametrize("name", ["mask.nii", "mask.nii.gz"])
def test_full_disk(layerseg_bin: Path, scan: Path, tmp_path: Path, name: str) -> None:
    before = _digest(scan)
    out = tmp_path / "full"
    out.mkdir()
    # The uncompressed mask is 7 MB, the compressed probability map far more than 16 KB.
    target = out / name
    argv = _segment(layerseg_bin, scan, target, "--prob", out / "prob.nii.gz")
    check = f"{shlex.join(map(str, argv))}; rc=$?; ls -A {shlex.quote(str(out))}; exit $rc"
    script = f"mount -t tmpfs -o size=16k none {shlex.quote(str(out))} && {check}"
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    _assert_clear_error(proc, "No space left on device")
    # What was in the folder when the command ended: a complete mask or nothing, no temporaries.
    left = proc.stdout.split()
    assert not [f for f in left if f.startswith(".")], left
    assert "prob.nii.gz" not in left
    assert _digest(scan) == before


def test_full_disk_through_dev_full_is_refused(
    layerseg_bin: Path, scan: Path, tmp_path: Path
) -> None:
    """A device (or any non-file) as the output is refused, never replaced by a file."""
    link = tmp_path / "mask.nii.gz"
    link.symlink_to("/dev/full")
    proc = subprocess.run(
        _segment(layerseg_bin, scan, link), capture_output=True, text=True, timeout=300
    )
    _assert_clear_error(proc, str(link), "not a regular file")
    assert link.is_symlink() and Path("/dev/full").is_char_device()


def test_two_processes_writing_the_same_output(
    layerseg_bin: Path, scan: Path, tmp_path: Path
) -> None:
    """Both succeed; the file is one of the two complete outputs, whichever renamed last."""
    before = _digest(scan)
    out = tmp_path / "mask.nii.gz"
    masks = []
    for threshold in ("0.3", "0.7"):
        single = tmp_path / f"alone-{threshold}.nii.gz"
        subprocess.run(_segment(layerseg_bin, scan, single, "--threshold", threshold), check=True)
        masks.append(np.asarray(nib.load(single).dataobj))
    assert not np.array_equal(masks[0], masks[1])
    for _ in range(3):
        procs = [
            subprocess.Popen(
                _segment(layerseg_bin, scan, out, "--threshold", threshold),
                stderr=subprocess.PIPE,
                text=True,
            )
            for threshold in ("0.3", "0.7")
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        written = np.asarray(nib.load(out).dataobj)
        assert any(np.array_equal(written, m) for m in masks)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert _digest(scan) == before


def test_two_synthesize_runs_into_one_folder(
    layerseg_bin: Path, scan: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    before = _digest(scan)
    out = tmp_path / "cases"
    brain = sample_dirs["colin27"] / "brain.nii.gz"
    argv = [
        layerseg_bin,
        "synthesize",
        "--healthy",
        scan,
        "--organ-mask",
        brain,
        "--out",
        out,
        "--count",
        "2",
    ]
    procs = [
        subprocess.Popen(list(map(str, argv)), stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert files and not [p for p in files if p.name.startswith(".")]
    for path in files:
        if path.name.endswith(".nii.gz"):
            nib.load(path).get_fdata()  # complete and decodable
    assert _digest(scan) == before
