"""Few-shot results from the one labelled scan per organ: fine-tune on one half, score the other.

The registries hold a single labelled tumour scan per organ, so the few-shot protocol splits it.
The scan is cut across its superior-inferior axis at the median slice of the tumour voxels, so
both halves hold tumour. Fold 0 fine-tunes the shipped model (`layerseg finetune`) on the
lower-index half, inferior in both samples (LPS): its image, label and organ mask, with the
superior half replaced by the inferior half's mirror image (see save_mirrored_half); it scores
the superior half. Fold 1 is the other way round. Every method segments the whole scan and is
scored only inside the held-out half (and the organ mask, when the case has one):
- zero-shot: the shipped model
- few-shot: the fine-tuned model (the weights with the best Dice on its own training half)
- baseline: benchmarks/baseline.py's no-learning threshold

Both halves come from one patient, so this measures what one labelled case teaches about the
rest of that case, an optimistic stand-in for a cross-patient few-shot result.

    python benchmarks/fewshot.py --case lits117 --steps 40 --out runs/fewshot-lits117

`--rescore` scores the fine-tuned models that an earlier run left in `--out` again, without
fine-tuning (the fine-tuning time is then not reported).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

import layerseg
from layerseg import samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import baseline_mask, default_region
from thick_slices import load_nifti


@dataclass(frozen=True)
class Case:
    profile: str
    modality: str
    truth: str
    organ: str | None


CASES = {
    "lits117": Case("liver-ct", "ct", "tumor.nii.gz", "liver.nii.gz"),
    "mrbraintumor2": Case("brain-mri", "mri", "label.nii.gz", None),
}


def axial_axis(img: nib.Nifti1Image) -> int:
    codes = nib.orientations.aff2axcodes(img.affine)
    return next(i for i, c in enumerate(codes) if c in ("S", "I"))


def half_slices(shape: tuple[int, ...], axis: int, cut: int) -> tuple[tuple[slice, ...], ...]:
    lower = tuple(slice(0, cut) if a == axis else slice(None) for a in range(len(shape)))
    upper = tuple(slice(cut, None) if a == axis else slice(None) for a in range(len(shape)))
    return lower, upper


def save_mirrored_half(src: Path, axis: int, cut: int, lower: bool, dst: Path) -> None:
    """Keeps one half of `src` and fills the other with its mirror image across the cut.

    A bare half is thinner than the network's patch (96^3 voxels of 1.5 x 1.5 x 2 mm for the
    liver), so it would be padded with a flat slab the model never meets on a whole scan, and
    fine-tuning would learn that slab. The mirror keeps the scan's own grid and local anatomy
    and uses nothing of the held-out half.
    """
    img = load_nifti(src)
    data = np.asarray(img.dataobj)
    keep = half_slices(data.shape, axis, cut)[0 if lower else 1]
    pad = [(0, 0)] * data.ndim
    pad[axis] = (0, data.shape[axis] - cut) if lower else (cut, 0)
    mirrored = np.pad(data[keep], pad, mode="symmetric")
    nib.save(nib.Nifti1Image(mirrored, img.affine, img.header), dst)


def scores(
    pred: npt.NDArray[Any], truth: npt.NDArray[Any], region: npt.NDArray[np.bool_], spacing: Any
) -> dict[str, Any]:
    m = layerseg.evaluate(pred, truth, spacing=spacing, organ_mask=region.astype(np.uint8))
    return {
        "dice": m["dice"],
        "hd95_mm": m["hd95_mm"],
        "lesions_found": m["lesions_detected"],
        "lesions": m["lesions"],
    }


def run_fold(
    name: str, case: Case, fold: int, args: argparse.Namespace, out: Path
) -> dict[str, dict[str, Any]]:
    folder = samples.sample_dir(name)
    image_path, truth_path = folder / "image.nii.gz", folder / case.truth
    img = load_nifti(image_path)
    truth = np.asarray(load_nifti(truth_path).dataobj) > 0
    data = np.asarray(img.dataobj, dtype=np.float32)
    organ = (
        np.asarray(load_nifti(folder / case.organ).dataobj) > 0
        if case.organ
        else np.ones(truth.shape, bool)
    )
    baseline_region = organ if case.organ else default_region(data)
    axis = axial_axis(img)
    cut = int(np.median(np.nonzero(truth)[axis]))
    lower, upper = half_slices(truth.shape, axis, cut)
    test = upper if fold == 0 else lower

    fold_dir = out / f"fold-{fold}"
    data_dir = fold_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    entry = {"image": "image.nii.gz", "label": "label.nii.gz"}
    sources = {"image": image_path, "label": truth_path}
    if case.organ:
        sources["organ"] = folder / case.organ
        entry["organ"] = "organ.nii.gz"
    for key, src in sources.items():
        save_mirrored_half(src, axis, cut, fold == 0, data_dir / f"{key}.nii.gz")
    datalist = data_dir / "datalist.json"
    datalist.write_text(json.dumps({"training": [entry]}, indent=2))

    started = time.monotonic()
    if args.rescore:
        report = json.loads((fold_dir / "run" / "finetune.json").read_text())
        finetune_s = None
    else:
        report = layerseg.finetune(
            datalist,
            fold_dir / "run",
            profile=case.profile,
            steps=args.steps,
            lr=args.lr,
            validate_every=args.validate_every,
            patience=0,
            seed=fold,
            device=args.device,
            progress=lambda what, done, total: print(
                f"\r{what} {done}/{total}", end="", flush=True
            ),
        )
        print()
        finetune_s = round(time.monotonic() - started, 1)
    tuned = Path(report["folds"][0]["model"])

    region = np.zeros(truth.shape, bool)
    region[test] = True
    region &= organ
    spacing = tuple(float(v) for v in img.header.get_zooms()[:3])
    # Without an organ mask of its own, a case is segmented as a user would: the defaults
    # ("auto": brain extraction for the brain profile).
    organ_arg = folder / case.organ if case.organ else "auto"
    preds = {
        "zero-shot": layerseg.segment(
            image_path, profile=case.profile, organ_mask=organ_arg, device=args.device
        )["mask"],
        "few-shot": layerseg.segment(
            image_path, model=tuned, profile=case.profile, organ_mask=organ_arg, device=args.device
        )["mask"],
    }
    voxel_mm3 = float(np.prod(spacing))
    preds["baseline"] = baseline_mask(data, baseline_region, case.modality, voxel_mm3)
    result = {method: scores(p, truth, region, spacing) for method, p in preds.items()}
    result["few-shot"]["finetune_s"] = finetune_s
    result["few-shot"]["steps"] = report["folds"][0]["steps"]
    result["few-shot"]["best_step"] = report["folds"][0]["best_step"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--steps", type=int, default=40, help="fine-tuning steps per fold")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--validate-every", type=int, default=10)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--rescore", action="store_true", help="score the models a run left in --out again"
    )
    args = parser.parse_args(argv)
    case = CASES[args.case]
    args.out.mkdir(parents=True, exist_ok=True)
    results = {f"fold-{k}": run_fold(args.case, case, k, args, args.out) for k in args.folds}
    methods = ["zero-shot", "few-shot", "baseline"]
    mean = {m: float(np.mean([r[m]["dice"] for r in results.values()])) for m in methods}
    print(f"{'fold':8} {'method':10} {'dice':>7} {'hd95_mm':>8} {'lesions':>8}")
    for fold, r in results.items():
        for m in methods:
            s = r[m]
            hd = "-" if s["hd95_mm"] is None else f"{s['hd95_mm']:.1f}"
            found = f"{s['lesions_found']}/{s['lesions']}"
            print(f"{fold:8} {m:10} {s['dice']:7.4f} {hd:>8} {found:>8}")
    for m in methods:
        print(f"{'mean':8} {m:10} {mean[m]:7.4f}")
    summary = {"case": args.case, "steps": args.steps, "folds": results, "mean_dice": mean}
    (args.out / "fewshot.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
