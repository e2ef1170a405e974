"""Whether to ship a model trained in a GPU window: the dev rows, before and after.

For each profile given, segments its dev cases with `layerseg segment` (default settings), once
with the shipped model and once with the candidate, scores both with `layerseg evaluate` and
prints a Markdown table. The rows are the ones issue 17 names:
- brain-mri: MRBrainTumor2, and MRBrainTumor2 re-sliced to 6.5 mm axial slices
  (benchmarks/thick_slices.py, its label alike)
- liver-ct: LiTS-117

The rule was fixed before any window ran: a candidate ships only if its Dice is at least the
shipped model's on every row of its profile and higher on one. `--ship` then copies it (weights
and card) over `models/PROFILE.*`; for brain-mri it also re-exports the MONAI bundle's weights
and puts their new sha256 into `monai_bundle/large_files.yml`.

    python benchmarks/compare_models.py --brain runs/window/brain/model.safetensors \\
        --liver runs/window/liver/model.safetensors [--ship]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from layerseg import samples

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "target" / "release" / "layerseg"


@dataclass(frozen=True)
class Row:
    name: str
    image: Path
    truth: Path
    organ: Path | None = None


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr.strip()}")


def brain_rows(work: Path) -> list[Row]:
    case = samples.fetch(["mrbraintumor2"])["mrbraintumor2"]
    thick, thick_label = work / "thick.nii.gz", work / "thick_label.nii.gz"
    run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "thick_slices.py"),
            str(case / "image.nii.gz"),
            str(thick),
            "--labels",
            str(case / "label.nii.gz"),
            str(thick_label),
        ]
    )
    return [
        Row("MRBrainTumor2", case / "image.nii.gz", case / "label.nii.gz"),
        Row("MRBrainTumor2, 6.5 mm axial", thick, thick_label),
    ]


def liver_rows(work: Path) -> list[Row]:
    case = samples.fetch(["lits117"])["lits117"]
    return [Row("LiTS-117", case / "image.nii.gz", case / "tumor.nii.gz", case / "liver.nii.gz")]


def dice(layerseg: Path, model: Path, profile: str, row: Row, work: Path) -> float:
    """Dice of `layerseg segment` with `model` on `row`, at the default settings."""
    mask, report = work / "mask.nii.gz", work / "report.json"
    organ = ["--organ-mask", str(row.organ)] if row.organ else []
    segment = [str(layerseg), "segment", str(row.image), "--out", str(mask), *organ]
    run([*segment, "--model", str(model), "--profile", profile])
    evaluate = [str(layerseg), "evaluate", "--pred", str(mask), "--truth", str(row.truth)]
    run([*evaluate, *organ, "--json", str(report)])
    return float(json.loads(report.read_text())["cases"][0]["metrics"]["dice"])


def better(before: list[float], after: list[float]) -> bool:
    """The shipping rule: no row worse, one row better."""
    return all(a >= b for a, b in zip(after, before, strict=True)) and any(
        a > b for a, b in zip(after, before, strict=True)
    )


def ship(candidate: Path, profile: str) -> None:
    target = REPO / "models" / f"{profile}.safetensors"
    shutil.copyfile(candidate, target)
    shutil.copyfile(candidate.with_suffix(".json"), target.with_suffix(".json"))
    if profile != "brain-mri":
        return
    weights = REPO / "monai_bundle" / "models" / "model.pt"
    export = [sys.executable, "-m", "layerseg.monai", "export", str(target), str(weights)]
    run(export)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    listing = REPO / "monai_bundle" / "large_files.yml"
    text = re.sub(r'hash_val: "[0-9a-f]{64}"', f'hash_val: "{digest}"', listing.read_text())
    listing.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brain", type=Path, help="a candidate brain-mri model (.safetensors)")
    parser.add_argument("--liver", type=Path, help="a candidate liver-ct model (.safetensors)")
    parser.add_argument("--ship", action="store_true", help="ship each candidate that wins")
    parser.add_argument("--layerseg", type=Path, default=BIN, help="the layerseg binary")
    args = parser.parse_args(argv)
    candidates = [
        (profile, path, rows)
        for profile, path, rows in (
            ("brain-mri", args.brain, brain_rows),
            ("liver-ct", args.liver, liver_rows),
        )
        if path is not None
    ]
    if not candidates:
        parser.error("give --brain, --liver or both")
    for _, path, _ in candidates:
        if not path.is_file() or not path.with_suffix(".json").is_file():
            parser.error(f"{path}: needs the model file and its card {path.with_suffix('.json')}")

    print("| profile | row | shipped | candidate |\n|---|---|---|---|")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for profile, path, make_rows in candidates:
            shipped = REPO / "models" / f"{profile}.safetensors"
            before, after = [], []
            for row in make_rows(work):
                before.append(dice(args.layerseg, shipped, profile, row, work))
                after.append(dice(args.layerseg, path, profile, row, work))
                print(f"| {profile} | {row.name} | {before[-1]:.4f} | {after[-1]:.4f} |")
            verdicts.append((profile, path, better(before, after)))
    for profile, path, wins in verdicts:
        if not wins:
            print(f"{profile}: keep the shipped model ({path} is not better on every row)")
        elif args.ship:
            ship(path, profile)
            print(f"{profile}: shipped {path} as models/{profile}.safetensors")
        else:
            print(f"{profile}: {path} wins; --ship to ship it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
