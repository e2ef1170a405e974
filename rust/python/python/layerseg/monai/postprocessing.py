"""From the network's outputs to the mask, as ``layerseg segment`` does it: the threshold and the
profile's layer rule."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from layerseg._layerseg import profile_json
from layerseg.monai._common import (
    _affine_of,
    _check_threshold,
    _ensure_same_grid,
    _grid_affine,
    _named,
    _numpy,
    _spatial_shape,
)
from layerseg.monai.losses import HEALTHY_CHANNEL

#: The residual signs a layer rule may name: image minus healthy layer as it is, negated, or its
#: absolute value.
RESIDUAL_SIGNS = ("brighter", "darker", "either")


class TumourMask(Transform):
    """The tumour mask of a probability map ``(C, H, W, D)`` (:func:`mask_probability`, on the
    scan's grid), as ``layerseg segment`` thresholds it: 1 where ``p >= threshold``, else 0,
    float32 of the input's type (like MONAI's ``AsDiscrete(threshold=...)``).

    Parameters
    ----------
    threshold
        A probability in [0, 1]; anything else is refused at construction (``LayerSegError``,
        a ``ValueError``) with the words of ``layerseg segment --threshold``. Default ``None``:
        the profile's (0.5 for the built-in profiles).
    profile
        A built-in profile name or a profile JSON file. Default ``"brain-mri"``.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(self, threshold: float | None = None, profile: str = "brain-mri") -> None:
        if threshold is None:
            threshold = float(json.loads(profile_json(profile))["inference"]["threshold"])
        self.threshold = _check_threshold(threshold)

    def __call__(self, img: Any) -> Any:
        p: torch.Tensor = convert_data_type(img, torch.Tensor, dtype=torch.float32)[0]
        return convert_to_dst_type((p >= self.threshold).float(), img, dtype=torch.float32)[0]


class TumourMaskd(MapTransform):
    """Dictionary version of :class:`TumourMask`: each probability map in ``keys`` becomes its
    tumour mask. In a bundle's postprocessing it takes the place of ``AsDiscreted(threshold=
    @threshold)``, with the threshold checked as ``layerseg segment`` checks it.

    Parameters
    ----------
    keys
        The probability maps. Typically ``"pred"``.
    threshold
        A probability in [0, 1]. Default ``None``: the profile's.
    profile
        A built-in profile name or a profile JSON file. Default ``"brain-mri"``.
    allow_missing_keys
        Skip missing keys instead of raising. Default ``False``.
    """

    backend = TumourMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float | None = None,
        profile: str = "brain-mri",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.to_mask = TumourMask(threshold, profile)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.to_mask(d[key])
        return d


def profile_layer_rule(profile: str = "brain-mri") -> dict[str, Any] | None:
    """The layer rule of a profile (built-in name or JSON file): ``{"residual_sign", "margin",
    "min_lesion_mm3"}``, or ``None`` when the profile has none (the rule is then off)."""
    rule = json.loads(profile_json(profile)).get("inference", {}).get("layer_rule")
    return dict(rule) if rule else None


def layer_residual(pred: Any, image: Any) -> Any:
    """The image minus the healthy layer, ``(1, ...)``: ``image`` is the normalised network input
    (channel-first, one channel) and ``pred`` the network output ``(3, ...)`` on the same grid.
    The result is of ``pred``'s type (a ``MetaTensor`` keeps ``pred``'s meta)."""
    if pred.ndim < 1 or pred.shape[0] != 3:
        raise ValueError(
            "expected a channel-first prediction with 3 channels (healthy layer, tumour layer, "
            f"mask logit), got shape {tuple(pred.shape)}"
        )
    x: torch.Tensor = convert_data_type(image, torch.Tensor, dtype=torch.float32)[0]
    p: torch.Tensor = convert_data_type(pred, torch.Tensor, dtype=torch.float32)[0]
    if x.ndim != p.ndim or x.shape[0] != 1:
        raise ValueError(
            f"the image {tuple(x.shape)} must be one channel on the prediction's grid "
            f"{tuple(p.shape)}"
        )
    _ensure_same_grid(
        "prediction",
        _spatial_shape(p),
        _grid_affine(pred),
        _named("image", image),
        _spatial_shape(x),
        _grid_affine(image),
    )
    healthy = p[HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1]
    residual = x.as_subclass(torch.Tensor).to(healthy.device) - healthy.as_subclass(torch.Tensor)
    return convert_to_dst_type(residual, pred, dtype=torch.float32)[0]


class LayerResiduald(MapTransform):
    """``data[residual_key]`` = :func:`layer_residual` of ``data[key]`` (the network output) and
    ``data[image_key]`` (the normalised input), both on the network grid. Map it back to the
    scan's grid with ``Invertd`` (``orig_keys`` the image, linear, as the prediction) and give it
    to :class:`LayerRuled`.

    Parameters
    ----------
    keys
        The prediction key: exactly one. Typically ``"pred"``.
    image_key
        The normalised network input. Default ``"image"``.
    residual_key
        Where the residual ``(1, ...)`` goes. Default ``"residual"``.
    allow_missing_keys
        Do nothing when the key is missing instead of raising. Default ``False``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        residual_key: str = "residual",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LayerResiduald takes one prediction key, got {self.keys}")
        self.image_key = image_key
        self.residual_key = residual_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.residual_key] = layer_residual(d[key], d[self.image_key])
        return d


def remove_small_lesions(
    mask: npt.ArrayLike, spacing: Sequence[float], min_mm3: float
) -> npt.NDArray[np.bool_]:
    """``mask`` (3D) without its connected components (26-connectivity) smaller than ``min_mm3``
    (voxel count times the voxel volume from ``spacing``, mm), as LayerSeg's
    ``remove_small_components``; ``min_mm3 <= 0`` keeps everything. Needs SciPy."""
    m = np.asarray(mask).astype(bool)
    if min_mm3 <= 0 or not m.any():
        return m
    try:
        from scipy import ndimage
    except ImportError as e:  # pragma: no cover - scipy is installed with the bundle
        raise ImportError(
            "the layer rule's smallest lesion size needs SciPy (pip install scipy)"
        ) from e
    labels, _ = ndimage.label(m, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes * float(np.prod(np.asarray(spacing, np.float64))) >= min_mm3
    keep[0] = False
    result: npt.NDArray[np.bool_] = keep[labels]
    return result


def fill_enclosed(mask: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """``mask`` (3D) with everything its lesions enclose, as LayerSeg's ``fill_enclosed``:
    cavities in 3D and holes within single slices along any of the three axes (a tumour's
    necrotic core, darker than the rim a "brighter" rule keeps). Needs SciPy."""
    m: npt.NDArray[np.bool_] = np.asarray(mask).astype(bool)
    if not m.any():
        return m
    # Only the mask's box, grown by a voxel of background, can hold what it encloses.
    box = grown_box(m)
    inner = m[box]
    filled: npt.NDArray[np.bool_] = m.copy()
    filled[box] |= _enclosed(inner, within_slices_of=None)
    for axis in range(3):
        filled[box] |= _enclosed(inner, within_slices_of=axis)
    return filled


def grown_box(m: npt.NDArray[np.bool_]) -> tuple[slice, slice, slice]:
    """The bounding box of a non-empty 3D ``m``, grown by one voxel where the grid allows."""
    lo_hi = []
    for axis in range(3):
        hits = np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != axis)))
        lo_hi.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return (lo_hi[0], lo_hi[1], lo_hi[2])


def _enclosed(m: npt.NDArray[np.bool_], within_slices_of: int | None) -> npt.NDArray[np.bool_]:
    """The background of ``m`` that does not reach the grid's border through face-connected
    background (as ``scipy.ndimage.binary_fill_holes``): in 3D, or within each slice across
    ``within_slices_of``. One labelling of the whole grid instead of a fill per slice, which is
    what made the per-slice version slow on large masks."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 1)
    if within_slices_of is not None:
        structure[tuple(0 if a == within_slices_of else 1 for a in range(3))] = False
        structure[tuple(2 if a == within_slices_of else 1 for a in range(3))] = False
    labels, _ = ndimage.label(~m, structure=structure)
    reaches_border = np.zeros(labels.max() + 1, dtype=bool)
    for axis in range(3):
        if axis == within_slices_of:
            continue
        for end in (0, -1):
            reaches_border[np.take(labels, end, axis=axis)] = True
    reaches_border[0] = True
    result: npt.NDArray[np.bool_] = ~reaches_border[labels]
    return result


class LayerRule(Transform):
    """The profile's layer rule on a binary mask ``(C, H, W, D)``, as ``layerseg segment``
    applies it: a voxel stays tumour only where ``sign(residual - median) > margin``
    (``residual`` = the normalised image minus the healthy layer, :func:`layer_residual`, on the
    mask's grid; ``median`` = its median inside the region searched, so that a healthy layer off
    by a constant does not decide), then
    connected components (26-connectivity) smaller than ``min_lesion_mm3`` go, and what the
    lesions left enclose is filled (:func:`fill_enclosed`, within the region). Unset values come
    from the profile's ``inference.layer_rule``; when the profile has none and nothing is given,
    or with ``enabled=False`` (``layerseg segment --raw-mask``), the mask comes back unchanged.

    Parameters
    ----------
    profile
        A built-in profile name or a profile JSON file whose rule to apply. Default
        ``"brain-mri"``.
    enabled
        ``False`` turns the rule off. Default ``True``.
    residual_sign
        ``"brighter"`` (residual as it is), ``"darker"`` (negated) or ``"either"`` (absolute).
        Default ``None``: the profile's.
    margin
        The signed residual must exceed this (>= 0), in normalised intensity units. Default
        ``None``: the profile's.
    min_lesion_mm3
        The smallest lesion kept, mm^3 (0 keeps all). Default ``None``: the profile's.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(
        self,
        profile: str = "brain-mri",
        enabled: bool = True,
        residual_sign: str | None = None,
        margin: float | None = None,
        min_lesion_mm3: float | None = None,
    ) -> None:
        self.enabled = bool(enabled)
        given = (residual_sign, margin, min_lesion_mm3)
        rule = profile_layer_rule(profile) if self.enabled else None
        if rule is None and self.enabled and any(v is not None for v in given):
            rule = {"residual_sign": "brighter", "margin": 0.0, "min_lesion_mm3": 0.0}
        if rule is not None:
            if residual_sign is not None:
                rule["residual_sign"] = residual_sign
            if margin is not None:
                rule["margin"] = margin
            if min_lesion_mm3 is not None:
                rule["min_lesion_mm3"] = min_lesion_mm3
            if rule["residual_sign"] not in RESIDUAL_SIGNS:
                raise ValueError(
                    f"residual_sign {rule['residual_sign']!r} is not one of "
                    f"{', '.join(RESIDUAL_SIGNS)}"
                )
            for name in ("margin", "min_lesion_mm3"):  # as the profile's validation says
                if not (np.isfinite(float(rule[name])) and float(rule[name]) >= 0):
                    raise ValueError(f"layer rule {name} {rule[name]} must be a number >= 0")
        #: The rule applied (``residual_sign``, ``margin``, ``min_lesion_mm3``), or ``None``.
        self.rule: dict[str, Any] | None = rule

    def __call__(
        self,
        mask: Any,
        residual: Any = None,
        spacing: Sequence[float] | None = None,
        region: Any = None,
    ) -> Any:
        """``mask`` and ``residual`` on the same grid (``residual`` one channel, required while
        a rule applies); ``spacing`` (mm) defaults to the ``MetaTensor`` mask's, else 1 mm;
        ``region`` (the region searched, on the same grid) defaults to the whole volume. A
        residual or region whose affine puts it on another grid is refused with the words of
        ``layerseg segment --organ-mask``."""
        if self.rule is None:
            return mask
        if residual is None:
            raise ValueError("the layer rule needs the residual (image minus healthy layer)")
        m = _numpy(mask, np.float32) > 0
        r = _numpy(residual, np.float32)
        if m.ndim != 4 or r.ndim != 4 or r.shape[0] != 1:
            raise ValueError(
                f"the mask {m.shape} must be channel-first 3D and the residual {r.shape} one "
                "channel on its grid"
            )
        mask_affine = _grid_affine(mask)
        for what, other in (("residual", residual), ("region", region)):
            if other is not None:
                _ensure_same_grid(
                    "mask",
                    m.shape[1:],
                    mask_affine,
                    _named(what, other),
                    _spatial_shape(other),
                    _grid_affine(other),
                )
        inside = r[0] if region is None else r[0][_numpy(region, np.float32)[0] > 0]
        r = r - np.float32(np.median(inside) if inside.size else 0.0)
        sign = self.rule["residual_sign"]
        signed = r if sign == "brighter" else -r if sign == "darker" else np.abs(r)
        m &= signed > np.float32(self.rule["margin"])
        if spacing is None:
            affine = _affine_of(mask)
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).tolist()
        min_mm3 = float(self.rule["min_lesion_mm3"])
        kept = np.stack([fill_enclosed(remove_small_lesions(c, spacing, min_mm3)) for c in m])
        if region is not None:
            kept &= _numpy(region, np.float32)[:1] > 0
        return convert_to_dst_type(kept.astype(np.float32), mask)[0]


class LayerRuled(MapTransform):
    """Dictionary version of :class:`LayerRule`: each mask in ``keys`` (after ``Invertd``,
    thresholding and the region, on the scan's grid) is cut by the residual in
    ``data[residual_key]`` (from :class:`LayerResiduald`, inverted like the prediction).

    Parameters
    ----------
    keys
        The binary masks. Typically ``"pred"``.
    residual_key
        The residual on the masks' grid. Default ``"residual"``.
    region_key
        The region searched on the masks' grid (from :class:`KeepInRegiond`), inside which the
        residual's median is taken. Default ``"search_region"``; ``None``: the whole volume.
    profile
        A built-in profile name or a profile JSON file whose rule to apply. Default
        ``"brain-mri"``.
    enabled
        ``False`` turns the rule off (masks unchanged). Default ``True``.
    residual_sign
        ``"brighter"``, ``"darker"`` or ``"either"``. Default ``None``: the profile's.
    margin
        The signed residual must exceed this (>= 0, normalised units). Default ``None``: the
        profile's.
    min_lesion_mm3
        The smallest lesion kept, mm^3. Default ``None``: the profile's.
    allow_missing_keys
        Skip missing keys instead of raising. Default ``False``.
    """

    backend = LayerRule.backend

    def __init__(
        self,
        keys: KeysCollection,
        residual_key: str = "residual",
        region_key: str | None = "search_region",
        profile: str = "brain-mri",
        enabled: bool = True,
        residual_sign: str | None = None,
        margin: float | None = None,
        min_lesion_mm3: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.residual_key = residual_key
        self.region_key = region_key
        self.layer_rule = LayerRule(profile, enabled, residual_sign, margin, min_lesion_mm3)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.layer_rule.rule is None:
            return d
        for key in self.key_iterator(d):
            meta = d.get(f"{key}_meta_dict")
            affine = _affine_of(d[key], meta if isinstance(meta, Mapping) else None)
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).tolist()
            region = None if self.region_key is None else d.get(self.region_key)
            d[key] = self.layer_rule(d[key], d[self.residual_key], spacing=spacing, region=region)
        return d
