"""Type stubs for the libtorch extension module."""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

from layerseg._errors import LayerSegError as LayerSegError

Affine = npt.NDArray[np.float64]

def run_cli(argv: list[str]) -> int:
    """Run the ``layerseg`` command line (``argv[0]`` is the program name); return its exit code."""

def runtime() -> str:
    """What libtorch sees: CUDA backend loaded, CUDA available, devices, CPU threads."""

def model_dirs(packaged: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for shipped models, in order; ``packaged`` registers the package's own
    ``models/`` folder (done by ``import layerseg`` when the wheel carries one)."""

def sliding_window(
    weights: str | os.PathLike[str],
    volume: npt.NDArray[np.float32],
    roi: list[int],
    overlap: float = 0.25,
    batch_size: int = 1,
    features: list[int] | None = None,
    tta: bool = False,
    device: str = "cpu",
) -> npt.NDArray[np.float32]:
    """MONAI-exact Gaussian sliding-window inference; returns raw [C, D, H, W] outputs."""

def segment(
    image: npt.NDArray[np.float32],
    affine: Affine,
    model: str | os.PathLike[str] | None = None,
    profile: str = "brain-mri",
    organ_mask: npt.NDArray[np.uint8] | None = None,
    threshold: float | None = None,
    overlap: float | None = None,
    tta: bool = False,
    min_size_mm3: float = 0.0,
    device: str = "auto",
    progress: Callable[[str, int, int], object] | None = None,
    organ_affine: Affine | None = None,
    auto_brain: bool = True,
    raw_mask: bool = False,
    scan_name: str | os.PathLike[str] | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """Segment one scan; see ``layerseg.segment``."""

def extract_brain(
    image: npt.NDArray[np.float32], affine: Affine, device: str = "auto"
) -> tuple[npt.NDArray[np.uint8], float, str | None, bool]:
    """Brain mask, its volume (L), why it is implausible and whether the scan cuts it; see
    ``layerseg.extract_brain``."""

def pretrain(
    healthy: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    profile: str = "brain-mri",
    organ_masks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    textures: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    steps: int | None = None,
    batch: int | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: Callable[[str, int, int], object] | None = None,
    validate_on: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    checkpoint_every: int = 500,
    workers: int = 0,
    seed: int = 0,
    features: tuple[int, int, int, int, int, int] | list[int] | None = None,
    lr: float | None = None,
    init_from: str | os.PathLike[str] | None = None,
    max_time: float | None = None,
) -> dict[str, Any]:
    """Pretrain on tumours synthesised on the fly into ``healthy`` scans (files, folders or
    ``.txt`` lists), writing checkpoints, ``metrics.jsonl``, ``model.safetensors`` and
    ``curves.png`` into ``out``. Settings come from the profile's training section; the
    arguments override them. ``progress(what, done, total)`` is called after each step; raising
    from it, or Ctrl-C, saves a checkpoint and re-raises. Returns ``outcome``, ``step``,
    ``started_at``, ``loss``, ``validation``, ``validation_real``, ``checkpoint``, ``model`` and
    ``curves``. The GIL is released while training runs."""

def finetune(
    datalist: str | os.PathLike[str],
    out: str | os.PathLike[str],
    profile: str | None = None,
    model: str | os.PathLike[str] | None = None,
    folds: int | None = None,
    fold: int | None = None,
    label_values: Sequence[int] | None = None,
    steps: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    validate_every: int | None = None,
    patience: int | None = None,
    checkpoint_every: int | None = None,
    augmentation: bool = True,
    config: str | os.PathLike[str] | None = None,
    device: str = "auto",
    resume: bool = False,
    seed: int | None = None,
    workers: int = 0,
    progress: Callable[[str, int, int], object] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (default: the model shipped for the profile) on labelled cases, as
    ``layerseg finetune``. ``datalist`` is a MONAI datalist JSON (``{"training": [{"image":
    ..., "label": ...}], "validation": [...]}``, paths relative to the file) or a folder of
    image/label pairs. Label maps must hold 0 and 1 only unless ``label_values`` names the
    tumour values. Every missing file, grid mismatch and bad label map is reported in one
    ``LayerSegError`` before training. The validation Dice (of the training cases when there
    are no validation cases) is measured before the first step and every ``validate_every``
    steps; the best weights become ``out/model.safetensors``, and the run stops after
    ``patience`` validations without improvement. ``folds`` runs a cross-validation, each fold
    in ``out/fold-K`` (``fold``: only that one). ``progress(what, done, total)`` is called after
    each step; raising from it, or Ctrl-C, saves a checkpoint and re-raises. Returns the report
    written to ``out/finetune.json``: ``folds`` (each with ``fold``, ``run_dir``,
    ``training_cases``, ``validation_cases``, ``validated_on_training``, ``start_dice``,
    ``best_dice``, ``best_step``, ``steps``, ``outcome``, ``model``) and ``mean_dice``. The GIL
    is released while training runs."""

def adapt(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    profile: str | None = None,
    model: str | os.PathLike[str] | None = None,
    organ_masks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    rounds: int | None = None,
    steps: int | None = None,
    batch: int | None = None,
    device: str = "auto",
    seed: int = 0,
    workers: int = 0,
    progress: Callable[[str, int, int], object] | None = None,
) -> dict[str, Any]:
    """Self-train ``model`` on unlabelled ``images`` (files, folders or ``.txt`` lists) for
    ``rounds`` rounds, as ``layerseg adapt``: pseudo-labels where the mask and the residual
    between scan and healthy layer agree, scans with low recomposition error kept, the rule and
    thresholds from the profile's ``adaptation`` section. Returns the report written to
    ``out/adapt.json``: ``rounds`` (each with ``round``, ``before`` and ``after`` label-free
    scores ``recomposition_l1``, ``agreement``, ``tumour_fraction`` and per-scan ``cases``,
    ``kept``, ``run_dir``, ``model``) and ``model``. Deterministic for a given ``seed``. The GIL
    is released while it runs."""

def bench_train_step(
    size: int,
    batch: int = 2,
    features: tuple[int, int, int, int, int, int] | list[int] | None = None,
    steps: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    seed: int = 0,
) -> float:
    """Seconds per pretraining step (forward, losses, backward, Adam) on a fixed random batch
    of ``batch`` volumes of ``size``^3, after ``warmup`` untimed steps."""
