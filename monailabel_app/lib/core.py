"""What the tasks share: the `layerseg` binary, the model each profile serves, the scans' grids
and LayerSeg's label-free score of a segmentation.

The tasks run the command line (as the Slicer module does) rather than the Python extension:
MONAI Label's environment pins numpy<2, and the binary does not care which numpy is there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi import HTTPException

import layerseg

PROFILES = ("brain-mri", "liver-ct")
REPO = Path(__file__).resolve().parents[2]


def voxels(path: str | Path, dtype: Any = None) -> np.ndarray[Any, Any]:
    """The voxels of a NIfTI file, as stored (or as `dtype`)."""
    img: Any = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=dtype)


class LayerSegFailed(HTTPException):  # type: ignore[misc]
    """A request that LayerSeg refused or could not finish, as an HTTP error with the reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)


def layerseg_binary() -> str:
    """`$LAYERSEG_BIN`, else the checkout's release build, else `layerseg` on PATH."""
    candidates = [os.environ.get("LAYERSEG_BIN"), str(REPO / "target" / "release" / "layerseg")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("layerseg")
    if found is None:
        raise LayerSegFailed(
            500, "layerseg binary not found: set LAYERSEG_BIN or build it with `make build`"
        )
    return found


def run_layerseg(args: list[str], log: Path | None = None) -> str:
    """Runs `layerseg ARGS`; its stderr (the one-line error naming the file) becomes the error."""
    env = dict(os.environ, LAYERSEG_PROGRESS="lines")
    done = subprocess.run(
        [layerseg_binary(), *args], capture_output=True, text=True, env=env, check=False
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"$ layerseg {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "progress" not in line]
        raise LayerSegFailed(422 if done.returncode == 1 else 500, "\n".join(lines[-5:]))
    return done.stdout


def info(path: str | Path) -> dict[str, Any]:
    """`layerseg info --json`: shape, affine and intensity range of NIfTI, NRRD or MetaImage."""
    return dict(json.loads(run_layerseg(["info", str(path), "--json"])))


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, ...]
    affine: np.ndarray[Any, Any]

    @staticmethod
    def of(path: str | Path) -> Grid:
        meta = info(path)
        return Grid(tuple(int(n) for n in meta["shape"][:3]), np.asarray(meta["affine"], float))

    def differs(self, image: Grid) -> str | None:
        """What differs from the image's grid, in words, or None when they are the same."""
        if self.shape != image.shape:
            return f"shape {list(self.shape)} differs from the image's {list(image.shape)}"
        gap = float(np.abs(self.affine - image.affine).max())
        if gap > 1e-3:
            return f"voxel-to-RAS affine differs from the image's by up to {gap:.4g} mm"
        return None


def profile_of(image: str | Path) -> str:
    """liver-ct for a CT (values down to -500 or below, as HU), brain-mri otherwise: the test
    behind the command line's modality warning, so a scan never gets the model it warns about."""
    return "liver-ct" if float(info(image)["range"][0]) <= -500.0 else "brain-mri"


class Models:
    """Where each profile's current model lives: `MODEL_DIR/<profile>/model.safetensors` once
    the train task has produced one, the shipped model before that."""

    def __init__(self, model_dir: Path) -> None:
        self.root = model_dir

    def dir(self, profile: str) -> Path:
        return self.root / profile

    def current(self, profile: str) -> Path | None:
        path = self.dir(profile) / "model.safetensors"
        return path if path.exists() else None

    def version(self, profile: str) -> str:
        path = self.current(profile)
        return "shipped" if path is None else f"{path.stat().st_mtime_ns}"

    def publish(self, profile: str, weights: Path) -> Path:
        """Puts fine-tuned weights (and their model card) in place atomically."""
        target = self.dir(profile) / "model.safetensors"
        for src, dst in (
            (weights.with_suffix(".json"), target.with_suffix(".json")),
            (weights, target),
        ):
            if src.exists():
                tmp = dst.with_suffix(dst.suffix + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
        return target


def organ_mask_for(image: Path, image_id: str, studies: Path, profile: str) -> Path | None:
    """The organ mask to search in: `STUDIES/organs/<id>.nii.gz` when present; liver-ct
    needs one, brain-mri extracts the brain itself."""
    for ext in (".nii.gz", ".nii", ".nrrd"):
        path = studies / "organs" / f"{image_id}{ext}"
        if path.exists():
            return path
    if profile == "liver-ct":
        raise LayerSegFailed(
            422,
            f"{image}: the liver-ct model searches inside the liver; put its liver mask at "
            f"{studies / 'organs' / (image_id + '.nii.gz')}",
        )
    return None


def image_id_of(path: str | Path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


@dataclass
class Segmentation:
    mask: Path
    probability: Path
    healthy: Path
    folder: Path
    scores: dict[str, float]

    def save(self, path: Path) -> None:
        names = {k: getattr(self, k).name for k in ("mask", "probability")}
        names["healthy"] = str(self.healthy.relative_to(self.folder))
        path.write_text(json.dumps({"files": names, "scores": self.scores}))

    @staticmethod
    def load(path: Path) -> Segmentation:
        data = json.loads(path.read_text())
        f, folder = data["files"], path.parent
        return Segmentation(
            folder / f["mask"], folder / f["probability"], folder / f["healthy"], folder,
            data["scores"],
        )  # fmt: skip

    @staticmethod
    def load_moved(old: Segmentation, folder: Path) -> Segmentation:
        """The same result after its folder moved to `folder`."""
        return Segmentation(
            folder / old.mask.name, folder / old.probability.name,
            folder / old.healthy.relative_to(old.folder), folder, old.scores,
        )  # fmt: skip


def segment(
    image: Path,
    profile: str,
    model: Path | None,
    organ: Path | None,
    device: str,
    work: Path | None = None,
) -> Segmentation:
    """`layerseg segment` with the defaults (brain extraction, layer rule), keeping the layers
    and the probability, and the label-free scores of the result."""
    folder = Path(tempfile.mkdtemp(prefix="layerseg-", dir=work))
    mask, prob, layers = folder / "mask.nii.gz", folder / "probability.nii.gz", folder / "layers"
    args = [
        "segment", str(image), "--out", str(mask), "--profile", profile, "--prob", str(prob),
        "--layers", str(layers), "--device", device,
    ]  # fmt: skip
    if model is not None:
        args += ["--model", str(model)]
    if organ is not None:
        args += ["--organ-mask", str(organ)]
    else:
        args += ["--save-organ-mask", str(folder / "organ.nii.gz")]
    run_layerseg(args)
    healthy = next(layers.glob("*_healthy.nii.gz"))
    tumour = next(layers.glob("*_tumour.nii.gz"))
    residual = next(layers.glob("*_residual.nii.gz"))
    region_path = organ if organ is not None else folder / "organ.nii.gz"
    scores = label_free_scores(
        profile, prob, healthy, tumour, residual, region_path if region_path.exists() else None
    )
    return Segmentation(mask, prob, healthy, folder, scores)


def label_free_scores(
    profile: str,
    prob: Path,
    healthy: Path,
    tumour: Path,
    residual: Path,
    region: Path | None,
) -> dict[str, float]:
    """LayerSeg's own reliability scores, computed without a label, with `layerseg adapt`'s
    definitions and the profile's `adaptation` thresholds, in the region searched:

    - recomposition_l1: mean |x - (t p + h (1 - p))|, with x the normalised image (residual +
      healthy layer), t and h the layers, p the probability; high: the model explains the scan
      badly.
    - agreement: Dice between p >= mask_threshold and the residual map (x - h, signed towards
      the profile's lesions, >= residual_threshold); low: the two heads disagree.
    """
    rule = json.loads(layerseg.profile_json(profile))["adaptation"]
    p = voxels(prob, np.float32)
    h = voxels(healthy, np.float32)
    t = voxels(tumour, np.float32)
    r = voxels(residual, np.float32)
    inside = voxels(region) > 0 if region is not None else (h != 0) | (r != 0)
    if not inside.any():
        inside = np.ones(p.shape, bool)
    error = np.abs(r - p * (t - h))[inside]
    sign = 1.0 if rule["residual_sign"] == "brighter" else -1.0
    masked = (p >= rule["mask_threshold"]) & inside
    departs = (sign * r >= rule["residual_threshold"]) & inside
    total = int(np.count_nonzero(masked)) + int(np.count_nonzero(departs))
    both = int(np.count_nonzero(masked & departs))
    return {
        "recomposition_l1": float(error.mean()),
        "agreement": 1.0 if total == 0 else 2.0 * both / total,
        "tumour_fraction": float(np.count_nonzero(masked)) / float(np.count_nonzero(inside)),
    }


class ScoreCache:
    """Label-free scores per image and model version, kept across server restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def get(self, image_id: str, version: str) -> dict[str, float] | None:
        entry = self._load().get(image_id)
        if entry and entry.get("version") == version:
            return dict(entry["scores"])
        return None

    def put(self, image_id: str, version: str, scores: dict[str, float]) -> None:
        data = self._load()
        data[image_id] = {"version": version, "scores": scores}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)
