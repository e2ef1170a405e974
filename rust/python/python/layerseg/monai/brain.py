"""Brain extraction and the search region, as ``layerseg segment`` uses them around the network."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.config.type_definitions import KeysCollection
from monai.data.meta_tensor import MetaTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from layerseg._layerseg import profile_json
from layerseg.api import extract_brain
from layerseg.monai._common import (
    _affine_of,
    _ensure_same_grid,
    _grid_affine,
    _meta_dict,
    _modality_mismatch,
    _named,
    _numpy,
    _source_name,
    _spatial_shape,
)


class BrainExtraction(Transform):
    """The brain mask of a channel-first head MRI ``(C, H, W, D)``, as ``layerseg segment``
    computes it by default for the ``brain-mri`` profile (``--organ-mask auto``): deepbet's two
    networks (MIT licence, shipped in LayerSeg's ``models/deepbet``), run by LayerSeg's Rust core
    through :func:`layerseg.extract_brain` on channel 0 with the image's affine.

    Returns a uint8 mask ``(1, H, W, D)`` on the input grid (1 = brain) of the input's type; a
    ``MetaTensor`` input gives a ``MetaTensor`` with a copy of its meta data (affine, file name),
    so spatial transforms and ``Invertd`` treat it like the image. A brain over 2.2 L, under
    0.8 L while the scan holds it whole (a field of view that cuts the brain may hold any part
    of it), or none at all is taken as a failed extraction, as by the CLI: a ``UserWarning``
    names the file and the volume, and the non-zero voxels of channel 0 (what ``layerseg
    segment`` then searches) come back instead, so that a batch run goes on. ``self.litres`` and
    ``self.plausible`` hold the last extraction's volume and verdict (``None`` when disabled).

    Parameters
    ----------
    device
        Where the networks run: ``"auto"`` (the first CUDA GPU when one is usable, else the CPU),
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, or a ``torch.device``. Default ``"auto"``.
    enabled
        ``False`` skips the extraction and always returns the non-zero voxels (the crop and
        search region of ``layerseg segment --organ-mask none``). Default ``True``.
    profile
        The profile the scan will be segmented with (built-in name or JSON file): a scan whose
        values do not fit its modality (a CT in Hounsfield units under an MRI profile) gives
        the ``UserWarning`` of ``layerseg segment``, naming the file. Default ``None``:
        ``"brain-mri"`` while the extraction is on (deepbet is made for head MRI), no check
        while it is off.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(
        self,
        device: str | torch.device = "auto",
        enabled: bool = True,
        profile: str | None = None,
    ) -> None:
        self.device = str(device)
        self.enabled = bool(enabled)
        self.profile = profile if profile is not None else "brain-mri" if self.enabled else None
        self._profile: dict[str, Any] | None = (
            None if self.profile is None else json.loads(profile_json(self.profile))
        )
        self.litres: float | None = None
        self.plausible: bool | None = None

    def __call__(
        self, img: Any, affine: npt.ArrayLike | None = None, name: str | None = None
    ) -> Any:
        """``img`` channel-first; ``affine`` (4x4, voxel to RAS mm) defaults to the
        ``MetaTensor``'s, else the identity; ``name`` (for the warning) to its file name."""
        arr = _numpy(img, np.float32)
        if arr.ndim != 4:
            raise ValueError(
                f"expected a channel-first 3D image (C, H, W, D), got shape {arr.shape}"
            )
        name = name if name is not None else _source_name(img)
        if self._profile is not None:
            why = _modality_mismatch(arr[0], self._profile)
            if why is not None:
                warnings.warn(f"{name}: {why}", UserWarning, stacklevel=2)
        foreground = (arr[:1] != 0).astype(np.uint8)
        self.litres, self.plausible = None, None
        if not self.enabled:
            mask = foreground
        else:
            aff = np.asarray(affine, np.float64) if affine is not None else _affine_of(img)
            try:
                found = extract_brain(np.ascontiguousarray(arr[0]), aff, device=self.device)
            except ValueError as e:
                raise ValueError(f"{name}: brain extraction: {e}") from e
            self.litres, self.plausible = float(found["litres"]), bool(found["plausible"])
            if self.plausible:
                mask = np.asarray(found["mask"], np.uint8)[None]
            else:
                warnings.warn(
                    f"{name}: {found['implausible']}; segmenting in the non-zero voxels instead "
                    "(give a brain mask, or turn extraction off: brain_extraction false)",
                    UserWarning,
                    stacklevel=2,
                )
                mask = foreground
        out = convert_to_dst_type(np.ascontiguousarray(mask), img, dtype=np.uint8)[0]
        if isinstance(img, MetaTensor) and isinstance(out, MetaTensor):
            out.meta = copy.deepcopy(dict(img.meta))
            out.applied_operations = copy.deepcopy(img.applied_operations)
        return out


class BrainExtractiond(MapTransform):
    """Dictionary version of :class:`BrainExtraction`: the brain mask of ``data[key]`` goes to
    ``data[mask_key]`` (the image is left as it is). Put it after ``LoadImaged`` and
    ``EnsureChannelFirstd`` and before any spatial transform, crop with
    ``CropForegroundd(source_key=mask_key, margin=0)``, and after ``Invertd`` keep the mask in
    the search region with :class:`KeepInRegiond`: that is the crop and the search region of
    ``layerseg segment``.

    Parameters
    ----------
    keys
        The image key: exactly one (a brain mask per scan). Typically ``"image"``.
    mask_key
        Where the uint8 mask ``(1, H, W, D)`` goes: the brain, or the non-zero voxels when the
        extraction failed or is off. Default ``"brain"``.
    exact_key
        Also store the extracted brain here, a uint8 copy that later spatial transforms leave
        alone (list only ``mask_key`` in them): all zeros when no brain was used (failed or
        off). :class:`KeepInRegiond` keeps the tumour inside it exactly, as ``layerseg
        segment`` does. Default ``None``: store nothing.
    device
        Where the networks run: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
        ``torch.device``. Default ``"auto"``.
    enabled
        ``False``: the non-zero voxels instead, no extraction. Default ``True``.
    allow_missing_keys
        Do nothing when the key is missing instead of raising. Default ``False``.
    profile
        The profile whose modality the scan is checked against, with the warning of
        ``layerseg segment``. Default ``None``: ``"brain-mri"`` while the extraction is on.
    """

    backend = BrainExtraction.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "brain",
        exact_key: str | None = None,
        device: str | torch.device = "auto",
        enabled: bool = True,
        allow_missing_keys: bool = False,
        profile: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(
                f"BrainExtractiond takes one image key (one brain mask per scan), got {self.keys}"
            )
        self.mask_key = mask_key
        self.exact_key = exact_key
        self.extract = BrainExtraction(device=device, enabled=enabled, profile=profile)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = d.get(f"{key}_meta_dict")
            meta = meta if isinstance(meta, Mapping) else None
            mask = self.extract(
                d[key], affine=_affine_of(d[key], meta), name=_source_name(d[key], meta)
            )
            d[self.mask_key] = mask
            if self.exact_key is not None:
                exact = copy.deepcopy(mask)
                if not self.extract.plausible:
                    exact = exact * 0
                d[self.exact_key] = exact
        return d


class KeepInRegiond(MapTransform):
    """Keep each mask in ``keys`` inside the search region, as ``layerseg segment`` does after
    thresholding: inside ``data[exact_key]`` (the extracted brain on the scan's grid, from
    :class:`BrainExtractiond`) when it holds a brain, else inside ``data[region_key]`` (the
    non-zero voxels' round trip through the network grid, ``Invertd`` with nearest
    interpolation), as ``MaskIntensityd`` would.

    Parameters
    ----------
    keys
        The masks (on the scan's grid). Typically ``"pred"``.
    region_key
        The region mapped back by ``Invertd``. Default ``"brain"``.
    exact_key
        The brain on the scan's grid (all zeros when none was used). Default ``"brain_exact"``;
        ``None`` uses ``region_key`` alone.
    used_key
        Where the region used is stored (bool, channel-first), for :class:`LayerRuled`. Default
        ``"search_region"``; ``None`` stores nothing.
    allow_missing_keys
        Skip missing keys instead of raising. Default ``False``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        region_key: str = "brain",
        exact_key: str | None = "brain_exact",
        used_key: str | None = "search_region",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.region_key = region_key
        self.exact_key = exact_key
        self.used_key = used_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """A region on another grid than a mask (shape, or the affines of ``MetaTensor`` s /
        meta dicts) is refused with the words of ``layerseg segment --organ-mask``."""
        d = dict(data)
        region_key = self.region_key
        if self.exact_key is not None and bool((_numpy(d[self.exact_key], np.uint8) > 0).any()):
            region_key = self.exact_key
        region = d[region_key]
        region_affine = _grid_affine(region, _meta_dict(d, region_key))
        inside: npt.NDArray[np.bool_] = _numpy(region, np.float32) > 0
        for key in self.key_iterator(d):
            _ensure_same_grid(
                f"mask {key!r}",
                _spatial_shape(d[key]),
                _grid_affine(d[key], _meta_dict(d, key)),
                _named(f"region {region_key!r}", region, _meta_dict(d, region_key)),
                inside.shape[1:],
                region_affine,
            )
        if self.used_key is not None:
            d[self.used_key] = inside
        for key in self.key_iterator(d):
            x: torch.Tensor = convert_data_type(d[key], torch.Tensor)[0]
            keep = torch.as_tensor(inside, device=x.device)
            d[key] = convert_to_dst_type(x * keep.to(x.dtype), d[key])[0]
        return d
