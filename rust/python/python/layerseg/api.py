"""Path-or-array front ends over the Rust functions: ``segment``, ``evaluate``, ``synthesize``,
``write_image`` and ``write_labels``.

Every array is checked here before it reaches Rust: wrong dimensionality or dtype, NaNs, label
values outside 0..255 and bad affines raise ``ValueError`` with a message; any numeric dtype and
memory layout (non-contiguous, Fortran order) is converted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from layerseg import _layerseg
from layerseg._libtorch import native

PathLike = str | os.PathLike[str]
Progress = Callable[[str, int, int], object]


def _as_volume(
    name: str, array: Any, dtype: type[np.generic], *, labels: bool = False
) -> npt.NDArray[Any]:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D array [i, j, k], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if labels and arr.dtype.kind != "b":
        ok = (arr >= 0) & (arr <= 255)
        if arr.dtype.kind == "f":
            ok &= arr == np.round(arr)
        if not ok.all():
            bad = arr[~ok].flat[0]
            raise ValueError(f"{name} is not a label map: value {bad} is not an integer in 0..255")
    return np.ascontiguousarray(arr, dtype=dtype)


def _as_affine(name: str, affine: Any) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a 4x4 array of numbers: {e}") from None
    if arr.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if abs(np.linalg.det(arr[:3, :3])) < 1e-12:
        raise ValueError(f"{name} is singular (a zero voxel size?): {arr.tolist()}")
    return np.ascontiguousarray(arr)


def _scan(
    image: PathLike | npt.ArrayLike, affine: npt.ArrayLike | None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], PathLike | None]:
    """A scan given as a path, or as an array with its affine: (data, affine, the path)."""
    if isinstance(image, (str, os.PathLike)):
        data, affine_arr = _layerseg.read_image(image)
        return data, affine_arr, image
    if affine is None:
        raise ValueError("an image array needs its 4x4 affine")
    return _as_volume("image", image, np.float32), _as_affine("affine", affine), None


def _organ_choice(
    organ_mask: PathLike | npt.ArrayLike | None,
) -> tuple[bool, npt.NDArray[np.uint8] | None, npt.NDArray[np.float64] | None]:
    """``segment``'s ``organ_mask`` read once for both faces: (extract the brain when the
    profile asks for it, the given mask or ``None``, the mask's own affine when it came from a
    file). ``None`` is "not given", the same as ``"auto"``, as in the CLI and ``finetune``."""
    if organ_mask is None or (isinstance(organ_mask, str) and organ_mask == "auto"):
        return True, None, None
    if isinstance(organ_mask, str) and organ_mask == "none":
        return False, None, None
    if isinstance(organ_mask, (str, os.PathLike)):
        organ, organ_affine = _layerseg.read_labels(organ_mask)
        return False, organ, organ_affine
    return False, _as_volume("organ_mask", organ_mask, np.uint8, labels=True), None


def segment(
    image: PathLike | npt.ArrayLike,
    affine: npt.ArrayLike | None = None,
    *,
    model: PathLike | None = None,
    profile: str = "brain-mri",
    organ_mask: PathLike | npt.ArrayLike | None = "auto",
    out: PathLike | None = None,
    threshold: float | None = None,
    overlap: float | None = None,
    tta: bool = False,
    min_size_mm3: float = 0.0,
    device: str = "auto",
    progress: Progress | None = None,
    raw_mask: bool = False,
) -> dict[str, npt.NDArray[Any]]:
    """Segment tumours in one scan.

    The scan is reoriented to RAS, cropped to its foreground (or the organ mask), resampled to
    the profile's grid and normalised; the network runs in Gaussian-weighted sliding windows
    and the mask probability is mapped back to the scan's own grid before thresholding. The
    GIL is released while the network runs.

    Parameters
    ----------
    image
        A scan path (NIfTI, NRRD or MetaImage), or a 3D array ``[i, j, k]`` (any numeric dtype)
        with its ``affine``.
    affine
        The 4x4 voxel-to-RAS affine (mm) of an ``image`` array; ignored for a path. Default
        ``None``.
    model
        Weights to run: ``.safetensors`` from ``pretrain``/``finetune`` or a MONAI BasicUNet
        state dict. Default ``None``: the model shipped for ``profile``.
    profile
        A built-in profile (``"brain-mri"``, ``"liver-ct"``) or a profile JSON file. Default
        ``"brain-mri"``.
    organ_mask
        Where to search. ``"auto"`` (default) or ``None``: the brain, extracted automatically,
        for profiles that ask for it (``"brain-mri"``), else the whole scan; ``"none"``: the
        whole scan; or a label map (path, or array on the image's grid; non-zero = organ),
        required by profiles that segment inside an organ (``"liver-ct"``). An extracted brain
        that is empty, over 2.2 L, or under 0.8 L while the scan holds it whole gives a
        ``UserWarning`` and is not used.
    out
        Also write the uint8 mask here, with the scan's header geometry when ``image`` is a
        path. Default ``None``: write nothing.
    threshold
        Probability (0..1) above which a voxel is tumour. Default ``None``: the profile's
        (0.5 for the built-in profiles).
    overlap
        Fraction (0..1) by which neighbouring sliding windows overlap. Default ``None``: the
        profile's (0.25).
    tta
        Test-time augmentation: average over no flip and a flip along each axis (four times
        slower). Default ``False``.
    min_size_mm3
        Drop connected components smaller than this volume, in cubic millimetres. Default 0.0:
        only the layer rule's own smallest lesion applies (100 mm^3 for the built-in profiles;
        none with ``raw_mask=True``).
    device
        ``"auto"`` (the first CUDA GPU when one is usable, else the CPU), ``"cpu"``, ``"cuda"``
        or ``"cuda:N"``. Default ``"auto"``; any other name raises ``LayerSegError`` (a
        ``ValueError``).
    progress
        ``progress(what, done, total)`` is called as windows finish; raising from it, or
        Ctrl-C, cancels. Default ``None``.
    raw_mask
        Return the network's own mask, without the profile's layer rule (the image must depart
        from the healthy layer in the lesion direction). Default ``False``.

    Returns
    -------
    dict
        ``mask`` (uint8, 1 = tumour), ``probability``, ``healthy``, ``tumour`` and
        ``residual`` (float32: the image minus the healthy layer, in the network's normalised
        units), all on the input grid, and ``organ_mask`` (uint8) when one was used.
    """
    data, affine_arr, reference = _scan(image, affine)
    auto_brain, organ, organ_affine = _organ_choice(organ_mask)
    result: dict[str, npt.NDArray[Any]] = native().segment(
        data,
        affine_arr,
        model=model,
        profile=profile,
        organ_mask=organ,
        threshold=threshold,
        overlap=overlap,
        tta=tta,
        min_size_mm3=min_size_mm3,
        device=device,
        progress=progress,
        organ_affine=organ_affine,
        auto_brain=auto_brain,
        raw_mask=raw_mask,
        scan_name=reference,
    )
    if out is not None:
        _layerseg.write_labels(out, result["mask"], affine_arr, reference=reference)
    return result


def extract_brain(
    image: PathLike | npt.ArrayLike,
    affine: npt.ArrayLike | None = None,
    *,
    out: PathLike | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """The brain mask of a head MRI, by the shipped brain extractor (deepbet's networks).

    ``segment`` runs this itself for the brain profiles when no organ mask is given; call it to
    see or reuse the mask. It works in any orientation, with slices up to 7 mm thick and on
    partial coverage; it was made for T1 and T1c (README, "Brain extraction").

    Parameters
    ----------
    image
        A scan path (NIfTI, NRRD or MetaImage), or a 3D array ``[i, j, k]`` with its ``affine``.
    affine
        The 4x4 voxel-to-RAS affine (mm) of an ``image`` array; ignored for a path. Default
        ``None``.
    out
        Also write the uint8 mask here. Default ``None``: write nothing.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Default ``"auto"``.

    Returns
    -------
    dict
        ``mask`` (uint8 on the input grid, 1 = brain), ``litres`` (its volume), ``cut_by_scan``
        (the mask reaches a face of the scan: the field of view cuts the brain, as partial
        coverage does), ``plausible`` (whether it can be an adult brain: 0.8 to 2.2 L, or any
        volume up to 2.2 L when the scan cuts it) and ``implausible`` (why not, as ``segment``
        warns it, or ``None``).
    """
    data, affine_arr, reference = _scan(image, affine)
    mask, litres, implausible, cut = native().extract_brain(data, affine_arr, device=device)
    if out is not None:
        _layerseg.write_labels(out, mask, affine_arr, reference=reference)
    return {
        "mask": mask,
        "litres": litres,
        "plausible": implausible is None,
        "implausible": implausible,
        "cut_by_scan": cut,
    }


def correct_bias(
    image: npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    settings: dict[str, Any] | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Divide a scan by its smooth intensity bias field, estimated by N4 inside ``mask``.

    LayerSeg's own N4 (``layerseg_core::bias``; README, "Bias correction"): label-free, in the
    Rust core. ``segment`` runs it when the profile has an ``inference.bias_correction``
    section; the built-in profiles do not (the shipped models were trained on uncorrected
    scans, and correcting loses them tumours).

    Parameters
    ----------
    image
        A 3D array ``[i, j, k]`` of intensities; only its positive voxels inform the field.
    mask
        Where the field is estimated (a brain mask, say), on the same grid.
    settings
        The section's keys (``levels``, ``iterations``, ``convergence``, ``histogram_bins``,
        ``fwhm``, ``wiener_noise``, ``shrink``); missing ones take ITK's defaults (4 levels).
        Default ``None``: ITK's defaults, unless ``profile`` is given.
    profile
        Take the settings from this profile's section instead (a built-in name or a file).

    Returns
    -------
    dict
        ``image`` (float32, corrected; a copy of the input when nothing was corrected) and
        ``field`` (float32, the field divided out, its log mean 0 inside the mask; ``None``
        when the profile has no section or the mask holds fewer than 1000 usable voxels).
    """
    data = _as_volume("image", image, np.float32)
    region = _as_volume("mask", mask, np.uint8, labels=True) > 0
    if settings is not None and profile is not None:
        raise ValueError("give settings or profile, not both")
    if profile is None:
        corrected, field = _layerseg.correct_bias(data, region, settings=json.dumps(settings or {}))
    else:
        corrected, field = _layerseg.correct_bias(data, region, profile=profile)
    return {"image": corrected, "field": field}


def evaluate(
    pred: PathLike | npt.ArrayLike,
    truth: PathLike | npt.ArrayLike,
    *,
    spacing: tuple[float, float, float] | None = None,
    organ_mask: PathLike | npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Dice, Jaccard, HD95 and ASSD (mm), sensitivity, specificity and lesion detection.

    Values follow MONAI's metrics. Masks given as paths must be on the same grid (shape and
    affine); a mismatch raises ``LayerSegError`` naming both files.

    Parameters
    ----------
    pred
        The predicted mask: a label-map path or a 3D array; non-zero = tumour.
    truth
        The ground truth, as ``pred``; non-zero = tumour.
    spacing
        Voxel size ``(sx, sy, sz)`` in millimetres, needed when ``truth`` is an array. Default
        ``None``: from the truth file's header.
    organ_mask
        Evaluate only inside this mask (path or array, non-zero = inside). Default ``None``:
        the whole volume.

    Returns
    -------
    dict
        ``dice``, ``jaccard``, ``hd95_mm``, ``assd_mm`` (None when a mask is empty),
        ``sensitivity``, ``specificity``, ``precision``, ``truth_ml``, ``pred_ml`` (millilitres),
        ``lesions``, ``lesions_detected``, ``lesions_missed`` and ``false_positive_components``.
    """

    def load(x: PathLike | npt.ArrayLike, name: str) -> tuple[npt.NDArray[Any], Any]:
        if isinstance(x, (str, os.PathLike)):
            return _layerseg.read_labels(x)
        return _as_volume(name, np.asarray(x) != 0, np.uint8), None

    p, pred_affine = load(pred, "pred")
    t, truth_affine = load(truth, "truth")
    region, region_affine = (None, None) if organ_mask is None else load(organ_mask, "organ_mask")
    if spacing is None and truth_affine is not None:
        spacing = tuple(np.sqrt((np.asarray(truth_affine)[:3, :3] ** 2).sum(axis=0)))
    if spacing is None:
        raise ValueError("arrays need spacing=(sx, sy, sz) in mm")
    result: dict[str, Any] = _layerseg.evaluate(
        p,
        t,
        [float(v) for v in spacing],
        region,
        pred_affine=pred_affine,
        truth_affine=truth_affine,
        region_affine=region_affine,
    )
    return result


def write_image(
    path: PathLike,
    array: npt.ArrayLike,
    affine: npt.ArrayLike,
    reference: PathLike | None = None,
) -> None:
    """Write a 3D array ``[i, j, k]`` as float32 voxels, atomically (no partial file on failure).

    Parameters
    ----------
    path
        The output file; ``.nii.gz`` is compressed, ``.nii`` is not.
    array
        The voxels, any numeric dtype, without NaN or infinite values.
    affine
        The 4x4 voxel-to-RAS affine in millimetres.
    reference
        A NIfTI path whose header geometry (qform and sform codes) is copied when its grid
        matches. Default ``None``.
    """
    data = _as_volume("array", array, np.float32)
    _layerseg.write_image(path, data, _as_affine("affine", affine), reference=reference)


def write_labels(
    path: PathLike,
    array: npt.ArrayLike,
    affine: npt.ArrayLike,
    reference: PathLike | None = None,
) -> None:
    """Write a label map (integers 0..255, any numeric dtype) as uint8, atomically.

    Parameters
    ----------
    path
        The output file; ``.nii.gz`` is compressed, ``.nii`` is not.
    array
        The labels: a 3D array of integers in 0..255 (bool, integer or integral float dtype).
    affine
        The 4x4 voxel-to-RAS affine in millimetres.
    reference
        A NIfTI path whose header geometry (qform and sform codes) is copied when its grid
        matches. Default ``None``.
    """
    data = _as_volume("array", array, np.uint8, labels=True)
    _layerseg.write_labels(path, data, _as_affine("affine", affine), reference=reference)


def synthesize(
    image: npt.ArrayLike,
    affine: npt.ArrayLike,
    profile: str = "brain-mri",
    organ_mask: npt.ArrayLike | None = None,
    texture: npt.ArrayLike | None = None,
    seed: int = 0,
    texture_affine: npt.ArrayLike | None = None,
    acquisition: bool = True,
) -> dict[str, Any]:
    """Blend a synthetic tumour into a healthy scan, as the profile's synthesis section says.

    Parameters
    ----------
    image
        The healthy scan, a 3D array ``[i, j, k]``.
    affine
        Its 4x4 voxel-to-RAS affine in millimetres.
    profile
        A built-in profile (``"brain-mri"``, ``"liver-ct"``) or a profile JSON file. Default
        ``"brain-mri"``.
    organ_mask
        A label map on the image's grid (non-zero = organ) where tumours are placed; required
        by profiles that place tumours inside an organ. Default ``None``.
    texture
        A scan to take the tumour texture from. Default ``None``: ``image`` itself.
    seed
        The random seed; the same seed gives the same tumour. Default 0.
    texture_affine
        The affine of ``texture``. Default ``None``: ``affine``.
    acquisition
        Apply the profile's acquisition randomisation (``synthesis.acquisition``: thick
        slices, bias field, contrast, gamma, noise, partial coverage) to the blended image and
        the healthy layer alike. Default ``True``; ``False`` gives the same tumour without it.

    Returns
    -------
    dict
        float32 ``image`` (with the tumour), ``healthy`` and ``tumour`` layers, a uint8
        ``mask`` and ``params`` (every drawn value, JSON text).
    """
    result: dict[str, Any] = _layerseg.synthesize(
        _as_volume("image", image, np.float32),
        _as_affine("affine", affine),
        profile=profile,
        organ_mask=None
        if organ_mask is None
        else _as_volume("organ_mask", organ_mask, np.uint8, labels=True),
        texture=None if texture is None else _as_volume("texture", texture, np.float32),
        seed=seed,
        texture_affine=None
        if texture_affine is None
        else _as_affine("texture_affine", texture_affine),
        acquisition=acquisition,
    )
    return result
