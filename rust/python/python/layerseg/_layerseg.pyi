"""Type stubs for the Rust extension module."""

import os

import numpy as np
import numpy.typing as npt

__version__: str

class LayerSegError(ValueError):
    """Bad input or a failed LayerSeg operation; the message names the file and the problem."""

Affine = npt.NDArray[np.float64]

def run_cli(argv: list[str]) -> int:
    """Run the ``layerseg`` command line (``argv[0]`` is the program name); return its exit code."""

def runtime() -> str:
    """What libtorch sees: CUDA backend loaded, CUDA available, devices, CPU threads."""

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
