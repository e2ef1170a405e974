"""LayerSeg's own Python environment (the runtime), kept apart from Slicer's Python.

LayerSeg's Rust core is built against exactly one PyTorch (tch 0.26: torch 2.13.0), while
Slicer's Python may hold another one that other extensions need. So the libtorch-bound part
runs in a private virtual environment under the module's settings folder:

1. ``python -m venv`` with the interpreter Slicer runs scripts with (PythonSlicer);
2. the layerseg distribution alone (``--no-deps``), from the configured source only: a wheel
   file, a folder of wheels, or a package index URL. Never by name from the public index,
   where no release of ours exists;
3. its dependencies, read from the installed distribution's metadata: LayerSeg's own
   distributions (layerseg*) again from the configured source only, everything else (torch
   and the rest) from pip's default index, a configured one, or the wheel folder (offline);
4. ``layerseg runtime`` must start; only then is the marker file written that makes the
   runtime count as installed.

Every pip command runs with the runtime's own interpreter, so nothing in Slicer's Python
changes. The steps are argument lists run by :class:`~LayerSegLib.process.Job` one after the
other (output streamed, cancel ends the step's process tree).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .process import Job, Progress

#: The distribution the installer puts into the runtime (a requirement: a name, optional
#: extras and version specifiers). It comes only from the configured source, and so does the
#: libtorch runtime its `libtorch` extra names (layerseg-libtorch, which runs the command line).
LAYERSEG_REQUIREMENT = "layerseg[libtorch]"
#: The PyTorch LayerSeg's Rust core is built against (tch 0.26).
TORCH_VERSION = "2.13.0"
#: Written into the runtime folder once ``layerseg runtime`` has started there.
MARKER = "layerseg-runtime.json"

_URL = re.compile(r"^(https?|file)://", re.I)
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")

#: Run with the runtime's interpreter as ``python -c SCRIPT REQUIREMENT OWN_SOURCE... --deps
#: DEPENDENCY_SOURCE...``: installs the requirements of the installed distribution REQUIREMENT
#: names (with its extras; markers evaluated in the runtime). It reads them from the
#: distribution itself, so that LayerSeg's own names never go to an index: those among them
#: (layerseg*) come with --no-deps from OWN_SOURCE, the runtime source, and their requirements
#: are followed in turn; everything else comes from DEPENDENCY_SOURCE in one pip call.
_DEPENDENCIES_SCRIPT = """
import subprocess, sys
from importlib.metadata import PackageNotFoundError, requires, version
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

args = sys.argv[2:]
own_source, dep_source = args[: args.index("--deps")], args[args.index("--deps") + 1 :]
pip = [sys.executable, "-m", "pip", "install", "--progress-bar", "off"]


def installed(name):
    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


todo, seen, deps = [Requirement(sys.argv[1])], set(), []
while todo:
    wanted = todo.pop()
    if canonicalize_name(wanted.name) in seen:
        continue
    seen.add(canonicalize_name(wanted.name))
    extras = sorted(wanted.extras) or [""]
    for text in requires(wanted.name) or []:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        req.marker = None
        if not canonicalize_name(req.name).startswith("layerseg"):
            deps.append(str(req))
            continue
        if not installed(req.name):
            print("from the runtime source: " + str(req), flush=True)
            code = subprocess.call([*pip, "--no-deps", *own_source, str(req)])
            if code:
                sys.exit(code)
        todo.append(req)
print("dependencies of " + Requirement(sys.argv[1]).name + ": " + (", ".join(deps) or "none"))
sys.stdout.flush()
if deps:
    sys.exit(subprocess.call([*pip, *deps, *dep_source]))
"""


class RuntimeSetupError(ValueError):
    """A runtime setting that cannot work, or a failed install; the message says which."""


def _bin_dir(root: Path) -> Path:
    return root / ("Scripts" if os.name == "nt" else "bin")


def _distribution_name(requirement: str) -> tuple[str, str]:
    """``"layerseg[torch]>=0.2"`` -> ("layerseg", "[torch]")."""
    m = _REQUIREMENT.match(requirement)
    if m is None or not m.group(1):
        raise RuntimeSetupError(f"requirement {requirement!r} does not start with a package name")
    return m.group(1), m.group(2) or ""


@dataclass(frozen=True)
class RuntimeSource:
    """Where the runtime's layerseg comes from (the module settings).

    ``location``: a wheel file, a folder of wheels, or a package index URL (http, https or
    file). ``requirement``: what to install from it. ``dependency_index_url``: the index for
    torch and the other dependencies (None: pip's default, usually PyPI; the CPU-only PyTorch
    index is much smaller). ``offline``: dependencies only from the wheel folder.
    """

    location: str
    requirement: str = LAYERSEG_REQUIREMENT
    dependency_index_url: str | None = None
    offline: bool = False

    @property
    def kind(self) -> str:
        """``"index"``, ``"file"`` or ``"folder"``."""
        if _URL.match(self.location):
            return "index"
        return "folder" if Path(self.location).expanduser().is_dir() else "file"

    @property
    def path(self) -> Path:
        return Path(self.location).expanduser()

    def validate(self) -> None:
        if not self.location.strip():
            raise RuntimeSetupError(
                "no runtime source is set: choose a layerseg wheel file, a folder of wheels or "
                "a package index URL"
            )
        name, _ = _distribution_name(self.requirement)
        kind = self.kind
        if kind == "file":
            if not self.path.is_file():
                raise RuntimeSetupError(f"{self.path}: no such wheel file or folder")
            if self.path.suffix != ".whl":
                raise RuntimeSetupError(f"{self.path}: not a wheel (.whl) file")
            wheel_name = self.path.name.split("-", 1)[0]
            if _normalise(wheel_name) != _normalise(name):
                raise RuntimeSetupError(
                    f"{self.path}: a wheel of {wheel_name}, but the requirement is {name}"
                )
        elif kind == "folder":
            prefix = _normalise(name).replace("-", "_")
            if not any(
                _normalise(p.name.split("-", 1)[0]).replace("-", "_") == prefix
                for p in self.path.glob("*.whl")
            ):
                raise RuntimeSetupError(f"{self.path}: the folder holds no {name} wheel")
        elif self.offline:
            raise RuntimeSetupError(
                f"{self.location}: an offline install needs a wheel file or folder, not an index"
            )
        if self.dependency_index_url is not None and not _URL.match(self.dependency_index_url):
            raise RuntimeSetupError(
                f"dependency index {self.dependency_index_url!r} is not an http(s) or file URL"
            )

    def source_pip_args(self) -> list[str]:
        """pip arguments that make this source the only place packages come from (a wheel
        file's own folder serves the LayerSeg distributions it requires)."""
        kind = self.kind
        if kind == "index":
            return ["--index-url", self.location]
        folder = self.path if kind == "folder" else self.path.parent
        return ["--no-index", "--find-links", str(folder)]

    def package_pip_args(self) -> list[str]:
        """pip arguments that install the distribution alone, from this source only."""
        base = ["install", "--progress-bar", "off", "--no-deps", "--force-reinstall"]
        if self.kind == "file":
            return [*base, "--no-index", str(self.path)]
        return [*base, *self.source_pip_args(), self.requirement]

    def dependency_pip_args(self) -> list[str]:
        """pip arguments for where the other dependencies come from."""
        args: list[str] = []
        if self.kind != "index":
            args += ["--find-links", str(self.path if self.kind == "folder" else self.path.parent)]
        if self.offline:
            args.append("--no-index")
        elif self.dependency_index_url is not None:
            args += ["--index-url", self.dependency_index_url]
        return args


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Runtime:
    """A runtime folder (a virtual environment)."""

    root: Path

    @property
    def python(self) -> Path:
        return _bin_dir(self.root) / ("python.exe" if os.name == "nt" else "python")

    @property
    def cli(self) -> Path:
        return _bin_dir(self.root) / ("layerseg.exe" if os.name == "nt" else "layerseg")

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def installed(self) -> bool:
        """True once an install has finished and ``layerseg runtime`` started here."""
        return self.marker.is_file() and self.cli.is_file() and os.access(self.cli, os.X_OK)

    def info(self) -> dict[str, object]:
        """What the marker file records (empty when not installed)."""
        if not self.marker.is_file():
            return {}
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RuntimeSetupError(f"{self.marker}: unreadable runtime record ({e})") from e
        return dict(data) if isinstance(data, dict) else {}


def host_python() -> str:
    """The interpreter the runtime is created from: PythonSlicer inside Slicer, else this one."""
    return shutil.which("PythonSlicer") or sys.executable


def installed_version(name: str, python: str | None = None) -> str | None:
    """The version of the distribution ``name`` in the running Python (Slicer's), or in the
    interpreter ``python``; None where it is missing."""
    import importlib.metadata

    if python is None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    script = (
        "import importlib.metadata as m, sys\n"
        "try: print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError: pass\n"
    )
    proc = subprocess.run(
        [python, "-c", script, name], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise RuntimeSetupError(f"{python} does not run: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip() or None


@dataclass(frozen=True)
class Step:
    """One install step: a name for the log and progress, and the command."""

    name: str
    argv: list[str]


@dataclass
class InstallPlan:
    """The install of ``source`` into the runtime at ``runtime``, created from ``python``."""

    runtime: Runtime
    source: RuntimeSource
    python: str
    steps: list[Step] = field(default_factory=list)
    #: The torch of the Python that creates the runtime (Slicer's), which stays as it is.
    host_torch: str | None = None

    def summary(self) -> str:
        text = (
            f"LayerSeg will create its own Python environment in {self.runtime.root} and "
            f"install {self.source.requirement} from {self.source.location} there, with "
            f"PyTorch {TORCH_VERSION} and its other dependencies"
        )
        if self.source.offline:
            text += " from the same folder only (offline)."
        elif self.source.dependency_index_url is not None:
            text += f" from {self.source.dependency_index_url}."
        else:
            text += " from pip's default index (a download of up to a few GB)."
        if self.host_torch is not None:
            text += (
                f"\n\nSlicer's own PyTorch {self.host_torch} stays as it is: nothing is "
                "installed into Slicer's Python."
            )
        return text


def plan_install(
    source: RuntimeSource, root: Path, python: str | None = None, host_torch: str | None = None
) -> InstallPlan:
    """The steps that install ``source`` into a new runtime at ``root``. ``python``: the
    interpreter the runtime is created from (default: this one, as :func:`host_python` runs
    it); ``host_torch``: that Python's torch version, named in the summary (default: looked
    up)."""
    source.validate()
    runtime = Runtime(Path(root))
    root_is_used = runtime.root.exists() and any(runtime.root.iterdir())
    if root_is_used and not (runtime.root / "pyvenv.cfg").is_file():
        raise RuntimeSetupError(
            f"{runtime.root} is not empty and not a LayerSeg runtime; choose another folder"
        )
    py = str(runtime.python)
    steps = [
        Step("environment", [python or host_python(), "-m", "venv", "--clear", str(runtime.root)]),
        Step("layerseg", [py, "-m", "pip", *source.package_pip_args()]),
        Step(
            "dependencies",
            [
                py,
                "-c",
                _DEPENDENCIES_SCRIPT,
                source.requirement,
                *source.source_pip_args(),
                "--deps",
                *source.dependency_pip_args(),
            ],
        ),
        Step("check", [str(runtime.cli), "runtime"]),
    ]
    torch = host_torch if host_torch is not None else installed_version("torch", python)
    return InstallPlan(runtime, source, python or host_python(), steps, torch)


class InstallJob:
    """Runs an :class:`InstallPlan` step by step; poll it like a :class:`Job`. The old marker
    goes first, and the new one is written only after the last step succeeded, so a failed or
    cancelled install leaves no runtime that would be used."""

    def __init__(
        self,
        plan: InstallPlan,
        on_line: Callable[[str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.plan = plan
        self.cancelled = False
        self.returncode: int | None = None
        self.error: str | None = None
        self._on_line = on_line
        self._on_progress = on_progress
        self._index = 0
        self.plan.runtime.marker.unlink(missing_ok=True)
        self.job: Job = self._start(0)

    def _start(self, index: int) -> Job:
        step = self.plan.steps[index]
        if self._on_progress is not None:
            self._on_progress(Progress(f"install-{step.name}", index, len(self.plan.steps)))
        if self._on_line is not None:
            self._on_line(f"[{step.name}] " + " ".join(_shown(a) for a in step.argv))
        return Job(step.argv, on_line=self._line)

    def _line(self, line: str) -> None:
        if self._on_line is not None:
            self._on_line(line)

    @property
    def step(self) -> Step:
        return self.plan.steps[self._index]

    def poll(self) -> int | None:
        """None while running; 0 once installed and checked; else the failing step's code."""
        if self.returncode is not None:
            return self.returncode
        code = self.job.poll()
        if code is None:
            return None
        if self.cancelled:
            self.returncode = code or 1
            return self.returncode
        if code != 0:
            tail = "\n".join(self.job.lines[-12:]) or "(no output)"
            self.error = (
                f"installing the LayerSeg runtime in {self.plan.runtime.root}: step "
                f"'{self.step.name}' failed (exit code {code}):\n{tail}"
            )
            self.returncode = code
            return code
        if self._index + 1 < len(self.plan.steps):
            self._index += 1
            self.job = self._start(self._index)
            return None
        self._write_marker()
        if self._on_progress is not None:
            n = len(self.plan.steps)
            self._on_progress(Progress("install-done", n, n))
        self.returncode = 0
        return 0

    def _write_marker(self) -> None:
        source = self.plan.source
        record = {
            "requirement": source.requirement,
            "source": source.location,
            "dependency_index_url": source.dependency_index_url,
            "offline": source.offline,
            "created_from": self.plan.python,
            "installed": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "layerseg_runtime": self.job.lines,
        }
        self.plan.runtime.marker.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the runtime install is still running after {timeout} s")
            time.sleep(0.05)
        return code

    def cancel(self) -> None:
        """Ends the running step and everything it started; the runtime stays uninstalled."""
        self.cancelled = True
        self.job.cancel()
        self.poll()

    def check_success(self) -> Runtime:
        """The installed runtime; raises RuntimeSetupError when the install did not finish."""
        code = self.poll()
        if self.cancelled:
            raise RuntimeSetupError("the LayerSeg runtime install was cancelled")
        if code is None:
            raise RuntimeSetupError("the LayerSeg runtime install is still running")
        if code != 0:
            raise RuntimeSetupError(self.error or f"the install failed (exit code {code})")
        return self.plan.runtime


def _shown(arg: str) -> str:
    """The dependency script is long; the log names it instead of printing it."""
    return "<dependency script>" if arg == _DEPENDENCIES_SCRIPT else arg


def install(
    plan: InstallPlan,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Runtime:
    """Blocking install."""
    job = InstallJob(plan, on_line=on_line)
    try:
        job.wait(timeout)
    except BaseException:
        job.cancel()
        raise
    return job.check_success()
