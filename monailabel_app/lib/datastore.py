"""The local datastore, refusing labels that LayerSeg could not train on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monailabel.datastore.local import LocalDatastore

from .core import Grid, LayerSegFailed, voxels


class CheckedDatastore(LocalDatastore):  # type: ignore[misc]
    """A LocalDatastore whose save_label first checks the label against its image: the image
    must exist, the label must be on the image's grid and hold only 0 (background) and 1
    (tumour). A refused label is not stored, and the reply says what is wrong."""

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]
    ) -> str:
        image = self.get_image_uri(image_id) if image_id in self.list_images() else ""
        if not image:
            raise LayerSegFailed(404, f"label for image {image_id!r}: no such image")
        try:
            label_grid = Grid.of(label_filename)
        except LayerSegFailed as e:
            raise LayerSegFailed(422, f"label for {image_id}: {e.detail}") from e
        problem = label_grid.differs(Grid.of(image))
        if problem:
            raise LayerSegFailed(
                422,
                f"label for {image_id}: {problem}; resample it onto {Path(image).name}",
            )
        if label_filename.endswith((".nii", ".nii.gz")):
            values = np.unique(voxels(label_filename))
            extra = sorted(set(values.tolist()) - {0, 1})
            if extra:
                raise LayerSegFailed(
                    422,
                    f"label for {image_id}: values {extra[:5]} besides 0 and 1 (1 = tumour)",
                )
        return str(super().save_label(image_id, label_filename, label_tag, label_info))
