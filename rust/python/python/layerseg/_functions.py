"""Typed, documented front ends over the extensions' training, file and runtime functions.

The extension's own functions carry no annotations and only a line of documentation; these
wrappers give each public function a full signature (``inspect.signature`` and editors show the
types) and a docstring that documents every parameter, then call straight through.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from layerseg import _layerseg
from layerseg._libtorch import native

PathLike = str | os.PathLike[str]
Paths = PathLike | Sequence[PathLike]
Progress = Callable[[str, int, int], object]
Affine = npt.NDArray[np.float64]


def pretrain(
    healthy: Paths,
    out: PathLike,
    profile: str = "brain-mri",
    organ_masks: Paths | None = None,
    textures: Paths | None = None,
    steps: int | None = None,
    batch: int | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: Progress | None = None,
    validate_on: Paths | None = None,
    checkpoint_every: int = 500,
    workers: int = 0,
    seed: int = 0,
    features: Sequence[int] | None = None,
    lr: float | None = None,
    init_from: PathLike | None = None,
    max_time: float | None = None,
) -> dict[str, Any]:
    """Pretrain a network on tumours synthesised on the fly into healthy scans.

    Writes checkpoints, ``metrics.jsonl``, ``model.safetensors`` (with its model card
    ``model.json``) and ``curves.png`` into ``out``. Settings not given come from the profile's
    ``training`` section. The GIL is released while training runs.

    Parameters
    ----------
    healthy
        Healthy scans: NIfTI (or NRRD, MetaImage) files, folders of them, or ``.txt`` lists
        (one path a line); one path or a sequence of them.
    out
        The run folder, created if missing.
    profile
        A built-in profile (``"brain-mri"``, ``"liver-ct"``) or a profile JSON file. Default
        ``"brain-mri"``.
    organ_masks
        Organ (or brain) masks paired with the healthy scans in order, or one folder holding a
        mask of the same file name for each scan; tumours are placed inside them. Default
        ``None``: none (required by profiles that place tumours inside an organ).
    textures
        Scans to take tumour texture from (files, folders or lists). Default ``None``: the
        healthy scans.
    steps
        Optimiser steps in total. Default ``None``: the profile's ``max_epochs`` epochs (71 500
        steps for the built-in profiles, hours on a GPU and weeks on a CPU; stop early with
        Ctrl-C, which checkpoints and exports).
    batch
        Samples per step. Default ``None``: the profile's ``batch_size``.
    device
        Where the network runs: ``"auto"`` (the first CUDA GPU when one is usable, else the
        CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Default ``"auto"``; any other name raises
        ``LayerSegError`` (a ``ValueError``).
    resume
        Continue from the newest checkpoint in ``out``. Default ``False``.
    progress
        ``progress(what, done, total)`` is called after each step; raising from it, or Ctrl-C,
        saves a checkpoint and re-raises. Default ``None``.
    validate_on
        Unlabelled real scans scored by the recomposition L1 at every validation. Default
        ``None``: synthetic validation only.
    checkpoint_every
        Steps between checkpoints, validations and curve redraws. Default 500.
    workers
        Synthesis worker threads; 0 means one less than the CPU cores. Default 0.
    seed
        Seed of the synthetic samples (sample i is a function of the seed and i). Default 0.
    features
        The six BasicUNet widths ``(a, b, c, d, e, f)``. Default ``None``: the profile's
        ``network.features``.
    lr
        Adam's learning rate. Default ``None``: the profile's ``training.lr``.
    init_from
        Continue the training of a model in the new run folder ``out``: ``"shipped"`` (the
        profile's shipped model), a model file (``.safetensors`` with its card ``.json``) or a
        checkpoint folder (with its Adam moments). The step count, learning rate and schedule go
        on from there, so ``steps`` counts its steps too. Default ``None``: a new network.
    max_time
        Seconds after which training stops cleanly, keeping time for the last checkpoint and
        the export (``outcome`` ``"time_limit"``). Default ``None``: no limit.

    Returns
    -------
    dict
        ``outcome`` (``finished``, ``early_stopped``, ``cancelled`` or ``time_limit``), ``step``,
        ``started_at``, ``loss``, ``validation``, ``validation_real``, ``checkpoint``, ``model``
        and ``curves`` (paths), ``steps_per_s`` (this call's steps, the first left out; ``None``
        for fewer than two) and ``waiting_share`` (of that time, the share spent waiting for
        synthetic samples: near 0 when the network bounds the speed).
    """
    result: dict[str, Any] = native().pretrain(
        healthy,
        out,
        profile=profile,
        organ_masks=organ_masks,
        textures=textures,
        steps=steps,
        batch=batch,
        device=device,
        resume=resume,
        progress=progress,
        validate_on=validate_on,
        checkpoint_every=checkpoint_every,
        workers=workers,
        seed=seed,
        features=None if features is None else [int(f) for f in features],
        lr=lr,
        init_from=None if init_from is None else str(init_from),
        max_time=max_time,
    )
    return result


def finetune(
    datalist: PathLike,
    out: PathLike,
    profile: str | None = None,
    model: PathLike | None = None,
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
    config: PathLike | None = None,
    device: str = "auto",
    resume: bool = False,
    seed: int | None = None,
    workers: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fine-tune a model on a few labelled cases.

    Every missing file, grid mismatch and bad label map is reported in one ``LayerSegError``
    before training. The validation Dice (of the training cases when there are no validation
    cases) is measured before the first step and every ``validate_every`` steps; the best
    weights become ``out/model.safetensors``. The GIL is released while training runs.

    Parameters
    ----------
    datalist
        A MONAI datalist JSON (``{"training": [{"image": ..., "label": ...}], "validation":
        [...]}``, paths relative to the file) or a folder of image/label pairs.
    out
        The run folder, created if missing (with ``folds``: one ``fold-K`` folder per fold).
    profile
        A built-in profile name or a profile JSON. Default ``None``: the model card's profile,
        else ``"brain-mri"``.
    model
        The weights to start from (``.safetensors`` from ``pretrain``, or a MONAI BasicUNet
        state dict). Default ``None``: the model shipped for the profile.
    folds
        Cross-validation: split the training cases into this many folds. Default ``None``: no
        cross-validation.
    fold
        With ``folds``, train only this fold (0-based). Default ``None``: every fold.
    label_values
        Label values that mean tumour, e.g. ``[2, 3]``. Default ``None``: label maps must hold
        0 and 1 only.
    steps
        Optimiser steps at most. Default ``None``: 500.
    batch
        Patches per step. Default ``None``: the profile's ``batch_size``.
    lr
        Adam's learning rate. Default ``None``: 1e-3.
    validate_every
        Steps between validations. Default ``None``: 25.
    patience
        Stop after this many validations without a better Dice (0: never). Default ``None``: 8.
    checkpoint_every
        Steps between checkpoints. Default ``None``: 50.
    augmentation
        Random flips, rotations and intensity changes of the patches. Default ``True``.
    config
        All fine-tuning settings as JSON (``FinetuneConfig``: train, weights, augmentation,
        positive_fraction, seed); the arguments above override it. Default ``None``.
    device
        ``"auto"`` (the first CUDA GPU when one is usable, else the CPU), ``"cpu"``, ``"cuda"``
        or ``"cuda:N"``. Default ``"auto"``.
    resume
        Continue from the newest checkpoint of each run folder. Default ``False``.
    seed
        Seed of the patch positions and the augmentation. Default ``None``: the config's, else 0.
    workers
        Patch worker threads; 0 means one less than the CPU cores. Default 0.
    progress
        ``progress(what, done, total)`` is called after each step; raising from it, or Ctrl-C,
        saves a checkpoint and re-raises. Default ``None``.

    Returns
    -------
    dict
        The report written to ``out/finetune.json``: ``folds`` (each with ``fold``,
        ``run_dir``, ``training_cases``, ``validation_cases``, ``validated_on_training``,
        ``start_dice``, ``best_dice``, ``best_step``, ``steps``, ``outcome``, ``model``) and
        ``mean_dice``.
    """
    result: dict[str, Any] = native().finetune(
        datalist,
        out,
        profile=profile,
        model=model,
        folds=folds,
        fold=fold,
        label_values=label_values,
        steps=steps,
        batch=batch,
        lr=lr,
        validate_every=validate_every,
        patience=patience,
        checkpoint_every=checkpoint_every,
        augmentation=augmentation,
        config=config,
        device=device,
        resume=resume,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    return result


def adapt(
    images: Paths,
    out: PathLike,
    profile: str | None = None,
    model: PathLike | None = None,
    organ_masks: Paths | None = None,
    rounds: int | None = None,
    steps: int | None = None,
    batch: int | None = None,
    device: str = "auto",
    seed: int = 0,
    workers: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Self-train a model on unlabelled scans with its own pseudo-labels.

    Each round pseudo-labels the scans where the mask and the residual between scan and
    healthy layer agree, keeps the scans with a low recomposition error and fine-tunes on them;
    the rule and its thresholds come from the profile's ``adaptation`` section. Deterministic
    for a given ``seed``. The GIL is released while it runs.

    Parameters
    ----------
    images
        Unlabelled scans: files, folders of them, or ``.txt`` lists (one path a line); one path
        or a sequence of them.
    out
        The output folder, created if missing; its ``round-R`` folders must not exist yet.
    profile
        A built-in profile name or a profile JSON. Default ``None``: the model card's profile,
        else ``"brain-mri"``.
    model
        The weights to start from. Default ``None``: the model shipped for the profile.
    organ_masks
        Organ masks paired with the scans in order, or one folder with a mask of the same file
        name per scan (for profiles that crop to an organ). Default ``None``.
    rounds
        Self-training rounds. Default ``None``: the profile's ``adaptation.rounds``.
    steps
        Optimiser steps per round. Default ``None``: the profile's
        ``adaptation.steps_per_round``.
    batch
        Patches per step. Default ``None``: the profile's ``batch_size``.
    device
        ``"auto"`` (the first CUDA GPU when one is usable, else the CPU), ``"cpu"``, ``"cuda"``
        or ``"cuda:N"``. Default ``"auto"``.
    seed
        Seed of the patch positions and the augmentation. Default 0.
    workers
        Patch worker threads; 0 means one less than the CPU cores. Default 0.
    progress
        ``progress(what, done, total)`` is called after each step; raising from it, or Ctrl-C,
        stops the run and re-raises. Default ``None``.

    Returns
    -------
    dict
        The report written to ``out/adapt.json``: ``rounds`` (each with ``round``, ``before``
        and ``after`` label-free scores ``recomposition_l1``, ``agreement``,
        ``tumour_fraction`` and per-scan ``cases``, ``kept``, ``run_dir``, ``model``) and
        ``model``.
    """
    result: dict[str, Any] = native().adapt(
        images,
        out,
        profile=profile,
        model=model,
        organ_masks=organ_masks,
        rounds=rounds,
        steps=steps,
        batch=batch,
        device=device,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    return result


def read_image(path: PathLike) -> tuple[npt.NDArray[np.float32], Affine]:
    """Read a scan (NIfTI, NRRD or MetaImage) as float32.

    Parameters
    ----------
    path
        The file to read.

    Returns
    -------
    tuple
        The voxels as a float32 array ``[i, j, k]`` in the file's voxel order, with the
        header's intensity scaling (``scl_slope``, ``scl_inter``) applied, and the 4x4
        voxel-to-RAS affine in millimetres, as nibabel gives it.
    """
    return _layerseg.read_image(path)


def read_labels(path: PathLike) -> tuple[npt.NDArray[np.uint8], Affine]:
    """Read a label map (integers 0..255) as uint8.

    Parameters
    ----------
    path
        The file to read; values that are not integers in 0..255 raise ``LayerSegError``.

    Returns
    -------
    tuple
        The labels as a uint8 array ``[i, j, k]`` and the 4x4 voxel-to-RAS affine (mm).
    """
    return _layerseg.read_labels(path)


def profile_json(name_or_path: str) -> str:
    """A profile, validated, as JSON text.

    Parameters
    ----------
    name_or_path
        A built-in profile name (``"brain-mri"``, ``"liver-ct"``) or the path of a profile
        JSON file.

    Returns
    -------
    str
        The whole profile (modality, network, preprocessing, inference, training, adaptation,
        synthesis sections) with every default filled in.
    """
    return _layerseg.profile_json(name_or_path)


def model_dirs(packaged: PathLike | None = None) -> list[Path]:
    """The folders searched for shipped models (``PROFILE.safetensors``), in order.

    Parameters
    ----------
    packaged
        Registers this folder as the installed package's own ``models/`` folder first
        (``import layerseg`` does so when the wheel carries one). Default ``None``: register
        nothing.

    Returns
    -------
    list of Path
        ``$LAYERSEG_MODELS`` when set, the package's models folder, then the ``models/``
        folder of the checkout the extension was built in.
    """
    return _layerseg.model_dirs(packaged)


def runtime() -> str:
    """What libtorch sees on this machine, as one line of text.

    Returns
    -------
    str
        Whether the libtorch CUDA backend is loaded, whether CUDA is available and with how
        many devices, and the number of CPU threads.
    """
    text: str = native().runtime()
    return text


def run_cli(argv: list[str]) -> int:
    """Run the ``layerseg`` command line in this process; it prints as the CLI does.

    Parameters
    ----------
    argv
        The command line, ``argv[0]`` being the program name, e.g. ``["layerseg", "info",
        "scan.nii.gz"]``.

    Returns
    -------
    int
        The exit code: 0 on success (and when help was asked for), 1 on an error (printed
        to stderr), 2 on a usage error.
    """
    code: int = native().run_cli(argv)
    return code
