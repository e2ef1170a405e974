"""The Slicer module's own runtime (slicer_module/LayerSeg/LayerSegLib/runtime.py): a private
venv that the real installer builds from a local wheelhouse holding the wheel `make wheel`
builds, while the Python it is created from (standing in for Slicer's) keeps its own,
different torch; then the Logic finds that runtime and segments a volume from a real MRML
scene with it.

What this does not cover: the download of torch 2.13.0 (about 4 GB). The runtime's
dependencies (torch, numpy, nibabel) come from this test environment through a .pth file that
a step inserted after the venv step writes (a second one removes the venv's own old setuptools,
which would shadow the test environment's); pip's dependency step then finds them installed.
The different torch in the "Slicer" Python is a minimal distribution named torch 2.4.0 built
here (a real PyTorch release is another multi-GB download). Slicer's PythonSlicer launcher
and its environment are not exercised (no Slicer binary here)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer

from test_slicer import MODEL, PROFILE, THRESHOLD, load_volume, run_cli, segment_array

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "slicer_module" / "LayerSeg"))

from LayerSegLib.logic import Logic  # noqa: E402
from LayerSegLib.parameters import SegmentParameters  # noqa: E402
from LayerSegLib.process import CliNotFoundError, find_cli  # noqa: E402
from LayerSegLib.runtime import (  # noqa: E402
    MARKER,
    InstallJob,
    Runtime,
    RuntimeSetupError,
    RuntimeSource,
    Step,
    install,
    plan_install,
)

OTHER_TORCH = "2.4.0"


def run(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def wheel_record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel: one module and the metadata pip reads."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{info}/RECORD"
    lines = [wheel_record_line(n, d) for n, d in files.items()] + [f"{record},,"]
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(record, "\n".join(lines) + "\n")
    return path


def build_other_torch_wheel(folder: Path) -> Path:
    """A minimal wheel named torch 2.4.0: its metadata is all that pip sees of a torch."""
    return build_wheel(folder, "torch", OTHER_TORCH)


def newest_wheel(pattern: str) -> Path:
    wheels = sorted((REPO / "dist").glob(pattern), key=lambda p: p.stat().st_mtime)
    assert wheels, f"make wheel wrote no {pattern} to dist/"
    return wheels[-1]


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The layerseg wheel; `make wheel` also writes the layerseg-libtorch one beside it."""
    subprocess.run(["make", "-s", "wheel"], cwd=REPO, check=True, timeout=1800)
    return newest_wheel("layerseg-*.whl")


@pytest.fixture(scope="module")
def slicer_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python standing in for Slicer's, with another torch installed."""
    root = tmp_path_factory.mktemp("slicer-python")
    run(sys.executable, "-m", "venv", root / "venv")
    python = root / "venv" / "bin" / "python"
    torch_wheel = build_other_torch_wheel(root)
    run(python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", torch_wheel)
    return python


def freeze(python: Path) -> str:
    return run(python, "-m", "pip", "list", "--format=freeze")


def dependency_dir(tmp: Path) -> Path:
    """A folder of links to torch, numpy, nibabel and everything beside them in this test
    environment, without any layerseg (the runtime must use the wheel's)."""
    import nibabel
    import numpy
    import torch

    deps = tmp / "deps"
    deps.mkdir()
    for module in (torch, numpy, nibabel):
        site = Path(module.__file__).resolve().parents[1]  # type: ignore[arg-type]
        for entry in site.iterdir():
            skip = entry.name.lower().startswith("layerseg") or entry.suffix == ".pth"
            if not skip and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    return deps


@pytest.fixture(scope="module")
def installed(
    wheel: Path, slicer_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("runtime")
    wheelhouse = tmp / "wheelhouse"
    wheelhouse.mkdir()
    libtorch_wheel = newest_wheel("layerseg_libtorch-*.whl")
    for each in (wheel, libtorch_wheel):
        (wheelhouse / each.name).symlink_to(each)
    source = RuntimeSource(str(wheelhouse), offline=True)
    before = freeze(slicer_python)
    plan = plan_install(source, tmp / "LayerSeg" / "runtime-cp311", python=str(slicer_python))
    deps = dependency_dir(tmp)
    write_pth = (
        "import sysconfig, pathlib; "
        "p = pathlib.Path(sysconfig.get_paths()['purelib']) / 'test-deps.pth'; "
        f"p.write_text({str(deps)!r} + '\\n')"
    )
    planned = [step.name for step in plan.steps]
    python = str(plan.runtime.python)
    # Python 3.11's venv brings setuptools 65, older than torch 2.13 asks for (Python 3.12,
    # Slicer's since 5.10, brings none); the test environment's newer one serves instead.
    plan.steps[1:1] = [
        Step("test: dependencies", [python, "-c", write_pth]),
        Step("test: setuptools", [python, "-m", "pip", "uninstall", "--yes", "setuptools"]),
    ]
    lines: list[str] = []
    runtime = install(plan, on_line=lines.append, timeout=900)
    return {
        "plan": plan,
        "planned": planned,
        "runtime": runtime,
        "lines": lines,
        "before": before,
        "after": freeze(slicer_python),
        "slicer_python": slicer_python,
    }


# ---- the install -------------------------------------------------------------------------------


def test_the_plan_installs_nothing_into_slicers_python(installed: dict[str, Any]) -> None:
    plan, runtime = installed["plan"], installed["runtime"]
    assert installed["planned"] == ["environment", "layerseg", "dependencies", "check"]
    assert plan.host_torch == OTHER_TORCH
    assert f"PyTorch {OTHER_TORCH} stays as it is" in plan.summary()
    # Only the venv step runs Slicer's Python; every pip command runs the runtime's.
    for step in plan.steps[1:]:
        assert step.argv[0] in (str(runtime.python), str(runtime.cli)), step
    assert plan.steps[0].argv[:3] == [str(installed["slicer_python"]), "-m", "venv"]
    # Slicer's Python is exactly as it was, its other torch included.
    assert installed["after"] == installed["before"]
    assert f"torch=={OTHER_TORCH}" in installed["after"]
    version = run(installed["slicer_python"], "-c", "import torch; print(torch.__version__)")
    assert version.strip() == OTHER_TORCH


def test_the_runtime_has_its_own_layerseg_and_torch_213(installed: dict[str, Any]) -> None:
    runtime: Runtime = installed["runtime"]
    assert runtime.installed and runtime.marker.name == MARKER
    info = runtime.info()
    assert info["offline"] is True and Path(str(info["source"])).name == "wheelhouse"
    # `layerseg runtime` started there, and its report is kept.
    assert any("CPU thread" in line for line in info["layerseg_runtime"])  # type: ignore[union-attr]
    where = run(
        runtime.python,
        "-c",
        "import layerseg, torch; print(layerseg.__file__); print(torch.__version__)",
    ).split()
    assert Path(where[0]).is_relative_to(runtime.root)
    assert where[1].split("+")[0] == "2.13.0"
    log = "\n".join(installed["lines"])
    assert "[layerseg]" in log and "--no-index" in log
    # layerseg[libtorch] names the runtime distribution, which comes from the source and
    # brings torch 2.13.0 among the dependencies.
    assert "from the runtime source: layerseg-libtorch" in log
    declared = next(
        line for line in log.splitlines() if line.startswith("dependencies of layerseg:")
    )
    assert "torch==2.13.0" in declared, declared


def test_the_dependency_step_follows_the_requirements_extras(installed: dict[str, Any]) -> None:
    """The dependency step installs what the installed distribution declares for the extras
    the requirement names, and nothing of the other extras."""
    runtime: Runtime = installed["runtime"]
    source: RuntimeSource = installed["plan"].source
    metadata = run(
        runtime.python,
        "-c",
        "import importlib.metadata as m; md = m.metadata('layerseg'); "
        "print('\\n'.join(md.get_all('Provides-Extra') or []))",
    ).split()
    assert metadata, "the layerseg wheel declares no extras"
    extra = sorted(metadata)[0]

    def planned_dependencies(requirement: str) -> str:
        plan = plan_install(
            RuntimeSource(source.location, requirement, offline=True),
            runtime.root,
            python=str(installed["slicer_python"]),
        )
        step = next(step for step in plan.steps if step.name == "dependencies")
        lines = run(*step.argv).splitlines()
        return next(line for line in lines if line.startswith("dependencies of layerseg: "))

    plain = planned_dependencies("layerseg")
    with_extra = planned_dependencies(f"layerseg[{extra}]")
    assert plain.startswith(with_extra.split(", ")[0])
    added = set(with_extra.split(": ", 1)[1].split(", ")) - set(plain.split(": ", 1)[1].split(", "))
    assert added, f"layerseg[{extra}] adds no dependency: {with_extra}"
    assert "extra ==" not in with_extra


def test_layerseg_distributions_come_from_the_runtime_source_only(
    slicer_python: Path, tmp_path: Path
) -> None:
    """A LayerSeg distribution that another one requires (as a split package's libtorch part
    would be) comes from the runtime source too; missing there, the install fails offline
    instead of asking an index for that name."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    build_wheel(wheelhouse, "layerseg-probe", "1.0", ("layerseg-probe-core==1.0",))
    core = build_wheel(wheelhouse, "layerseg-probe-core", "1.0")
    source = RuntimeSource(str(wheelhouse), "layerseg-probe", offline=True)

    def steps_up_to_dependencies(root: Path) -> tuple[Runtime, subprocess.CompletedProcess[str]]:
        plan = plan_install(source, root, python=str(slicer_python))
        names = [step.name for step in plan.steps]
        for step in plan.steps[: names.index("dependencies")]:
            run(*step.argv)
        deps = plan.steps[names.index("dependencies")].argv
        return plan.runtime, subprocess.run(deps, capture_output=True, text=True, timeout=600)

    runtime, proc = steps_up_to_dependencies(tmp_path / "runtime")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "from the runtime source: layerseg-probe-core==1.0" in proc.stdout
    assert "dependencies of layerseg-probe: none" in proc.stdout
    assert "layerseg_probe_core==1.0" in freeze(runtime.python).replace("-", "_")

    core.unlink()
    _, proc = steps_up_to_dependencies(tmp_path / "runtime-without-core")
    assert proc.returncode != 0
    assert "from the runtime source: layerseg-probe-core==1.0" in proc.stdout
    assert "No matching distribution found for layerseg-probe-core" in proc.stderr


# ---- the runtime in use ------------------------------------------------------------------------


def test_the_runtime_is_found_and_segments_from_the_scene(
    installed: dict[str, Any],
    layerseg_bin: Path,
    sample_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime: Runtime = installed["runtime"]
    monkeypatch.delenv("LAYERSEG_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    # Slicer's Python path leaks into subprocesses unless they drop it: here it leads to a torch
    # that refuses to load, as a torch other than 2.13.0 would fail the Rust core.
    decoy = tmp_path / "slicer-site-packages" / "torch"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text('raise ImportError("Slicer\'s own torch was imported")\n')
    monkeypatch.setenv("PYTHONPATH", str(decoy.parent))

    scene = slicer.vtkMRMLScene()
    scan = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    volume = load_volume(scene, scan)
    logic = Logic(scene, runtime_root=runtime.root)
    assert logic.cli() == [str(runtime.cli)]
    lines: list[str] = []
    params = SegmentParameters(
        profile=PROFILE, model=str(MODEL), device="cpu", threshold=THRESHOLD, organ_mask="none"
    )
    result = logic.segment(volume, params, on_line=lines.append, timeout=900)
    expected, _ = run_cli(layerseg_bin, scan, tmp_path / "cli.nii.gz", "--organ-mask", "none")
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(segment_array(result, volume), expected)
    assert result.segmentation.GetScene() is scene


# ---- failures ----------------------------------------------------------------------------------


def test_a_failed_install_leaves_no_runtime(
    slicer_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_index = tmp_path / "index"
    empty_index.mkdir()
    source = RuntimeSource(empty_index.as_uri())
    root = tmp_path / "runtime"
    with pytest.raises(RuntimeSetupError, match=r"step 'layerseg' failed") as raised:
        install(plan_install(source, root, python=str(slicer_python)), timeout=600)
    assert str(root) in str(raised.value)
    assert not Runtime(root).installed
    monkeypatch.delenv("LAYERSEG_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(CliNotFoundError, match="not installed"):
        find_cli(runtime_root=root)


def test_a_cancelled_install_leaves_no_runtime(
    slicer_python: Path, wheel: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runtime"
    job = InstallJob(plan_install(RuntimeSource(str(wheel)), root, python=str(slicer_python)))
    pid = job.job.pid
    job.cancel()
    assert job.poll() not in (None, 0)
    with pytest.raises(RuntimeSetupError, match="cancelled"):
        job.check_success()
    assert not Runtime(root).installed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sources_are_checked_and_never_a_public_name(wheel: Path, tmp_path: Path) -> None:
    for location, message in (
        ("", "no runtime source is set"),
        (str(tmp_path / "missing.whl"), "no such wheel file or folder"),
        (str(tmp_path), "holds no layerseg wheel"),
        (str(MODEL), "not a wheel"),
    ):
        with pytest.raises(RuntimeSetupError, match=message):
            RuntimeSource(location).validate()
    with pytest.raises(RuntimeSetupError, match="offline install needs a wheel"):
        RuntimeSource("https://example.org/simple", offline=True).validate()
    with pytest.raises(RuntimeSetupError, match="not an http"):
        RuntimeSource(str(wheel), dependency_index_url="pypi").validate()
    other = tmp_path / "other-1.0-py3-none-any.whl"
    other.write_bytes(b"")
    with pytest.raises(RuntimeSetupError, match="a wheel of other"):
        RuntimeSource(str(other)).validate()
    not_a_runtime = tmp_path / "full"
    not_a_runtime.mkdir()
    (not_a_runtime / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeSetupError, match="not empty and not a LayerSeg runtime"):
        plan_install(RuntimeSource(str(wheel)), not_a_runtime)
    # The package itself always comes from the file, the folder or the named index alone.
    for source in (
        RuntimeSource(str(wheel)),
        RuntimeSource(str(wheel.parent)),
        RuntimeSource("https://wheels.example.org/simple", "layerseg[torch]>=0.1"),
    ):
        args = source.package_pip_args()
        assert "--no-deps" in args
        assert "--no-index" in args or args[args.index("--index-url") + 1] == source.location
