"""``RandTumourSynthesis(d)``: LayerSeg's tumour synthesis (Rust) as MONAI transforms."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type

from layerseg._layerseg import synthesize
from layerseg.monai._common import (
    _affine_of,
    _ensure_same_grid,
    _grid_affine,
    _named,
    _numpy,
    _spatial_shape,
)

_SEED_HIGH = 2**63 - 1

#: (image, healthy layer, tumour layer, mask), each shaped like the input.
SynthesisResult = tuple[Any, Any, Any, Any]


class RandTumourSynthesis(RandomizableTransform):
    """Blend a synthetic tumour into a channel-first image ``(C, H, W, D)``.

    Returns ``(image, healthy, tumour, mask)``: the blended image, the healthy layer, the tumour
    layer (the image inside the mask, 0 outside) and the binary mask (uint8), each of the input's
    type and shape. With probability ``1 - prob`` nothing is blended: the image comes back
    unchanged with an empty tumour layer and mask. ``self.params`` holds the parameters drawn
    (a dict, or ``None`` when nothing was blended). ``acquisition`` applies the profile's
    acquisition randomisation (thick slices, bias field, contrast, gamma, noise, partial
    coverage) to the blended image and the healthy layer alike; ``False`` switches it off.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(
        self, profile: str = "brain-mri", prob: float = 1.0, acquisition: bool = True
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.profile = profile
        self.acquisition = acquisition
        self.seed = 0
        self.params: dict[str, Any] | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.seed = int(self.R.randint(0, _SEED_HIGH, dtype=np.int64))

    def __call__(
        self,
        img: Any,
        affine: npt.ArrayLike | None = None,
        organ_mask: Any = None,
        texture: Any = None,
        texture_affine: npt.ArrayLike | None = None,
        randomize: bool = True,
        organ_affine: npt.ArrayLike | None = None,
    ) -> SynthesisResult:
        """``img`` channel-first on ``affine`` (default: the ``MetaTensor``'s, else the
        identity); ``organ_mask`` on ``organ_affine`` (default: its ``MetaTensor``'s). An organ
        mask on another grid than the image is refused (``LayerSegError``, a ``ValueError``)
        with the words of ``layerseg segment --organ-mask``, whatever ``prob`` draws; one
        without an affine is taken to lie on the image's grid."""
        if randomize:
            self.randomize()
        arr = _numpy(img, np.float32)
        if arr.ndim != 4:
            raise ValueError(
                f"expected a channel-first 3D image (C, H, W, D), got shape {arr.shape}"
            )
        given = np.asarray(affine, np.float64) if affine is not None else _grid_affine(img)
        aff = given if given is not None else np.eye(4)
        if organ_mask is not None:
            organ_aff = (
                np.asarray(organ_affine, np.float64)
                if organ_affine is not None
                else _grid_affine(organ_mask)
            )
            _ensure_same_grid(
                "scan",
                arr.shape[1:],
                given,
                _named("organ_mask", organ_mask),
                _spatial_shape(organ_mask),
                organ_aff,
            )
        if not self._do_transform:
            self.params = None
            empty = np.zeros_like(arr)
            return (
                img,
                convert_to_dst_type(arr.copy(), img)[0],
                convert_to_dst_type(empty, img)[0],
                convert_to_dst_type(empty.astype(np.uint8), img, dtype=np.uint8)[0],
            )
        organ = None if organ_mask is None else _numpy(organ_mask, np.uint8)
        tex = None if texture is None else _numpy(texture, np.float32)
        tex_aff = None
        if tex is not None:
            tex_aff = (
                np.asarray(texture_affine, np.float64)
                if texture_affine is not None
                else _affine_of(texture)
            )
        layers: dict[str, list[npt.NDArray[Any]]] = {
            "image": [],
            "healthy": [],
            "tumour": [],
            "mask": [],
        }
        for c in range(arr.shape[0]):
            out = synthesize(
                np.ascontiguousarray(arr[c]),
                aff,
                profile=self.profile,
                organ_mask=None if organ is None else organ[min(c, organ.shape[0] - 1)],
                texture=None if tex is None else tex[min(c, tex.shape[0] - 1)],
                seed=self.seed,
                texture_affine=tex_aff,
                acquisition=self.acquisition,
            )
            for name in layers:
                layers[name].append(out[name])
            self.params = json.loads(out["params"])
        image, healthy, tumour = (np.stack(layers[n]) for n in ("image", "healthy", "tumour"))
        mask = np.stack(layers["mask"])
        return (
            convert_to_dst_type(image, img)[0],
            convert_to_dst_type(healthy, img)[0],
            convert_to_dst_type(tumour, img)[0],
            convert_to_dst_type(mask, img, dtype=np.uint8)[0],
        )


class RandTumourSynthesisd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandTumourSynthesis`.

    For each key in ``keys`` (channel-first images), ``data[key]`` becomes the blended image and
    ``{key}_{healthy_postfix}`` / ``{key}_{tumour_postfix}`` hold the layers; the mask of the
    first key goes to ``mask_key``. ``organ_key`` names an organ (or brain) mask on the same
    grid (one whose affine says otherwise is refused, as ``layerseg segment`` refuses it);
    ``texture_key`` a scan to take the texture from. All keys share one tumour per call.
    With ``params_key`` the drawn parameters (a dict) are stored too. ``acquisition`` as in
    :class:`RandTumourSynthesis`.
    """

    backend: list[TransformBackends] = RandTumourSynthesis.backend

    def __init__(
        self,
        keys: KeysCollection,
        profile: str = "brain-mri",
        organ_key: str | None = None,
        texture_key: str | None = None,
        mask_key: str = "tumour_mask",
        healthy_postfix: str = "healthy",
        tumour_postfix: str = "tumour",
        params_key: str | None = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        acquisition: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.synth = RandTumourSynthesis(profile=profile, prob=1.0, acquisition=acquisition)
        self.organ_key = organ_key
        self.texture_key = texture_key
        self.mask_key = mask_key
        self.healthy_postfix = healthy_postfix
        self.tumour_postfix = tumour_postfix
        self.params_key = params_key

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandTumourSynthesisd:
        super().set_random_state(seed, state)
        self.synth.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        self.synth._do_transform = self._do_transform
        if self._do_transform:
            self.synth.seed = int(self.R.randint(0, _SEED_HIGH, dtype=np.int64))
        organ = d.get(self.organ_key) if self.organ_key is not None else None
        texture = d.get(self.texture_key) if self.texture_key is not None else None
        first = True
        organ_affine = None
        if organ is not None and self.organ_key is not None:
            organ_meta = d.get(f"{self.organ_key}_meta_dict")
            organ_affine = _grid_affine(
                organ, organ_meta if isinstance(organ_meta, Mapping) else None
            )
        for key in self.key_iterator(d):
            meta = d.get(f"{key}_meta_dict")
            affine = _grid_affine(d[key], meta if isinstance(meta, Mapping) else None)
            image, healthy, tumour, mask = self.synth(
                d[key],
                affine=affine,
                organ_mask=organ,
                texture=texture,
                randomize=False,
                organ_affine=organ_affine,
            )
            d[key] = image
            d[f"{key}_{self.healthy_postfix}"] = healthy
            d[f"{key}_{self.tumour_postfix}"] = tumour
            if first:
                d[self.mask_key] = mask
                if self.params_key is not None:
                    d[self.params_key] = self.synth.params
                first = False
        return d
