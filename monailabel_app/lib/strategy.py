"""Next-sample strategies: the scan LayerSeg explains worst first, random as the control."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from .core import (
    LayerSegFailed,
    Models,
    ScoreCache,
    image_id_of,
    organ_mask_for,
    profile_of,
    segment,
)

SCORES = ("recomposition_l1", "agreement")


class WorstExplained(Strategy):  # type: ignore[misc]
    """Offers the unlabelled scan with the highest recomposition error (`score:
    recomposition_l1`, the default) or the least mask/residual agreement (`score: agreement`),
    each scan segmented by the current model of its modality. Scores are cached per model, so
    only scans not yet seen by that model are segmented."""

    def __init__(self, models: Models, studies: Path, scores: ScoreCache, device: str) -> None:
        super().__init__("LayerSeg: the unlabelled scan the model explains worst (label-free)")
        self.models = models
        self.studies = studies
        self.scores = scores
        self.device = device

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        score = request.get("score", "recomposition_l1")
        if score not in SCORES:
            raise LayerSegFailed(422, f"score {score!r}: must be one of {', '.join(SCORES)}")
        ranked, skipped = [], {}
        for image_id in datastore.get_unlabeled_images():
            path = Path(datastore.get_image_uri(image_id))
            try:
                ranked.append((image_id, *self.scores_of(image_id, path)))
            except LayerSegFailed as e:
                skipped[image_id] = str(e.detail)
        if not ranked:
            return {"skipped": skipped} if skipped else {}
        worst = -1.0 if score == "recomposition_l1" else 1.0
        image_id, profile, scores = min(ranked, key=lambda r: worst * r[2][score])
        return {
            "id": image_id,
            "profile": profile,
            "score": score,
            **scores,
            "ranking": {r[0]: r[2][score] for r in ranked},
            "skipped": skipped,
        }

    def scores_of(self, image_id: str, path: Path) -> tuple[str, dict[str, float]]:
        """The scan's profile and its label-free scores under that profile's current model."""
        profile = profile_of(path)
        version = self.models.version(profile)
        scores = self.scores.get(image_id, version)
        if scores is None:
            organ = organ_mask_for(path, image_id_of(path), self.studies, profile)
            result = segment(path, profile, self.models.current(profile), organ, self.device)
            shutil.rmtree(result.folder, ignore_errors=True)
            scores = result.scores
            self.scores.put(image_id, version, scores)
        return profile, scores


class RandomControl(Strategy):  # type: ignore[misc]
    """Any unlabelled scan, uniformly at random: the control for the strategy above."""

    def __init__(self) -> None:
        super().__init__("Random unlabelled scan (control)")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        images = datastore.get_unlabeled_images()
        if not images:
            return {}
        return {"id": random.choice(images)}
