"""Where a bundle's cases come from: a folder of scans, a MONAI datalist of labelled cases."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from layerseg._layerseg import scan_files

PathLike = str | os.PathLike[str]


def list_scans(folder: PathLike) -> list[str]:
    """The scans in ``folder`` as LayerSeg lists a folder (``layerseg segment DIR``: NIfTI, NRRD
    and MetaImage files, sorted); a missing folder or one without scans is an error naming it
    (a bundle's ``dataset_dir``)."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset_dir {path}: no such folder")
    scans = [str(p) for p in scan_files(path)]
    if not scans:
        raise FileNotFoundError(f"dataset_dir {path}: no NIfTI, NRRD or MetaImage scans in it")
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
