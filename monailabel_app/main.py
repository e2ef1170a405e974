"""LayerSeg as a MONAI Label app.

    monailabel start_server --app monailabel_app --studies DIR [--conf models brain-mri,liver-ct]
        [--conf model_dir DIR] [--conf device auto|cpu|cuda]

Models (infer and train tasks): `brain-mri` and `liver-ct`. Strategies: `layerseg` (the scan
the model explains worst) and `random` (the control). A liver scan needs its liver mask at
`STUDIES/organs/<image id>.nii.gz`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lib.core import PROFILES, LayerSegFailed, Models, ScoreCache
from lib.datastore import CheckedDatastore
from lib.infer import LayerSegInfer
from lib.strategy import RandomControl, WorstExplained
from lib.train import LayerSegTrain
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp

logger = logging.getLogger(__name__)


class LayerSegApp(MONAILabelApp):  # type: ignore[misc]
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        names = [m.strip() for m in conf.get("models", ",".join(PROFILES)).split(",") if m]
        unknown = [m for m in names if m not in PROFILES]
        if unknown:
            raise ValueError(f"--conf models: {unknown} unknown; choose from {list(PROFILES)}")
        self.profiles = names
        self.device = conf.get("device", "auto")
        self.models = Models(Path(conf.get("model_dir", Path(app_dir) / "model")).resolve())
        self.score_cache = ScoreCache(self.models.root / "scores.json")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="LayerSeg",
            description="Self-supervised tumour segmentation by layer decomposition",
            version="0.1.0",
            labels={"tumour": 1},
        )

    def init_datastore(self) -> CheckedDatastore:
        return CheckedDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, Any]:
        studies = Path(self.studies)
        return {
            p: LayerSegInfer(p, self.models, studies, self.score_cache, self.device)
            for p in self.profiles
        }

    def init_trainers(self) -> dict[str, Any]:
        studies = Path(self.studies)
        return {p: LayerSegTrain(p, self.models, studies, self.device) for p in self.profiles}

    def init_strategies(self) -> dict[str, Any]:
        studies = Path(self.studies)
        return {
            "layerseg": WorstExplained(self.models, studies, self.score_cache, self.device),
            "random": RandomControl(),
        }

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        image = request.get("image")
        store = datastore if datastore else self.datastore()
        if isinstance(image, str) and not Path(image).exists() and image not in store.list_images():
            raise LayerSegFailed(404, f"image {image!r}: not in the datastore {self.studies}")
        return dict(super().infer(request, datastore))
