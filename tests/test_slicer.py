"""The Slicer extension without a Slicer binary: its Logic on real MRML from the slicer-core
wheel, the real layerseg subprocess, real sample scans; and the extension's layout checked the
way the ExtensionsIndex and Slicer's build read it."""

from __future__ import annotations

import ast
import json
import re
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import nibabel as nib
import numpy as np
import psutil
import pytest
import slicer
import slicer.util
import vtk
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXTENSION = REPO / "slicer_module"
MODULE = EXTENSION / "LayerSeg"
sys.path.insert(0, str(MODULE))

from LayerSegLib.install import NO_SOURCE, InstallLogic, Readiness  # noqa: E402
from LayerSegLib.logic import (  # noqa: E402
    Logic,
    OrganMask,
    OrganMaskSetting,
    SegmentResult,
    read_organ_mask_setting,
    write_organ_mask_setting,
)
from LayerSegLib.parameters import (  # noqa: E402
    BUILTIN_PROFILE_SEARCH,
    BUILTIN_PROFILES,
    ORGAN_MASK_CHOICES,
    DeviceChoice,
    FinetuneParameters,
    ModelChoice,
    OrganMaskChoice,
    PanelChoice,
    ParameterError,
    PretrainParameters,
    ProfileChoice,
    ProfileSearch,
    SegmentParameters,
    profile_search,
)
from LayerSegLib.process import (  # noqa: E402
    CliNotFoundError,
    Job,
    Progress,
    find_cli,
    parse_progress,
)
from LayerSegLib.runtime import (  # noqa: E402
    LAYERSEG_REQUIREMENT,
    RuntimeSetupError,
    RuntimeSource,
)
from LayerSegLib.scene import (  # noqa: E402
    BRAIN_COLOR,
    BRAIN_NAME,
    SEARCHED_REGION_TAG,
    TUMOUR_NAME,
    UserError,
    check_volume,
)

HERE = Path(__file__).parent
MODEL = HERE / "golden" / "basicunet_weights.safetensors"
PROFILE = str(HERE / "data" / "tiny-brain.json")
SCHEMA = HERE / "data" / "slicer-extension-catalog-entry-schema-v1.0.2.json"
THRESHOLD = 0.6


def params(**kw: Any) -> SegmentParameters:
    base: dict[str, Any] = {
        "profile": PROFILE,
        "model": str(MODEL),
        "device": "cpu",
        "threshold": THRESHOLD,
    }
    base.update(kw)
    return SegmentParameters(**base)


def load_volume(scene: Any, path: Path, labelmap: bool = False) -> Any:
    """A volume node read through its storage node, as Slicer loads a file."""
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(path.name.split(".")[0])
    scene.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1, path
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def segment_array(result: SegmentResult, volume: Any) -> np.ndarray:
    """The Tumor segment exported onto the volume's grid, as an (I, J, K) array."""
    return segment_on_grid(result.segmentation, result.segment_id, volume)


def segment_on_grid(segmentation: Any, segment_id: str, volume: Any) -> np.ndarray:
    """Slicer's own export of a segment to a label map on the volume's grid, in a scene of
    its own, as an (I, J, K) boolean array."""
    scratch = slicer.vtkMRMLScene()
    label = slicer.vtkMRMLLabelMapVolumeNode()
    scratch.AddNode(label)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation, ids, label, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    )
    return np.asarray(slicer.util.arrayFromVolume(label)).transpose(2, 1, 0) > 0


def ijk_to_ras(node: Any) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ids(scene: Any) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def run_cli(
    layerseg_bin: Path, scan: Path, out: Path, *extra: str
) -> tuple[np.ndarray, np.ndarray]:
    """The mask (and its affine) that ``layerseg segment`` writes for ``scan``."""
    argv = [str(layerseg_bin), "segment", str(scan), "--out", str(out), "--model", str(MODEL)]
    argv += ["--profile", PROFILE, "--device", "cpu", "--threshold", str(THRESHOLD), *extra]
    subprocess.run(argv, check=True, capture_output=True)
    img = nib.load(out)
    return np.asarray(img.dataobj) > 0, img.affine


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return (affine @ np.append(ijk, 1.0))[:3]


@pytest.fixture
def scene() -> Any:
    return slicer.vtkMRMLScene()


@pytest.fixture(scope="module")
def cli(layerseg_bin: Path) -> list[str]:
    return [str(layerseg_bin)]


@pytest.fixture(scope="module")
def tumour_scan(sample_dirs: dict[str, Path]) -> Path:
    return sample_dirs["mrbraintumor2"] / "image.nii.gz"


@pytest.fixture(scope="module")
def cli_mask(
    layerseg_bin: Path, tumour_scan: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[np.ndarray, np.ndarray]:
    """The CLI's own mask for MRBrainTumor2, run directly on the sample file."""
    return run_cli(layerseg_bin, tumour_scan, tmp_path_factory.mktemp("cli") / "mask.nii.gz")


# ---- end to end ----------------------------------------------------------------------------


def test_tumour_segment_equals_the_cli_mask(
    scene: Any,
    cli: list[str],
    tumour_scan: Path,
    cli_mask: tuple[np.ndarray, np.ndarray],
    layerseg_bin: Path,
    tmp_path: Path,
) -> None:
    volume = load_volume(scene, tumour_scan)
    before = scene.GetNumberOfNodes()
    lines: list[str] = []
    progress: list[Progress] = []
    result = Logic(scene, cli).segment(
        volume, params(probability=True), on_line=lines.append, on_progress=progress.append
    )
    expected, _ = cli_mask
    assert 0 < expected.sum() < expected.size, (
        "the test needs a mask that is neither empty nor full"
    )
    got = segment_array(result, volume)
    np.testing.assert_array_equal(got, expected)
    assert result.voxels == expected.sum()

    seg = result.segmentation
    segment = seg.GetSegmentation().GetSegment(result.segment_id)
    assert segment.GetName() == TUMOUR_NAME
    terminology = vtk.reference("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), terminology)
    assert "SCT^108369006^Neoplasm" in terminology.get()
    assert segment.GetColor() == pytest.approx((0.85, 0.25, 0.2))
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is volume
    assert seg.GetScene() is scene and result.probability.GetScene() is scene
    # The segmentation, its display node and the probability volume (with its display node).
    assert scene.GetNumberOfNodes() > before + 1
    np.testing.assert_allclose(ijk_to_ras(result.probability), ijk_to_ras(volume))

    # The probability volume holds the CLI's probabilities.
    prob_file = tmp_path / "prob.nii.gz"
    run_cli(layerseg_bin, tumour_scan, tmp_path / "mask.nii.gz", "--prob", str(prob_file))
    want = np.asarray(nib.load(prob_file).dataobj)
    have = np.asarray(slicer.util.arrayFromVolume(result.probability)).transpose(2, 1, 0)
    np.testing.assert_allclose(have, want, atol=1e-6)
    assert (want[expected] >= THRESHOLD).all()  # (the CLI also keeps the mask in its ROI)

    # Progress came through the CLI's plain progress lines, and it ran to the end.
    assert progress and progress[-1].done == progress[-1].total > 0, progress
    assert any("tumour voxels" in line for line in lines), lines


def test_oblique_volume_comes_back_aligned_in_world(
    scene: Any, cli: list[str], tumour_scan: Path, layerseg_bin: Path, tmp_path: Path
) -> None:
    volume = load_volume(scene, tumour_scan)
    # Tilt the LPS scan by 20 degrees about the A axis and 10 about S: an oblique acquisition.
    rotation = vtk.vtkTransform()
    rotation.RotateY(20)
    rotation.RotateZ(10)
    oblique = np.array(
        [[rotation.GetMatrix().GetElement(r, c) for c in range(4)] for r in range(4)]
    ) @ ijk_to_ras(volume)
    m = vtk.vtkMatrix4x4()
    m.DeepCopy(oblique.ravel().tolist())
    volume.SetIJKToRASMatrix(m)

    result = Logic(scene, cli).segment(volume, params())

    # The same voxels with the same oblique affine, written independently by nibabel.
    image = nib.load(tumour_scan)
    scan = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), oblique), scan)
    expected, affine = run_cli(layerseg_bin, scan, tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(affine, oblique, atol=1e-4)
    got = segment_array(result, volume)
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected.sum() < expected.size

    # In world coordinates: the segment's own geometry is the volume's, and the tumour sits
    # where the CLI's mask puts it.
    labelmap = result.segmentation.GetSegmentation().GetSegment(result.segment_id)
    image_data = labelmap.GetRepresentation("Binary labelmap")
    seg_matrix = vtk.vtkMatrix4x4()
    image_data.GetImageToWorldMatrix(seg_matrix)
    seg_affine = np.array([[seg_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(seg_affine, oblique, atol=1e-6)
    np.testing.assert_allclose(
        world_centroid(got, seg_affine), world_centroid(expected, affine), atol=1e-3
    )


def test_volume_under_a_linear_transform(
    scene: Any, cli: list[str], tumour_scan: Path, cli_mask: tuple[np.ndarray, np.ndarray]
) -> None:
    volume = load_volume(scene, tumour_scan)
    moved = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(moved)
    shift = vtk.vtkTransform()
    shift.Translate(30, -12, 5)
    shift.RotateX(15)
    moved.SetMatrixTransformToParent(shift.GetMatrix())
    volume.SetAndObserveTransformNodeID(moved.GetID())

    result = Logic(scene, cli).segment(volume, params())

    # The voxels are the scan's own (the file the user loaded), and the segmentation follows
    # the volume under the same transform, so they overlay in world coordinates.
    np.testing.assert_array_equal(segment_array(result, volume), cli_mask[0])
    assert result.segmentation.GetParentTransformNode() is moved


def test_organ_mask_from_a_segment(
    scene: Any, cli: list[str], sample_dirs: dict[str, Path], layerseg_bin: Path, tmp_path: Path
) -> None:
    folder = sample_dirs["colin27"]
    volume = load_volume(scene, folder / "image.nii.gz")
    brain_label = load_volume(scene, folder / "brain.nii.gz", labelmap=True)
    brain = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(brain)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        brain_label, brain
    )
    brain_id = brain.GetSegmentation().GetNthSegmentID(0)

    result = Logic(scene, cli).segment(volume, params(), organ=OrganMask(brain, brain_id))

    expected, _ = run_cli(
        layerseg_bin, folder / "image.nii.gz", tmp_path / "m.nii.gz",
        "--organ-mask", str(folder / "brain.nii.gz"),
    )  # fmt: skip
    np.testing.assert_array_equal(segment_array(result, volume), expected)
    # The organ mask really limited the search. It acts on the network's coarse grid (64^3 in
    # the tiny profile), so a rim outside the brain remains; without it, most of this tiny
    # network's mask lies outside the brain (829842 of 1005306 voxels when this was written).
    inside = np.asarray(nib.load(folder / "brain.nii.gz").dataobj) > 0
    assert expected.any() and (expected & ~inside).sum() < 0.25 * expected.sum()


def test_existing_output_node_gets_its_tumour_segment_replaced(
    scene: Any, cli: list[str], tumour_scan: Path, cli_mask: tuple[np.ndarray, np.ndarray]
) -> None:
    volume = load_volume(scene, tumour_scan)
    logic = Logic(scene, cli)
    first = logic.segment(volume, params())
    count = scene.GetNumberOfNodes()
    second = logic.segment(volume, params(), output=first.segmentation)
    assert second.segmentation is first.segmentation
    assert scene.GetNumberOfNodes() == count
    assert first.segmentation.GetSegmentation().GetNumberOfSegments() == 1
    np.testing.assert_array_equal(segment_array(second, volume), cli_mask[0])


# ---- the brain / organ mask choice ----------------------------------------------------------


def brain_segmentation(scene: Any, folder: Path) -> tuple[Any, str]:
    """A segmentation node holding the sample's brain label as its only segment."""
    label = load_volume(scene, folder / "brain.nii.gz", labelmap=True)
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName("my segments")
    scene.AddNode(node)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, node)
    return node, str(node.GetSegmentation().GetNthSegmentID(0))


def test_each_organ_mask_choice_becomes_its_command_line(
    scene: Any, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = sample_dirs["colin27"]
    volume = load_volume(scene, folder / "image.nii.gz")
    node, segment_id = brain_segmentation(scene, folder)
    truth = np.asarray(nib.load(folder / "brain.nii.gz").dataobj) > 0
    written: list[np.ndarray] = []

    def check_organ(path: Path) -> None:
        written.append(np.asarray(nib.load(path).dataobj))

    logic = Logic(scene, wrapper(tmp_path, "exit 0"))

    def argv(p: SegmentParameters, organ: OrganMask | None = None) -> list[str]:
        running = logic.start_segment(volume, p, organ=organ)
        try:
            assert running.wait(60) == 0
            args = running.job.argv[1:]
            value = args[args.index("--organ-mask") + 1]
            if value not in ("auto", "none"):
                assert Path(value).parent == running.folder
                check_organ(Path(value))
            if "--save-organ-mask" in args:
                saved = Path(args[args.index("--save-organ-mask") + 1])
                assert saved.parent == running.folder
            return args
        finally:
            running.tmp.cleanup()

    def after(args: list[str], flag: str) -> str | None:
        return args[args.index(flag) + 1] if flag in args else None

    # Automatic: brain extraction, and the mask it used comes back.
    auto = argv(params(organ_mask="auto"))
    assert after(auto, "--organ-mask") == "auto"
    saved = after(auto, "--save-organ-mask")
    assert saved is not None and Path(saved).name == "brain.nii"
    # Automatic is the default.
    assert params().organ_mask == "auto" and SegmentParameters().organ_mask == "auto"
    # None: the whole scan, nothing to bring back.
    none = argv(params(organ_mask="none"))
    assert after(none, "--organ-mask") == "none" and "--save-organ-mask" not in none
    # From a segment: the segment, written on the scan's grid, and nothing to bring back.
    chosen = argv(params(organ_mask="segment"), OrganMask(node, segment_id))
    assert Path(after(chosen, "--organ-mask") or "").name == "organ.nii"
    assert "--save-organ-mask" not in chosen
    np.testing.assert_array_equal(written[-1] > 0, truth)
    # A segment given wins over the choice, as a file does on the command line.
    given = argv(params(organ_mask="none"), OrganMask(node, segment_id))
    assert Path(after(given, "--organ-mask") or "").name == "organ.nii"
    assert "--save-organ-mask" not in given
    assert chosen.count("--organ-mask") == given.count("--organ-mask") == 1
    # "From a segment" without one: a message, not a run.
    before = node_ids(scene)
    with pytest.raises(UserError, match="Choose the segment for the brain / organ mask"):
        logic.start_segment(volume, params(organ_mask="segment"))
    with pytest.raises(UserError, match="organ mask 'brain'"):
        logic.start_segment(volume, params(organ_mask="brain"))
    assert node_ids(scene) == before


def test_organ_mask_setting_round_trips_through_the_parameter_node(scene: Any) -> None:
    # A segment painted in the scene (no file behind it).
    arr = np.zeros((8, 8, 8), np.uint8)
    arr[2:6, 2:6, 2:6] = 1
    label = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(label)
    slicer.util.updateVolumeFromArray(label, arr)
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, node)
    segment_id = str(node.GetSegmentation().GetNthSegmentID(0))
    parameters = slicer.vtkMRMLScriptedModuleNode()
    parameters.SetName("LayerSeg")
    scene.AddNode(parameters)
    # A new parameter node: Automatic.
    assert read_organ_mask_setting(parameters) == OrganMaskSetting("auto", None, "")

    def saved_and_loaded(setting: OrganMaskSetting) -> OrganMaskSetting:
        write_organ_mask_setting(parameters, setting)
        scene.SetSaveToXMLString(1)
        scene.Commit()
        loaded = slicer.vtkMRMLScene()
        loaded.SetLoadFromXMLString(1)
        loaded.SetSceneXMLString(scene.GetSceneXMLString())
        assert loaded.Import()
        back = read_organ_mask_setting(loaded.GetFirstNodeByClass("vtkMRMLScriptedModuleNode"))
        if back.segmentation is not None:
            assert back.segmentation.GetScene() is loaded
            back.segmentation = scene.GetNodeByID(back.segmentation.GetID())
        return back

    for setting in (
        OrganMaskSetting("segment", node, segment_id),
        OrganMaskSetting("none", node, segment_id),  # the segment is kept for later
        OrganMaskSetting("auto", None, ""),
        OrganMaskSetting("none", None, ""),
    ):
        assert saved_and_loaded(setting) == setting
    assert OrganMaskSetting("segment", node, segment_id).organ() == OrganMask(node, segment_id)
    assert OrganMaskSetting("auto", node, segment_id).organ() is None
    with pytest.raises(UserError, match="Choose the segment"):
        OrganMaskSetting("segment", node, "").organ()
    with pytest.raises(UserError, match="unknown brain / organ mask choice"):
        write_organ_mask_setting(parameters, OrganMaskSetting("brain"))

    # A scene saved before the choice existed: a chosen segment meant "search inside it".
    old = slicer.vtkMRMLScriptedModuleNode()
    scene.AddNode(old)
    old.SetNodeReferenceID("OrganMask", node.GetID())
    old.SetParameter("OrganMaskSegmentId", segment_id)
    assert read_organ_mask_setting(old) == OrganMaskSetting("segment", node, segment_id)
    old.RemoveNodeReferenceIDs("OrganMask")
    assert read_organ_mask_setting(old).choice == "auto"


def test_automatic_brain_mask_comes_back_as_a_brain_segment(
    scene: Any, tumour_scan: Path, layerseg_bin: Path, tmp_path: Path
) -> None:
    # The tiny test profile with brain extraction on, as brain-mri has it.
    profile = json.loads(Path(PROFILE).read_text())
    profile["inference"]["brain_extraction"] = True
    bet_profile = tmp_path / "tiny-bet.json"
    bet_profile.write_text(json.dumps(profile))
    # The real CLI; the script keeps a copy of the brain mask and the tumour mask it wrote.
    kept = tmp_path / "kept"
    kept.mkdir()
    cli = wrapper(
        tmp_path,
        f'"{layerseg_bin}" "$@" || exit $?\n'
        'while [ $# -gt 0 ]; do case "$1" in\n'
        f'  --save-organ-mask) [ -f "$2" ] && cp "$2" "{kept}/brain.nii" ;;\n'
        f'  --out) cp "$2" "{kept}/mask.nii" ;;\n'
        "esac; shift; done",
    )
    logic = Logic(scene, cli)
    volume = load_volume(scene, tumour_scan)
    lines: list[str] = []
    result = logic.segment(
        volume, params(profile=str(bet_profile)), on_line=lines.append, timeout=300
    )

    assert result.organ_mask == "auto" and result.warnings == [], lines
    assert result.brain_segment_id is not None
    segmentation = result.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    brain = segmentation.GetSegment(result.brain_segment_id)
    assert brain.GetName() == BRAIN_NAME == "Brain"
    assert brain.GetColor() == pytest.approx(BRAIN_COLOR)
    assert brain.GetColor() != segmentation.GetSegment(result.segment_id).GetColor()
    terminology = vtk.reference("")
    assert brain.GetTag(brain.GetTerminologyEntryTagName(), terminology)
    assert "SCT^12738006^Brain" in terminology.get()
    display = result.segmentation.GetDisplayNode()
    assert display.GetSegmentOpacity2DFill(result.brain_segment_id) == 0.0
    # The Brain segment is the mask the CLI wrote, voxel for voxel, and a plausible brain.
    cli_brain = np.asarray(nib.load(kept / "brain.nii").dataobj) > 0
    np.testing.assert_array_equal(
        segment_on_grid(result.segmentation, result.brain_segment_id, volume), cli_brain
    )
    litres = cli_brain.sum() * np.prod(nib.load(tumour_scan).header.get_zooms()[:3]) / 1e6
    assert 0.8 < litres < 2.2, litres
    # ... and the Tumor segment is the CLI's mask searched inside it.
    cli_tumour = np.asarray(nib.load(kept / "mask.nii").dataobj) > 0
    np.testing.assert_array_equal(segment_array(result, volume), cli_tumour)

    # A second Automatic run into the same node, on the whole head at an eighth of its volume
    # (every second voxel, the voxel size kept), too small for an adult brain that the scan
    # holds whole: the CLI warns that the brain is implausible and searches the whole scan.
    # The warning reaches the result, the old Brain segment goes (it no longer shows what was
    # searched), and a segment of the user's that happens to be called Brain stays.
    voxels = slicer.vtkOrientedImageData()
    voxels.DeepCopy(brain.GetRepresentation("Binary labelmap"))
    users = slicer.vtkSegment()
    users.SetName("Brain")
    users.AddRepresentation("Binary labelmap", voxels)
    assert segmentation.AddSegment(users, "users_brain")
    assert brain.HasTag(SEARCHED_REGION_TAG[0]) and not users.HasTag(SEARCHED_REGION_TAG[0])
    image = nib.load(tumour_scan)
    small_file = tmp_path / "small.nii.gz"
    data = np.asarray(image.dataobj)[::2, ::2, ::2]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), image.affine), small_file)
    small = load_volume(scene, small_file)
    (kept / "brain.nii").unlink()
    again = logic.segment(
        small, params(profile=str(bet_profile)), output=result.segmentation, timeout=300
    )
    assert again.segmentation is result.segmentation and again.brain_segment_id is None
    assert not (kept / "brain.nii").exists()
    assert len(again.warnings) == 1, again.warnings
    assert "brain extraction gave" in again.warnings[0]
    assert "outside the 0.8 to 2.2 L" in again.warnings[0], again.warnings
    assert not again.warnings[0].startswith("layerseg:")
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert sorted(ids) == sorted([again.segment_id, "users_brain"]), ids
    assert segmentation.GetSegment(result.brain_segment_id) is None


def test_liver_ct_has_no_automatic_mask_and_says_so(
    scene: Any, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = sample_dirs["colin27"]
    volume = load_volume(scene, folder / "image.nii.gz")
    before = node_ids(scene)
    # Refused before anything runs: the command line does not even exist.
    logic = Logic(scene, ["/nonexistent/layerseg"])
    liver = {"profile": "liver-ct", "model": None, "device": "cpu"}
    with pytest.raises(
        UserError, match=r"no automatic liver mask.*'From a segment'.*liver segment"
    ):
        logic.start_segment(volume, SegmentParameters(**liver, organ_mask="auto"))
    with pytest.raises(UserError, match="liver mask, and it cannot search the whole scan"):
        logic.start_segment(volume, SegmentParameters(**liver, organ_mask="none"))
    # A profile file that searches inside an organ mask, likewise.
    profile = json.loads(Path(PROFILE).read_text())
    profile["roi"] = {"kind": "organ_mask", "margin_mm": 10.0}
    organ_profile = tmp_path / "organ.json"
    organ_profile.write_text(json.dumps(profile))
    with pytest.raises(UserError, match=r"no automatic organ mask.*organ segment"):
        logic.start_segment(volume, params(profile=str(organ_profile)))
    assert node_ids(scene) == before
    # With a segment, liver-ct runs.
    node, segment_id = brain_segmentation(scene, folder)
    running = Logic(scene, wrapper(tmp_path, "exit 0")).start_segment(
        volume, SegmentParameters(**liver, organ_mask="segment"), OrganMask(node, segment_id)
    )
    running.wait(60)
    running.tmp.cleanup()
    assert running.job.argv[running.job.argv.index("--organ-mask") + 1].endswith("organ.nii")
    # Brain MRI and the tiny test profile take every choice.
    for choice in ("auto", "none"):
        params(organ_mask=choice).validate()
        SegmentParameters(organ_mask=choice).validate()


def test_builtin_profile_search_matches_the_shipped_profiles() -> None:
    shipped = REPO / "rust" / "core" / "profiles"
    assert set(BUILTIN_PROFILE_SEARCH) == set(BUILTIN_PROFILES)
    for name, search in BUILTIN_PROFILE_SEARCH.items():
        assert profile_search(str(shipped / f"{name}.json")) == search, name
        assert profile_search(name) == search
    assert profile_search(PROFILE) == ProfileSearch(False, False)
    assert profile_search(None) is None and profile_search("/nonexistent.json") is None


# ---- cancel and failure ----------------------------------------------------------------------


def wrapper(tmp_path: Path, body: str) -> list[str]:
    """A shell script standing between the logic and the real CLI (so there is a process
    tree), or failing on purpose."""
    script = tmp_path / "layerseg-wrapper"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cancel_kills_the_process_tree_and_leaves_the_scene(
    scene: Any, tumour_scan: Path, layerseg_bin: Path, tmp_path: Path
) -> None:
    volume = load_volume(scene, tumour_scan)
    before = node_ids(scene)
    # Not exec: the shell stays the parent of the real layerseg process.
    logic = Logic(scene, wrapper(tmp_path, f'"{layerseg_bin}" "$@"\nexit $?'))
    running = logic.start_segment(volume, params())
    parent = psutil.Process(running.job.pid)
    deadline = time.monotonic() + 60
    while not parent.children() and time.monotonic() < deadline:
        time.sleep(0.01)
    children = parent.children(recursive=True)
    assert children and "layerseg" in children[0].name()
    assert running.poll() is None, "the run ended before it could be cancelled"

    running.cancel()

    assert running.job.cancelled
    assert gone(parent.pid) and all(gone(c.pid) for c in children)
    assert not running.folder.exists(), "temporary files left behind"
    assert node_ids(scene) == before
    with pytest.raises(UserError, match="cancelled"):
        logic.finish_segment(running)
    assert node_ids(scene) == before


def test_bad_model_file_gives_an_error_and_no_nodes(
    scene: Any, cli: list[str], tumour_scan: Path, tmp_path: Path
) -> None:
    volume = load_volume(scene, tumour_scan)
    before = node_ids(scene)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a model" * 100)
    logic = Logic(scene, cli)
    running = logic.start_segment(volume, params(model=str(bad), probability=True))
    running.wait(120)
    with pytest.raises(UserError) as raised:
        logic.finish_segment(running)
    message = str(raised.value)
    assert "failed (exit code 1)" in message and "bad.safetensors" in message, message
    assert node_ids(scene) == before
    assert not running.folder.exists()


def test_crashing_process_gives_an_error_and_no_nodes(
    scene: Any, tumour_scan: Path, tmp_path: Path
) -> None:
    volume = load_volume(scene, tumour_scan)
    before = node_ids(scene)
    logic = Logic(
        scene, wrapper(tmp_path, "echo 'layerseg: progress windows 0/4' >&2\nkill -SEGV $$")
    )
    with pytest.raises(UserError, match=r"exit code -11"):
        logic.segment(volume, params(), timeout=60)
    assert node_ids(scene) == before


def test_result_on_another_grid_is_refused(
    scene: Any, tumour_scan: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # A CLI that "succeeds" but writes a mask of another scan: checked, refused, scene kept.
    other = sample_dirs["colin27"] / "brain.nii.gz"
    script = wrapper(
        tmp_path, f'while [ "$1" != "--out" ]; do shift; done\ngzip -dc "{other}" > "$2"'
    )
    volume = load_volume(scene, tumour_scan)
    before = node_ids(scene)
    with pytest.raises(UserError, match="voxels, but the input volume has"):
        Logic(scene, script).segment(volume, params(), timeout=60)
    assert node_ids(scene) == before


# ---- bad input -------------------------------------------------------------------------------


def test_no_volume(scene: Any) -> None:
    with pytest.raises(UserError, match="Select an input volume"):
        Logic(scene, ["/nonexistent/layerseg"]).start_segment(None, params())


def test_2d_volume(scene: Any, tumour_scan: Path) -> None:
    slice_ = np.asarray(nib.load(tumour_scan).dataobj)[:, :, 60:61].transpose(2, 1, 0)
    flat = slicer.vtkMRMLScalarVolumeNode()
    flat.SetName("one slice")
    scene.AddNode(flat)
    slicer.util.updateVolumeFromArray(flat, np.ascontiguousarray(slice_))
    with pytest.raises(UserError, match=r"'one slice' is a 2D image \(256x256x1 voxels\)"):
        Logic(scene, ["/nonexistent/layerseg"]).start_segment(flat, params())


def test_label_map_is_not_an_input(scene: Any, sample_dirs: dict[str, Path]) -> None:
    label = load_volume(scene, sample_dirs["colin27"] / "brain.nii.gz", labelmap=True)
    with pytest.raises(UserError, match="not a scalar"):
        check_volume(label)


def test_non_linear_transform_is_refused(scene: Any, tumour_scan: Path) -> None:
    volume = load_volume(scene, tumour_scan)
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p, q in (((0, 0, 0), (0, 0, 5)), ((50, 0, 0), (50, 3, 0)), ((0, 50, 0), (0, 50, 0)),
                 ((0, 0, 50), (4, 0, 50))):  # fmt: skip
        source.InsertNextPoint(p)
        target.InsertNextPoint(q)
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    node = slicer.vtkMRMLTransformNode()
    node.SetName("warp")
    scene.AddNode(node)
    node.SetAndObserveTransformToParent(warp)
    volume.SetAndObserveTransformNodeID(node.GetID())
    with pytest.raises(UserError, match=r"non-linear transform 'warp'.*Harden"):
        check_volume(volume)


def test_empty_organ_mask_segment(scene: Any, tumour_scan: Path) -> None:
    volume = load_volume(scene, tumour_scan)
    empty = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(empty)
    slicer.util.updateVolumeFromArray(empty, np.zeros((8, 8, 8), np.uint8))
    empty.SetIJKToRASMatrix(vtk.vtkMatrix4x4())
    # A segment painted outside the volume: empty where it matters.
    arr = np.zeros((8, 8, 8), np.uint8)
    arr[2:5, 2:5, 2:5] = 1
    far = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(far)
    slicer.util.updateVolumeFromArray(far, arr)
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 5000.0)
    far.SetIJKToRASMatrix(m)
    organ = slicer.vtkMRMLSegmentationNode()
    organ.SetName("organs")
    scene.AddNode(organ)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(far, organ)
    segment_id = organ.GetSegmentation().GetNthSegmentID(0)
    organ.GetSegmentation().GetSegment(segment_id).SetName("Liver")
    before = node_ids(scene)
    with pytest.raises(UserError, match="organ mask segment 'Liver' of 'organs' is empty"):
        Logic(scene, ["/nonexistent/layerseg"]).start_segment(
            volume, params(), organ=OrganMask(organ, segment_id)
        )
    assert node_ids(scene) == before


def test_bad_parameters_are_messages(scene: Any, tumour_scan: Path, tmp_path: Path) -> None:
    volume = load_volume(scene, tumour_scan)
    logic = Logic(scene, ["/nonexistent/layerseg"])
    for bad, match in (
        (params(threshold=1.5), "threshold 1.5"),
        (params(model=str(tmp_path / "missing.safetensors")), "missing.safetensors does not exist"),
        (params(profile="no-such-profile"), "no-such-profile"),
        (params(device="tpu"), "device 'tpu'"),
    ):
        with pytest.raises(UserError, match=match):
            logic.start_segment(volume, bad)


# ---- pretrain and fine-tune -------------------------------------------------------------------


def test_pretrain_from_scene_volumes(
    scene: Any, cli: list[str], sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    volume = load_volume(scene, sample_dirs["colin27"] / "image.nii.gz")
    run = tmp_path / "run"
    p = PretrainParameters(
        out_dir=str(run), steps=1, profile=PROFILE, device="cpu", features="4,4,8,8,16,4",
        extra_args=["--checkpoint-every", "1", "--workers", "1"],
    )  # fmt: skip
    progress: list[Progress] = []
    logic = Logic(scene, cli)
    running = logic.start_pretrain([volume], p, on_progress=progress.append)
    running.wait(600)
    model = logic.finish_run(running)
    assert model == run / "model.safetensors" and model.is_file()
    card = json.loads((run / "model.json").read_text())
    assert card["config"]["features"] == [4, 4, 8, 8, 16, 4] and card["step"] == 1
    assert Progress("pretrain", 1, 1) in progress, progress


def tumour_case(scene: Any, folder: Path, segment_name: str = TUMOUR_NAME) -> tuple[Any, Any]:
    volume = load_volume(scene, folder / "image.nii.gz")
    label = load_volume(scene, folder / "label.nii.gz", labelmap=True)
    seg = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(seg)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, seg)
    seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetNthSegmentID(0)).SetName(segment_name)
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    seg.SetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole(), volume.GetID())
    return volume, seg


def test_finetune_cases_become_a_monai_datalist(
    scene: Any, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = sample_dirs["mrbraintumor2"]
    _, seg = tumour_case(scene, folder)
    datalist = Logic(scene, ["/unused"]).write_datalist([seg], tmp_path)
    cases = json.loads(datalist.read_text())["training"]
    assert len(cases) == 1
    image = nib.load(tmp_path / cases[0]["image"])
    label = nib.load(tmp_path / cases[0]["label"])
    source = nib.load(folder / "image.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(source.dataobj))
    np.testing.assert_allclose(image.affine, source.affine, atol=1e-4)
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-4)
    truth = np.asarray(nib.load(folder / "label.nii.gz").dataobj) > 0
    np.testing.assert_array_equal(np.asarray(label.dataobj), truth.astype(np.uint8))


def test_finetune_refuses_cases_it_cannot_use(scene: Any, sample_dirs: dict[str, Path]) -> None:
    _, named_wrong = tumour_case(scene, sample_dirs["mrbraintumor2"])
    label = scene.GetFirstNodeByClass("vtkMRMLLabelMapVolumeNode")
    # A second segment: now none is called "Tumor" and the choice is ambiguous.
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        label, named_wrong
    )
    segment_id = named_wrong.GetSegmentation().GetNthSegmentID(0)
    named_wrong.GetSegmentation().GetSegment(segment_id).SetName("Lesion")
    named_wrong.SetName("two segments")
    unreferenced = slicer.vtkMRMLSegmentationNode()
    unreferenced.SetName("no volume")
    scene.AddNode(unreferenced)
    with pytest.raises(UserError) as raised:
        Logic(scene, ["/unused"]).write_datalist([named_wrong, unreferenced], Path("/nonexistent"))
    assert "'two segments' has no segment named Tumor" in str(raised.value)
    assert "'no volume' has no reference volume" in str(raised.value)


def test_finetune_command_line(tmp_path: Path) -> None:
    p = FinetuneParameters(out_dir=str(tmp_path / "run"), steps=3, profile="liver-ct")
    p.validate()
    argv = p.to_argv(["layerseg"], tmp_path / "datalist.json")
    assert argv == [
        "layerseg", "finetune", "--datalist", str(tmp_path / "datalist.json"),
        "--out", str(tmp_path / "run"), "--profile", "liver-ct", "--steps", "3",
        "--device", "auto",
    ]  # fmt: skip
    with pytest.raises(ParameterError, match="output folder"):
        FinetuneParameters().validate()


def test_finetune_end_to_end_when_the_cli_has_it(
    scene: Any, cli: list[str], sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    helped = subprocess.run([*cli, "finetune", "--help"], capture_output=True, check=False)
    if helped.returncode != 0:
        pytest.skip("`layerseg finetune` is not in this build yet (issue 8)")
    _, seg = tumour_case(scene, sample_dirs["mrbraintumor2"])
    run = tmp_path / "run"
    p = FinetuneParameters(
        out_dir=str(run), steps=1, profile=PROFILE, model=str(MODEL), device="cpu"
    )
    logic = Logic(scene, cli)
    running = logic.start_finetune([seg], p)
    running.wait(600)
    assert logic.finish_run(running).is_file()


# ---- the subprocess runner, the CLI lookup and dependencies -----------------------------------


def test_progress_lines() -> None:
    assert parse_progress("layerseg: progress windows 3/12") == Progress("windows", 3, 12)
    assert parse_progress("layerseg: step 1: loss 6.0965, lr 1.0e-2") is None
    assert Progress("x", 0, 0).fraction == 0.0


def test_find_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layerseg_bin: Path) -> None:
    monkeypatch.delenv("LAYERSEG_BIN", raising=False)
    assert find_cli(str(layerseg_bin)) == [str(layerseg_bin)]
    not_executable = tmp_path / "layerseg.txt"
    not_executable.write_text("")
    with pytest.raises(CliNotFoundError, match="not an executable file"):
        find_cli(str(not_executable))
    monkeypatch.setenv("LAYERSEG_BIN", str(layerseg_bin))
    assert find_cli() == [str(layerseg_bin)]
    monkeypatch.delenv("LAYERSEG_BIN")
    # Not on PATH, and no runtime installed: the message says where it looked.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CliNotFoundError, match=r"runtime in .* \(not installed\)"):
        find_cli(runtime_root=tmp_path / "runtime")
    # On PATH.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "layerseg").symlink_to(layerseg_bin)
    monkeypatch.setenv("PATH", str(bindir))
    assert find_cli() == [str(bindir / "layerseg")]


# ---- the extension's layout --------------------------------------------------------------------


def cmake_set(text: str, name: str) -> str:
    m = re.search(rf'set\({name}\s+(?:"([^"]*)"|([^)\s]*))\s*\)', text)
    assert m, name
    return m.group(1) if m.group(1) is not None else m.group(2)


#: What the ExtensionsIndex accepts as a repository name's start (check_description_files.py).
INDEX_REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
#: "Name (Institution)", comma-separated.
CONTRIBUTORS = re.compile(r"^[^,()]+ \([^()]+\)(, [^,()]+ \([^()]+\))*$")


def raw_url_file(url: str, entry: dict[str, Any]) -> Path:
    """The committed file a raw.githubusercontent.com URL of the entry's repository and
    revision serves (the extension folder is that repository's root)."""
    owner_repo = entry["scm_url"].removeprefix("https://github.com/").removesuffix(".git")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/{entry['scm_revision']}/"
    assert url.startswith(prefix), (url, prefix)
    return EXTENSION / url.removeprefix(prefix)


def test_catalog_entry_is_valid() -> None:
    entry_path = EXTENSION / "LayerSeg.json"
    entry = json.loads(entry_path.read_text())
    schema = json.loads(SCHEMA.read_text())
    assert entry["$schema"] == schema["$id"]
    jsonschema.validate(entry, schema)
    assert b"\r" not in entry_path.read_bytes()  # the index wants LF line endings
    cmake = (EXTENSION / "CMakeLists.txt").read_text()
    # The checks of the ExtensionsIndex CI (scripts/check_description_files.py).
    assert re.search(r"project\((\w+)\)", cmake).group(1) == entry_path.stem  # type: ignore[union-attr]
    assert not entry_path.stem.lower().startswith("slicer")
    assert entry["category"] == cmake_set(cmake, "EXTENSION_CATEGORY") == "Segmentation"
    assert entry["scm_url"].startswith("https://github.com/")
    assert entry["scm_url"].rsplit("/", 1)[-1].startswith(INDEX_REPOSITORY_PREFIXES)
    depends = cmake_set(cmake, "EXTENSION_DEPENDS")
    assert entry["build_dependencies"] == ([] if depends == "NA" else depends.split())
    # Icon and screenshots: raw URLs of files committed at the repository's root, in formats
    # the index accepts (it reads them with its own patterns, which want a quoted value).
    icon = re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"\s*\)', cmake)
    shots = re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake)
    assert icon and shots
    for url in [icon.group(1), *shots.group(1).split()]:
        image = raw_url_file(url, entry)
        assert image.is_file(), f"{url}: {image} is not committed"
        assert Image.open(image).format in ("PNG", "JPEG", "GIF"), url
    assert raw_url_file(icon.group(1), entry) == MODULE / "Resources" / "Icons" / "LayerSeg.png"
    assert cmake_set(cmake, "EXTENSION_HOMEPAGE").startswith("https://")
    assert len(cmake_set(cmake, "EXTENSION_DESCRIPTION")) > 40
    contributors = cmake_set(cmake, "EXTENSION_CONTRIBUTORS")
    assert CONTRIBUTORS.match(contributors), contributors
    module = ast.parse((MODULE / "LayerSeg.py").read_text())
    listed = [
        ast.literal_eval(node.value)
        for node in ast.walk(module)
        if isinstance(node, ast.Assign)
        and any(ast.unparse(t) == "self.parent.contributors" for t in node.targets)
    ]
    assert listed == [contributors.split(", ")]
    assert "Apache License" in (EXTENSION / "LICENSE").read_text()
    # The entry fails validation when it breaks the schema.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**entry, "tier": 9}, schema)


def test_module_cmake_lists_every_file() -> None:
    cmake = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "LayerSeg")
    listed = set(re.findall(r"^\s+([\w/.-]+\.\w+)\s*$", cmake, re.M))
    present = {
        str(p.relative_to(MODULE))
        for p in MODULE.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.parts[len(MODULE.parts)] != "Testing"
        and p.name != "CMakeLists.txt"
    }
    assert present == listed, (present - listed, listed - present)


def test_icon_is_a_128_pixel_png() -> None:
    icon = Image.open(MODULE / "Resources" / "Icons" / "LayerSeg.png")
    assert icon.format == "PNG" and icon.size == (128, 128)
    colours = icon.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 8  # a drawing, not a blank square


def ui_widgets() -> dict[str, str]:
    root = ET.parse(UI).getroot()
    return {w.get("name", ""): w.get("class", "") for w in root.iter("widget")}


UI = MODULE / "Resources" / "UI" / "LayerSeg.ui"


def test_module_file_has_the_four_classes_and_matches_its_ui() -> None:
    source = (MODULE / "LayerSeg.py").read_text()
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for name in ("LayerSeg", "LayerSegWidget", "LayerSegLogic", "LayerSegTest"):
        assert name in classes, name
    widgets = ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    declared = set(re.findall(r'"(\w+(?:Selector|SpinBox|CheckBox|LineEdit|ComboBox))"', source))
    missing = (used | declared) - set(widgets)
    assert not missing, f"LayerSeg.py uses widgets that LayerSeg.ui lacks: {missing}"
    assert widgets["LayerSeg"] == "qMRMLWidget"
    assert widgets["advancedCollapsibleButton"] == "ctkCollapsibleButton"
    adv = next(
        w for w in ET.parse(UI).getroot().iter("widget")
        if w.get("name") == "advancedCollapsibleButton"
    )  # fmt: skip
    collapsed = [p for p in adv.findall("property") if p.get("name") == "collapsed"]
    assert collapsed and collapsed[0].findtext("bool") == "true"
    # connectGui binds each widget whose SlicerParameterName names a field of the parameter
    # node; only the two checkable node selectors have no connector in Slicer.
    node_class = classes["LayerSegParameterNode"]
    assert [ast.unparse(d) for d in node_class.decorator_list] == ["parameterNodeWrapper"]
    fields = {
        n.target.id
        for n in node_class.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    bound = {
        w.get("name"): w.findtext("property[@name='SlicerParameterName']/string")
        for w in ET.parse(UI).getroot().iter("widget")
        if w.find("property[@name='SlicerParameterName']") is not None
    }
    assert set(bound.values()) <= fields, set(bound.values()) - fields
    assert fields - set(bound.values()) == {"healthyVolumes", "finetuneSegmentations"}
    # Combo boxes list the choices' labels in the choices' order (the bound ones are refilled
    # from them by connectGui; the organ mask one is read by index).
    choices: dict[str, type[PanelChoice]] = {
        "profileComboBox": ProfileChoice,
        "modelComboBox": ModelChoice,
        "deviceComboBox": DeviceChoice,
        "organMaskComboBox": OrganMaskChoice,
    }
    for combo, choice in choices.items():
        node = next(w for w in ET.parse(UI).getroot().iter("widget") if w.get("name") == combo)
        items = [i.findtext("property/string") for i in node.findall("item")]
        assert items == [c.label() for c in choice], combo
        assert (combo in bound) == (choice is not OrganMaskChoice), combo
    assert tuple(c.value for c in OrganMaskChoice) == ORGAN_MASK_CHOICES
    # The choice comes first on the panel, with its segment selector right below it.
    rows = {
        w.get("name"): int(item.get("row", "-1"))
        for item in ET.parse(UI).getroot().iter("item")
        for w in item.findall("widget")
    }
    assert rows["organMaskSelector"] == rows["organMaskComboBox"] + 1


def test_nothing_is_installed_at_import_or_in_the_constructor() -> None:
    tree = ast.parse((MODULE / "LayerSeg.py").read_text())
    module_class = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LayerSeg"
    )
    for scope in (
        *[n for n in tree.body if not isinstance(n, ast.ClassDef | ast.FunctionDef)],
        module_class,
    ):
        for node in ast.walk(scope):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("pip_install", "pip_ensure", "installTorch"), node.attr


def iter_lib_sources() -> Iterator[Path]:
    yield from (MODULE / "LayerSegLib").glob("*.py")


def test_logic_needs_no_qt_and_never_uses_a_shell() -> None:
    for path in iter_lib_sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                for n in names:
                    assert n.split(".")[0] not in ("qt", "ctk") and n != "slicer.util", (path, n)
            if isinstance(node, ast.keyword) and node.arg == "shell":
                pytest.fail(f"{path}: shell= in a subprocess call")


def test_a_job_that_closes_its_output_before_exiting_still_ends() -> None:
    """The output's end and the exit are two moments: a poll between them must not lose the
    first (the runtime install's `python -m venv` step hung on that)."""
    job = Job(["sh", "-c", "echo done; exec >&- 2>&-; sleep 0.5"])
    assert job.wait(timeout=30) == 0
    assert job.lines == ["done"]


def test_install_logic_decides_before_a_job_and_plans_the_install(tmp_path: Path) -> None:
    """The install flow the widget only asks and shows for (LayerSegLib.install)."""
    logic = InstallLogic(tmp_path / "runtime")

    def no_cli() -> list[str]:
        raise CliNotFoundError("no layerseg here")

    assert logic.readiness(lambda: ["layerseg"], logic.source("")) is Readiness.READY
    assert logic.readiness(no_cli, logic.source("  ")) is Readiness.NEEDS_SOURCE
    wheel = tmp_path / "layerseg-0.1.0-cp310-abi3-linux_x86_64.whl"
    assert logic.readiness(no_cli, logic.source(f" {wheel} ")) is Readiness.INSTALL
    assert logic.source(f" {wheel} ", " ", " ") == RuntimeSource(str(wheel))
    assert logic.source("x", "layerseg==0.1", "https://i").requirement == "layerseg==0.1"
    assert RuntimeSource("x").requirement == LAYERSEG_REQUIREMENT
    assert "Install runtime" in NO_SOURCE
    assert not logic.runtime.installed
    with pytest.raises(RuntimeSetupError):
        logic.plan(logic.source(str(wheel)))  # no such wheel
