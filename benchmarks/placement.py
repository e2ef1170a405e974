"""Does the shipped brain model find tumours where its training never put them? Synthetic
tumours at the midline against the paper's placement, on healthy heads, where the truth is known.

The brain profile places every synthetic tumour as the paper does (method.md: left-right
centre in 0.24-0.44 or 0.56-0.76 of the brain's box, "out of the midline, in one hemisphere").
Real tumours are also falcine and parasagittal (meningiomas, as in 3D Slicer's MRBrainTumor1)
or anywhere (metastases). This script draws the same cases twice, with the same seed, once with
the profile's placement and once with the left-right centre in 0.44-0.56 (the band the paper
leaves out), and scores the shipped model on both; nothing is chosen on it.

Hosts as `choose_layer_rule.py`: Colin27, MNI152, ITK T1, SRI24 with their reference brain
masks, and MRHead with its extracted brain; the profile's own sizes, no acquisition
randomisation (the placement alone differs).

    python benchmarks/placement.py --seeds 3 [--json runs/placement.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import layerseg
from layerseg.samples import sample_dir

HOSTS: list[tuple[str, str | None]] = [
    ("colin27", "brain.nii.gz"),
    ("mni152", "brain.nii.gz"),
    ("itk_t1", "brain.nii.gz"),
    ("sri24", "brain.nii.gz"),
    ("mrhead", None),
]
PLACEMENTS: dict[str, list[dict[str, float]] | None] = {
    "paper": None,  # the profile's own
    "midline": [{"min": 0.44, "max": 0.56}],
}


def placement_profile(placement: str, folder: Path) -> str:
    profile: dict[str, Any] = json.loads(layerseg.profile_json("brain-mri"))
    profile["synthesis"].pop("acquisition", None)
    x = PLACEMENTS[placement]
    if x is not None:
        profile["synthesis"]["placement"]["x"] = x
    path = folder / f"brain-mri-{placement}.json"
    path.write_text(json.dumps(profile))
    return str(path)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="synthetic cases per host")
    parser.add_argument("--json", type=Path, help="also write every case's scores here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    profiles = {name: placement_profile(name, folder) for name in PLACEMENTS}
    rows: list[dict[str, Any]] = []
    for host, mask_file in HOSTS:
        scan = sample_dir(host)
        image, affine = layerseg.read_image(scan / "image.nii.gz")
        if mask_file is None:
            brain = layerseg.extract_brain(image, affine, device="cpu")["mask"]
        else:
            brain = layerseg.read_labels(scan / mask_file)[0]
        voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000
        for seed in range(args.seeds):
            for placement, profile in profiles.items():
                start = time.perf_counter()
                case = layerseg.synthesize(image, affine, profile, organ_mask=brain, seed=seed)
                truth = case["mask"] > 0
                scores = {}
                for rule, raw_mask in (("raw", True), ("defaults", False)):
                    seg = layerseg.segment(
                        case["image"], affine, organ_mask=brain, raw_mask=raw_mask, device="cpu"
                    )
                    scores[rule] = dice(seg["mask"] > 0, truth)
                rows.append(
                    {
                        "host": host,
                        "seed": seed,
                        "placement": placement,
                        "tumour_ml": float(truth.sum()) * voxel_ml,
                        **scores,
                    }
                )
                print(
                    f"{host} seed {seed} {placement:8s}: {rows[-1]['tumour_ml']:6.1f} mL, "
                    f"Dice raw {scores['raw']:.3f}, defaults {scores['defaults']:.3f} "
                    f"[{time.perf_counter() - start:.0f} s]",
                    flush=True,
                )
    print("\nplacement  cases  mean Dice (raw mask)  mean Dice (defaults)  cases under 0.1 (raw)")
    for placement in PLACEMENTS:
        mine = [r for r in rows if r["placement"] == placement]
        raw = [r["raw"] for r in mine]
        print(
            f"{placement:9s} {len(mine):6d}  {np.mean(raw):20.3f}  "
            f"{np.mean([r['defaults'] for r in mine]):20.3f}  {sum(v < 0.1 for v in raw):21d}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
