"""The one exception class both native extensions raise (``layerseg._layerseg`` and
``layerseg_libtorch._native`` import it from here)."""

from __future__ import annotations


class LayerSegError(ValueError):
    """Bad input or a failed LayerSeg operation; the message names the file and the problem."""
