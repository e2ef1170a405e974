"""Does acquisition randomisation help on a clinical acquisition? A controlled CPU ablation.

Issue 17 part 5, for when no GPU is lent: two pretraining runs that differ only in the brain
profile's `synthesis.acquisition` section (on as shipped; removed), with everything else equal:
- a small network (features 8,8,16,32,64,8) on a 64^3 grid (the brain box squashed to 64^3,
  in training and in inference), trained from scratch;
- the same healthy scans with their reference brain masks (Colin27, MNI152, ITK T1, SRI24),
  the same steps, batch, learning rate and seed; the acquisition steps draw from their own
  random stream, so both runs see the same tumours;
- scored zero-shot, with `layerseg segment`'s defaults (brain extraction, layer rule) and with
  `--raw-mask`, on MRBrainTumor2 re-sliced to 6.5 mm axial slices with its label re-sliced alike
  (`benchmarks/thick_slices.py`, the README's clinical-acquisition row).

Writes OUT/ablation.json, OUT/curves.png (training loss and synthetic validation loss of both
runs) and each run's folder (OUT/with, OUT/without).

    python benchmarks/ablation_acquisition.py --steps 600 --out runs/ablation-acquisition
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import layerseg
from layerseg.samples import sample_dir

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FEATURES = [8, 8, 16, 32, 64, 8]
SIZE = 64
HOSTS = ["colin27", "mni152", "itk_t1", "sri24"]


def binary() -> str:
    return os.environ.get("LAYERSEG_BIN", str(REPO / "target" / "release" / "layerseg"))


def profiles(folder: Path) -> dict[str, Path]:
    """The small 64^3 brain profile with the acquisition section, and without it."""
    base = json.loads(layerseg.profile_json("brain-mri"))
    base["resample"]["target_size"] = [SIZE] * 3
    base["inference"]["patch_size"] = [SIZE] * 3
    base["network"]["features"] = FEATURES
    paths = {}
    for arm in ("with", "without"):
        profile = json.loads(json.dumps(base))
        profile["name"] = f"brain-mri-{SIZE}-{arm}-acquisition"
        if arm == "without":
            del profile["synthesis"]["acquisition"]
        paths[arm] = folder / f"{profile['name']}.json"
        paths[arm].write_text(json.dumps(profile, indent=1))
    return paths


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def dice_of(pred: Path, truth: Path, report: Path) -> dict[str, Any]:
    run([binary(), "evaluate", "--pred", str(pred), "--truth", str(truth), "--json", str(report)])
    metrics: dict[str, Any] = json.loads(report.read_text())["cases"][0]["metrics"]
    return metrics


def losses(run_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, synthetic validation loss) from metrics.jsonl."""
    train, validation = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train.append((record["step"], record["loss"]["total"]))
        if isinstance(record.get("validation"), int | float):
            validation.append((record["step"], float(record["validation"])))
    return train, validation


def draw(curves: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm, (train, validation) in curves.items():
        if train:
            steps, values = zip(*train, strict=True)
            axes[0].plot(steps, values, label=f"{arm} acquisition randomisation")
        if validation:
            steps, values = zip(*validation, strict=True)
            axes[1].plot(steps, values, marker="o", label=f"{arm} acquisition randomisation")
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[1].set(title="synthetic validation loss (each run's own samples)", xlabel="step")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation-acquisition"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    healthy = [str(sample_dir(h) / "image.nii.gz") for h in HOSTS]
    masks = [str(sample_dir(h) / "brain.nii.gz") for h in HOSTS]
    tumour = sample_dir("mrbraintumor2")
    scan, truth = args.out / "thick.nii.gz", args.out / "thick_label.nii.gz"
    reslice = [sys.executable, str(HERE / "thick_slices.py"), str(tumour / "image.nii.gz")]
    reslice += [str(scan), "--axis", "axial", "--thickness", "6.5"]
    reslice += ["--labels", str(tumour / "label.nii.gz"), str(truth)]
    run(reslice)

    results: dict[str, Any] = {"steps": args.steps, "seed": args.seed, "features": FEATURES}
    curves = {}
    for arm, profile in profiles(args.out).items():
        run_dir = args.out / arm
        start = time.perf_counter()
        pretrain = [binary(), "pretrain", "--profile", str(profile), "--healthy", *healthy]
        pretrain += ["--organ-masks", *masks, "--out", str(run_dir), "--steps", str(args.steps)]
        pretrain += ["--seed", str(args.seed), "--checkpoint-every", str(max(args.steps // 6, 1))]
        pretrain += ["--device", "cpu", "--workers", "1"]
        run(pretrain)
        minutes = (time.perf_counter() - start) / 60
        model = run_dir / "model.safetensors"
        scores = {}
        for name, flags in (("defaults", []), ("raw_mask", ["--raw-mask"])):
            mask = run_dir / f"thick_{name}.nii.gz"
            segment = [binary(), "segment", str(scan), "--out", str(mask), "--model", str(model)]
            run([*segment, "--profile", str(profile), *flags])
            metrics = dice_of(mask, truth, run_dir / f"thick_{name}.json")
            scores[name] = {k: metrics[k] for k in ("dice", "hd95_mm", "sensitivity")}
        curves[arm] = losses(run_dir)
        results[arm] = {"minutes": round(minutes, 1), **scores}
        print(
            f"{arm:7s} acquisition randomisation: {minutes:.1f} min; 6.5 mm MRBrainTumor2 Dice "
            f"{scores['defaults']['dice']:.4f} (raw mask {scores['raw_mask']['dice']:.4f})",
            flush=True,
        )
    draw(curves, args.out / "curves.png")
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2))
    print(f"curves {args.out / 'curves.png'}, table {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
