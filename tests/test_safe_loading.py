"""Weights files are data, never code: Rust reads safetensors, or a torch.save zip through
libtorch's C++ loader (no Python unpickler), and refuses anything else with a clear message.

The malicious files carry a real payload: Python's own `torch.load(weights_only=False)` runs it
(checked first, in a subprocess), `layerseg segment` must refuse the file without running it.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PROFILE = HERE / "data" / "tiny-brain.json"

EVIL = """
import os, pickle, sys, torch

class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))

kind, out = sys.argv[1], sys.argv[3]
state = {"w": Payload()}
if kind == "zip":
    torch.save(state, out)
elif kind == "legacy":
    torch.save(state, out, _use_new_zipfile_serialization=False)
else:
    with open(out, "wb") as f:
        pickle.dump(state, f)
"""


def _make(kind: str, marker: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-c", EVIL, kind, str(marker), str(out)], check=True)


def _segment(
    layerseg_bin: Path, scan: Path, model: Path, out: Path
) -> subprocess.CompletedProcess[str]:
    argv = [layerseg_bin, "segment", scan, "--out", out, "--model", model]
    argv += ["--profile", PROFILE, "--device", "cpu"]
    return subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("zip", "libtorch could not read it as a flat {name: tensor} state dict"),
        ("legacy", "a legacy (pre-zip) pickle"),
        ("pickle", "a legacy (pre-zip) pickle"),
    ],
)
def test_a_pickle_with_a_payload_is_refused_without_running(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path, kind: str, message: str
) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    _make(kind, marker, evil)
    # The payload is live: Python's unpickler runs it.
    if kind != "pickle":
        load = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    else:
        load = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", load, str(evil)], check=False, capture_output=True)
    assert marker.exists()
    marker.unlink()

    out = tmp_path / "mask.nii.gz"
    proc = _segment(layerseg_bin, sample_dirs["colin27"] / "image.nii.gz", evil, out)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("layerseg: error")]
    assert len(errors) == 1, proc.stderr
    assert str(evil) in errors[0] and message in errors[0], errors[0]
    assert not marker.exists()
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("junk.safetensors", b"\x00" * 64, "expected safetensors, or a torch.save zip"),
        ("empty.pt", b"", "expected safetensors, or a torch.save zip"),
        ("numbers.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'", "expected safetensors"),
        ("text.json", b'{"a": 1}', "not a LayerSeg model card"),
        (
            "bad-header.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxx",
            "unreadable safetensors",
        ),
        ("huge-header.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\x7f{", "unreadable safetensors"),
        ("not-torch.zip", b"PK\x03\x04" + b"\x00" * 60, "libtorch could not read it"),
    ],
)
def test_other_files_are_refused_with_a_clear_message(
    layerseg_bin: Path,
    sample_dirs: dict[str, Path],
    tmp_path: Path,
    name: str,
    content: bytes,
    message: str,
) -> None:
    model = tmp_path / name
    model.write_bytes(content)
    out = tmp_path / "mask.nii.gz"
    proc = _segment(layerseg_bin, sample_dirs["colin27"] / "image.nii.gz", model, out)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("layerseg: error")]
    assert len(errors) == 1, proc.stderr
    assert str(model) in errors[0] and message in errors[0], errors[0]
    assert "panicked" not in proc.stderr
    assert not out.exists()


def test_a_state_dict_pickle_is_still_unsafe_for_python_not_for_rust() -> None:
    """Guard for the test above: the payload class really pickles to a call of os.system."""
    import os

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    assert b"system" in pickle.dumps(Payload())
