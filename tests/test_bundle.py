"""The MONAI bundle (monai_bundle/) and layerseg.monai's loss, normalisation and weight helpers,
run with the real MONAI, PyTorch and `layerseg` binary on the real sample scans, on CPU."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import verify_metadata
from monai.bundle.config_parser import ConfigParser
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    Resized,
)
from safetensors.torch import load_file, save_file

import layerseg
from layerseg.monai import (
    BrainExtractiond,
    FinetuneLoss,
    KeepInRegiond,
    LayerDecompositionLoss,
    LayerResiduald,
    LayerRuled,
    RandTumourSynthesisd,
    ZScoreNonzero,
    basic_unet,
    basic_unet_shape,
    export_bundle_model,
    load_weights,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "monai_bundle"
SCHEMA = BUNDLE / "docs" / "meta_schema_20240725.json"
GOLDEN = REPO / "tests" / "golden" / "basicunet_weights.safetensors"
TINY_PROFILE = REPO / "tests" / "data" / "tiny-brain.json"
TINY = (4, 4, 8, 8, 16, 4)
TINY_ARG = json.dumps(list(TINY))
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def card_for(features: Sequence[int]) -> dict[str, object]:
    """A LayerSeg model card, as `layerseg pretrain` writes one, for weights of `features`."""
    return {
        "format": 1,
        "network": "BasicUNet",
        "config": {"in_channels": 1, "out_channels": 3, "features": list(features)},
        "profile": "brain-mri",
        "step": 0,
        "losses": None,
        "validation": None,
        "layerseg_version": layerseg.__version__,
        "device": "cpu",
        "wall_time_s": 0.0,
        "optimizer_state": False,
        "training": None,
    }


def bundle(
    *args: str, cwd: Path = BUNDLE, launcher: Sequence[str] = ("-m", "monai.bundle")
) -> subprocess.CompletedProcess[str]:
    """`python -m monai.bundle ARGS` in the bundle folder, as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *launcher, *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return log


def configs(*names: str) -> str:
    return json.dumps([f"configs/{n}" for n in names])


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden tiny BasicUNet (random instance-norm affines) with a model card beside it."""
    d = tmp_path_factory.mktemp("golden")
    weights = d / "golden.safetensors"
    weights.write_bytes(GOLDEN.read_bytes())
    (d / "golden.json").write_text(json.dumps(card_for(TINY)))
    return weights


@pytest.fixture(scope="module")
def pretrained_model(
    tmp_path_factory: pytest.TempPathFactory, sample_dirs: dict[str, Path], layerseg_bin: Path
) -> Path:
    """A tiny model from `layerseg pretrain` (2 steps at 64^3 on Colin27 and its brain mask)."""
    run = tmp_path_factory.mktemp("pretrain") / "run"
    colin = sample_dirs["colin27"]
    subprocess.run(
        [
            layerseg_bin, "pretrain", "--profile", TINY_PROFILE,
            "--healthy", colin / "image.nii.gz", "--organ-masks", colin / "brain.nii.gz",
            "--out", run, "--steps", "2", "--features", ",".join(map(str, TINY)),
            "--device", "cpu", "--workers", "1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return run / "model.safetensors"


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory: pytest.TempPathFactory, sample_dirs: dict[str, Path]) -> Path:
    """A dataset_dir holding the real MRBrainTumor2 scan."""
    d = tmp_path_factory.mktemp("scans")
    (d / "mrbraintumor2.nii.gz").symlink_to(sample_dirs["mrbraintumor2"] / "image.nii.gz")
    return d


# --- Verification ------------------------------------------------------------------------------


def test_metadata_verifies_offline_against_the_shipped_schema(tmp_path: Path) -> None:
    # The shipped copy is MONAI's official schema; its hash pins it. The download is skipped
    # because the file exists, so this runs without internet.
    md5 = "76e1add273836515d0bbb3bc71962474"
    log = ok(
        bundle(
            "verify_metadata",
            "--meta_file", "configs/metadata.json",
            "--filepath", str(SCHEMA),
            "--hash_val", md5,
        )
    )  # fmt: skip
    assert "skipped downloading" in log
    assert "metadata is verified with no error" in log
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith(SCHEMA.name)
    # The same check fails on metadata missing a required field: it really validates.
    del meta["network_data_format"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA), hash_val=md5)


def test_network_matches_the_metadata_in_and_out() -> None:
    log = ok(
        bundle(
            "verify_net_in_out",
            "--net_id", "network_def",
            "--meta_file", "configs/metadata.json",
            "--config_file", "configs/inference.json",
        )
    )  # fmt: skip
    assert "data shape of network is verified with no error" in log
    # "16*(n+1)": MONAI's default n = 1 gives 32^3; 16^3 has a 1-voxel bottleneck that
    # InstanceNorm refuses, and the metadata says why.
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["spatial_shape"] == ["16*(n+1)"] * 3
    assert "at least 32 on one axis" in image["channel_def"]["0"]
    # Inference feeds windows of spatial_size, which must be the metadata's shape at some n.
    size = json.loads((BUNDLE / "configs" / "inference.json").read_text())["spatial_size"]
    assert [eval(s, {"n": 7}) for s in image["spatial_shape"]] == size == [128, 128, 128]


def test_metadata_pins_installable_versions_of_what_the_bundle_imports() -> None:
    """MONAI's model-zoo CI pip-installs `name==version` for each required package: every one
    must be a release that exists, here the one these tests run with. layerseg is on no index
    (it is built from this repository), so it is not listed."""
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    required = meta["required_packages_version"]
    assert "layerseg" not in required
    assert {"nibabel", "pytorch-ignite", "scipy", "fire"} <= required.keys()
    pinned = {
        **required,
        "monai": meta["monai_version"],
        "torch": meta["pytorch_version"],
        "numpy": meta["numpy_version"],
    }
    for name, version in pinned.items():
        assert importlib.metadata.version(name).split("+")[0] == version, name


def test_large_files_lists_the_weights_with_their_hash(tmp_path: Path) -> None:
    """`download_large_files` in the bundle finds models/model.pt, checks its sha256 and fetches
    nothing (offline); the same list over a different file fails the hash check."""
    digest = hashlib.sha256((BUNDLE / "models" / "model.pt").read_bytes()).hexdigest()
    listed = (BUNDLE / "large_files.yml").read_text()
    assert f'hash_val: "{digest}"' in listed, "models/model.pt changed: update large_files.yml"
    log = ok(bundle("download_large_files"))
    assert f"Verified 'model.pt', sha256: {digest}" in log
    assert "skipped downloading" in log
    other = tmp_path / "bundle"
    (other / "models").mkdir(parents=True)
    (other / "large_files.yml").write_bytes((BUNDLE / "large_files.yml").read_bytes())
    (other / "models" / "model.pt").write_bytes(b"not the weights")
    result = bundle("download_large_files", "--bundle_path", str(other))
    assert result.returncode != 0
    assert "sha256 hash check of existing file failed" in result.stderr


def parsed_chain(files: Sequence[str], chain_id: str) -> list[tuple[str, tuple[str, ...]]]:
    """The transforms of `chain_id` in the merged `files`, as (class name, keys), parsed in the
    bundle folder as `python -m monai.bundle run` does (macros are relative to it)."""
    cwd = os.getcwd()
    os.chdir(BUNDLE)
    try:
        parser = ConfigParser()
        parser.read_config([f"configs/{f}" for f in files])
        chain = parser.get_parsed_content(chain_id)
    finally:
        os.chdir(cwd)
    return [(type(t).__name__, tuple(getattr(t, "keys", ()))) for t in chain.transforms]


def test_grid_steps_are_written_once_and_shared() -> None:
    """RAS, crop and resize (LayerSeg's grid) are spelled out in inference.json#network_grid
    only; train.json and finetune.json take them by macro, with their own keys."""
    texts = {p.name: p.read_text() for p in (BUNDLE / "configs").glob("*.json")}
    for target in ("Orientationd", "CropForegroundd", "Resized"):
        holders = [name for name, text in texts.items() if f'"{target}"' in text]
        assert holders == ["inference.json"], (target, holders)
    for name in ("train.json", "finetune.json"):
        config = json.loads(texts[name])
        assert config["network_grid"] == "%configs/inference.json#network_grid", name
        assert config["spatial_size"] == "%configs/inference.json#spatial_size", name
    grid = [
        ("Orientationd", ("image", "brain")),
        ("CropForegroundd", ("image", "brain")),
        ("Resized", ("image",)),
        ("Resized", ("brain",)),
    ]
    inference = parsed_chain(["inference.json"], "preprocessing")
    assert inference[3:7] == grid and inference[2][0] == "BrainExtractiond"
    evaluate = parsed_chain(["inference.json", "evaluate.json"], "preprocessing")
    assert evaluate[0] == ("LoadImaged", ("image", "label")) and evaluate[3:7] == grid
    train = parsed_chain(["train.json"], "train#preprocessing")
    assert train[2:6] == grid and train[6][0] == "RandTumourSynthesisd"
    finetune = parsed_chain(["finetune.json"], "preprocessing")
    masks = ("label", "brain")
    assert finetune[3][0] == "BrainExtractiond", "fine-tuning crops to the brain, as segment"
    assert finetune[4:8] == [
        ("Orientationd", ("image", *masks)),
        ("CropForegroundd", ("image", *masks)),
        ("Resized", ("image",)),
        ("Resized", masks),
    ]


def test_weights_load_through_monais_checkpoint_loader() -> None:
    """As in the model zoo: `network` is the bare network on the device and a CheckpointLoader
    handler fills it from model_path when the engine starts (inference and evaluate, and the
    fine-tuning trainer before its first validation)."""
    loader = {
        "_target_": "CheckpointLoader",
        "load_path": "@model_path",
        "load_dict": {"model": "@network"},
        "map_location": "@device",
    }
    inference = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    finetune = json.loads((BUNDLE / "configs" / "finetune.json").read_text())
    for config, handlers in (
        (inference, inference["handlers"]),
        (finetune, finetune["train"]["handlers"]),
    ):
        assert config["network"] == "$@network_def.to(@device)"
        assert handlers[0] == loader
    assert [h["_target_"] for h in finetune["train"]["handlers"]].index("ValidationHandler") > 0
    # models/model.pt is the raw state dict that CheckpointLoader takes for a one-key load_dict.
    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "model" not in state and all(isinstance(v, torch.Tensor) for v in state.values())


# --- Inference agreement and round trip --------------------------------------------------------


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def layer_rule_profile(base: Path | str, out: Path, rule: dict[str, object] | None) -> Path:
    """`base` with brain extraction on and `rule` as its layer rule (none when `rule` is None)."""
    profile = json.loads(layerseg.profile_json(str(base)))
    profile["inference"]["brain_extraction"] = True
    profile["inference"].pop("layer_rule", None)
    if rule is not None:
        profile["inference"]["layer_rule"] = rule
    out.write_text(json.dumps(profile))
    return out


def run_bundle_inference(scan_dir: Path, out: Path, *overrides: str) -> Path:
    ok(
        bundle(
            "run",
            "--config_file", "configs/inference.json",
            "--meta_file", "configs/metadata.json",
            "--logging_file", "configs/logging.conf",
            "--dataset_dir", str(scan_dir),
            "--output_dir", str(out),
            *overrides,
        )
    )  # fmt: skip
    return out / "mrbraintumor2_seg.nii.gz"


def check_written_mask(written: Path, scan: Path) -> None:
    theirs = nib.load(written)
    source = nib.load(scan)
    assert theirs.shape == source.shape
    np.testing.assert_allclose(theirs.affine, source.affine, atol=1e-5)
    assert theirs.get_data_dtype() == np.uint8


@pytest.mark.parametrize(
    ("which", "size", "rule"),
    # The golden weights' card says brain-mri (128^3), run with brain-mri's own layer rule (if
    # it has one now); the tiny run used the tiny-brain test profile, the same recipe at 64^3,
    # which the bundle follows with --spatial_size, here with an explicit layer rule.
    [("golden", 128, False), ("pretrained", 64, True)],
)
def test_bundle_inference_agrees_with_layerseg_segment(
    which: str,
    size: int,
    rule: bool,
    request: pytest.FixtureRequest,
    scan_dir: Path,
    layerseg_bin: Path,
    tmp_path: Path,
) -> None:
    """Weights -> models/model.pt -> `python -m monai.bundle run` writes a mask on the input
    grid that matches `layerseg segment` on the same scan and weights, brain extraction (crop
    and search region) and layer rule included, as both do by default."""
    weights: Path = request.getfixturevalue(f"{which}_model")
    scan = scan_dir / "mrbraintumor2.nii.gz"
    model_pt = tmp_path / "models" / "model.pt"
    subprocess.run(
        [sys.executable, "-m", "layerseg.monai", "export", weights, model_pt],
        check=True,
        capture_output=True,
    )
    base = "brain-mri" if which == "golden" else TINY_PROFILE
    profile = base if not rule else layer_rule_profile(base, tmp_path / "profile.json", None)
    # Untrained tiny networks give probabilities in a narrow band, so threshold at the median
    # of ours inside the brain: half the voxels sit near the threshold, which makes agreement
    # a strict test (a fixed 0.5 can give an empty or full mask). The layer rule's margin is the
    # median absolute residual of that mask, so the rule halves it (sign "either": the tiny
    # network's residual has no lesion direction); its smallest lesion is 500 mm^3.
    raw = layerseg.segment(scan, model=weights, profile=str(profile), device="cpu", raw_mask=True)
    brain = raw["organ_mask"] > 0
    p = raw["probability"]
    threshold = float(np.median(p[brain]))
    before = brain & (p >= threshold)
    if rule:
        # Departures count from the residual's median in the brain, as the rule measures them.
        centred = raw["residual"] - np.median(raw["residual"][brain])
        margin = float(np.median(np.abs(centred[before])))
        layer_rule = {"residual_sign": "either", "margin": margin, "min_lesion_mm3": 500.0}
        profile = layer_rule_profile(base, tmp_path / "profile.json", layer_rule)
    rs_mask = tmp_path / "layerseg.nii.gz"
    ok(
        subprocess.run(
            [
                layerseg_bin, "segment", scan, "--out", rs_mask, "--threshold", str(threshold),
                "--model", weights, "--profile", profile, "--device", "cpu",
            ],
            capture_output=True,
            text=True,
        )
    )  # fmt: skip
    written = run_bundle_inference(
        scan_dir,
        tmp_path / "bundle-out",
        "--model_path", str(model_pt),
        "--network_def#features", TINY_ARG,
        "--threshold", str(threshold),
        "--spatial_size", json.dumps([size] * 3),
        "--profile", str(profile),
    )  # fmt: skip
    check_written_mask(written, scan)
    a = np.asarray(nib.load(rs_mask).dataobj) > 0
    b = np.asarray(nib.load(written).dataobj) > 0
    # The brain is a plausible one, and everything found lies inside it.
    assert 0.8e6 < brain.sum() * np.prod(nib.load(scan).header.get_zooms()) < 2.2e6
    assert not (a & ~brain).any() and not (b & ~brain).any()
    if rule:
        # The rule bit: about half of the thresholded brain went.
        assert 0.2 < a.sum() / before.sum() < 0.6, (a.sum(), before.sum())
    else:
        # A meaningful mask: some of the brain, not all of it. brain-mri's own layer rule cuts
        # the median-thresholded half to well under 1 % here (the untrained network's healthy
        # layer is noise), so only a non-empty mask is asked for.
        assert 1000 < a.sum() < 0.8 * brain.sum(), (a.sum(), brain.sum())
    assert dice(a, b) >= 0.999, (a.sum(), b.sum(), dice(a, b))


def test_bundle_defaults_agree_with_layerseg_segment_defaults(
    scan_dir: Path, layerseg_bin: Path, tmp_path: Path
) -> None:
    """Issue 16: as shipped, the bundle (models/model.pt, brain extraction, brain-mri's layer
    rule, threshold 0.5) and `layerseg segment SCAN` (its defaults, the shipped model) give the
    same mask on the whole-head MRBrainTumor2 scan."""
    scan = scan_dir / "mrbraintumor2.nii.gz"
    rs_mask = tmp_path / "layerseg.nii.gz"
    ok(
        subprocess.run(
            [layerseg_bin, "segment", scan, "--out", rs_mask, "--device", "cpu"],
            capture_output=True,
            text=True,
        )
    )
    written = run_bundle_inference(scan_dir, tmp_path / "bundle-out")
    check_written_mask(written, scan)
    a = np.asarray(nib.load(rs_mask).dataobj) > 0
    b = np.asarray(nib.load(written).dataobj) > 0
    assert a.sum() > 1000
    assert dice(a, b) >= 0.99, (a.sum(), b.sum(), dice(a, b))


def test_evaluate_writes_the_dice_of_the_masks_it_writes(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The README's evaluation command, as shipped: inference.json with evaluate.json (which reads
    the label along), on the datalist's real MRBrainTumor2 case; the Dice in metrics.csv is the
    Dice of the written mask against the label."""
    out = tmp_path / "eval"
    ok(
        bundle(
            "run",
            "--config_file", configs("inference.json", "evaluate.json"),
            "--dataset_dir", str(sample_dirs["mrbraintumor2"].parent),
            "--output_dir", str(out),
        )
    )  # fmt: skip
    name, value = (out / "metrics.csv").read_text().split(",")
    assert name == "val_mean_dice"
    mask = np.asarray(nib.load(out / "mrbraintumor2" / "image_seg.nii.gz").dataobj) > 0
    label = np.asarray(nib.load(sample_dirs["mrbraintumor2"] / "label.nii.gz").dataobj) > 0
    assert mask.any()
    assert float(value) == pytest.approx(dice(mask, label), abs=1e-6)


# --- layerseg.monai: brain extraction and the layer rule ------------------------------------------


def ball(shape: int = 24, radius: float = 8.0) -> np.ndarray:
    """A textured bright ball on a zero background, (shape,)*3."""
    g = np.mgrid[:shape, :shape, :shape].astype(np.float32)
    inside = ((g - shape / 2) ** 2).sum(0) < radius**2
    return np.where(inside, 100.0 + g[0] % 3, 0.0).astype(np.float32)


def test_brain_extraction_falls_back_to_the_foreground_when_implausible() -> None:
    """A 48 mm head-sized ball is no adult brain (under 0.8 L): a warning naming the file and
    the volume, and the non-zero voxels as the mask, a uint8 MetaTensor with the image's meta.
    Turned off it gives the same foreground without extraction; a constant scan is an error."""
    x = ball()
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    meta = {"filename_or_obj": "/data/tiny-head.nii.gz"}
    image = MetaTensor(torch.from_numpy(x[None]), affine=affine, meta=meta)
    extract = BrainExtractiond("image", mask_key="brain", exact_key="exact", device="cpu")
    with pytest.warns(
        UserWarning, match=r"/data/tiny-head\.nii\.gz: brain extraction .*\d\.\d\d L"
    ):
        d = extract({"image": image})
    mask = d["brain"]
    assert isinstance(mask, MetaTensor) and mask.dtype == torch.uint8
    assert mask.shape == (1, 24, 24, 24)
    assert (
        torch.equal(mask.affine, affine) and mask.meta["filename_or_obj"] == meta["filename_or_obj"]
    )
    np.testing.assert_array_equal(mask.numpy()[0], (x != 0).astype(np.uint8))
    assert d["image"] is image
    # No brain was used, so none is kept for the search region: KeepInRegiond falls back to
    # the region mapped back by Invertd (here the foreground itself).
    assert d["exact"].shape == mask.shape and not d["exact"].any()
    assert extract.extract.litres is not None and extract.extract.litres < 0.8
    assert extract.extract.plausible is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = BrainExtractiond("image", device="cpu", enabled=False)({"image": image})
    assert torch.equal(off["brain"], mask)
    constant = MetaTensor(torch.full((1, 8, 8, 8), 5.0), meta={"filename_or_obj": "flat.nii"})
    with pytest.raises(ValueError, match=r"flat\.nii: brain extraction.*constant"):
        extract({"image": constant})
    with pytest.raises(ValueError, match="one image key"):
        BrainExtractiond(["image", "label"])


def test_search_region_is_the_exact_brain_when_one_was_extracted() -> None:
    pred = torch.ones(1, 4, 4, 4)
    round_trip = torch.zeros(1, 4, 4, 4)
    round_trip[0, :3] = 1
    exact = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    exact[0, 1:] = 1
    keep = KeepInRegiond("pred", region_key="region", exact_key="exact")
    out = keep({"pred": pred, "region": round_trip, "exact": exact})["pred"]
    assert torch.equal(out, exact.float())
    out = keep({"pred": pred, "region": round_trip, "exact": exact * 0})["pred"]
    assert torch.equal(out, round_trip)
    out = KeepInRegiond("pred", "region", exact_key=None)({"pred": pred, "region": round_trip})
    assert torch.equal(out["pred"], round_trip)


def test_layer_rule_keeps_only_voxels_departing_from_the_healthy_layer(tmp_path: Path) -> None:
    """LayerResiduald gives image minus healthy layer; LayerRuled keeps mask voxels whose signed
    residual passes the margin, then drops lesions under min_lesion_mm3 (26-connected, voxel
    volume from the affine), with the rule read from a profile or given."""
    shape = (1, 12, 12, 12)
    image = torch.zeros(shape)
    healthy = torch.zeros(shape)
    image[0, 2:8, 2:8, 2:8] = 2.0  # brighter than the healthy layer: a 6^3 lesion
    image[0, 10, 10, 10] = 2.0  # a one-voxel bright spot, diagonal neighbour of nothing
    image[0, 9, 2, 2] = -2.0  # darker
    pred = torch.cat([healthy, torch.zeros(shape), torch.zeros(shape)])
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))  # 8 mm^3 voxels
    d = LayerResiduald("pred")({"pred": MetaTensor(pred, affine=affine), "image": image})
    assert torch.equal(torch.as_tensor(d["residual"]), image - healthy)
    mask = MetaTensor(torch.ones(shape), affine=affine)  # the network marked everything
    rule = {"residual_sign": "brighter", "margin": 1.0, "min_lesion_mm3": 100.0}
    profile = layer_rule_profile(TINY_PROFILE, tmp_path / "rule.json", rule)
    out = LayerRuled("pred", profile=str(profile))({"pred": mask, "residual": d["residual"]})
    expected = torch.zeros(shape)
    expected[0, 2:8, 2:8, 2:8] = 1.0  # 216 voxels * 8 mm^3 kept; the 8 mm^3 spot dropped
    assert torch.equal(torch.as_tensor(out["pred"]), expected)
    assert isinstance(out["pred"], MetaTensor) and torch.equal(out["pred"].affine, affine)

    def kept(**given: object) -> int:
        rule_d = LayerRuled("pred", profile=str(TINY_PROFILE), **given)  # type: ignore[arg-type]
        return int(torch.as_tensor(rule_d({"pred": mask, "residual": d["residual"]})["pred"]).sum())

    assert kept(residual_sign="brighter", margin=1.0) == 6**3 + 1
    assert kept(residual_sign="darker", margin=1.0) == 1
    assert kept(residual_sign="either", margin=1.0) == 6**3 + 2
    assert kept(residual_sign="either", margin=1.0, min_lesion_mm3=9.0) == 6**3
    # A healthy layer off by a constant everywhere moves every residual alike: no change.
    offset = LayerRuled("pred", profile=str(TINY_PROFILE), residual_sign="brighter", margin=1.0)
    shifted = offset({"pred": mask, "residual": d["residual"] + 5.0})["pred"]
    assert int(torch.as_tensor(shifted).sum()) == 6**3 + 1
    # What a kept lesion encloses is filled: a dark core inside a bright rim, closed within its
    # axial slices but open at the top and bottom, stays tumour.
    ring = torch.zeros(shape)
    ring[0, 2:8, 2:8, 2:5] = 2.0
    ring[0, 4:6, 4:6, 2:5] = -1.0
    ringed = offset({"pred": mask, "residual": ring})["pred"]
    assert int(torch.as_tensor(ringed).sum()) == 6 * 6 * 3
    # The test profile has no rule: nothing happens; nor when the rule is turned off.
    assert kept() == mask.numel()
    assert kept(enabled=False, margin=1.0) == mask.numel()
    with pytest.raises(ValueError, match="residual_sign 'up'"):
        LayerRuled("pred", residual_sign="up")
    with pytest.raises(ValueError, match=r"margin -1\.0 must be a number >= 0"):
        LayerRuled("pred", margin=-1.0)


# --- Training ------------------------------------------------------------------------------------


def train_overrides(sample_dirs: dict[str, Path], ckpt: Path) -> list[str]:
    return [
        "--dataset_dir", str(sample_dirs["colin27"].parent),
        "--ckpt_dir", str(ckpt),
        "--network_def#features", TINY_ARG,
        "--spatial_size", "[64, 64, 64]",
        "--epochs", "1",
        "--num_workers", "0",
    ]  # fmt: skip


def check_iterations(log: str) -> None:
    assert "Iter: 2/2" in log and "Iter: 3/" not in log, log[-3000:]
    losses = [float(line.split("train_loss:")[1]) for line in log.splitlines() if "Iter:" in line]
    assert len(losses) == 2 and all(np.isfinite(losses)), losses


def check_trained(ckpt: Path, log: str) -> None:
    check_iterations(log)
    state = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    assert basic_unet_shape(state)["features"] == TINY
    load_weights(basic_unet(TINY), ckpt / "model.pt")


def test_train_runs_two_iterations_on_real_scans(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    ckpt = tmp_path / "models"
    log = ok(
        bundle(
            "run",
            "--config_file", "configs/train.json",
            "--meta_file", "configs/metadata.json",
            "--logging_file", "configs/logging.conf",
            *train_overrides(sample_dirs, ckpt),
            "--samples_per_epoch", "4",
            "--batch_size", "2",
        )
    )  # fmt: skip
    check_trained(ckpt, log)


def test_train_log_names_the_epoch_of_the_lowest_loss(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 21: the key metric is a loss, so lower is better; MONAI's default comparison took the
    highest loss as the best. Also: training no longer writes into the bundle's models/."""
    shipped = BUNDLE / "models" / "model.pt"
    before = shipped.stat().st_mtime_ns
    log = ok(
        bundle(
            "run",
            "--config_file", "configs/train.json",
            "--meta_file", "configs/metadata.json",
            "--logging_file", "configs/logging.conf",
            *train_overrides(sample_dirs, tmp_path / "models"),
            "--epochs", "3",
            "--samples_per_epoch", "2",
            "--batch_size", "2",
        )
    )  # fmt: skip
    losses = [
        float(line.split("train_loss:")[1])
        for line in log.splitlines()
        if "Metrics -- train_loss:" in line
    ]
    assert len(losses) == 3, log[-3000:]
    best = [line for line in log.splitlines() if "Key metric: train_loss best value" in line][-1]
    best_epoch = int(best.rsplit("at epoch:", 1)[1])
    assert losses[best_epoch - 1] == pytest.approx(min(losses), abs=1e-4), (losses, best)
    assert shipped.stat().st_mtime_ns == before
    assert (
        '"ckpt_dir": "$@bundle_root + \'/runs/pretrain\'"'
        in (BUNDLE / "configs" / "train.json").read_text()
    )


def test_multi_gpu_train_runs_with_torchrun_on_cpu(
    sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """DDP through torchrun, two processes, gloo: two iterations of one sample per rank."""
    ckpt = tmp_path / "models"
    log = ok(
        bundle(
            "run",
            "--config_file", configs("train.json", "multi_gpu_train.json"),
            "--meta_file", "configs/metadata.json",
            "--logging_file", "configs/logging.conf",
            *train_overrides(sample_dirs, ckpt),
            "--samples_per_epoch", "4",
            "--batch_size", "1",
            launcher=(
                "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "monai.bundle",
            ),
        )
    )  # fmt: skip
    assert log.count("--- input summary of monai.bundle.scripts.run ---") == 2
    check_trained(ckpt, log)


# --- Bad input -----------------------------------------------------------------------------------


def test_missing_datalist_fails_with_monais_own_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-datalist.json"
    result = bundle(
        "run",
        "--config_file", configs("inference.json", "evaluate.json"),
        "--data_list_file_path", str(missing),
        "--output_dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode != 0
    assert f"Data list file {missing} does not exist" in result.stderr
    assert "layerseg" not in result.stderr.split("Traceback")[-1].split(str(missing))[0]
    assert not (tmp_path / "out").exists()


def test_bundle_refuses_weights_of_another_width(
    golden_model: Path, scan_dir: Path, tmp_path: Path
) -> None:
    model_pt = export_bundle_model(
        golden_model, golden_model.with_suffix(".json"), tmp_path / "model.pt"
    )
    result = bundle(
        "run",
        "--config_file", "configs/inference.json",
        "--dataset_dir", str(scan_dir),
        "--output_dir", str(tmp_path / "out"),
        "--model_path", str(model_pt),
    )  # fmt: skip
    # MONAI's CheckpointLoader (strict) names the first layer's two shapes: 4 filters in the
    # file, 32 in the network; --network_def#features is the fix (docs/README.md).
    assert result.returncode != 0
    assert "size mismatch for conv_0.conv_0.conv.weight" in result.stderr
    assert "torch.Size([4, 1, 3, 3, 3]) from checkpoint" in result.stderr
    assert "current model is torch.Size([32, 1, 3, 3, 3])" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_model_and_dataset_dir_are_named(scan_dir: Path, tmp_path: Path) -> None:
    missing_model = bundle(
        "run",
        "--config_file", "configs/inference.json",
        "--dataset_dir", str(scan_dir),
        "--model_path", str(tmp_path / "nothing.pt"),
    )  # fmt: skip
    assert missing_model.returncode != 0
    assert "FileNotFoundError" in missing_model.stderr
    assert f"No such file or directory: '{tmp_path / 'nothing.pt'}'" in missing_model.stderr
    missing_dir = bundle(
        "run", "--config_file", "configs/inference.json", "--dataset_dir", str(tmp_path / "x")
    )
    assert missing_dir.returncode != 0
    assert f"dataset_dir {tmp_path / 'x'}: no such folder" in missing_dir.stderr


# --- layerseg.monai: export and loading ----------------------------------------------------------


def test_export_gives_a_weights_only_state_dict_with_the_same_network(
    golden_model: Path, tmp_path: Path
) -> None:
    out = export_bundle_model(golden_model, golden_model.with_suffix(".json"), tmp_path / "m.pt")
    state = torch.load(out, map_location="cpu", weights_only=True)
    reference = load_file(str(GOLDEN))
    assert state.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(state[name], tensor), name
    net = basic_unet(TINY)
    net.load_state_dict(state, strict=True)
    assert basic_unet_shape(state) == {"in_channels": 1, "out_channels": 3, "features": TINY}


def test_shipped_bundle_model_is_the_shipped_brain_model() -> None:
    """models/model.pt in the bundle holds exactly the weights of models/brain-mri.safetensors."""
    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    shipped = load_file(str(REPO / "models" / "brain-mri.safetensors"))
    assert state.keys() == shipped.keys()
    for name, tensor in shipped.items():
        assert torch.equal(state[name], tensor), name
    card = json.loads((REPO / "models" / "brain-mri.json").read_text())
    assert list(basic_unet_shape(state)["features"]) == card["config"]["features"]


def test_export_refuses_a_card_of_another_width_and_leaves_nothing(
    golden_model: Path, tmp_path: Path
) -> None:
    card = tmp_path / "wide.json"
    card.write_text(json.dumps(card_for((8, 8, 16, 16, 32, 8))))
    out = tmp_path / "models" / "model.pt"
    with pytest.raises(ValueError, match=r"weights of another width.*\[4, 4, 8, 8, 16, 4\]"):
        export_bundle_model(golden_model, card, out)
    assert not out.parent.exists()
    # An existing model.pt is left alone by a failed export.
    out.parent.mkdir()
    out.write_bytes(b"previous")
    with pytest.raises(ValueError):
        export_bundle_model(golden_model, card, out)
    assert out.read_bytes() == b"previous"
    assert [f.name for f in out.parent.iterdir()] == ["model.pt"]


def test_loader_rejects_files_that_are_not_basicunet_weights(tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ValueError, match="not the weights of a MONAI BasicUNet"):
        load_weights(basic_unet(TINY), other)
    card = tmp_path / "card.json"
    card.write_text(json.dumps({**card_for(TINY), "format": 7}))
    with pytest.raises(ValueError, match="model card format 7"):
        export_bundle_model(GOLDEN, card, tmp_path / "m.pt")


# --- layerseg.monai: the loss ---------------------------------------------------------------------


def stack(*channels: Sequence[float]) -> torch.Tensor:
    """(1, C, 1, 1, V) from per-channel voxel values."""
    return torch.tensor([list(c) for c in channels], dtype=torch.float32)[None, :, None, None]


def test_loss_hand_computed_terms() -> None:
    # The Rust test's case: one sample, four voxels, tumour at voxel 0, logit 0 (p = 0.5):
    # Dice = 1 - (1 + e) / (3 + e); healthy error 1 everywhere; tumour error 2 at voxel 0.
    pred = stack([1, 1, 1, 1], [2, 0, 0, 0], [0, 0, 0, 0])
    target = stack([0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0])
    t = LayerDecompositionLoss().terms(pred, target)
    expected = {
        "dice": 1 - (1 + 1e-7) / (3 + 1e-7),
        "healthy": 1.0,
        "tumour": 0.5,
        "healthy_in_tumour": 1.0,
        "tumour_in_tumour": 2.0,
    }
    for name, value in expected.items():
        assert t[name].item() == pytest.approx(value, abs=1e-6), name
    assert t["total"].item() == pytest.approx(sum(expected.values()), abs=1e-6)
    weighted = LayerDecompositionLoss(dice=0, healthy=2, tumour=0.5, tumour_in_tumour=0)
    assert weighted(pred, target).item() == pytest.approx(2 * 1 + 0.5 * 0.5 + 1.0, abs=1e-6)


def test_loss_dice_is_one_ratio_over_the_batch_and_tumour_terms_need_both_classes() -> None:
    big = 30.0
    pred = torch.cat([stack([0, 0], [0, 0], [big, -big]), stack([0, 0], [0, 0], [0, 0])])
    target = torch.cat([stack([0, 0], [0, 0], [1, 0]), stack([0, 0], [0, 0], [0, 0])])
    # Batch Dice 1 - 2*1/(1 + 1 + 1) = 1/3; a mean of per-sample Dice would give 0.5.
    assert LayerDecompositionLoss().terms(pred, target)["dice"].item() == pytest.approx(1 / 3)
    for mask in ([0.0, 0.0], [1.0, 1.0]):
        p = stack([1, 1], [1, 1], [0, 0]).requires_grad_(True)
        t = LayerDecompositionLoss().terms(p, stack([0, 0], [0, 0], mask))
        assert t["healthy_in_tumour"].item() == 0 and t["tumour_in_tumour"].item() == 0
        t["total"].backward()
        assert p.grad is not None and torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match=r"\(B, 3, D, H, W\)"):
        LayerDecompositionLoss()(torch.zeros(1, 2, 1, 1, 4), torch.zeros(1, 2, 1, 1, 4))
    with pytest.raises(ValueError, match="target"):
        LayerDecompositionLoss()(torch.zeros(1, 3, 1, 1, 4), torch.zeros(1, 3, 1, 1, 5))


def test_loss_on_a_real_synthetic_batch_matches_the_formula(sample_dirs: dict[str, Path]) -> None:
    """Colin27 and its brain mask on a 32^3 grid, a synthetic tumour, the golden network's
    real output: every term against a float64 NumPy evaluation of method.md's formula."""
    colin = sample_dirs["colin27"]
    prepare = Compose(
        [
            LoadImaged(["image", "brain"], reader="NibabelReader", image_only=True),
            EnsureChannelFirstd(["image", "brain"]),
            Orientationd(["image", "brain"], axcodes="RAS", labels=RAS_LABELS),
            CropForegroundd(["image", "brain"], source_key="brain"),
            Resized(["image", "brain"], (32, 32, 32), mode=("trilinear", "nearest")),
            RandTumourSynthesisd("image", organ_key="brain", mask_key="mask").set_random_state(3),
        ]
    )  # fmt: skip
    d = prepare({"image": str(colin / "image.nii.gz"), "brain": str(colin / "brain.nii.gz")})
    norm = ZScoreNonzero()
    healthy = norm(d["image_healthy"]).as_tensor()
    mask = torch.as_tensor(d["mask"]).float()
    tumour = norm(d["image_tumour"]).as_tensor() * mask
    image = norm(d["image"]).as_tensor()
    assert 0 < mask.sum() < mask.numel()
    net = basic_unet(TINY)
    net.load_state_dict(load_file(str(GOLDEN)))
    with torch.no_grad():
        pred = net(image[None])
    target = torch.cat([healthy, tumour, mask])[None]
    terms = LayerDecompositionLoss().terms(pred, target)

    y = pred.double().numpy()[0]
    n, s, m = healthy.double().numpy()[0], tumour.double().numpy()[0], mask.double().numpy()[0]
    p = 1 / (1 + np.exp(-y[2]))
    inside = m > 0.5
    expected = {
        "dice": 1 - (2 * (p * m).sum() + 1e-7) / (p.sum() + m.sum() + 1e-7),
        "healthy": np.abs(y[0] - n).mean(),
        "tumour": np.abs(y[1] - s).mean(),
        "healthy_in_tumour": np.abs(y[0] - n)[inside].mean(),
        "tumour_in_tumour": np.abs(y[1] - s)[inside].mean(),
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-4), name
    assert terms["total"].item() == pytest.approx(sum(expected.values()), rel=1e-4)


def test_zscore_nonzero_follows_the_profile_rule(sample_dirs: dict[str, Path]) -> None:
    image = np.asarray(nib.load(sample_dirs["mrbraintumor2"] / "image.nii.gz").dataobj)
    x = torch.from_numpy(image[None, ::4, ::4, ::4].astype(np.float32))
    out = ZScoreNonzero()(x)
    values = x.double().numpy()
    nonzero = values[values != 0]
    expected = (values - nonzero.mean()) / nonzero.std()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    # Background is shifted too (unlike MONAI's NormalizeIntensity(nonzero=True)).
    assert (out[x == 0] < 0).all()
    flat = torch.full((1, 4, 4, 4), 5.0)
    flat[0, 0, 0, 0] = 5.001  # std < 0.01: min-max scaling instead
    scaled = ZScoreNonzero()(flat)
    assert scaled.min().item() == 0 and scaled.max().item() == 1
    assert torch.equal(ZScoreNonzero()(torch.zeros(1, 2, 2, 2)), torch.zeros(1, 2, 2, 2))


# --- Fine-tuning ---------------------------------------------------------------------------------


def test_finetune_runs_two_iterations_on_a_real_labelled_case(
    golden_model: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """configs/finetune.json from a MONAI datalist (paths relative to it) on the real
    MRBrainTumor2 scan and label, starting from a tiny bundle model: validation before the first
    step and after the epoch, and the best model written where `ckpt_dir` says."""
    start = export_bundle_model(golden_model, golden_model.with_suffix(".json"), tmp_path / "m.pt")
    case = sample_dirs["mrbraintumor2"]
    data = tmp_path / "data"
    data.mkdir()
    rel = Path(os.path.relpath(case, data))
    pair = {"image": str(rel / "image.nii.gz"), "label": str(rel / "label.nii.gz")}
    datalist = data / "datalist.json"
    datalist.write_text(json.dumps({"training": [pair], "validation": [pair]}))
    ckpt = tmp_path / "models"
    log = ok(
        bundle(
            "run",
            "--config_file", "configs/finetune.json",
            "--meta_file", "configs/metadata.json",
            "--logging_file", "configs/logging.conf",
            "--datalist", str(datalist),
            "--ckpt_dir", str(ckpt),
            "--model_path", str(start),
            "--network_def#features", TINY_ARG,
            "--spatial_size", "[48, 48, 48]",
            "--patch_size", "[32, 32, 32]",
            "--max_epochs", "1",
            "--iterations_per_epoch", "2",
            "--num_workers", "0",
        )
    )  # fmt: skip
    check_iterations(log)
    dices = [float(x.split()[0]) for x in log.split("val_mean_dice:")[1:]]
    assert len(dices) >= 2 and all(0.0 <= d <= 1.0 for d in dices), log[-3000:]
    assert sorted(p.name for p in ckpt.iterdir()) == ["model_finetuned.pt"]
    load_weights(basic_unet(TINY), ckpt / "model_finetuned.pt")


def test_finetune_loss_hand_computed_terms() -> None:
    """FinetuneLoss on one 2-voxel case against the formula of Rust's `finetune_losses`."""
    pred = stack([1.0, 2.0], [3.0, 0.0], [0.0, 2.0])  # healthy, tumour, mask logit
    label, image = torch.tensor([0.0, 1.0]), torch.tensor([1.5, 0.5])
    target = torch.stack([label, image]).reshape(1, 2, 1, 1, 2)
    terms = FinetuneLoss().terms(pred, target)
    p = torch.sigmoid(torch.tensor([0.0, 2.0]))
    bce = -(torch.log(1 - p[0]) + torch.log(p[1])) / 2
    dice = 1 - (2 * p[1] + 1e-7) / (p.sum() + 1 + 1e-7)
    recomposed = torch.tensor([3.0, 0.0]) * p + torch.tensor([1.0, 2.0]) * (1 - p)
    recomposition = (recomposed - image).abs().mean()
    expected = {
        "dice": dice,
        "bce": bce,
        "healthy": torch.tensor(0.5),
        "recomposition": recomposition,
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5), name
    total = dice + bce + 0.5 + 0.1 * recomposition
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-5)
    label_only = FinetuneLoss().terms(pred, target[:, :1])
    assert label_only["total"].item() == pytest.approx((dice + bce).item(), rel=1e-5)
