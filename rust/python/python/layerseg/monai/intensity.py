"""The profiles' intensity steps as MONAI transforms: bias correction and normalisation."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from layerseg._layerseg import correct_bias, zscore_nonzero


class ZScoreNonzero(Transform):
    """The profiles' ``zscore_nonzero`` rule, exactly as LayerSeg's Rust preprocessing applies it:
    mean and (population) standard deviation of the NON-ZERO voxels, computed in float64, applied
    to EVERY voxel (background becomes -mean/std, unlike MONAI's
    ``NormalizeIntensity(nonzero=True)``, which leaves zeros alone). If the std is below
    ``min_std`` the volume is min-max scaled to [0, 1] instead; an all-zero volume is unchanged.
    The statistics are taken over all channels together, as LayerSeg's volumes have one. The
    work is LayerSeg's Rust ``normalise`` itself, on a float32 copy in host memory."""

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(self, min_std: float = 0.01) -> None:
        self.min_std = float(min_std)

    def __call__(self, img: Any) -> Any:
        x = np.ascontiguousarray(convert_data_type(img, np.ndarray, dtype=np.float32)[0])
        out = zscore_nonzero(x, self.min_std)
        return convert_to_dst_type(out, img, dtype=torch.float32)[0]


class ZScoreNonzerod(MapTransform):
    """Dictionary version of :class:`ZScoreNonzero`; each key is normalised on its own."""

    backend = ZScoreNonzero.backend

    def __init__(
        self, keys: KeysCollection, min_std: float = 0.01, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalise = ZScoreNonzero(min_std)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key])
        return d


class BiasCorrectiond(MapTransform):
    """The profile's N4 bias correction (``inference.bias_correction``), exactly as LayerSeg's
    Rust preprocessing applies it before normalising: each key's image (one channel) is divided
    by its bias field, estimated inside ``mask_key``'s mask on the same grid. A profile without
    the section, or a mask with too few positive voxels, leaves the image unchanged. With
    ``field_key``, the field is stored there too (channel first)."""

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str,
        profile: str = "brain-mri",
        field_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.profile = profile
        self.field_key = field_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mask = convert_data_type(d[self.mask_key], np.ndarray)[0]
        mask = np.ascontiguousarray(mask.reshape(mask.shape[-3:]) > 0)
        for key in self.key_iterator(d):
            img = d[key]
            x = convert_data_type(img, np.ndarray, dtype=np.float32)[0]
            if x.ndim != 4 or x.shape[0] != 1 or x.shape[1:] != mask.shape:
                raise ValueError(
                    f"BiasCorrectiond: {key!r} must be one channel on the grid of "
                    f"{self.mask_key!r} {mask.shape}, got {x.shape}"
                )
            corrected, field = correct_bias(np.ascontiguousarray(x[0]), mask, profile=self.profile)
            d[key] = convert_to_dst_type(corrected[None], img, dtype=torch.float32)[0]
            if self.field_key is not None:
                ones = np.ones_like(corrected) if field is None else field
                d[self.field_key] = convert_to_dst_type(ones[None], img, dtype=torch.float32)[0]
        return d
