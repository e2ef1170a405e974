"""``python -m layerseg.monai export WEIGHTS.safetensors OUT/model.pt [--card CARD.json]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from layerseg.monai.weights import export_bundle_model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m layerseg.monai export WEIGHTS.safetensors OUT/model.pt [--card CARD.json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m layerseg.monai", description="MONAI helpers for LayerSeg models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export", help="LayerSeg .safetensors + model card -> a MONAI bundle's models/model.pt"
    )
    export.add_argument("weights", type=Path, help="LayerSeg weights, NAME.safetensors")
    export.add_argument("out", type=Path, help="where to write model.pt")
    export.add_argument("--card", type=Path, help="the model card (default: NAME.json beside)")
    args = parser.parse_args(argv)
    card = args.card if args.card is not None else args.weights.with_suffix(".json")
    try:
        out = export_bundle_model(args.weights, card, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
