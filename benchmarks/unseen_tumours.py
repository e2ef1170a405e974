"""Does the shipped brain model find tumours unlike those it trained on? Synthetic tumours
that differ from the profile's in one factor, scored beside the profile's own, on healthy heads
where the truth is known. Nothing is chosen on it: it tells what to change in the next training.

Factors (`--factor`):
- `placement`: the profile places every tumour as the paper does (method.md: left-right centre
  in 0.24-0.44 or 0.56-0.76 of the brain's box, "out of the midline, in one hemisphere"); the
  variant puts the centre in 0.44-0.56, where falcine and parasagittal meningiomas lie (3D
  Slicer's MRBrainTumor1).
- `texture`: the profile's texture is another scan's anatomy, deformed and blurred by 0-2 mm;
  the variant blurs it by 8 mm, so the tumour is nearly flat, as a homogeneously enhancing
  meningioma is.

Each case is drawn twice with the same seed, as the profile and as the variant. Hosts are
`choose_layer_rule.py`'s: Colin27, MNI152, ITK T1, SRI24 with their reference brain masks, and
MRHead with its extracted brain; the profile's own sizes and intensities, no acquisition
randomisation.

    python benchmarks/unseen_tumours.py --factor placement --seeds 3 [--json runs/unseen.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import layerseg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choose_layer_rule import HOSTS, dice, flat_texture, host_scan

# Per factor: the variant's change to the profile's synthesis section.
VARIANTS: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "placement": ("midline", lambda s: s["placement"].update(x=[{"min": 0.44, "max": 0.56}])),
    "texture": ("flat", flat_texture),
}


def synthesis_profile(variant: Callable[[dict[str, Any]], None] | None, path: Path) -> str:
    """The brain profile without acquisition randomisation, changed by `variant`, at `path`."""
    profile: dict[str, Any] = json.loads(layerseg.profile_json("brain-mri"))
    profile["synthesis"].pop("acquisition", None)
    if variant is not None:
        variant(profile["synthesis"])
    path.write_text(json.dumps(profile))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--seeds", type=int, default=3, help="synthetic cases per host")
    parser.add_argument("--json", type=Path, help="also write every case's scores here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    name, change = VARIANTS[args.factor]
    profiles = {
        "profile": synthesis_profile(None, folder / "profile.json"),
        name: synthesis_profile(change, folder / f"{name}.json"),
    }
    rows: list[dict[str, Any]] = []
    for host, mask_file in HOSTS["brain-mri"]:
        image, affine, brain = host_scan(host, mask_file)
        voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000
        for seed in range(args.seeds):
            for arm, profile in profiles.items():
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
                        "arm": arm,
                        "tumour_ml": float(truth.sum()) * voxel_ml,
                        **scores,
                    }
                )
                print(
                    f"{host} seed {seed} {arm:8s}: {rows[-1]['tumour_ml']:6.1f} mL, "
                    f"Dice raw {scores['raw']:.3f}, defaults {scores['defaults']:.3f} "
                    f"[{time.perf_counter() - start:.0f} s]",
                    flush=True,
                )
    print("\narm        cases  mean Dice (raw mask)  mean Dice (defaults)  cases under 0.1 (raw)")
    for arm in profiles:
        mine = [r for r in rows if r["arm"] == arm]
        raw = [r["raw"] for r in mine]
        print(
            f"{arm:9s} {len(mine):6d}  {np.mean(raw):20.3f}  "
            f"{np.mean([r['defaults'] for r in mine]):20.3f}  {sum(v < 0.1 for v in raw):21d}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
