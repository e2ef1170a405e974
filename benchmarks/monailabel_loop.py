"""The MONAI Label loop, measured: LayerSeg's app behind a real `monailabel start_server`,
driven by MONAI Label's client as Slicer drives it, on benchmarks/fewshot.py's half split.

For each case (LiTS-117, MRBrainTumor2; the registries hold one labelled scan of each) the
studies are the whole scan and its training half (the inferior half, mirrored across the cut,
as fewshot.py trains). Rounds: infer the whole scan zero-shot; submit the training half's
truth as a final label; train; infer again. Each round's Dice is scored on the superior half
only (inside the liver for LiTS-117). A second label would need a second labelled scan of the
same organ, which the registries do not hold.

Runs with MONAI Label's own environment (`make monailabel-env`):

    .venv-monailabel/bin/python benchmarks/monailabel_loop.py --case lits117 --steps 40 \
        --out runs/monailabel-lits117
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
ML_VENV = REPO / ".venv-monailabel"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot import CASES, axial_axis, half_slices, save_mirrored_half  # noqa: E402
from layerseg.samples import default_cache  # noqa: E402

SAMPLES = default_cache()
MODEL = {"lits117": "liver-ct", "mrbraintumor2": "brain-mri"}


def load(path: Path | str) -> Any:
    """nibabel's image (typed loosely: nibabel's stubs lack the NIfTI attributes)."""
    return nib.load(path)


@dataclass
class Studies:
    folder: Path
    scan: str
    train: str
    label: Path
    truth: npt.NDArray[np.bool_]
    held_out: npt.NDArray[np.bool_]


def make_studies(name: str, root: Path) -> Studies:
    """STUDIES/<name> (whole scan) and STUDIES/<name>_train (the inferior half, mirrored), with
    liver masks in STUDIES/organs/; the training half's 0/1 truth is written outside STUDIES."""
    case = CASES[name]
    src = SAMPLES / name
    studies = root / "studies"
    (studies / "organs").mkdir(parents=True, exist_ok=True)
    img = load(src / "image.nii.gz")
    truth = np.asarray(load(src / case.truth).dataobj) > 0
    axis = axial_axis(img)
    cut = int(np.median(np.nonzero(truth)[axis]))
    train = f"{name}_train"
    nib.save(img, studies / f"{name}.nii.gz")
    save_mirrored_half(src / "image.nii.gz", axis, cut, True, studies / f"{train}.nii.gz")
    region = np.ones(truth.shape, bool)
    if case.organ:
        organ = load(src / case.organ)
        nib.save(organ, studies / "organs" / f"{name}.nii.gz")
        save_mirrored_half(
            src / case.organ, axis, cut, True, studies / "organs" / f"{train}.nii.gz"
        )
        region = np.asarray(organ.dataobj) > 0
    label = root / f"{train}_label.nii.gz"
    save_mirrored_half(src / case.truth, axis, cut, True, label)
    lab = load(label)
    binary = (np.asarray(lab.dataobj) > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(binary, lab.affine, lab.header), label)
    held_out = np.zeros(truth.shape, bool)
    held_out[half_slices(truth.shape, axis, cut)[1]] = True
    return Studies(studies, name, train, label, truth, held_out & region)


def client_class() -> Any:
    # The client is plain Python (stdlib + requests): from our .venv it is imported out of
    # MONAI Label's venv, after everything of ours, so our numpy stays in front.
    try:
        from monailabel.client import MONAILabelClient
    except ImportError:
        site = next((ML_VENV / "lib").glob("python3*/site-packages"), None)
        if site is None:
            raise SystemExit(f"{ML_VENV} is missing: run `make monailabel-env`") from None
        sys.path.append(str(site))
        from monailabel.client import MONAILabelClient
    return MONAILabelClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(
    studies: Path, model_dir: Path, log: Path, device: str = "cpu", layerseg_bin: Path | None = None
) -> Iterator[tuple[Any, subprocess.Popen[bytes]]]:
    """`monailabel start_server` on a free localhost port, and a client once it answers."""
    port = free_port()
    # the `monailabel` script runs `python -m monailabel.main` with the first python on PATH
    env = dict(os.environ, VIRTUAL_ENV=str(ML_VENV))
    if layerseg_bin is not None:
        env["LAYERSEG_BIN"] = str(layerseg_bin)
    env["PATH"] = f"{ML_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(ML_VENV / "bin" / "monailabel"),
                "start_server",
                "--app",
                str(REPO / "monailabel_app"),
                "--studies",
                str(studies),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--conf",
                "model_dir",
                str(model_dir),
                "--conf",
                "device",
                device,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    # The client saves a result under the server's file name in its tmpdir; on one machine,
    # /tmp for both, the server's clean-up of that file races the client's copy.
    tmpdir = log.parent / "client"
    tmpdir.mkdir(exist_ok=True)
    client = client_class()(f"http://127.0.0.1:{port}", tmpdir=str(tmpdir))
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                client.info()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
                time.sleep(1)
        yield client, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, as a user stops the server; its exit status."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=60)


def dice(pred: npt.NDArray[Any], studies: Studies) -> float:
    p, t = pred[studies.held_out] > 0, studies.truth[studies.held_out]
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * float((p & t).sum()) / total


def infer_dice(client: Any, model: str, studies: Studies) -> tuple[float, dict[str, Any]]:
    path, params = client.infer(model, studies.scan, {})
    return dice(np.asarray(load(path).dataobj), studies), params


def train(client: Any, model: str, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Starts training and waits for it; the task's stats (from the app's info)."""
    client.train_start(model, params)
    deadline = time.monotonic() + timeout_s
    while (status := client.train_status())["status"] in ("SUBMITTED", "RUNNING"):
        if time.monotonic() > deadline:
            client.train_stop()
            raise RuntimeError(f"training {model} ran past {timeout_s} s")
        time.sleep(2)
    if status.get("status") != "DONE":
        raise RuntimeError(f"training {model} failed: {status}")
    return dict(client.info()["train_stats"][model])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(MODEL), required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=0, help="0: the profile's")
    parser.add_argument("--validate-every", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = MODEL[args.case]
    studies = make_studies(args.case, args.out)
    rounds: list[dict[str, Any]] = []
    with server(studies.folder, args.out / "model", args.out / "server.log", args.device) as (
        client,
        proc,
    ):
        started = time.monotonic()
        d, params = infer_dice(client, model, studies)
        rounds.append({"round": "zero-shot", "dice": d, "infer_s": time.monotonic() - started,
                       "recomposition_l1": params["recomposition_l1"]})  # fmt: skip
        client.save_label(studies.train, str(studies.label), tag="final")
        options = {"steps": args.steps, "lr": args.lr, "batch": args.batch,
                   "validate_every": args.validate_every, "device": args.device}  # fmt: skip
        stats = train(client, model, options, timeout_s=4 * 3600)
        started = time.monotonic()
        d, params = infer_dice(client, model, studies)
        rounds.append({"round": "after 1 label", "dice": d, "infer_s": time.monotonic() - started,
                       "recomposition_l1": params["recomposition_l1"], "train": stats})  # fmt: skip
        nxt = client.next_sample("layerseg", {})
        exit_status = stop(proc)
    summary = {
        "case": args.case,
        "options": options,
        "rounds": rounds,
        "next_sample": nxt,
        "server_exit_status": exit_status,
    }
    (args.out / "loop.json").write_text(json.dumps(summary, indent=2))
    print(f"{'case':14} {'round':14} {'dice':>7} {'recomp L1':>10}")
    for r in rounds:
        print(f"{args.case:14} {r['round']:14} {r['dice']:7.4f} {r['recomposition_l1']:10.4f}")
    print(f"training: {stats['steps']} steps, best step {stats['best_step']}, {stats['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
