"""The LayerSeg logic: scene in, layerseg subprocess, scene out. No Qt and no dialogs.

Each operation has a ``start_*`` method that exports what it needs into a temporary folder and
starts the command line (a :class:`RunningJob`), and a ``finish_*`` method that turns the
finished run into nodes or files. The widget polls the job from a timer so the GUI stays
responsive; tests and scripts call the blocking wrappers. Nothing enters the user's scene
before the subprocess has succeeded and its results have been read and checked.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slicer
import vtk

from .parameters import (
    ORGAN_MASK_CHOICES,
    FinetuneParameters,
    ParameterError,
    PretrainParameters,
    SegmentParameters,
)
from .process import Job, Progress, find_cli
from .scene import (
    TUMOUR_NAME,
    ScratchScene,
    UserError,
    brain_segment,
    check_same_grid,
    check_volume,
    count_nonzero,
    find_segment_id,
    place_like,
    searched_region_ids,
    tumour_segment,
)

LineCallback = Callable[[str], None]
ProgressCallback = Callable[[Progress], None]


@dataclass
class OrganMask:
    """A segment that limits the search (a brain or liver mask)."""

    segmentation: Any
    segment_id: str


@dataclass
class SegmentResult:
    segmentation: Any
    segment_id: str
    probability: Any | None
    voxels: int
    #: The Brain segment (the automatic brain mask the search used), when there was one.
    brain_segment_id: str | None = None
    #: The command line's warnings (``layerseg: warning: ...``), without that prefix.
    warnings: list[str] = field(default_factory=list)
    #: The brain / organ mask choice the run used (one of ORGAN_MASK_CHOICES).
    organ_mask: str = "auto"


#: The CLI's warning lines start so (rust/cli; they come on stderr, merged into the output).
WARNING_PREFIX = "layerseg: warning: "

#: Parameter node names of the brain / organ mask settings: the choice, the segmentation node
#: (a node reference) and the segment in it.
ORGAN_MASK_PARAMETER = "OrganMaskChoice"
ORGAN_MASK_REFERENCE = "OrganMask"
ORGAN_MASK_SEGMENT_PARAMETER = "OrganMaskSegmentId"
CHOOSE_ORGAN_SEGMENT = (
    "Choose the segment for the brain / organ mask, or set the mask to Automatic or None."
)


@dataclass
class OrganMaskSetting:
    """The panel's "Brain / organ mask" choice as the parameter node keeps it."""

    choice: str = "auto"
    segmentation: Any | None = None
    segment_id: str = ""

    def organ(self) -> OrganMask | None:
        """The segment to search inside (for "From a segment"), else None; raises
        UserError when that choice lacks its segment."""
        if self.choice != "segment":
            return None
        if self.segmentation is None or not self.segment_id:
            raise UserError(CHOOSE_ORGAN_SEGMENT)
        return OrganMask(self.segmentation, self.segment_id)


def read_organ_mask_setting(node: Any) -> OrganMaskSetting:
    """The setting stored in the parameter node ``node``. A node saved before the choice
    existed (no OrganMaskChoice) means "From a segment" when it names a segmentation, as it
    did then, and otherwise the default, Automatic."""
    segmentation = node.GetNodeReference(ORGAN_MASK_REFERENCE)
    choice = node.GetParameter(ORGAN_MASK_PARAMETER)
    if choice not in ORGAN_MASK_CHOICES:
        choice = "segment" if segmentation is not None else "auto"
    return OrganMaskSetting(choice, segmentation, node.GetParameter(ORGAN_MASK_SEGMENT_PARAMETER))


def write_organ_mask_setting(node: Any, setting: OrganMaskSetting) -> None:
    """Stores ``setting`` in the parameter node ``node`` (the segment is kept for every
    choice, so switching back to "From a segment" finds it again)."""
    if setting.choice not in ORGAN_MASK_CHOICES:
        raise UserError(f"unknown brain / organ mask choice {setting.choice!r}")
    node.SetParameter(ORGAN_MASK_PARAMETER, setting.choice)
    segmentation = setting.segmentation
    node.SetNodeReferenceID(
        ORGAN_MASK_REFERENCE, segmentation.GetID() if segmentation is not None else None
    )
    node.SetParameter(ORGAN_MASK_SEGMENT_PARAMETER, setting.segment_id or "")


@dataclass
class RunningJob:
    """A started subprocess with the temporary folder it reads from and writes to."""

    job: Job
    tmp: tempfile.TemporaryDirectory[str]
    what: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return Path(self.tmp.name)

    def poll(self) -> int | None:
        return self.job.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.job.wait(timeout)

    def cancel(self) -> None:
        """Ends the whole process tree and removes the temporary files."""
        try:
            self.job.cancel()
        finally:
            self.tmp.cleanup()

    def check_success(self) -> None:
        """Raises UserError unless the process ended well (the temporary folder is
        removed on error)."""
        code = self.job.poll()
        if code == 0 and not self.job.cancelled:
            return
        self.tmp.cleanup()
        if self.job.cancelled:
            raise UserError(f"{self.what} was cancelled.")
        if code is None:
            raise UserError(f"{self.what} is still running.")
        detail = self.job.error_text() or "(no output)"
        raise UserError(f"{self.what} failed (exit code {code}):\n{detail}")


def _volume_name(volume: Any) -> str:
    return str(volume.GetName() or volume.GetID() or "volume")


def _safe_file_name(text: str) -> str:
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return kept.strip("._") or "case"


class Logic:
    """Everything the LayerSeg panel does, on a given MRML ``scene``.

    ``cli`` is the command that runs layerseg (as an argument-list prefix); by default it is
    found with :func:`~LayerSegLib.process.find_cli` from ``cli_path``, ``$LAYERSEG_BIN``,
    LayerSeg's own runtime at ``runtime_root`` and PATH.
    """

    def __init__(
        self,
        scene: Any,
        cli: Sequence[str] | None = None,
        cli_path: str | None = None,
        runtime_root: Path | None = None,
    ) -> None:
        self.scene = scene
        self._cli = list(cli) if cli is not None else None
        self.cli_path = cli_path
        self.runtime_root = runtime_root

    def cli(self) -> list[str]:
        if self._cli is not None:
            return list(self._cli)
        return find_cli(self.cli_path, self.runtime_root)

    # ---- segment -------------------------------------------------------------------------

    def start_segment(
        self,
        volume: Any,
        params: SegmentParameters,
        organ: OrganMask | None = None,
        output: Any | None = None,
        on_line: LineCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> RunningJob:
        """Checks the inputs, writes them to temporary NIfTI files and starts
        ``layerseg segment``. ``organ``: the segment to search inside; given, it wins over
        ``params.organ_mask`` (as a file does on the command line). ``output``: an existing
        segmentation node whose Tumor segment is replaced (and, on an Automatic run, its Brain
        segment); None makes a new node."""
        check_volume(volume)
        if organ is not None:
            params = dataclasses.replace(params, organ_mask="segment")
        try:
            params.validate()
        except ParameterError as e:
            raise UserError(str(e)) from e
        if params.organ_mask == "segment" and organ is None:
            raise UserError(CHOOSE_ORGAN_SEGMENT)
        if output is not None and not output.IsA("vtkMRMLSegmentationNode"):
            raise UserError(f"'{output.GetName()}' is not a segmentation node.")
        cli = self.cli()
        tmp = tempfile.TemporaryDirectory(prefix="layerseg-slicer-")
        try:
            folder = Path(tmp.name)
            scratch = ScratchScene()
            scan = folder / "scan.nii"
            scratch.write_volume(volume, scan)
            organ_file = None
            if organ is not None:
                organ_file = folder / "organ.nii"
                self._write_organ(scratch, organ, volume, organ_file)
            mask = folder / "mask.nii"
            prob = folder / "prob.nii" if params.probability else None
            # The automatic mask comes back to be shown (the CLI writes none when the profile
            # extracts no brain, or when the brain it found was implausible).
            brain = folder / "brain.nii" if params.organ_mask == "auto" else None
            argv = params.to_argv(cli, scan, mask, prob, organ_file, brain)
            job = Job(argv, on_line=on_line, on_progress=on_progress)
        except BaseException:
            tmp.cleanup()
            raise
        return RunningJob(
            job,
            tmp,
            "Segmentation",
            {
                "volume": volume,
                "mask": mask,
                "prob": prob,
                "brain": brain,
                "organ_mask": params.organ_mask,
                "output": output,
            },
        )

    @staticmethod
    def _write_organ(scratch: ScratchScene, organ: OrganMask, volume: Any, path: Path) -> None:
        segmentation = organ.segmentation
        segment = segmentation.GetSegmentation().GetSegment(organ.segment_id)
        if segment is None:
            raise UserError(
                f"'{segmentation.GetName()}' has no segment '{organ.segment_id}' "
                "for the organ mask."
            )
        voxels = scratch.write_segment(segmentation, organ.segment_id, volume, path)
        if voxels == 0:
            raise UserError(
                f"The organ mask segment '{segment.GetName()}' of '{segmentation.GetName()}' is "
                f"empty inside '{_volume_name(volume)}'. Paint the organ, or clear the organ mask."
            )

    def finish_segment(self, running: RunningJob) -> SegmentResult:
        """Reads the finished run's files, checks them, then adds the Tumor segment (the
        Brain segment of an Automatic run, and the probability volume) to the scene. On any
        error the scene is left as it was."""
        running.check_success()
        try:
            volume = running.extra["volume"]
            scratch = ScratchScene()
            mask_path: Path = running.extra["mask"]
            mask = scratch.read(mask_path, labelmap=True)
            check_same_grid(mask, volume, mask_path)
            prob = None
            if running.extra["prob"] is not None:
                prob = scratch.read(running.extra["prob"], labelmap=False)
                check_same_grid(prob, volume, running.extra["prob"])
            brain = None
            brain_path: Path | None = running.extra["brain"]
            if brain_path is not None and brain_path.is_file():
                brain_mask = scratch.read(brain_path, labelmap=True)
                check_same_grid(brain_mask, volume, brain_path)
                brain = brain_segment(brain_mask, volume)
            voxels = count_nonzero(mask.GetImageData())
            segment = tumour_segment(mask, volume)
            result = self._add_results(
                volume,
                segment,
                prob,
                running.extra["output"],
                voxels,
                brain,
                replace_brain=running.extra["organ_mask"] == "auto",
            )
            result.organ_mask = running.extra["organ_mask"]
            result.warnings = [
                line[len(WARNING_PREFIX) :]
                for line in running.job.lines
                if line.startswith(WARNING_PREFIX)
            ]
            return result
        finally:
            running.tmp.cleanup()

    def _add_results(
        self,
        volume: Any,
        segment: Any,
        prob: Any | None,
        output: Any | None,
        voxels: int,
        brain: Any | None = None,
        replace_brain: bool = False,
    ) -> SegmentResult:
        added: list[Any] = []
        try:
            if output is None:
                output = slicer.vtkMRMLSegmentationNode()
                output.SetName(self.scene.GenerateUniqueName(f"{_volume_name(volume)} LayerSeg"))
                self.scene.AddNode(output)
                added.append(output)
                output.CreateDefaultDisplayNodes()
            segmentation = output.GetSegmentation()
            old = find_segment_id(output, TUMOUR_NAME)
            if old is not None:
                segmentation.RemoveSegment(old)
            if not segmentation.AddSegment(segment):
                raise UserError(f"cannot add the Tumor segment to '{output.GetName()}'")
            segment_id = str(segmentation.GetSegmentIdBySegment(segment))
            brain_id = None
            if replace_brain:
                # Only LayerSeg's own (tagged) Brain segment: it showed an earlier search.
                for old in searched_region_ids(output):
                    segmentation.RemoveSegment(old)
            if brain is not None:
                if not segmentation.AddSegment(brain):
                    raise UserError(f"cannot add the Brain segment to '{output.GetName()}'")
                brain_id = str(segmentation.GetSegmentIdBySegment(brain))
                display = output.GetDisplayNode()
                if display is not None:
                    # An outline in the slices and faint in 3D: the tumour stays in sight.
                    display.SetSegmentOpacity2DFill(brain_id, 0.0)
                    display.SetSegmentOpacity3D(brain_id, 0.2)
            output.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            output.SetNodeReferenceID(
                output.GetReferenceImageGeometryReferenceRole(), volume.GetID()
            )
            place_like(output, volume)
            prob_node = None
            if prob is not None:
                prob_node = slicer.vtkMRMLScalarVolumeNode()
                prob_node.SetName(
                    self.scene.GenerateUniqueName(f"{_volume_name(volume)} tumour probability")
                )
                matrix = vtk.vtkMatrix4x4()
                volume.GetIJKToRASMatrix(matrix)
                prob_node.SetIJKToRASMatrix(matrix)
                prob_node.SetAndObserveImageData(prob.GetImageData())
                self.scene.AddNode(prob_node)
                added.append(prob_node)
                prob_node.CreateDefaultDisplayNodes()
                place_like(prob_node, volume)
            return SegmentResult(output, segment_id, prob_node, voxels, brain_id)
        except BaseException:
            for node in added:
                self.scene.RemoveNode(node)
            raise

    def segment(
        self,
        volume: Any,
        params: SegmentParameters,
        organ: OrganMask | None = None,
        output: Any | None = None,
        on_line: LineCallback | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> SegmentResult:
        """Blocking segmentation: start, wait, finish."""
        running = self.start_segment(volume, params, organ, output, on_line, on_progress)
        try:
            running.wait(timeout)
        except BaseException:
            running.cancel()
            raise
        return self.finish_segment(running)

    # ---- pretrain ------------------------------------------------------------------------

    def start_pretrain(
        self,
        healthy: Sequence[Any],
        params: PretrainParameters,
        on_line: LineCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> RunningJob:
        """Writes the healthy scene volumes to NIfTI and starts ``layerseg pretrain``."""
        if not healthy and params.healthy_folder is None:
            raise UserError("Choose healthy volumes in the scene, or a folder of healthy scans.")
        for volume in healthy:
            check_volume(volume)
        try:
            params.validate()
        except ParameterError as e:
            raise UserError(str(e)) from e
        cli = self.cli()
        tmp = tempfile.TemporaryDirectory(prefix="layerseg-slicer-")
        try:
            scratch = ScratchScene()
            files = []
            for i, volume in enumerate(healthy):
                path = Path(tmp.name) / f"{i:03d}_{_safe_file_name(_volume_name(volume))}.nii"
                scratch.write_volume(volume, path)
                files.append(path)
            job = Job(params.to_argv(cli, files), on_line=on_line, on_progress=on_progress)
        except BaseException:
            tmp.cleanup()
            raise
        return RunningJob(job, tmp, "Pretraining", {"model": params.model_path()})

    def finish_run(self, running: RunningJob) -> Path:
        """The model file a finished pretrain or fine-tune run wrote."""
        running.check_success()
        running.tmp.cleanup()
        model: Path = running.extra["model"]
        if not model.is_file():
            raise UserError(f"{running.what} ended without writing {model}.")
        return model

    # ---- fine-tune -----------------------------------------------------------------------

    def write_datalist(self, segmentations: Sequence[Any], folder: Path) -> Path:
        """Turns segmentation nodes into labelled cases: each node's reference volume is the
        image and its Tumor segment (or its only segment) the label, both written on the
        volume's grid. Returns a MONAI datalist (paths relative to it)."""
        if not segmentations:
            raise UserError("Choose segmentations with a tumour segment for fine-tuning.")
        problems: list[str] = []
        cases: list[tuple[Any, Any, str]] = []
        for node in segmentations:
            volume = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
            segment_id = find_segment_id(node, TUMOUR_NAME)
            if segment_id is None and node.GetSegmentation().GetNumberOfSegments() == 1:
                segment_id = str(node.GetSegmentation().GetNthSegmentID(0))
            if volume is None:
                problems.append(f"'{node.GetName()}' has no reference volume")
            elif segment_id is None:
                problems.append(f"'{node.GetName()}' has no segment named {TUMOUR_NAME}")
            else:
                try:
                    check_volume(volume)
                except UserError as e:
                    problems.append(str(e))
                    continue
                cases.append((node, volume, segment_id))
        if problems:
            raise UserError("Cannot fine-tune on these segmentations:\n" + "\n".join(problems))
        scratch = ScratchScene()
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        training = []
        for i, (node, volume, segment_id) in enumerate(cases):
            name = f"{i:03d}_{_safe_file_name(_volume_name(volume))}.nii"
            scratch.write_volume(volume, folder / "images" / name)
            scratch.write_segment(node, segment_id, volume, folder / "labels" / name)
            training.append({"image": f"images/{name}", "label": f"labels/{name}"})
        datalist = folder / "datalist.json"
        datalist.write_text(json.dumps({"training": training}, indent=2) + "\n")
        return datalist

    def start_finetune(
        self,
        segmentations: Sequence[Any],
        params: FinetuneParameters,
        on_line: LineCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> RunningJob:
        """Writes the labelled cases and starts ``layerseg finetune``."""
        try:
            params.validate()
        except ParameterError as e:
            raise UserError(str(e)) from e
        cli = self.cli()
        tmp = tempfile.TemporaryDirectory(prefix="layerseg-slicer-")
        try:
            datalist = self.write_datalist(segmentations, Path(tmp.name))
            job = Job(params.to_argv(cli, datalist), on_line=on_line, on_progress=on_progress)
        except BaseException:
            tmp.cleanup()
            raise
        return RunningJob(job, tmp, "Fine-tuning", {"model": params.model_path()})
