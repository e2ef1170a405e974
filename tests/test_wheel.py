"""`make wheel` builds the two wheels (layerseg with the shipped models, layerseg-libtorch);
installed together they find the models."""

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


def newest(pattern: str) -> Path:
    wheels = sorted((REPO / "dist").glob(pattern), key=lambda p: p.stat().st_mtime)
    assert wheels, f"make wheel wrote no {pattern} to dist/"
    return wheels[-1]


@pytest.fixture(scope="module")
def wheel() -> Path:
    subprocess.run(["make", "-s", "wheel"], cwd=REPO, check=True, timeout=1800)
    assert not (REPO / "rust/python/python/layerseg/models").exists(), "the copy was left behind"
    return newest("layerseg-*.whl")


@pytest.fixture(scope="module")
def runtime_wheel(wheel: Path) -> Path:
    return newest("layerseg_libtorch-*.whl")


def test_wheel_carries_the_shipped_models(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in MODELS:
            member = f"layerseg/models/{name}"
            assert member in names
            assert zf.getinfo(member).file_size == (REPO / "models" / name).stat().st_size


def test_only_the_runtime_wheel_requires_torch(wheel: Path, runtime_wheel: Path) -> None:
    def requirements(path: Path) -> list[str]:
        with zipfile.ZipFile(path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            lines = zf.read(meta).decode().splitlines()
        return [
            line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
        ]

    assert not [r for r in requirements(wheel) if r.startswith("torch") and "extra" not in r]
    assert "torch==2.13.0" in requirements(runtime_wheel)


def test_installed_wheel_segments_with_its_own_model(
    wheel: Path, runtime_wheel: Path, sample_dirs: dict[str, Path], tmp_path: Path
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
        [
            *(str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"),
            *(str(wheel), str(runtime_wheel)),
        ],
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
