"""The train task: `layerseg finetune` on the labels users saved, then the best weights serve."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from .core import LayerSegFailed, Models, image_id_of, organ_mask_for, profile_of, run_layerseg

DEFAULTS: dict[str, Any] = {
    "steps": 40,
    "lr": 1e-3,
    "validate_every": 10,
    "patience": 0,
    "batch": 0,
    "seed": 0,
    "resume": False,
    "device": "auto",
}


class LayerSegTrain(TrainTask):  # type: ignore[misc]
    """Fine-tunes the profile's current model on every saved (final) label of its modality.

    Each run is a new folder `MODEL_DIR/<profile>/runs/<n>` with the finetune checkpoints,
    metrics and curves; `resume: true` continues the newest unfinished run from its last
    checkpoint. The weights with the best validation Dice become the profile's model.
    """

    def __init__(self, profile: str, models: Models, studies: Path, device: str) -> None:
        super().__init__(f"Fine-tune LayerSeg {profile} on the saved labels (layerseg finetune)")
        self.profile = profile
        self.models = models
        self.studies = studies
        self.defaults = dict(DEFAULTS, device=device)

    def config(self) -> dict[str, Any]:
        return dict(self.defaults)

    def stats(self) -> dict[str, Any]:
        path = self.models.dir(self.profile) / "train_stats.json"
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def datalist(self, datastore: Datastore) -> list[dict[str, str]]:
        entries = []
        for image_id in sorted(datastore.get_labeled_images()):
            image = Path(datastore.get_image_uri(image_id))
            if profile_of(image) != self.profile:
                continue
            label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
            entry = {
                "image": str(image),
                "label": datastore.get_label_uri(label_id, DefaultLabelTag.FINAL),
            }
            organ = organ_mask_for(image, image_id_of(image), self.studies, self.profile)
            if organ is not None:
                entry["organ"] = str(organ)
            entries.append(entry)
        return entries

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        options = {k: request.get(k, v) for k, v in self.defaults.items()}
        cases = self.datalist(datastore)
        if not cases:
            raise LayerSegFailed(
                422, f"train {self.profile}: no saved label on a {self.profile} scan yet"
            )
        home = self.models.dir(self.profile)
        runs = home / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        done = sorted((p for p in runs.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        resume = (
            bool(options["resume"]) and bool(done) and not (done[-1] / "model.safetensors").exists()
        )
        run = done[-1] if resume else runs / f"{int(done[-1].name) + 1 if done else 1}"
        run.mkdir(exist_ok=True)
        datalist = run / "datalist.json"
        if not resume:
            datalist.write_text(json.dumps({"training": cases}, indent=2))
        start = self.models.current(self.profile)
        args = [
            "finetune", "--datalist", str(datalist), "--out", str(run),
            "--profile", self.profile, "--steps", str(int(options["steps"])),
            "--lr", str(float(options["lr"])),
            "--validate-every", str(int(options["validate_every"])),
            "--patience", str(int(options["patience"])), "--seed", str(int(options["seed"])),
            "--device", str(options["device"]),
        ]  # fmt: skip
        if int(options["batch"]) > 0:
            args += ["--batch", str(int(options["batch"]))]
        if start is not None:
            args += ["--model", str(start)]
        if resume:
            args.append("--resume")
        started = time.monotonic()
        run_layerseg(args, log=run / "finetune.log")
        report = json.loads((run / "finetune.json").read_text())
        fold = report["folds"][0]
        published = self.models.publish(self.profile, Path(fold["model"]))
        stats = {
            "profile": self.profile,
            "run": str(run),
            "cases": len(cases),
            "started_from": str(start) if start else "shipped",
            "model": str(published),
            "steps": fold.get("steps"),
            "start_dice": fold.get("start_dice"),
            "best_step": fold.get("best_step"),
            "best_dice": fold.get("best_dice", fold.get("dice")),
            "resumed": resume,
            "seconds": round(time.monotonic() - started, 1),
        }
        (home / "train_stats.json").write_text(json.dumps(stats, indent=2))
        return stats
