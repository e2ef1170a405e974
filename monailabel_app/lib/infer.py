"""The infer task: LayerSeg's zero-shot segmentation, as `layerseg segment` runs it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from .core import (
    LayerSegFailed,
    Models,
    ScoreCache,
    Segmentation,
    image_id_of,
    organ_mask_for,
    segment,
)

OUTPUTS = ("label", "healthy", "probability")


class LayerSegInfer(InferTask):  # type: ignore[misc]
    """Tumour label (1) of one scan; the healthy layer and the tumour probability on request.

    Params: `output` ("label", the default, "healthy" or "probability") picks the volume sent
    back; `device` ("auto", "cpu", "cuda"). The JSON result carries the label-free scores and
    which model ran.
    """

    def __init__(
        self, profile: str, models: Models, studies: Path, scores: ScoreCache, device: str
    ) -> None:
        super().__init__(
            type=InferType.SEGMENTATION,
            labels={"tumour": 1},
            dimension=3,
            description=(
                f"LayerSeg {profile}: zero-shot tumour segmentation by layer decomposition "
                "(fine-tuned on your labels once trained)"
            ),
            config={"output": list(OUTPUTS), "device": device},
        )
        self.profile = profile
        self.models = models
        self.studies = studies
        self.scores = scores
        self.device = device

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise LayerSegFailed(404, f"image {request.get('image')!r}: no such image")
        path = Path(image)
        if not path.is_file():
            raise LayerSegFailed(404, f"image {image!r}: not in the datastore {self.studies}")
        output = request.get("output", "label")
        if isinstance(output, list) or output not in OUTPUTS:
            raise LayerSegFailed(422, f"output {output!r}: must be one of {', '.join(OUTPUTS)}")
        device = str(request.get("device", self.device))
        image_id = image_id_of(path)
        model = self.models.current(self.profile)
        version = self.models.version(self.profile)
        organ = organ_mask_for(path, image_id, self.studies, self.profile)
        result = self.segmentation(path, image_id, model, version, organ, device)
        chosen = {
            "label": result.mask,
            "healthy": result.healthy,
            "probability": result.probability,
        }
        fd, name = tempfile.mkstemp(prefix=f"layerseg-{output}-", suffix=".nii.gz")
        os.close(fd)
        out = Path(name)
        shutil.copyfile(chosen[output], out)
        return str(out), {
            "model": str(model) if model else "shipped",
            "profile": self.profile,
            "output": output,
            **result.scores,
        }

    def segmentation(
        self,
        path: Path,
        image_id: str,
        model: Path | None,
        version: str,
        organ: Path | None,
        device: str,
    ) -> Segmentation:
        """The scan's segmentation by this model: run once, then kept (the latest per scan), so
        asking for the healthy layer or the probability after the label costs nothing."""
        stamp = [version, str(path.stat().st_mtime_ns)]
        if organ is not None:
            stamp.append(str(organ.stat().st_mtime_ns))
        key = "-".join(stamp)
        cache = self.models.dir(self.profile) / "segmentations" / image_id
        kept = cache / key / "result.json"
        if kept.exists():
            return Segmentation.load(kept)
        if cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        result = segment(path, self.profile, model, organ, device, work=cache)
        result.folder.rename(cache / key)
        result = Segmentation.load_moved(result, cache / key)
        result.save(kept)
        self.scores.put(image_id, version, result.scores)
        return result
