"""What the MONAI transforms share: array conversion, and the checks of ``layerseg segment`` and
``layerseg.segment`` with their words."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from monai.data.meta_tensor import MetaTensor
from monai.utils.type_conversion import convert_data_type

from layerseg._errors import LayerSegError
from layerseg._layerseg import evaluate as _rust_evaluate


def _numpy(x: Any, dtype: type) -> npt.NDArray[Any]:
    arr: npt.NDArray[Any] = convert_data_type(x, np.ndarray)[0]
    return np.asarray(arr, dtype=dtype)


def _affine_of(img: Any, meta: Mapping[str, Any] | None = None) -> npt.NDArray[np.float64]:
    if isinstance(img, MetaTensor):
        return _numpy(img.affine, np.float64)
    if meta is not None and "affine" in meta:
        return _numpy(meta["affine"], np.float64)
    return np.eye(4)


# --- Validation: the checks of `layerseg segment` and `layerseg.segment`, with their words -----


def _source_name(img: Any, meta: Mapping[str, Any] | None = None) -> str:
    """The file a channel-first image was read from, for messages (``<array>`` when unknown)."""
    found = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
    if found is None and meta is not None:
        found = meta.get("filename_or_obj")
    return str(found) if found else "<array>"


def _named(label: str, img: Any, meta: Mapping[str, Any] | None = None) -> str:
    """``label``, with the file it was read from when that is known."""
    source = _source_name(img, meta)
    return label if source == "<array>" else f"{label} ({source})"


def _grid_affine(img: Any, meta: Mapping[str, Any] | None = None) -> npt.NDArray[np.float64] | None:
    """The 4x4 affine a volume carries (``MetaTensor`` or meta dict), ``None`` when it has none:
    such a volume is taken to lie on the grid it is compared with, as ``layerseg.evaluate``
    takes an array without an affine."""
    if isinstance(img, MetaTensor):
        found: Any = img.affine
    elif meta is not None and "affine" in meta:
        found = meta["affine"]
    else:
        return None
    affine = _numpy(found, np.float64)
    return affine if affine.shape == (4, 4) else None


#: How the Rust grid check begins when reached through ``evaluate`` (pred against truth).
_RUST_GRID_PREFIX = "pred: it is on another grid than the truth: "
_ZERO_VOXEL = np.zeros((1, 1, 1), np.uint8)


def _ensure_same_grid(
    this: str,
    shape: Sequence[int],
    affine: npt.NDArray[np.float64] | None,
    what: str,
    other_shape: Sequence[int],
    other_affine: npt.NDArray[np.float64] | None,
) -> None:
    """Refuse a volume (``what``, spatial ``other_shape`` and ``other_affine``) that is not on
    the grid of ``this``, with the words of the CLI and the Python API: which field differs
    (shape, voxel size, axis directions or origin), by how much, and how to resample.

    The check is LayerSeg's Rust one (``Volume::ensure_same_grid``, 1e-4 mm), reached through
    the extension's ``evaluate``, which runs it on the masks' grids before anything else: equal
    shapes are sent as single voxels (the affines decide), others as zero-copy views, so no
    metrics are computed on real volumes. Only the names are replaced by ours."""
    shape, other_shape = tuple(int(n) for n in shape), tuple(int(n) for n in other_shape)
    if affine is None or other_affine is None:
        if shape == other_shape:
            return
        affine = other_affine = affine if affine is not None else other_affine
        if affine is None:
            affine = other_affine = np.eye(4)
    if shape == other_shape:
        truth = pred = _ZERO_VOXEL
    else:
        truth = np.broadcast_to(_ZERO_VOXEL, shape)
        pred = np.broadcast_to(_ZERO_VOXEL, other_shape)
    try:
        _rust_evaluate(
            pred,
            truth,
            [1.0, 1.0, 1.0],
            pred_affine=np.ascontiguousarray(other_affine, np.float64),
            truth_affine=np.ascontiguousarray(affine, np.float64),
        )
    except LayerSegError as e:
        text = str(e)
        if not text.startswith(_RUST_GRID_PREFIX):
            raise
        difference = text[len(_RUST_GRID_PREFIX) :]
        raise LayerSegError(
            f"{what}: it is on another grid than the {this}: {difference}"
        ) from None


def _spatial_shape(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape[1:])


def _meta_dict(d: Mapping[Hashable, Any], key: Hashable) -> Mapping[str, Any] | None:
    meta = d.get(f"{key}_meta_dict")
    return meta if isinstance(meta, Mapping) else None


def _rust_number(value: float) -> str:
    """A float as Rust's ``{}`` writes it (shortest round trip, never an exponent)."""
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(np.format_float_positional(value, trim="-"))


def _check_threshold(threshold: float) -> float:
    """The threshold check of ``layerseg segment --threshold`` and ``layerseg.segment`` (Rust
    ``SegmentOptions::validate``), with its message: a probability, in [0, 1]."""
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise LayerSegError(
            f"invalid configuration: threshold {_rust_number(value)} is outside [0, 1] "
            "(a probability)"
        )
    return value


def _modality_mismatch(image: npt.NDArray[Any], profile: Mapping[str, Any]) -> str | None:
    """The warning of ``layerseg segment`` and ``layerseg.segment`` (Rust
    ``Profile::modality_mismatch``) when a scan's values do not fit the profile's modality:
    values below -500 under an MRI profile (a CT in Hounsfield units), none below 0 under a CT
    profile. ``None`` when they fit."""
    values = np.asarray(image, np.float32)
    finite = values[~np.isnan(values)]
    low = float(finite.min()) if finite.size else float("inf")
    name, modality = profile.get("name"), profile.get("modality")
    if modality == "mri" and low < -500.0:
        return (
            f"values go down to {low:.0f}, like a CT in Hounsfield units, but profile {name} is "
            "for MRI (use profile liver-ct: CLI --profile, Python profile=; or a CT model)"
        )
    if modality == "ct" and low >= 0.0:
        return f"no value is below 0, unlike a CT in Hounsfield units, but profile {name} is for CT"
    return None
