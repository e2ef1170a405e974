"""MONAI transforms around LayerSeg's tumour synthesis (the Rust core does the work).

``RandTumorSynthesisd`` drops into any MONAI pipeline after ``LoadImaged`` and
``EnsureChannelFirstd``::

    Compose([
        LoadImaged(["image", "brain"]),
        EnsureChannelFirstd(["image", "brain"]),
        RandTumorSynthesisd("image", profile="brain-mri", organ_key="brain", prob=1.0),
    ])

Every array is channel-first, shape ``(C, H, W, D)``; each channel gets the same tumour. The
affine comes from the ``MetaTensor`` (or ``{key}_meta_dict["affine"]``, else the identity).
All randomness comes from ``self.R``: the seed handed to Rust is drawn from it, so
``set_random_state`` makes a pipeline reproducible.

The module also holds the other pieces a MONAI user needs to train and run LayerSeg models in
PyTorch: :class:`LayerDecompositionLoss` (the paper's training loss as a ``torch.nn.Module``),
:class:`FinetuneLoss` (the supervised fine-tuning loss),
:class:`ZScoreNonzerod` (the profiles' ``zscore_nonzero`` normalisation), :func:`load_weights`
(LayerSeg weights into MONAI's ``BasicUNet``, refusing weights of another width),
:func:`export_bundle_model` (``.safetensors`` + model card to a bundle's ``models/model.pt``), and
what ``layerseg segment`` does around the network: :class:`BrainExtractiond` (the automatic
brain mask that crops the scan) with :class:`KeepInRegiond` (the search region),
:class:`TumourMaskd` (the threshold, checked as ``layerseg segment --threshold``), and
:class:`LayerResiduald` + :class:`LayerRuled` (the profile's layer rule: tumour only where the
image departs from the healthy layer, small lesions dropped).
Run ``python -m layerseg.monai --help`` for the export on the command line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.config.type_definitions import KeysCollection
from monai.data.meta_tensor import MetaTensor
from monai.networks.nets.basic_unet import BasicUNet
from monai.transforms.transform import MapTransform, RandomizableTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

from layerseg._layerseg import LayerSegError, profile_json, synthesize
from layerseg._layerseg import evaluate as _rust_evaluate
from layerseg.api import extract_brain

__all__ = [
    "HEALTHY_CHANNEL",
    "MASK_CHANNEL",
    "TUMOUR_CHANNEL",
    "BrainExtraction",
    "BrainExtractiond",
    "FinetuneLoss",
    "KeepInRegiond",
    "LayerDecompositionLoss",
    "LayerResiduald",
    "LayerRule",
    "LayerRuled",
    "RandTumorSynthesis",
    "RandTumorSynthesisd",
    "SynthesisResult",
    "TumourMask",
    "TumourMaskd",
    "ZScoreNonzero",
    "ZScoreNonzerod",
    "basic_unet",
    "basic_unet_shape",
    "export_bundle_model",
    "fill_enclosed",
    "labelled_datalist",
    "layer_residual",
    "list_scans",
    "load_weights",
    "mask_probability",
    "profile_layer_rule",
    "read_model_card",
    "remove_small_lesions",
]

_SEED_HIGH = 2**63 - 1

#: (image, healthy layer, tumour layer, mask), each shaped like the input.
SynthesisResult = tuple[Any, Any, Any, Any]


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


class RandTumorSynthesis(RandomizableTransform):
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


class RandTumorSynthesisd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandTumorSynthesis`.

    For each key in ``keys`` (channel-first images), ``data[key]`` becomes the blended image and
    ``{key}_{healthy_postfix}`` / ``{key}_{tumour_postfix}`` hold the layers; the mask of the
    first key goes to ``mask_key``. ``organ_key`` names an organ (or brain) mask on the same
    grid (one whose affine says otherwise is refused, as ``layerseg segment`` refuses it);
    ``texture_key`` a scan to take the texture from. All keys share one tumour per call.
    With ``params_key`` the drawn parameters (a dict) are stored too. ``acquisition`` as in
    :class:`RandTumorSynthesis`.
    """

    backend: list[TransformBackends] = RandTumorSynthesis.backend

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
        self.synth = RandTumorSynthesis(profile=profile, prob=1.0, acquisition=acquisition)
        self.organ_key = organ_key
        self.texture_key = texture_key
        self.mask_key = mask_key
        self.healthy_postfix = healthy_postfix
        self.tumour_postfix = tumour_postfix
        self.params_key = params_key

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandTumorSynthesisd:
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


# --- Network outputs and the training loss ------------------------------------------------------

#: Output channel of the healthy (normal) layer n̂, as in the Rust network.
HEALTHY_CHANNEL = 0
#: Output channel of the tumour layer ŝ.
TUMOUR_CHANNEL = 1
#: Output channel of the mask logit m̂; ``sigmoid`` of it is the tumour probability.
MASK_CHANNEL = 2

#: The Dice loss's smoothing constant, in numerator and denominator (as in the Rust loss).
DICE_SMOOTH = 1e-7


def mask_probability(pred: torch.Tensor) -> torch.Tensor:
    """``sigmoid`` of the mask channel of a channel-first prediction ``(3, ...)``, kept as one
    channel ``(1, ...)`` (a ``MetaTensor`` stays one). For a batch use ``pred[:, 2:3]``."""
    if pred.ndim < 1 or pred.shape[0] != 3:
        raise ValueError(
            "expected a channel-first prediction with 3 channels (healthy layer, tumour layer, "
            f"mask logit), got shape {tuple(pred.shape)}"
        )
    return torch.sigmoid(pred[MASK_CHANNEL : MASK_CHANNEL + 1].float())


class LayerDecompositionLoss(torch.nn.Module):
    """The layer-decomposition training loss (Zhang et al. 2021; ``method.md`` section 5), the
    same computation as LayerSeg's Rust trainer (``rust/torch/src/losses.rs``).

    ``forward(input, target)``: ``input`` is the network output ``(B, 3, D, H, W)`` (healthy
    layer n̂, tumour layer ŝ, mask logit m̂); ``target`` stacks the targets the same way: healthy
    layer N, tumour layer T and the binary mask M. With p = sigmoid(m̂), everything in float32:

    - ``dice`` = 1 - (2·Σ p·M + 1e-7) / (Σ p + Σ M + 1e-7), one ratio over the whole batch;
    - ``healthy`` = mean |n̂ - N| and ``tumour`` = mean |ŝ - T| over every voxel;
    - ``healthy_in_tumour`` / ``tumour_in_tumour``: the same errors averaged over the tumour voxels
      (M > 0.5) only, and 0 unless the batch has both tumour and other voxels;
    - the loss is Σ weight · term, all weights 1 by default as in the paper.

    :meth:`terms` returns every term. MONAI trainers call it as ``loss_function(pred, label)``.
    """

    TERMS = ("dice", "healthy", "tumour", "healthy_in_tumour", "tumour_in_tumour")

    def __init__(
        self,
        dice: float = 1.0,
        healthy: float = 1.0,
        tumour: float = 1.0,
        healthy_in_tumour: float = 1.0,
        tumour_in_tumour: float = 1.0,
    ) -> None:
        super().__init__()
        self.weights = {
            "dice": float(dice),
            "healthy": float(healthy),
            "tumour": float(tumour),
            "healthy_in_tumour": float(healthy_in_tumour),
            "tumour_in_tumour": float(tumour_in_tumour),
        }

    @staticmethod
    def _check(input: torch.Tensor, target: torch.Tensor) -> None:
        if input.ndim != 5 or input.shape[1] != 3:
            raise ValueError(
                "prediction must be (B, 3, D, H, W): healthy layer, tumour layer, mask logit; "
                f"got {tuple(input.shape)}"
            )
        if target.shape != input.shape:
            raise ValueError(
                "target must be (B, 3, D, H, W) like the prediction (healthy layer, tumour layer, "
                f"mask); got {tuple(target.shape)} for a prediction {tuple(input.shape)}"
            )

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term as a differentiable float32 scalar, and their weighted sum as ``total``."""
        self._check(input, target)
        pred = input.float()
        target = target.float()
        healthy_t = target[:, HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1]
        tumour_t = target[:, TUMOUR_CHANNEL : TUMOUR_CHANNEL + 1]
        mask = target[:, MASK_CHANNEL : MASK_CHANNEL + 1]
        healthy_error = (pred[:, HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1] - healthy_t).abs()
        tumour_error = (pred[:, TUMOUR_CHANNEL : TUMOUR_CHANNEL + 1] - tumour_t).abs()
        p = torch.sigmoid(pred[:, MASK_CHANNEL : MASK_CHANNEL + 1])
        intersection = (p * mask).sum()
        dice = 1.0 - (2.0 * intersection + DICE_SMOOTH) / (p.sum() + mask.sum() + DICE_SMOOTH)
        selected = (mask > 0.5).float()
        count = selected.sum()
        # 1 when the batch has tumour and non-tumour voxels, else 0; no device synchronisation.
        active = ((count > 0) & (count < selected.numel())).float()
        scale = active / count.clamp_min(1.0)
        out = {
            "dice": dice,
            "healthy": healthy_error.mean(),
            "tumour": tumour_error.mean(),
            "healthy_in_tumour": (healthy_error * selected).sum() * scale,
            "tumour_in_tumour": (tumour_error * selected).sum() * scale,
        }
        total = sum(
            (self.weights[k] * out[k] for k in self.TERMS), torch.zeros((), device=p.device)
        )
        out["total"] = total
        return out

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(input, target)["total"]


class FinetuneLoss(torch.nn.Module):
    """The supervised fine-tuning loss, the same computation as LayerSeg's Rust
    ``finetune_losses`` (``rust/torch/src/losses.rs``; ``layerseg finetune``).

    ``forward(input, target)``: ``input`` is the network output ``(B, 3, D, H, W)``; ``target``
    is ``(B, 2, D, H, W)``: channel 0 the binary label y, channel 1 the image x the network saw
    (or ``(B, 1, D, H, W)``, the label alone, which drops the two layer terms). With m̂ the mask
    logit, p = sigmoid(m̂), n̂ / ŝ the healthy / tumour layers, everything in float32:

    - ``dice`` = 1 - (2·Σ p·y + 1e-7) / (Σ p + Σ y + 1e-7), one ratio over the whole batch;
    - ``bce`` = mean binary cross-entropy of m̂ against y;
    - ``healthy`` = mean |n̂ - x| over the voxels outside the labelled tumour (y <= 0.5);
    - ``recomposition`` = mean |ŝ·p' + n̂·(1 - p') - x| with p' = p detached;
    - the loss is Σ weight · term; the weights default to Rust's (1, 1, 1, 0.1).

    The layer terms keep the decomposition usable while the labels move the shared decoder.
    """

    TERMS = ("dice", "bce", "healthy", "recomposition")

    def __init__(
        self,
        dice: float = 1.0,
        bce: float = 1.0,
        healthy: float = 1.0,
        recomposition: float = 0.1,
    ) -> None:
        super().__init__()
        self.weights = {
            "dice": float(dice),
            "bce": float(bce),
            "healthy": float(healthy),
            "recomposition": float(recomposition),
        }

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term as a differentiable float32 scalar, and their weighted sum as ``total``."""
        if input.ndim != 5 or input.shape[1] != 3:
            raise ValueError(
                "prediction must be (B, 3, D, H, W): healthy layer, tumour layer, mask logit; "
                f"got {tuple(input.shape)}"
            )
        if (
            target.ndim != 5
            or target.shape[1] not in (1, 2)
            or target.shape[0] != input.shape[0]
            or target.shape[2:] != input.shape[2:]
        ):
            raise ValueError(
                "target must be (B, 2, D, H, W) (label, image) or (B, 1, D, H, W) (label) on the "
                f"prediction's grid; got {tuple(target.shape)} for a prediction "
                f"{tuple(input.shape)}"
            )
        pred = input.float()
        target = target.float()
        y = target[:, :1]
        logit = pred[:, MASK_CHANNEL : MASK_CHANNEL + 1]
        p = torch.sigmoid(logit)
        dice = 1.0 - (2.0 * (p * y).sum() + DICE_SMOOTH) / (p.sum() + y.sum() + DICE_SMOOTH)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, y)
        zero = torch.zeros((), device=pred.device)
        healthy_l1, recomposition = zero, zero
        if target.shape[1] == 2:
            x = target[:, 1:2]
            healthy = pred[:, HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1]
            tumour = pred[:, TUMOUR_CHANNEL : TUMOUR_CHANNEL + 1]
            outside = (y <= 0.5).float()
            healthy_l1 = ((healthy - x).abs() * outside).sum() / outside.sum().clamp_min(1.0)
            recomposed = (tumour - healthy) * p.detach() + healthy
            recomposition = (recomposed - x).abs().mean()
        out = {"dice": dice, "bce": bce, "healthy": healthy_l1, "recomposition": recomposition}
        out["total"] = sum((self.weights[k] * out[k] for k in self.TERMS), zero)
        return out

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(input, target)["total"]


# --- Intensity normalisation ----------------------------------------------------------------------


class ZScoreNonzero(Transform):
    """The profiles' ``zscore_nonzero`` rule, exactly as LayerSeg's Rust preprocessing applies it:
    mean and (population) standard deviation of the NON-ZERO voxels, computed in float64, applied
    to EVERY voxel (background becomes -mean/std, unlike MONAI's
    ``NormalizeIntensity(nonzero=True)``, which leaves zeros alone). If the std is below
    ``min_std`` the volume is min-max scaled to [0, 1] instead; an all-zero volume is unchanged.
    The statistics are taken over all channels together, as LayerSeg's volumes have one."""

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012

    def __init__(self, min_std: float = 0.01) -> None:
        self.min_std = float(min_std)

    def __call__(self, img: Any) -> Any:
        x: torch.Tensor = convert_data_type(img, torch.Tensor, dtype=torch.float32)[0]
        values = x.detach().double()
        nonzero = values[values != 0]
        if nonzero.numel() == 0:
            return convert_to_dst_type(x, img, dtype=torch.float32)[0]
        mean = nonzero.sum() / nonzero.numel()
        var = (nonzero * nonzero).sum() / nonzero.numel() - mean * mean
        std = var.clamp_min(0.0).sqrt()
        if float(std) >= self.min_std:
            out = ((values - mean) / std).float()
        else:
            lo, hi = x.min(), x.max()
            out = (x - lo) / (hi - lo) if hi > lo else x
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


# --- Brain extraction and the layer rule (what `layerseg segment` does around the network) -----

#: The residual signs a layer rule may name: image minus healthy layer as it is, negated, or its
#: absolute value.
RESIDUAL_SIGNS = ("brighter", "darker", "either")


class BrainExtraction(Transform):
    """The brain mask of a channel-first head MRI ``(C, H, W, D)``, as ``layerseg segment``
    computes it by default for the ``brain-mri`` profile (``--organ-mask auto``): deepbet's two
    networks (MIT licence, shipped in LayerSeg's ``models/deepbet``), run by LayerSeg's Rust core
    through :func:`layerseg.extract_brain` on channel 0 with the image's affine.

    Returns a uint8 mask ``(1, H, W, D)`` on the input grid (1 = brain) of the input's type; a
    ``MetaTensor`` input gives a ``MetaTensor`` with a copy of its meta data (affine, file name),
    so spatial transforms and ``Invertd`` treat it like the image. A brain outside 0.8 to 2.2 L
    (or none at all) is taken as a failed extraction, as by the CLI: a ``UserWarning`` names the
    file and the volume, and the non-zero voxels of channel 0 (what ``layerseg segment`` then
    searches) come back instead, so that a batch run goes on. ``self.litres`` and
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
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return m
    from scipy import ndimage

    filled: npt.NDArray[np.bool_] = ndimage.binary_fill_holes(m)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        for index in np.flatnonzero(m.any(axis=others)):
            at = tuple(int(index) if a == axis else slice(None) for a in range(3))
            filled[at] |= ndimage.binary_fill_holes(m[at])
    return filled


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


# --- Weights: LayerSeg safetensors and model cards, MONAI BasicUNet, bundle model.pt -------------

PathLike = str | os.PathLike[str]

#: One key per entry of MONAI's ``BasicUNet`` ``features``: (key, axis of the width).
_WIDTH_KEYS = (
    ("conv_0.conv_0.conv.weight", 0),
    ("down_1.convs.conv_0.conv.weight", 0),
    ("down_2.convs.conv_0.conv.weight", 0),
    ("down_3.convs.conv_0.conv.weight", 0),
    ("down_4.convs.conv_0.conv.weight", 0),
    ("upcat_1.convs.conv_0.conv.weight", 0),
)


def basic_unet_shape(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``in_channels``, ``out_channels`` and ``features`` of a BasicUNet state dict."""
    needed = [k for k, _ in _WIDTH_KEYS] + ["final_conv.weight"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(
            f"not the weights of a MONAI BasicUNet: no {', '.join(missing[:3])}"
            + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
        )
    first = state["conv_0.conv_0.conv.weight"]
    final = state["final_conv.weight"]
    if first.ndim != 5 or final.ndim != 5:
        raise ValueError("not the weights of a 3D BasicUNet: its convolutions are not 3D")
    return {
        "in_channels": int(first.shape[1]),
        "out_channels": int(final.shape[0]),
        "features": tuple(int(state[k].shape[axis]) for k, axis in _WIDTH_KEYS),
    }


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model weights not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file: {e}") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad files
        raise ValueError(f"{path}: not a PyTorch state dict readable with weights_only: {e}") from e
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a CheckpointSaver file with several objects
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in state.items()}


def load_weights(
    network: torch.nn.Module, path: PathLike, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Load LayerSeg weights (``.safetensors``, or a ``torch.save``-d state dict such as a
    bundle's ``models/model.pt``) into a MONAI ``BasicUNet`` and return it (on ``device`` when
    given). Weights of another width or channel count are refused with a message naming both
    shapes; ``.pt`` files are read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    state = _read_state_dict(path)
    want = network.state_dict()
    try:
        have_shape = basic_unet_shape(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    try:
        want_shape = basic_unet_shape(want)
    except ValueError as e:
        raise ValueError(f"the network is not a MONAI BasicUNet: {e}") from e
    if have_shape != want_shape:
        raise ValueError(
            f"{path}: weights of another width: they are a BasicUNet with features "
            f"{list(have_shape['features'])} (in_channels {have_shape['in_channels']}, "
            f"out_channels {have_shape['out_channels']}), but the network has features "
            f"{list(want_shape['features'])} (in_channels {want_shape['in_channels']}, "
            f"out_channels {want_shape['out_channels']}); build the network with the weights' "
            "features (in a bundle: --network_def#features)"
        )
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"{path}: the names do not match MONAI's BasicUNet: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    network.load_state_dict(state, strict=True)
    if device is not None:
        network = network.to(device)
    return network


def read_model_card(path: PathLike) -> dict[str, Any]:
    """A LayerSeg model card (``NAME.json`` beside ``NAME.safetensors``), checked: format 1, a
    BasicUNet, ``config`` with ``in_channels``, ``out_channels`` and six ``features``."""
    path = Path(path)
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model card not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a LayerSeg model card: {e}") from e
    if not isinstance(card, dict):
        raise ValueError(f"{path}: not a LayerSeg model card: not a JSON object")
    if card.get("format") != 1:
        raise ValueError(
            f"{path}: model card format {card.get('format')!r} (this LayerSeg reads format 1)"
        )
    if card.get("network") != "BasicUNet":
        raise ValueError(f"{path}: network {card.get('network')!r}; only BasicUNet is supported")
    config = card.get("config")
    ok = (
        isinstance(config, dict)
        and isinstance(config.get("in_channels"), int)
        and isinstance(config.get("out_channels"), int)
        and isinstance(config.get("features"), list)
        and len(config["features"]) == 6
        and all(isinstance(f, int) and f > 0 for f in config["features"])
    )
    if not ok:
        raise ValueError(
            f"{path}: model card config must hold in_channels, out_channels and six positive "
            f"features, got {config!r}"
        )
    return card


def basic_unet(
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    in_channels: int = 1,
    out_channels: int = 3,
) -> BasicUNet:
    """MONAI's 3D ``BasicUNet`` with MONAI's defaults, as LayerSeg's Rust network mirrors it."""
    return BasicUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(int(f) for f in features),
    )


def export_bundle_model(weights: PathLike, card: PathLike, out: PathLike) -> Path:
    """Write LayerSeg weights as a MONAI bundle's ``models/model.pt``.

    ``weights`` (``.safetensors``) must fit the network its model card ``card`` describes; the
    result is ``torch.save`` of the plain BasicUNet state dict, which MONAI's ``CheckpointLoader``
    and ``torch.load(weights_only=True)`` read. ``out`` is written atomically (a failed export
    leaves no file and an existing one untouched); its folder is created. Returns ``out``.
    """
    info = read_model_card(card)["config"]
    net = basic_unet(info["features"], info["in_channels"], info["out_channels"])
    load_weights(net, weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{out.name}", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(net.state_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def list_scans(folder: PathLike) -> list[str]:
    """The ``.nii``/``.nii.gz`` files in ``folder``, sorted; a missing folder or one without
    scans is an error naming it (a bundle's ``dataset_dir``)."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset_dir {path}: no such folder")
    scans = sorted(
        str(p) for p in path.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz"))
    )
    if not scans:
        raise FileNotFoundError(f"dataset_dir {path}: no .nii or .nii.gz scans in it")
    return scans


def labelled_datalist(path: PathLike, key: str = "validation") -> list[dict[str, Any]]:
    """The ``key`` items of a MONAI datalist of labelled cases (``{"training": [{"image",
    "label"}], "validation": [...]}``), paths made absolute relative to the datalist's folder.
    Without ``key`` (or with an empty list) it falls back to the ``training`` items, as
    ``layerseg finetune`` validates on the training cases when there are no others."""
    from monai.data.decathlon_datalist import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path}: no such file")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"datalist {path}: not a JSON datalist: {e}") from e
    if not isinstance(content, dict):
        raise ValueError(f"datalist {path}: not a JSON object with 'training' / 'validation'")
    if not content.get(key):
        key = "training"
    items: list[dict[str, Any]] = load_decathlon_datalist(path, True, key)
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m layerseg.monai export WEIGHTS.safetensors OUT/model.pt [--card CARD.json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m layerseg.monai", description="MONAI helpers for LayerSeg models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export", help="LayerSeg .safetensors + model card -> a MONAI bundle's models/model.pt"
    )
    export.add_argument("weights", type=Path, help="LayerSeg weights, NAME.safetensors")
    export.add_argument("out", type=Path, help="where to write model.pt")
    export.add_argument("--card", type=Path, help="the model card (default: NAME.json beside)")
    args = parser.parse_args(argv)
    card = args.card if args.card is not None else args.weights.with_suffix(".json")
    try:
        out = export_bundle_model(args.weights, card, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
