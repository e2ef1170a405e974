"""MONAI transforms around LayerSeg's tumour synthesis (the Rust core does the work).

``RandTumourSynthesisd`` drops into any MONAI pipeline after ``LoadImaged`` and
``EnsureChannelFirstd``::

    Compose([
        LoadImaged(["image", "brain"]),
        EnsureChannelFirstd(["image", "brain"]),
        RandTumourSynthesisd("image", profile="brain-mri", organ_key="brain", prob=1.0),
    ])

Every array is channel-first, shape ``(C, H, W, D)``; each channel gets the same tumour. The
affine comes from the ``MetaTensor`` (or ``{key}_meta_dict["affine"]``, else the identity).
All randomness comes from ``self.R``: the seed handed to Rust is drawn from it, so
``set_random_state`` makes a pipeline reproducible.

The module also holds the other pieces a MONAI user needs to train and run LayerSeg models in
PyTorch: :class:`LayerDecompositionLoss` (the paper's training loss as a ``torch.nn.Module``),
:class:`FinetuneLoss` (the supervised fine-tuning loss),
:class:`BiasCorrectiond` (the profiles' N4 bias correction) and
:class:`ZScoreNonzerod` (the profiles' ``zscore_nonzero`` normalisation), :func:`load_weights`
(LayerSeg weights into MONAI's ``BasicUNet``, refusing weights of another width),
:func:`export_bundle_model` (``.safetensors`` + model card to a bundle's ``models/model.pt``), and
what ``layerseg segment`` does around the network: :class:`BrainExtractiond` (the automatic
brain mask that crops the scan) with :class:`KeepInRegiond` (the search region),
:class:`TumourMaskd` (the threshold, checked as ``layerseg segment --threshold``), and
:class:`LayerResiduald` + :class:`LayerRuled` (the profile's layer rule: tumour only where the
image departs from the healthy layer, small lesions dropped).
Run ``python -m layerseg.monai --help`` for the export on the command line.

One module per concern: ``synthesis``, ``losses``, ``intensity``, ``brain``, ``postprocessing``,
``weights`` (and ``segmentation``, the whole of ``layerseg segment`` on the user's torch),
``data``; everything is importable from ``layerseg.monai`` as before. Importing it loads no
libtorch runtime: only :class:`BrainExtraction` does, when it runs.
"""

from __future__ import annotations

from layerseg.monai.brain import BrainExtraction, BrainExtractiond, KeepInRegiond
from layerseg.monai.data import labelled_datalist, list_scans
from layerseg.monai.intensity import BiasCorrectiond, ZScoreNonzero, ZScoreNonzerod
from layerseg.monai.losses import (
    HEALTHY_CHANNEL,
    MASK_CHANNEL,
    TUMOUR_CHANNEL,
    FinetuneLoss,
    LayerDecompositionLoss,
    mask_probability,
)
from layerseg.monai.postprocessing import (
    LayerResiduald,
    LayerRule,
    LayerRuled,
    TumourMask,
    TumourMaskd,
    fill_enclosed,
    layer_residual,
    profile_layer_rule,
    remove_small_lesions,
)
from layerseg.monai.segmentation import extract_brain, segment
from layerseg.monai.synthesis import RandTumourSynthesis, RandTumourSynthesisd, SynthesisResult
from layerseg.monai.weights import (
    basic_unet,
    basic_unet_shape,
    export_bundle_model,
    load_weights,
    read_model_card,
)

__all__ = [
    "HEALTHY_CHANNEL",
    "MASK_CHANNEL",
    "TUMOUR_CHANNEL",
    "BiasCorrectiond",
    "BrainExtraction",
    "BrainExtractiond",
    "FinetuneLoss",
    "KeepInRegiond",
    "LayerDecompositionLoss",
    "LayerResiduald",
    "LayerRule",
    "LayerRuled",
    "RandTumourSynthesis",
    "RandTumourSynthesisd",
    "SynthesisResult",
    "TumourMask",
    "TumourMaskd",
    "ZScoreNonzero",
    "ZScoreNonzerod",
    "basic_unet",
    "basic_unet_shape",
    "export_bundle_model",
    "extract_brain",
    "fill_enclosed",
    "labelled_datalist",
    "layer_residual",
    "list_scans",
    "load_weights",
    "mask_probability",
    "profile_layer_rule",
    "read_model_card",
    "remove_small_lesions",
    "segment",
]
