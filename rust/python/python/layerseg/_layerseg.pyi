"""Type stubs for the torch-free Rust extension module (layerseg-core only)."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

from layerseg._errors import LayerSegError as LayerSegError

Affine = npt.NDArray[np.float64]

def read_image(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.float32], Affine]:
    """Read a NIfTI image as float32 ``[i, j, k]`` (scaling applied) and its voxel-to-RAS affine."""

def read_labels(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.uint8], Affine]:
    """Read a label map (integers 0..255) as uint8 and its voxel-to-RAS affine."""

def write_image(
    path: str | os.PathLike[str],
    array: npt.NDArray[np.float32],
    affine: Affine,
    reference: str | os.PathLike[str] | None = None,
) -> None:
    """Write float32 voxels atomically; ``reference`` copies that file's header geometry."""

def write_labels(
    path: str | os.PathLike[str],
    array: npt.NDArray[np.uint8],
    affine: Affine,
    reference: str | os.PathLike[str] | None = None,
) -> None:
    """Write a uint8 label map atomically; ``reference`` copies that file's header geometry."""

def evaluate(
    pred: npt.NDArray[np.uint8],
    truth: npt.NDArray[np.uint8],
    spacing: list[float],
    region: npt.NDArray[np.uint8] | None = None,
    pred_affine: Affine | None = None,
    truth_affine: Affine | None = None,
    region_affine: Affine | None = None,
) -> dict[str, Any]:
    """Segmentation metrics; see ``layerseg.evaluate``."""

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
    """Blend a synthetic tumour into a healthy scan: image, healthy, tumour, mask, params."""

def profile_json(name_or_path: str) -> str:
    """A built-in profile (brain-mri, liver-ct) or a profile file, validated, as JSON."""

def zscore_nonzero(
    array: npt.NDArray[np.float32], min_std: float = 0.01
) -> npt.NDArray[np.float32]:
    """The profiles' ``zscore_nonzero`` rule over every voxel of an array of any shape."""

def correct_bias(
    image: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    profile: str = "brain-mri",
    settings: str | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """N4 bias correction with ``settings`` (JSON) or the profile's section:
    ``(corrected, field)``; ``field`` is None when nothing was corrected."""

def scan_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The scans (NIfTI, NRRD, MetaImage) directly inside ``folder``, sorted."""

def model_dirs(packaged: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for shipped models, in order; ``packaged`` registers the package's own
    ``models/`` folder (done by ``import layerseg`` when the wheel carries one)."""

def sample_cache() -> Path:
    """Where the sample scans are cached: ``$LAYERSEG_DATA``, else ``~/.cache/layerseg/samples``."""

def check_segment_settings(
    threshold: float | None = None, overlap: float | None = None, min_size_mm3: float = 0.0
) -> None:
    """Refuse segment settings that cannot mean anything, with ``layerseg segment``'s words."""

class Prepared:
    """One scan on the network grid, and the way back for the network's outputs."""

    @property
    def input(self) -> npt.NDArray[np.float32]: ...
    @property
    def roi(self) -> list[int]: ...
    @property
    def overlap(self) -> float: ...
    def finish(self, outputs: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        """The segmentation from the raw outputs ``[3, D, H, W]`` on the network grid."""

def prepare(
    image: npt.NDArray[np.float32],
    affine: Affine,
    profile: str = "brain-mri",
    organ_mask: npt.NDArray[np.uint8] | None = None,
    organ_affine: Affine | None = None,
    threshold: float | None = None,
    overlap: float | None = None,
    min_size_mm3: float = 0.0,
    raw_mask: bool = False,
) -> Prepared:
    """The scan as ``layerseg segment`` gives it to the network, settings checked."""

class BrainScan:
    """A head scan on its RAS grid, for deepbet's networks on the caller's torch."""

    @property
    def ras(self) -> npt.NDArray[np.float32]: ...
    def brain_box(self, coarse: npt.NDArray[np.bool_]) -> list[tuple[int, int]] | None:
        """The brain's box on the RAS grid from the coarse network's mask."""
    def brain_mask(
        self, bbox: Sequence[tuple[int, int]], fine: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.uint8], float, str | None, bool]:
        """The brain on the scan's grid: mask, litres, why it is implausible, whether the
        scan cuts it."""

def brain_scan(image: npt.NDArray[np.float32], affine: Affine) -> BrainScan:
    """The scan reoriented to RAS for brain extraction."""

def read_model_card(path: str | os.PathLike[str]) -> str:
    """A LayerSeg model card, checked, as JSON text."""

def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` through the core's atomic writer: all of it, or nothing."""

def check_model_input(card: str, profile: str, weights: str | os.PathLike[str]) -> None:
    """Raise LayerSegError unless `profile` makes the network's input as the card's training did."""

def mask_fitted_to_labels(card: str) -> bool:
    """Whether a checked card (JSON text) records a fine-tuning or adaptation run."""
