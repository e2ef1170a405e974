"""`make wheel` builds a wheel that carries the shipped models and finds them once installed."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = (
    "brain-mri.safetensors",
    "brain-mri.json",
    "liver-ct.safetensors",
    "liver-ct.json",
    "deepbet/model.pt",
    "deepbet/bbox_model.pt",
    "deepbet/LICENSE",
)


@pytest.fixture(scope="module")
def wheel() -> Path:
    subprocess.run(["make", "-s", "wheel"], cwd=REPO, check=True, timeout=1800)
    wheels = sorted((REPO / "dist").glob("layerseg-*.whl"), key=lambda p: p.stat().st_mtime)
    assert wheels, "make wheel wrote no wheel to dist/"
    assert not (REPO / "rust/python/python/layerseg/models").exists(), "the copy was left behind"
    return wheels[-1]


def test_wheel_carries_the_shipped_models(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in MODELS:
            member = f"layerseg/models/{name}"
            assert member in names
            assert zf.getinfo(member).file_size == (REPO / "models" / name).stat().st_size


def test_installed_wheel_segments_with_its_own_model(
    wheel: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Installed outside this checkout, the package searches its own models/ first."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # torch, numpy and nibabel come from the test environment, the package from the wheel.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=600,
    )
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    script = (
        "import layerseg, sys\n"
        "print(layerseg.__file__)\n"
        "print(layerseg.model_dirs()[0])\n"
        f"r = layerseg.segment({str(scan)!r}, device='cpu')\n"
        "print(r['mask'].shape)\n"
    )

    def outside_checkout(*argv: str) -> str:
        proc = subprocess.run(
            argv,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},  # no LAYERSEG_MODELS
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    package, first_dir, shape = outside_checkout(str(python), "-c", script).splitlines()
    assert Path(package).is_relative_to(venv)
    assert Path(first_dir) == Path(package).parent / "models"
    assert shape == "(128, 128, 62)"
    # the console script, which the Slicer module runs, finds it too
    mask = tmp_path / "mask.nii.gz"
    console_script = str(venv / "bin" / "layerseg")
    outside_checkout(console_script, "segment", str(scan), "--out", str(mask), "--device", "cpu")
    assert mask.stat().st_size > 0
