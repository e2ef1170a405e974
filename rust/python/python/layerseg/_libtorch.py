"""The libtorch half of LayerSeg, loaded on first use.

``layerseg`` itself (I/O, profiles, synthesis, preprocessing, metrics, the MONAI transforms and
losses) needs no libtorch and works with any torch, or none. Segmentation, brain extraction,
training and the command line run in ``layerseg_libtorch``, a separate distribution
(``pip install "layerseg[libtorch]"``) built against one torch release; it is imported here, the
first time one of them is called, never by ``import layerseg``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

_native: ModuleType | None = None

#: What the user can do instead when the libtorch half cannot load here.
_ALTERNATIVE = (
    "or, on the torch you have, segment through MONAI with layerseg.monai.segment (the shipped "
    "weights in MONAI's BasicUNet)"
)


def native() -> ModuleType:
    """The ``layerseg_libtorch._native`` extension, imported once. Raises ``ImportError`` that
    says what is missing (the distribution, torch, or the torch release it was built for: both
    versions named) and what to do."""
    global _native
    if _native is not None:
        return _native
    from layerseg import __version__

    try:
        package = importlib.import_module("layerseg_libtorch")
    except ModuleNotFoundError as e:
        if e.name != "layerseg_libtorch":
            raise
        raise ImportError(
            "this needs LayerSeg's libtorch runtime, which is not installed: install it with "
            f'pip install "layerseg[libtorch]=={__version__}" (it brings its own torch '
            f"release; use a separate environment if you need to keep yours), {_ALTERNATIVE}"
        ) from None
    module: ModuleType = package.load()
    if module.__version__ != __version__:
        raise ImportError(
            f"layerseg {__version__} and layerseg-libtorch {module.__version__} "
            f"({Path(module.__file__ or '?').parent}) differ: install the same version of both"
        )
    packaged = Path(__file__).with_name("models")
    if packaged.is_dir():
        module.model_dirs(packaged)
    _native = module
    return module
