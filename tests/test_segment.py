"""layerseg.segment and layerseg.evaluate from Python on real scans (the tiny golden network)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import layerseg

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = str(HERE / "data" / "tiny-brain.json")


@pytest.mark.parametrize("name", ["mrbraintumor2", "colin27", "mrhead"])
def test_outputs_land_on_the_input_grid(
    sample_dirs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    src = sample_dirs[name] / "image.nii.gz"
    out = tmp_path / "mask.nii.gz"
    calls: list[tuple[str, int, int]] = []
    result = layerseg.segment(
        src,
        model=MODEL,
        profile=PROFILE,
        out=out,
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    ref = nib.load(src)
    for key in ("mask", "probability", "healthy", "tumour"):
        assert result[key].shape == ref.shape, key
    assert result["mask"].dtype == np.uint8
    assert set(np.unique(result["mask"])) <= {0, 1}
    assert np.all((result["probability"] >= 0) & (result["probability"] <= 1))
    written = nib.load(out)
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), result["mask"])
    assert calls and calls[-1][1] == calls[-1][2], calls


def test_array_input_equals_path_input(sample_dirs: dict[str, Path]) -> None:
    src = sample_dirs["colin27"] / "image.nii.gz"
    img = nib.load(src)
    from_path = layerseg.segment(src, model=MODEL, profile=PROFILE)
    from_array = layerseg.segment(np.asarray(img.dataobj), img.affine, model=MODEL, profile=PROFILE)
    np.testing.assert_array_equal(from_path["probability"], from_array["probability"])


def test_cancel_from_the_progress_callback(sample_dirs: dict[str, Path]) -> None:
    def stop(what: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        layerseg.segment(
            sample_dirs["colin27"] / "image.nii.gz", model=MODEL, profile=PROFILE, progress=stop
        )


def test_bad_inputs_raise_value_errors(sample_dirs: dict[str, Path]) -> None:
    img = nib.load(sample_dirs["colin27"] / "image.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float32)
    with pytest.raises(ValueError, match="3D"):
        layerseg.segment(data[..., 0], img.affine, model=MODEL, profile=PROFILE)
    bad = data.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layerseg.segment(bad, img.affine, model=MODEL, profile=PROFILE)
    with pytest.raises(ValueError, match="another grid"):
        layerseg.segment(
            data, img.affine, model=MODEL, profile=PROFILE, organ_mask=np.ones((5, 5, 5), np.uint8)
        )
    # The default-width brain-mri network does not fit the tiny weights.
    with pytest.raises(ValueError, match=r"do not fit|mismatch|shape"):
        layerseg.segment(data, img.affine, model=MODEL, profile="brain-mri")


def test_evaluate_on_paths_and_arrays(sample_dirs: dict[str, Path]) -> None:
    label = sample_dirs["mrbraintumor2"] / "label.nii.gz"
    perfect = layerseg.evaluate(label, label)
    assert perfect["dice"] == 1.0 and perfect["hd95_mm"] == 0.0
    truth = np.asarray(nib.load(label).dataobj)
    empty = layerseg.evaluate(np.zeros_like(truth), truth, spacing=(0.9375, 0.9375, 1.2))
    assert empty["dice"] == 0.0 and empty["hd95_mm"] is None
    assert empty["lesions_missed"] == empty["lesions"] > 0
    both_empty = layerseg.evaluate(np.zeros_like(truth), np.zeros_like(truth), spacing=(1, 1, 1))
    assert both_empty["dice"] == 1.0 and both_empty["hd95_mm"] is None


def _segment_cli(layerseg_bin: Path, *args: object) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(layerseg_bin),
        "segment",
        *map(str, args),
        "--model",
        str(MODEL),
        "--profile",
        PROFILE,
        "--device",
        "cpu",
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_cli_refuses_to_overwrite_its_input(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    scan = tmp_path / "scan.nii.gz"
    shutil.copy(sample_dirs["colin27"] / "image.nii.gz", scan)
    before = hashlib.sha256(scan.read_bytes()).hexdigest()
    proc = _segment_cli(layerseg_bin, scan, "--out", scan)
    assert proc.returncode == 1
    assert "would overwrite the input" in proc.stderr
    assert hashlib.sha256(scan.read_bytes()).hexdigest() == before


def test_cli_batch_reports_a_bad_case_and_does_the_rest(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(sample_dirs["colin27"] / "image.nii.gz", inputs / "colin.nii.gz")
    (inputs / "broken.nii.gz").write_bytes(b"not a scan")
    out = tmp_path / "out"
    proc = _segment_cli(layerseg_bin, inputs, "--out", out, "--overlay", tmp_path / "png")
    assert proc.returncode == 1
    assert "broken.nii.gz" in proc.stderr and "1 of 2 scans failed" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["colin.nii.gz"]
    assert (tmp_path / "png" / "colin.png").stat().st_size > 1000


def test_cli_batch_gives_same_named_scans_distinct_outputs(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """Issue 21: A/image.nii.gz and B/image.nii.gz both went to OUT/image.nii.gz, the second
    silently replacing the first. Each now gets its own name, from its folder."""
    scans = []
    for case in ("A", "B"):
        (tmp_path / case).mkdir()
        scans.append(tmp_path / case / "image.nii.gz")
        shutil.copy(sample_dirs["itk_t1"] / "image.nii.gz", scans[-1])
    out = tmp_path / "masks"
    proc = _segment_cli(layerseg_bin, *scans, "--out", out, "--prob", tmp_path / "prob")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["A_image.nii.gz", "B_image.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "prob").iterdir()) == [
        "A_image.nii.gz",
        "B_image.nii.gz",
    ]

    twice = _segment_cli(layerseg_bin, scans[0], scans[0], "--out", tmp_path / "twice")
    assert twice.returncode == 1
    assert "would write the same output" in twice.stderr and str(scans[0]) in twice.stderr


def test_cli_batch_refuses_a_file_name_as_its_output_folder(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """Several scans and --out m.nii.gz made a folder called m.nii.gz; now it is refused."""
    scans = [sample_dirs[name] / "image.nii.gz" for name in ("itk_t1", "colin27")]
    proc = _segment_cli(layerseg_bin, *scans, "--out", tmp_path / "m.nii.gz")
    assert proc.returncode == 1
    assert "--out" in proc.stderr and "must be a folder" in proc.stderr
    assert not (tmp_path / "m.nii.gz").exists()


def test_a_tiny_scan_is_resized_not_refused() -> None:
    tiny = np.zeros((6, 5, 4), np.float32)
    tiny[1:5, 1:4, 1:3] = 100.0
    result = layerseg.segment(tiny, np.eye(4), model=MODEL, profile=PROFILE)
    assert result["mask"].shape == tiny.shape


def test_cli_warns_when_the_scan_is_not_the_profiles_modality(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """A CT under the default brain-mri profile (found zero voxels silently before)."""
    ct = sample_dirs["lits117"]
    liver = ["--organ-mask", str(ct / "liver.nii.gz")]
    cmd = [str(layerseg_bin), "segment", str(ct / "image.nii.gz"), "--device", "cpu", *liver]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "m.nii.gz")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "like a CT in Hounsfield units, but profile brain-mri is for MRI" in proc.stderr
    right = [*cmd, "--profile", "liver-ct", "--out", str(tmp_path / "l.nii.gz")]
    proc = subprocess.run(right, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


def test_a_second_interrupt_exits_at_once_without_a_crash(
    sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    """Issue 21: the second Ctrl-C ran libtorch's static destructors under a running network and
    printed a C++ backtrace or crashed (SIGSEGV). It must exit 130 with its two lines only, and
    leave no mask behind."""
    scan = sample_dirs["mrbraintumor2"] / "image.nii.gz"
    exits = []
    for attempt in range(5):
        out = tmp_path / f"mask{attempt}.nii.gz"
        proc = subprocess.Popen(
            [str(layerseg_bin), "segment", str(scan), "--out", str(out), "--device", "cpu"],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LAYERSEG_PROGRESS": "lines"},
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if "progress" in line:
                break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
        exits.append(code)
        # The first interrupt may finish its clean stop before the second arrives (exit 1,
        # "cancelled"); either way nothing crashes and no mask is left.
        assert code in (1, 130), rest
        assert ("exiting now" if code == 130 else "cancelled") in rest, rest
        assert not any(w in rest for w in ("terminate", "Exception raised", "frame #")), rest
        assert not out.exists()
    assert 130 in exits, exits
