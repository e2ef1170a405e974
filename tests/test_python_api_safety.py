"""The Python API on hostile arrays: wrong dtype or dimensionality, non-contiguous memory, NaNs,
bad affines and label maps. Each raises ValueError with a message (or works, for any numeric
dtype and layout), and the interpreter survives. Two threads segmenting at once get the results
each would get alone, and really run at once (the GIL is released while the network runs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

import layerseg

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = HERE / "data" / "tiny-brain.json"


@pytest.fixture(scope="module")
def colin(sample_dirs: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(sample_dirs["colin27"] / "image.nii.gz")
    return np.asarray(img.dataobj, dtype=np.float32)[40:140, 40:170, 30:150], img.affine


def _segment(image: Any, affine: Any, **kw: Any) -> dict[str, np.ndarray]:
    return layerseg.segment(image, affine, model=MODEL, profile=str(PROFILE), device="cpu", **kw)


BAD_IMAGES: list[tuple[str, Callable[[np.ndarray], Any], str]] = [
    ("2D", lambda a: a[0], "3D array"),
    ("4D", lambda a: a[None], "3D array"),
    ("0D", lambda a: np.float32(1.0), "3D array"),
    ("empty", lambda a: a[:0], "empty"),
    ("complex", lambda a: a.astype(np.complex64), "numbers"),
    ("object", lambda a: a[:4].astype(object), "numbers"),
    ("strings", lambda a: a[:4].astype(str), "numbers"),
    ("NaN", lambda a: np.where(a > 50, np.nan, a), "NaN"),
    ("+inf", lambda a: np.where(a > 50, np.inf, a), "NaN or infinite"),
    ("-inf float64", lambda a: np.where(a > 50, -np.inf, a).astype(np.float64), "infinite"),
]


@pytest.mark.parametrize(("what", "make", "message"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_images_raise_value_error(
    colin: tuple[np.ndarray, np.ndarray], what: str, make: Callable[..., Any], message: str
) -> None:
    data, affine = colin
    bad = make(data)
    with pytest.raises(ValueError, match=message):
        _segment(bad, affine)
    if np.ndim(bad) == 3:
        with pytest.raises(ValueError, match=message):
            layerseg.synthesize(bad, affine)
        with pytest.raises(ValueError, match=message):
            layerseg.write_image("/nonexistent/never-written.nii", bad, affine)


BAD_AFFINES: list[tuple[str, Any, str]] = [
    ("3x3", np.eye(3), "4x4"),
    ("batched", np.eye(4)[None], "4x4"),
    ("NaN", np.full((4, 4), np.nan), "NaN"),
    ("singular", np.zeros((4, 4)), "singular"),
    ("text", "not an affine", "4x4 array of numbers"),
    ("ragged", [[1, 0], [0, 1, 0]], "4x4 array of numbers"),
]


@pytest.mark.parametrize(
    ("what", "affine", "message"), BAD_AFFINES, ids=[b[0] for b in BAD_AFFINES]
)
def test_bad_affines_raise_value_error(
    colin: tuple[np.ndarray, np.ndarray], what: str, affine: Any, message: str
) -> None:
    data, _ = colin
    with pytest.raises(ValueError, match=message):
        _segment(data, affine)
    with pytest.raises(ValueError, match=message):
        layerseg.synthesize(data, affine)
    with pytest.raises(ValueError, match=message):
        layerseg.write_labels("/nonexistent/never-written.nii", data > 100, affine)


@pytest.mark.parametrize(
    ("what", "mask", "message"),
    [
        ("fractions", lambda s: np.full(s, 0.5), "not a label map: value 0.5"),
        ("negative", lambda s: -np.ones(s, np.int16), "not a label map: value -1"),
        ("too large", lambda s: np.full(s, 300, np.int32), "not a label map: value 300"),
        ("NaN", lambda s: np.full(s, np.nan), "NaN"),
        ("other grid", lambda s: np.ones((5, 5, 5), np.uint8), "another grid"),
    ],
)
def test_bad_organ_masks_raise_value_error(
    colin: tuple[np.ndarray, np.ndarray], what: str, mask: Callable[..., Any], message: str
) -> None:
    data, affine = colin
    with pytest.raises(ValueError, match=message):
        _segment(data, affine, organ_mask=mask(data.shape))


def test_any_numeric_dtype_and_layout_gives_the_same_result(
    colin: tuple[np.ndarray, np.ndarray],
) -> None:
    data, affine = colin
    reference = _segment(data, affine)
    fortran = np.asfortranarray(data)
    strided = np.zeros((data.shape[0], data.shape[1], 2 * data.shape[2]), np.float32)[..., ::2]
    strided[...] = data
    assert not strided.flags.c_contiguous and not fortran.flags.c_contiguous
    for variant in (fortran, strided, data.astype(np.float64), data.astype(np.int16)):
        out = _segment(variant, affine.tolist())
        np.testing.assert_array_equal(out["mask"], reference["mask"])
        np.testing.assert_allclose(out["probability"], reference["probability"], atol=1e-6)
    # Reversed axes are a different image; it must still run, on that grid.
    flipped = _segment(data[::-1, :, ::-1], affine)
    assert flipped["mask"].shape == data.shape


def test_write_helpers_accept_any_numeric_layout(
    colin: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    data, affine = colin
    layerseg.write_image(tmp_path / "i.nii.gz", data[::2, ::-1].astype(np.float64), affine)
    back, _ = layerseg.read_image(tmp_path / "i.nii.gz")
    np.testing.assert_array_equal(back, data[::2, ::-1])
    labels = (data > 100).astype(np.int64)
    layerseg.write_labels(tmp_path / "l.nii.gz", np.asfortranarray(labels), affine)
    np.testing.assert_array_equal(layerseg.read_labels(tmp_path / "l.nii.gz")[0], labels)


def test_two_threads_segment_at_once(
    colin: tuple[np.ndarray, np.ndarray], sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Both threads get their own correct result, and their windows interleave: while one is
    inside the network, the other runs Python (its progress callback), so the GIL is free."""
    profile = json.loads(PROFILE.read_text())
    profile["inference"]["patch_size"] = [32, 32, 32]  # several windows per scan
    profile_path = tmp_path / "windows.json"
    profile_path.write_text(json.dumps(profile))
    other = nib.load(sample_dirs["mrhead"] / "image.nii.gz")
    scans = {"colin": colin, "mrhead": (np.asarray(other.dataobj, np.float32), other.affine)}

    def run(name: str, progress: Any = None) -> dict[str, np.ndarray]:
        image, affine = scans[name]
        return layerseg.segment(
            image,
            affine,
            model=MODEL,
            profile=str(profile_path),
            device="cpu",
            progress=progress,
        )

    alone = {name: run(name) for name in scans}
    # A pure-Python thread keeps ticking while the network runs: the call does not hold the GIL.
    ticks = [0]
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    before = ticks[0]
    again = run("mrhead")
    during = ticks[0] - before
    stop.set()
    ticker.join()
    assert during >= 10, during
    np.testing.assert_array_equal(again["mask"], alone["mrhead"]["mask"])

    events: list[str] = []
    results: dict[str, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            start.wait()
            results[name] = run(name, lambda what, done, total: events.append(name))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(name,)) for name in scans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name in scans:
        np.testing.assert_array_equal(results[name]["mask"], alone[name]["mask"])
        np.testing.assert_allclose(
            results[name]["probability"], alone[name]["probability"], atol=1e-6
        )
    # Interleaved: some progress of each thread happened between progress calls of the other.
    first_done = min(max(i for i, e in enumerate(events) if e == name) for name in scans)
    assert len(set(events[: first_done + 1])) == 2, events


FORKED_DATALOADER = """
import sys
import numpy as np
import torch
from monai.data import DataLoader, Dataset
import layerseg

image = np.zeros((48, 48, 48), np.float32)
image[8:40, 8:40, 8:40] = 100.0
image += np.random.default_rng(0).normal(0, 5, image.shape).astype(np.float32)
organ = (image > 50).astype(np.uint8)
affine = np.eye(4)

def synth(seed):
    out = layerseg.synthesize(image, affine, organ_mask=organ, seed=int(seed))
    return float(out["mask"].sum())

parent = synth(0)  # a parallel Rust call in the parent, before the fork
loader = DataLoader(
    Dataset(list(range(4)), transform=synth),
    batch_size=1,
    num_workers=2,
    multiprocessing_context="fork",
)
children = [float(batch[0]) for batch in loader]
assert children[0] == parent, (children, parent)
print("forked workers returned", children)
"""


def test_forked_dataloader_workers_do_not_hang_after_a_parallel_call(tmp_path: Path) -> None:
    """Issue 21: fork-started DataLoader workers inherited rayon's pool without its threads and
    waited for them forever. They must finish, with the same numbers as the parent."""
    script = tmp_path / "forked.py"
    script.write_text(FORKED_DATALOADER)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "forked workers returned" in result.stdout
