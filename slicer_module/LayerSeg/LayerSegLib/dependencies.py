"""Which Python packages LayerSeg needs inside Slicer, and what is wrong with what is there.

Pure functions over installed versions: the widget asks the user and installs; tests feed
the versions of a real environment.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass

#: The layerseg-libtorch runtime (tch 0.26) is built against exactly this PyTorch; another
#: version in the same process refuses to load it.
TORCH_VERSION = "2.13.0"
TORCH_REQUIREMENT = f"torch=={TORCH_VERSION}"
#: The CLI the module runs lives in layerseg-libtorch; both are listed because the install
#: uses --no-deps, which ignores extras such as layerseg[libtorch].
LAYERSEG_REQUIREMENTS = ("layerseg", "layerseg-libtorch")


def installed_versions(
    names: tuple[str, ...] = ("torch", *LAYERSEG_REQUIREMENTS),
) -> dict[str, str | None]:
    """The installed version of each distribution, None where it is missing."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _release(version: str) -> str:
    """ "2.13.0+cu128" -> "2.13.0" (local build tags name the CUDA flavour only)."""
    return version.split("+", 1)[0]


@dataclass(frozen=True)
class Plan:
    """What must be installed before LayerSeg can run."""

    install_torch: bool
    install_layerseg: bool
    #: A message when a different torch is already installed (replacing it affects other
    #: extensions that use torch), else None.
    torch_conflict: str | None

    @property
    def ready(self) -> bool:
        return not (self.install_torch or self.install_layerseg)

    def summary(self) -> str:
        wanted = []
        if self.install_torch:
            wanted.append(f"PyTorch {TORCH_VERSION}")
        if self.install_layerseg:
            wanted.append("the layerseg Python package")
        if not wanted:
            return "All LayerSeg dependencies are installed."
        text = "LayerSeg needs " + " and ".join(wanted) + " (a download of up to a few GB)."
        if self.torch_conflict:
            text += "\n\n" + self.torch_conflict
        return text


def plan(versions: Mapping[str, str | None]) -> Plan:
    torch = versions.get("torch")
    conflict = None
    if torch is not None and _release(torch) != TORCH_VERSION:
        conflict = (
            f"PyTorch {torch} is installed, but LayerSeg is built against PyTorch {TORCH_VERSION} "
            f"exactly and cannot run with {torch}. Installing {TORCH_VERSION} replaces it, which "
            "may break other extensions that need that version (then restart Slicer)."
        )
    return Plan(
        install_torch=torch is None or conflict is not None,
        install_layerseg=any(versions.get(name) is None for name in LAYERSEG_REQUIREMENTS),
        torch_conflict=conflict,
    )
