"""LayerSeg: self-supervised tumour segmentation by layer decomposition.

Volumes cross the boundary as ``(array, affine)`` pairs: a numpy array indexed ``[i, j, k]``
in the file's voxel order, and the 4x4 voxel-to-RAS affine, as nibabel gives them.

Importing the package loads no torch: reading and writing volumes, profiles, synthesis,
``evaluate`` and ``correct_bias`` run on the torch-free extension. ``segment``,
``extract_brain``, the training functions, ``runtime`` and ``run_cli`` load LayerSeg's libtorch
runtime on first use
(``layerseg_libtorch``, installed by ``pip install "layerseg[libtorch]"``).
"""

from __future__ import annotations

from pathlib import Path

from layerseg._errors import LayerSegError
from layerseg._functions import (
    adapt,
    finetune,
    model_dirs,
    pretrain,
    profile_json,
    read_image,
    read_labels,
    run_cli,
    runtime,
)
from layerseg._layerseg import __version__
from layerseg.api import (
    correct_bias,
    evaluate,
    extract_brain,
    segment,
    synthesize,
    write_image,
    write_labels,
)

# A wheel carries the shipped models in the package (`make wheel` copies them in); in a
# checkout they are found in the repository's models/ instead. The libtorch runtime registers
# the same folder when it loads (layerseg._libtorch).
_PACKAGED_MODELS = Path(__file__).with_name("models")
if _PACKAGED_MODELS.is_dir():
    model_dirs(_PACKAGED_MODELS)

__all__ = [
    "LayerSegError",
    "__version__",
    "adapt",
    "correct_bias",
    "evaluate",
    "extract_brain",
    "finetune",
    "model_dirs",
    "pretrain",
    "profile_json",
    "read_image",
    "read_labels",
    "run_cli",
    "runtime",
    "segment",
    "synthesize",
    "write_image",
    "write_labels",
]
