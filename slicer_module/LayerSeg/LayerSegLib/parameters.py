"""What the user chose in the panel, checked and turned into layerseg command lines.

Plain dataclasses: the widget fills them from its parameter node, the logic and the tests
build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Profiles built into the CLI; anything else must be a profile JSON file.
BUILTIN_PROFILES = ("brain-mri", "liver-ct")
DEVICES = ("auto", "cpu", "cuda")


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

    def validate(self) -> None:
        if self.profile is not None:
            _check_profile(self.profile)
        _check_model(self.model)
        _check_device(self.device)
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ParameterError(f"threshold {self.threshold}: must lie strictly between 0 and 1")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ParameterError(f"overlap {self.overlap}: must lie in [0, 1)")

    def to_argv(
        self, cli: list[str], scan: Path, out: Path, prob: Path | None, organ_mask: Path | None
    ) -> list[str]:
        argv = [*cli, "segment", str(scan), "--out", str(out), "--device", self.device]
        if self.profile is not None:
            argv += ["--profile", self.profile]
        if self.model is not None:
            argv += ["--model", self.model]
        if prob is not None:
            argv += ["--prob", str(prob)]
        if organ_mask is not None:
            argv += ["--organ-mask", str(organ_mask)]
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
