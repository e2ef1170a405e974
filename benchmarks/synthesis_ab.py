"""Tumour synthesis, this tree's extension against an earlier build of it, interleaved.

On a shared machine the time per sample drifts by 10 % or more between runs, more than most
single changes to synthesis save, so two runs one after the other cannot tell them apart. This
loads both builds of ``layerseg._layerseg`` into one process and times them case by case, in
alternating order, on the same seeds as ``bench_synthesis.py``'s 128^3 brain sample; each seed's
time is the fastest of ``--passes``. It also checks that both give the same bytes::

    cp rust/python/python/layerseg/_layerseg.abi3.so /tmp/base.so   # before the change
    ...  # change, then make python
    python benchmarks/synthesis_ab.py /tmp/base.so [--seeds 20] [--passes 4]

Run it with ``RAYON_NUM_THREADS`` as the comparison needs (the benchmark uses 2).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def load_base(so: Path, folder: Path) -> ModuleType:
    """The earlier build as module ``layerseg_base._layerseg`` (its init function keeps its
    name, so only the package differs)."""
    package = folder / "layerseg_base"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(so, package / "_layerseg.abi3.so")
    sys.path.insert(0, str(folder))
    return importlib.import_module("layerseg_base._layerseg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="an earlier build's _layerseg.abi3.so")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    import numpy as np

    sys.path.insert(0, str(HERE))
    from bench_synthesis import prepare
    from layerseg import _layerseg as new

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        prepare(data)
        healthy = np.load(data / "healthy.npy")
        texture = np.load(data / "texture.npy")
        base = load_base(args.base, data)
        builds = {"base": base, "new": new}

        def case(name: str, seed: int) -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            out = builds[name].synthesize(
                healthy, np.eye(4), "brain-mri", texture=texture, seed=seed
            )
            return time.perf_counter() - start, out

        for name in builds:
            case(name, 0)
        best = {name: [float("inf")] * args.seeds for name in builds}
        differ: list[str] = []
        for p in range(args.passes):
            for i in range(args.seeds):
                order = ["base", "new"] if (i + p) % 2 == 0 else ["new", "base"]
                outs = {}
                for name in order:
                    seconds, outs[name] = case(name, i + 1)
                    best[name][i] = min(best[name][i], seconds)
                if p == 0:
                    differ += [
                        f"seed {i + 1}: {key}"
                        for key in ("image", "healthy", "tumour", "mask", "params")
                        if not np.array_equal(
                            np.asarray(outs["base"][key]), np.asarray(outs["new"][key])
                        )
                    ]
    base_ms, new_ms = (sum(best[n]) / args.seeds * 1e3 for n in ("base", "new"))
    print(
        f"base {base_ms:.2f} ms, new {new_ms:.2f} ms per 128^3 case "
        f"(fastest of {args.passes} passes, {args.seeds} seeds): the new build takes "
        f"{(1 - new_ms / base_ms) * 100:.1f} % less time"
    )
    print("outputs: " + ("the same bytes" if not differ else "differ: " + ", ".join(differ)))


if __name__ == "__main__":
    main()
