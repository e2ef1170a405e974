"""The profiles' intensity normalisation as MONAI transforms."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from layerseg._layerseg import zscore_nonzero


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
