"""LayerSeg's libtorch runtime: segmentation, brain extraction, training and the command line,
compiled against exactly one torch release (``TORCH_VERSION``).

Use it through ``layerseg`` (``layerseg.segment``, ``layerseg.pretrain``, the ``layerseg``
command), which imports it on first use; ``import layerseg`` alone never loads libtorch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

#: The torch release whose libtorch the extension is linked against (tch 0.26's).
TORCH_VERSION = "2.13.0"


def _base(release: str) -> str:
    return release.split("+", 1)[0]


def load() -> ModuleType:
    """Import the extension after checking that this process's torch is ``TORCH_VERSION``:
    the extension resolves its libtorch symbols against the libtorch that torch maps in, so any
    other release fails at load time or, worse, later. Raises ``ImportError`` naming both
    versions and what to do."""
    try:
        import torch
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise ImportError(
            f"layerseg-libtorch needs torch=={TORCH_VERSION}, and torch is not installed: "
            f'pip install "torch=={TORCH_VERSION}"'
        ) from None
    found = _base(str(torch.__version__))
    if found != TORCH_VERSION:
        try:
            ours = version("layerseg-libtorch")
        except PackageNotFoundError:
            ours = "?"
        raise ImportError(
            f"layerseg-libtorch {ours} is built against torch {TORCH_VERSION}, but this "
            f"environment has torch {torch.__version__} ({torch.__file__}). Segmentation, "
            "brain extraction, training and the layerseg command need "
            f"torch=={TORCH_VERSION}: install it in a separate environment (pip install "
            f'"torch=={TORCH_VERSION}" "layerseg[libtorch]"), or, keeping your torch, segment '
            "through MONAI with layerseg.monai.segment; everything else in layerseg works "
            f"with torch {torch.__version__}"
        )
    from layerseg_libtorch import _native

    return _native
