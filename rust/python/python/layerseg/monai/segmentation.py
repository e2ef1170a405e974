"""``layerseg segment`` on the user's own torch: MONAI's ``BasicUNet`` with the shipped weights
(or yours) in MONAI's ``sliding_window_inference``, and deepbet's TorchScript brain extractor
through ``torch.jit``, with everything around the networks done by LayerSeg's Rust core through
the torch-free extension: the scan to the network grid and back, the threshold, the layer rule,
the brain's box and its final mask. So no libtorch runtime is needed, any torch >= 2.4 will do,
and the mask equals ``layerseg segment``'s (tests/test_monai_segment.py: Dice >= 0.999).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from monai.inferers.utils import sliding_window_inference

from layerseg import _layerseg
from layerseg._errors import LayerSegError
from layerseg.api import _organ_choice, _scan
from layerseg.monai.weights import basic_unet, load_weights

PathLike = str | os.PathLike[str]

#: deepbet's two TorchScript networks, in the ``deepbet/`` folder of a models directory.
_DEEPBET = ("deepbet", "bbox_model.pt", "model.pt")
_COARSE = (128, 128, 128)
_FINE = (256, 256, 256)


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _deepbet_folder() -> Path:
    for folder in _layerseg.model_dirs():
        found = folder / _DEEPBET[0]
        if all((found / name).is_file() for name in _DEEPBET[1:]):
            return found
    searched = ", ".join(str(d) for d in _layerseg.model_dirs())
    raise FileNotFoundError(
        f"the brain extractor ({_DEEPBET[0]}/) is in none of {searched}; give a brain mask, or "
        'search the whole scan (organ_mask="none")'
    )


def _shipped_weights(profile: str) -> Path:
    name = json.loads(_layerseg.profile_json(profile))["name"]
    for folder in _layerseg.model_dirs():
        weights = folder / f"{name}.safetensors"
        if weights.is_file():
            return weights
    searched = ", ".join(str(d) for d in _layerseg.model_dirs())
    raise FileNotFoundError(
        f"no model shipped for profile {name} ({name}.safetensors) in {searched}; give weights="
    )


def _deepbet_normalise(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """deepbet's input: clipped to the coarse input's 0.5 and 99.5 percentiles, z-scored, then
    the ImageNet grey mean and std its networks were trained with (as ``layerseg_torch::brain``)."""
    x = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return (x - x.mean()) / x.std() * 0.226 + 0.449


def _foreground(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    probabilities: torch.Tensor = module(x)
    return (probabilities[:, 1:2] > 0.5).float()


def _load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    module: torch.nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
        str(path), map_location=device
    )
    return module.eval()


def extract_brain(
    image: PathLike | npt.ArrayLike,
    affine: npt.ArrayLike | None = None,
    *,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """The brain mask of a head MRI by the shipped deepbet networks, run through this process's
    torch (``torch.jit``), as ``layerseg.extract_brain`` runs them through libtorch.

    Parameters
    ----------
    image
        A scan path, or a 3D array ``[i, j, k]`` with its 4x4 voxel-to-RAS ``affine``.
    affine
        Required with an array. Default ``None``.
    device
        ``"auto"`` (CUDA when torch has it, else the CPU), or any torch device. Default ``"auto"``.

    Returns
    -------
    dict
        ``mask`` (uint8 on the scan's grid), ``litres``, ``plausible``, ``implausible`` (why
        it does not look like an adult brain, or ``None``) and ``cut_by_scan``, as
        ``layerseg.extract_brain`` gives them.
    """
    data, aff, _ = _scan(image, affine)
    dev = _device(device)
    folder = _deepbet_folder()
    scan = _layerseg.brain_scan(data, aff)
    with torch.no_grad():
        coarse_net, fine_net = (_load_torchscript(folder / name, dev) for name in _DEEPBET[1:])
        ras = torch.nan_to_num(torch.from_numpy(scan.ras)[None, None].to(dev), 0.0, 0.0, 0.0)
        coarse_in = F.interpolate(ras, size=_COARSE, mode="nearest-exact")
        low = float(torch.quantile(coarse_in, 0.005))
        high = float(torch.quantile(coarse_in, 0.995))
        if high <= low:
            raise LayerSegError(
                "brain extraction: the scan has no intensity range (constant image)"
            )
        coarse = _foreground(coarse_net, _deepbet_normalise(coarse_in, low, high))
        box = scan.brain_box(coarse[0, 0].cpu().numpy() > 0.5)
        if box is None:
            return {
                "mask": np.zeros(data.shape, np.uint8),
                "litres": 0.0,
                "plausible": False,
                "implausible": "brain extraction found no brain",
                "cut_by_scan": False,
            }
        (x0, x1), (y0, y1), (z0, z1) = box
        crop = ras[..., x0:x1, y0:y1, z0:z1]
        fine_in = F.interpolate(crop, size=_FINE, mode="nearest-exact")
        fine = _foreground(fine_net, _deepbet_normalise(fine_in, low, high))
        fine = F.interpolate(fine, size=tuple(crop.shape[2:]), mode="nearest-exact")
        mask, litres, implausible, cut = scan.brain_mask(box, fine[0, 0].cpu().numpy() > 0.5)
    return {
        "mask": mask,
        "litres": litres,
        "plausible": implausible is None,
        "implausible": implausible,
        "cut_by_scan": cut,
    }


def _network(
    weights: Path, card: dict[str, Any] | None, profile: dict[str, Any]
) -> torch.nn.Module:
    if card is not None:
        config = card["config"]
        features, channels = config["features"], (config["in_channels"], config["out_channels"])
    else:
        features = profile["network"]["features"]
        channels = (profile["network"]["in_channels"], profile["network"]["out_channels"])
    return load_weights(basic_unet(features, *channels), weights)


def segment(
    image: PathLike | npt.ArrayLike,
    affine: npt.ArrayLike | None = None,
    *,
    weights: PathLike | None = None,
    profile: str = "brain-mri",
    organ_mask: PathLike | npt.ArrayLike | None = "auto",
    out: PathLike | None = None,
    threshold: float | None = None,
    overlap: float | None = None,
    min_size_mm3: float = 0.0,
    raw_mask: bool = False,
    device: str | torch.device = "auto",
    sw_batch_size: int = 1,
) -> dict[str, npt.NDArray[Any]]:
    """Segment one scan as ``layerseg.segment`` does, with the network run by MONAI on this
    process's torch: no libtorch runtime needed.

    Parameters
    ----------
    image
        A scan path (NIfTI, NRRD, MetaImage), or a 3D array ``[i, j, k]`` with ``affine``.
    affine
        The 4x4 voxel-to-RAS affine of an array. Default ``None``.
    weights
        LayerSeg ``.safetensors`` (with its model card ``NAME.json`` beside it, when there is
        one) or a MONAI ``BasicUNet`` state dict. Default ``None``: the model shipped for the
        profile (searched as ``layerseg.model_dirs()`` lists).
    profile
        A built-in profile (``"brain-mri"``, ``"liver-ct"``) or a profile JSON file. Default
        ``"brain-mri"``.
    organ_mask
        ``"auto"`` or ``None``: the brain from :func:`extract_brain` for profiles that extract
        one (an implausible brain is a ``UserWarning`` and the whole scan is searched);
        ``"none"``: the whole scan; a path or an array on the scan's grid: that mask. Default
        ``"auto"``.
    out
        Write the mask here, with the scan's header geometry. Default ``None``.
    threshold, overlap, min_size_mm3, raw_mask
        As in ``layerseg.segment``. Defaults: the profile's threshold and overlap, 0, ``False``
        (a model whose card records fine-tuning or adaptation always gives its own mask).
    device
        ``"auto"`` (CUDA when torch has it, else the CPU) or any torch device. Default ``"auto"``.
    sw_batch_size
        Windows per forward pass. Default 1.

    Returns
    -------
    dict
        ``mask`` (uint8), ``probability``, ``healthy``, ``tumour`` and ``residual`` (float32),
        on the scan's grid, and ``organ_mask`` when one was used.
    """
    _layerseg.check_segment_settings(threshold, overlap, min_size_mm3)
    data, aff, reference = _scan(image, affine)
    name = str(reference) if reference is not None else "image"
    settings = json.loads(_layerseg.profile_json(profile))
    dev = _device(device)
    path = Path(weights) if weights is not None else _shipped_weights(profile)
    card_path = path.with_suffix(".json")
    # The card checked once by the Rust core, as JSON text: read for the network's shape, for
    # the input it was trained on (the profile must make the same), and for whether fine-tuning
    # fitted its mask (then its own mask, as layerseg.segment gives it).
    card_text = _layerseg.read_model_card(card_path) if card_path.is_file() else None
    card = json.loads(card_text) if card_text is not None else None
    if card_text is not None:
        _layerseg.check_model_input(card_text, profile, path)
        raw_mask = raw_mask or _layerseg.mask_fitted_to_labels(card_text)
    auto_brain, organ, organ_affine = _organ_choice(organ_mask)
    if auto_brain and settings["inference"].get("brain_extraction"):
        try:
            brain = extract_brain(data, aff, device=dev)
            why = brain["implausible"]
        except LayerSegError as e:
            brain, why = None, f"brain extraction failed ({e})"
        if why is None and brain is not None:
            organ = brain["mask"]
        else:
            warnings.warn(
                f"{name}: {why}; segmenting without a brain mask (give one instead)",
                UserWarning,
                stacklevel=2,
            )
    prepared = _layerseg.prepare(
        data, aff, profile, organ, organ_affine, threshold, overlap, min_size_mm3, raw_mask
    )
    net = _network(path, card, settings).to(dev).eval()
    with torch.no_grad():
        x = torch.from_numpy(prepared.input)[None, None].to(dev)
        outputs = sliding_window_inference(
            x,
            roi_size=tuple(prepared.roi),
            sw_batch_size=sw_batch_size,
            predictor=net,
            overlap=prepared.overlap,
            mode="gaussian",
        )
    raw = np.ascontiguousarray(torch.as_tensor(outputs)[0].float().cpu().numpy())
    result: dict[str, npt.NDArray[Any]] = prepared.finish(raw)
    if organ is not None:
        result["organ_mask"] = organ
    if out is not None:
        _layerseg.write_labels(out, result["mask"], aff, reference=reference)
    return result
