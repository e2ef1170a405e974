"""What the user chose in the panel, checked and turned into layerseg command lines.

Plain dataclasses: the widget fills them from its parameter node, the logic and the tests
build them directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class PanelChoice(Enum):
    """A choice the panel offers in a combo box: the value is what the command line (or the
    logic) gets, ``label()`` what the panel shows (Slicer's parameterNodeWrapper fills the
    combo box with the labels, in this order)."""

    def label(self) -> str:
        return _LABELS[self]


class ProfileChoice(PanelChoice):
    """The profile: a built-in one, or ``custom`` (a profile JSON file)."""

    BRAIN_MRI = "brain-mri"
    LIVER_CT = "liver-ct"
    CUSTOM = "custom"


class ModelChoice(PanelChoice):
    """The weights: the model shipped for the profile, or a file."""

    SHIPPED = "default"
    FILE = "file"


class DeviceChoice(PanelChoice):
    """Where the network runs (``--device``)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class OrganMaskChoice(PanelChoice):
    """Where the search runs (``layerseg segment --organ-mask``): ``auto`` extracts the brain
    for profiles that ask for it, ``segment`` uses a segment the user chose (written to a
    file), ``none`` searches the whole scan."""

    AUTO = "auto"
    SEGMENT = "segment"
    NONE = "none"


_LABELS: dict[PanelChoice, str] = {
    ProfileChoice.BRAIN_MRI: "Brain MRI",
    ProfileChoice.LIVER_CT: "Liver CT",
    ProfileChoice.CUSTOM: "Custom profile file",
    ModelChoice.SHIPPED: "Shipped model for the profile",
    ModelChoice.FILE: "Model file",
    DeviceChoice.AUTO: "Auto",
    DeviceChoice.CPU: "CPU",
    DeviceChoice.CUDA: "GPU (CUDA)",
    OrganMaskChoice.AUTO: "Automatic (brain extraction)",
    OrganMaskChoice.SEGMENT: "From a segment",
    OrganMaskChoice.NONE: "None (search the whole scan)",
}

#: Profiles built into the CLI; anything else must be a profile JSON file.
BUILTIN_PROFILES = tuple(p.value for p in ProfileChoice if p is not ProfileChoice.CUSTOM)
DEVICES = tuple(d.value for d in DeviceChoice)
ORGAN_MASK_CHOICES = tuple(c.value for c in OrganMaskChoice)


@dataclass(frozen=True)
class ProfileSearch:
    """What a profile does about the organ mask (its ``roi.kind`` and
    ``inference.brain_extraction``)."""

    #: It segments inside an organ mask only (roi kind ``organ_mask``): it needs a file.
    needs_organ_mask: bool
    #: ``--organ-mask auto`` extracts the brain.
    brain_extraction: bool


#: The built-in profiles (rust/core/profiles/*.json; a test keeps the two in step).
BUILTIN_PROFILE_SEARCH = {
    "brain-mri": ProfileSearch(needs_organ_mask=False, brain_extraction=True),
    "liver-ct": ProfileSearch(needs_organ_mask=True, brain_extraction=False),
}


class ParameterError(ValueError):
    """A choice in the panel that cannot work; the message says which and why."""


def _check_profile(profile: str) -> None:
    if profile not in BUILTIN_PROFILES and not Path(profile).is_file():
        raise ParameterError(
            f"profile {profile!r}: neither a built-in profile ({', '.join(BUILTIN_PROFILES)}) "
            "nor an existing profile file"
        )


def _check_model(model: str | None) -> None:
    if model is not None and not Path(model).is_file():
        raise ParameterError(f"model file {model} does not exist")


def profile_search(profile: str | None) -> ProfileSearch | None:
    """What ``profile`` (a built-in name or a profile file) does about the organ mask; None
    when that is not known here (the model card's profile, or a file that does not parse, which
    the CLI reports itself)."""
    if profile is None:
        return None
    if profile in BUILTIN_PROFILE_SEARCH:
        return BUILTIN_PROFILE_SEARCH[profile]
    try:
        data = json.loads(Path(profile).read_text(encoding="utf-8"))
        roi = data.get("roi") or {}
        inference = data.get("inference") or {}
        return ProfileSearch(
            needs_organ_mask=roi.get("kind") == "organ_mask",
            brain_extraction=bool(inference.get("brain_extraction", False)),
        )
    except (OSError, ValueError, AttributeError):
        return None


def _check_organ_mask(choice: str, profile: str | None) -> None:
    if choice not in ORGAN_MASK_CHOICES:
        raise ParameterError(
            f"organ mask {choice!r}: choose one of {', '.join(ORGAN_MASK_CHOICES)}"
        )
    search = profile_search(profile)
    if choice == "segment" or search is None or not search.needs_organ_mask:
        return
    organ, a = ("liver", "a") if profile == "liver-ct" else ("organ", "an")
    why = (
        f"there is no automatic {organ} mask (automatic extraction finds brains only)"
        if choice == "auto"
        else "it cannot search the whole scan"
    )
    raise ParameterError(
        f"profile {profile} searches inside {a} {organ} mask, and {why}. Set Brain / organ "
        f"mask to 'From a segment' and pick the {organ} segment."
    )


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ParameterError(f"device {device!r}: choose one of {', '.join(DEVICES)}")


@dataclass
class SegmentParameters:
    """``layerseg segment`` options. None means "the profile's (or model card's) default"."""

    #: Built-in profile name or profile file; None: the model card's profile, else brain-mri.
    profile: str | None = "brain-mri"
    #: Weights file; None: the model shipped for the profile.
    model: str | None = None
    device: str = "auto"
    threshold: float | None = None
    overlap: float | None = None
    tta: bool = False
    #: Also bring the tumour probability map into the scene as a volume.
    probability: bool = False
    #: One of ORGAN_MASK_CHOICES. A segment given to the logic always wins, as a file does
    #: on the command line.
    organ_mask: str = "auto"

    def validate(self) -> None:
        if self.profile is not None:
            _check_profile(self.profile)
        _check_organ_mask(self.organ_mask, self.profile)
        _check_model(self.model)
        _check_device(self.device)
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ParameterError(f"threshold {self.threshold}: must lie strictly between 0 and 1")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ParameterError(f"overlap {self.overlap}: must lie in [0, 1)")

    def to_argv(
        self,
        cli: list[str],
        scan: Path,
        out: Path,
        prob: Path | None,
        organ_mask: Path | None,
        save_organ_mask: Path | None = None,
    ) -> list[str]:
        """``organ_mask``: the written segment (it wins over the choice, as on the command
        line); ``save_organ_mask``: where the automatic mask goes (Automatic only)."""
        argv = [*cli, "segment", str(scan), "--out", str(out), "--device", self.device]
        if self.profile is not None:
            argv += ["--profile", self.profile]
        if self.model is not None:
            argv += ["--model", self.model]
        if prob is not None:
            argv += ["--prob", str(prob)]
        if organ_mask is not None:
            argv += ["--organ-mask", str(organ_mask)]
        elif self.organ_mask == "segment":
            raise ParameterError("choose the segment for the brain / organ mask")
        else:
            argv += ["--organ-mask", self.organ_mask]
            if self.organ_mask == "auto" and save_organ_mask is not None:
                argv += ["--save-organ-mask", str(save_organ_mask)]
        if self.threshold is not None:
            argv += ["--threshold", repr(self.threshold)]
        if self.overlap is not None:
            argv += ["--overlap", repr(self.overlap)]
        if self.tta:
            argv.append("--tta")
        return argv


@dataclass
class PretrainParameters:
    """``layerseg pretrain`` options: healthy scans in, a run folder with model.safetensors out."""

    out_dir: str = ""
    steps: int = 1000
    profile: str = "brain-mri"
    device: str = "auto"
    #: Network widths "a,b,c,d,e,f"; None: the profile's.
    features: str | None = None
    #: A folder of healthy NIfTI scans, used besides (or instead of) scene volumes.
    healthy_folder: str | None = None
    extra_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _check_profile(self.profile)
        _check_device(self.device)
        if not self.out_dir:
            raise ParameterError("choose an output folder for the trained model")
        if self.steps < 1:
            raise ParameterError(f"steps {self.steps}: must be at least 1")
        if self.healthy_folder is not None and not Path(self.healthy_folder).is_dir():
            raise ParameterError(f"healthy scan folder {self.healthy_folder} does not exist")
        if self.features is not None:
            parts = self.features.split(",")
            if len(parts) != 6 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
                raise ParameterError(f"features {self.features!r}: six positive widths a,b,c,d,e,f")

    def to_argv(self, cli: list[str], healthy: list[Path]) -> list[str]:
        sources = [str(p) for p in healthy]
        if self.healthy_folder is not None:
            sources.append(self.healthy_folder)
        argv = [*cli, "pretrain", "--profile", self.profile, "--healthy", *sources]
        argv += ["--out", self.out_dir, "--steps", str(self.steps), "--device", self.device]
        if self.features is not None:
            argv += ["--features", self.features.replace(" ", "")]
        return argv + self.extra_args

    def model_path(self) -> Path:
        return Path(self.out_dir) / "model.safetensors"


@dataclass
class FinetuneParameters:
    """``layerseg finetune`` options: labelled cases (a MONAI datalist) in, a run folder out."""

    out_dir: str = ""
    steps: int = 500
    profile: str = "brain-mri"
    #: Starting weights; None: the model shipped for the profile.
    model: str | None = None
    device: str = "auto"

    def validate(self) -> None:
        _check_profile(self.profile)
        _check_model(self.model)
        _check_device(self.device)
        if not self.out_dir:
            raise ParameterError("choose an output folder for the fine-tuned model")
        if self.steps < 1:
            raise ParameterError(f"steps {self.steps}: must be at least 1")

    def to_argv(self, cli: list[str], datalist: Path) -> list[str]:
        argv = [*cli, "finetune", "--datalist", str(datalist), "--out", self.out_dir]
        argv += ["--profile", self.profile, "--steps", str(self.steps), "--device", self.device]
        if self.model is not None:
            argv += ["--model", self.model]
        return argv

    def model_path(self) -> Path:
        return Path(self.out_dir) / "model.safetensors"
