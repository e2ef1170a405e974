"""Tumour synthesis, LayerSeg (Rust) against a NumPy/SciPy version of the same recipe.

One 128^3 training sample with the paper's brain recipe: a healthy brain (Colin27, skull-stripped
with its brain mask, cropped to the brain and resized to 128^3 as the paper does) and a texture
scan (MRBrainTumor2, cropped to its non-zero box and resized to 128^3). Both sides run in their
own child process, one after the other, so each one's peak memory is its own::

    python benchmarks/bench_synthesis.py [--samples 20] [--threads 2]

Printed: time per sample (median) and CPU time per sample, the ratio, start-up (imports, the
first sample, and the `layerseg synthesize` process for one case), and each process's peak
resident memory, also right after its imports (for LayerSeg that is mostly torch, which the
package imports to provide libtorch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent


def prepare(out: Path) -> None:
    """Write healthy.npy and texture.npy (128^3 float32) from the sample scans."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    from layerseg.samples import sample_dir

    def crop_resize(data: Any, keep: Any) -> Any:
        idx = np.argwhere(keep)
        lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
        box = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        zoom = [128 / s for s in box.shape]
        return ndimage.zoom(box, zoom, order=1).astype(np.float32)

    colin = sample_dir("colin27")
    image = np.asarray(
        cast(nib.Nifti1Image, nib.load(str(colin / "image.nii.gz"))).dataobj, dtype=np.float32
    )
    brain = np.asarray(cast(nib.Nifti1Image, nib.load(str(colin / "brain.nii.gz"))).dataobj) > 0
    np.save(out / "healthy.npy", crop_resize(np.where(brain, image, 0), brain))
    tumour = sample_dir("mrbraintumor2") / "image.nii.gz"
    tex = np.asarray(cast(nib.Nifti1Image, nib.load(str(tumour))).dataobj, dtype=np.float32)
    np.save(out / "texture.npy", crop_resize(tex, tex != 0))
    for name in ("healthy", "texture"):
        nifti = nib.Nifti1Image(np.load(out / f"{name}.npy"), np.eye(4))
        nib.save(nifti, str(out / f"{name}.nii.gz"))


def cli_seconds(data: Path, threads: int) -> float | None:
    """Wall time of `layerseg synthesize --count 1` on the 128^3 NIfTI files (start-up included)."""
    binary = HERE.parent / "target" / "release" / "layerseg"
    if not binary.exists():
        return None
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [str(binary), "synthesize", "--profile", "brain-mri"]
    cmd += ["--healthy", str(data / "healthy.nii.gz"), "--texture", str(data / "texture.nii.gz")]
    cmd += ["--out", str(data / "cli"), "--count", "1"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def worker(kind: str, data: Path, samples: int) -> None:
    """Run in a child: time imports, the first sample, then `samples` more."""
    t0 = time.perf_counter()
    import numpy as np

    if kind == "layerseg":
        from layerseg._layerseg import synthesize

        def one(i: int) -> Any:
            return synthesize(healthy, np.eye(4), "brain-mri", texture=texture, seed=i)
    else:
        sys.path.insert(0, str(HERE))
        from synthesis_numpy import synthesize as np_synthesize

        def one(i: int) -> Any:
            return np_synthesize(healthy, texture, np.random.default_rng(i))

    imported = time.perf_counter()
    rss_after_import = _status_mb("VmRSS")
    healthy = np.load(data / "healthy.npy")
    texture = np.load(data / "texture.npy")
    loaded = time.perf_counter()
    out = one(0)
    first = time.perf_counter()
    assert out["mask"].shape == (128, 128, 128)
    times = []
    voxels = []
    cpu0 = time.process_time()
    for i in range(1, samples + 1):
        s = time.perf_counter()
        out = one(i)
        times.append(time.perf_counter() - s)
        voxels.append(int(out["mask"].sum()))
    cpu = (time.process_time() - cpu0) / samples
    result = {
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_import_mb": rss_after_import,
        "cpu_per_sample_s": cpu,
        "import_s": imported - t0,
        "first_sample_s": first - loaded,
        "per_sample_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "samples": samples,
        "mean_mask_voxels": statistics.fmean(voxels),
    }
    print(json.dumps(result))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would include the parent's)."""
    return _status_mb("VmHWM")


def run_child(kind: str, data: Path, samples: int, threads: int) -> dict[str, Any]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data)]
    cmd += ["--samples", str(samples)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed with status {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--numpy-samples", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["layerseg", "numpy"])
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.samples)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        prepare(data)
        ours = run_child("layerseg", data, args.samples, args.threads)
        peer = run_child("numpy", data, args.numpy_samples, args.threads)
        cli = cli_seconds(data, args.threads)
    print(
        f"tumour synthesis, one 128^3 brain sample, {os.cpu_count()} CPUs, "
        f"RAYON_NUM_THREADS={args.threads}, load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'':10} {'per sample':>12} {'CPU/sample':>12} {'first':>10} {'imports':>9} "
        f"{'peak RSS':>10} {'after imports':>14}"
    )
    print(header)
    for name, r in (("layerseg", ours), ("numpy", peer)):
        print(
            f"{name:10} {r['per_sample_s'] * 1e3:9.1f} ms {r['cpu_per_sample_s'] * 1e3:9.1f} ms "
            f"{r['first_sample_s'] * 1e3:7.1f} ms {r['import_s']:7.2f} s "
            f"{r['peak_rss_mb']:7.0f} MB {r['rss_after_import_mb']:11.0f} MB"
        )
    if cli is not None:
        print(f"layerseg CLI, whole process for one case (start-up, read, write): {cli:.2f} s")
    ratio = peer["per_sample_s"] / ours["per_sample_s"]
    print(f"ratio (numpy / layerseg per sample): {ratio:.1f}x")
    print(json.dumps({"layerseg": ours, "numpy": peer, "ratio": ratio, "cli_s": cli}))


if __name__ == "__main__":
    main()
