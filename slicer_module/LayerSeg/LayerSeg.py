# Slicer's classes come untyped (no stubs): subclassing them is unavoidable here.
# mypy: disallow-subclassing-any=False
"""LayerSeg for 3D Slicer: segment tumours, pretrain on healthy scans, fine-tune on labels.

This file holds the Slicer glue (module, parameter node, widget, self-test). It is over 600
lines because Slicer loads a scripted module's classes, its Reload-and-Test self-test among
them, from this one file; everything that can live elsewhere already does. The work is done
by ``LayerSegLib`` (no Qt): it exports the inputs to temporary NIfTI files, runs the layerseg
command line in a subprocess, and brings the results back into the scene; its ``install``
module holds the runtime's install flow.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LayerSegLib.install import NO_SOURCE, InstallLogic, Readiness
from LayerSegLib.logic import (
    Logic,
    OrganMask,
    OrganMaskSetting,
    RunningJob,
    SegmentResult,
    read_organ_mask_setting,
    write_organ_mask_setting,
)
from LayerSegLib.parameters import (
    DeviceChoice,
    FinetuneParameters,
    ModelChoice,
    OrganMaskChoice,
    PretrainParameters,
    ProfileChoice,
    SegmentParameters,
)
from LayerSegLib.process import CliNotFoundError, Progress
from LayerSegLib.runtime import LAYERSEG_REQUIREMENT, InstallJob, RuntimeSetupError
from LayerSegLib.scene import BRAIN_NAME, TUMOUR_NAME, UserError, check_volume

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4

    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text


#: Application settings that say where LayerSeg's runtime comes from (see LayerSegLib.runtime).
RUNTIME_SETTINGS = {
    "LayerSeg/RuntimeSource": "runtimeSourceLineEdit",
    "LayerSeg/RuntimeRequirement": "runtimeRequirementLineEdit",
    "LayerSeg/RuntimeDependencyIndex": "runtimeDependencyIndexLineEdit",
}


def runtimeRoot() -> Path:
    """LayerSeg's own Python environment: beside Slicer's settings, one per Python version
    (a Slicer with another Python gets a new one)."""
    settings = Path(slicer.app.slicerUserSettingsFilePath).parent
    return settings / "LayerSeg" / f"runtime-cp{sys.version_info[0]}{sys.version_info[1]}"


def _pathOrNone(path: Path) -> str | None:
    """A path parameter as the logic wants it: an empty line edit reads as Path('.')."""
    text = str(path)
    return None if text in ("", ".") else text


#
# LayerSeg
#


class LayerSeg(ScriptedLoadableModule):
    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LayerSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LayerSeg developers (LayerSeg project)"]
        self.parent.helpText = _(
            "Segments tumours in brain MRI and liver CT with a network pretrained by layer "
            "decomposition on healthy scans with synthetic tumours (Zhang et al., 2021). "
            "Choose a volume and press Segment: a Tumor segment appears in a segmentation "
            "node. Brain / organ mask says where to search: Automatic extracts the brain (brain "
            "MRI) and adds it as a Brain segment; liver CT needs a liver segment (From a "
            "segment). Pretrain and Fine-tune train your own models. The work runs in a separate "
            "process in LayerSeg's own Python environment (Advanced: Install runtime), which "
            "leaves Slicer's Python and its PyTorch as they are; Cancel stops it. See "
            "https://github.com/layerseg/SlicerLayerSeg"
        )
        self.parent.acknowledgementText = _(
            "Method: Zhang X. et al., Self-supervised tumor segmentation through layer "
            "decomposition, arXiv:2109.03230 (2021). Built on PyTorch and MONAI conventions."
        )


#
# LayerSegParameterNode
#


@parameterNodeWrapper
class LayerSegParameterNode:
    """The panel's state in the module's parameter node, saved with the scene. ``connectGui``
    binds every widget whose ``SlicerParameterName`` (in Resources/UI/LayerSeg.ui) names a
    field; the combo boxes show the choices' labels (LayerSegLib.parameters). Slicer has no
    connector for checkable node selectors or the segment selector: the widget copies the two
    node lists, and the brain / organ mask setting goes through LayerSegLib.logic's
    read/write_organ_mask_setting (tested on real MRML)."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    profile: ProfileChoice = ProfileChoice.BRAIN_MRI
    profileFile: Path
    model: ModelChoice = ModelChoice.SHIPPED
    modelFile: Path
    device: DeviceChoice = DeviceChoice.AUTO
    #: The minimum of each spin box means "the profile's default".
    threshold: Annotated[float, WithinRange(0.0, 0.99)] = 0.0
    overlap: Annotated[float, WithinRange(-0.05, 0.95)] = -0.05
    tta: bool = False
    probability: bool = False
    cliPath: Path
    healthyVolumes: list[vtkMRMLScalarVolumeNode]
    healthyFolder: Path
    pretrainSteps: Annotated[int, WithinRange(1, 1_000_000)] = 1000
    pretrainOutput: Path
    finetuneSegmentations: list[vtkMRMLSegmentationNode]
    finetuneSteps: Annotated[int, WithinRange(1, 1_000_000)] = 500
    finetuneOutput: Path


#
# LayerSegWidget
#


class LayerSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Its state lives in a LayerSegParameterNode bound to the widgets; it starts
    one job at a time through the logic and polls it from a timer, so the GUI never blocks."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: LayerSegLogic | None = None
        self.install = InstallLogic(runtimeRoot())
        # A LayerSegParameterNode: typed as Any, since the wrapper's connectGui,
        # disconnectGui and parameterNode come from Slicer's untyped decorator.
        self._parameterNode: Any = None
        self._parameterNodeGuiTag: Any = None
        self._updatingGUI = False
        self._running: RunningJob | InstallJob | None = None
        self._runningKind = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LayerSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LayerSegLogic()
        self.ui.progressBar.hide()

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The widgets no connector binds (see LayerSegParameterNode).
        for selector in (self.ui.healthyVolumesSelector, self.ui.finetuneSegmentationsSelector):
            selector.checkedNodesChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.organMaskComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.organMaskSelector.currentNodeChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.organMaskSelector.currentSegmentChanged.connect(self.updateParameterNodeFromGUI)

        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.pretrainButton.clicked.connect(self.onPretrainButton)
        self.ui.finetuneButton.clicked.connect(self.onFinetuneButton)

        settings = qt.QSettings()
        for key, widgetName in RUNTIME_SETTINGS.items():
            widget = getattr(self.ui, widgetName)
            widget.text = settings.value(key, "")
            widget.editingFinished.connect(self.saveRuntimeSettings)
        if not self.ui.runtimeRequirementLineEdit.text:
            self.ui.runtimeRequirementLineEdit.text = LAYERSEG_REQUIREMENT
        self.ui.installRuntimeButton.clicked.connect(self.onInstallRuntimeButton)
        self.updateRuntimeStatus()

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRunning()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The node stays: a job that ends after the user left the module still records its
        # model in it.
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self.cancelRunning()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---- parameter node ------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        assert self.logic is not None
        node = self.logic.getParameterNode()
        if not node.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                node.inputVolume = first
        self.setParameterNode(node)

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode.parameterNode,
                vtk.vtkCommand.ModifiedEvent,
                self.updateGUIFromParameterNode,
            )

    def setParameterNode(self, node: Any) -> None:
        self._disconnectParameterNode()
        self._parameterNode = node
        if node is not None:
            self._parameterNodeGuiTag = node.connectGui(self.ui)
            self.addObserver(
                node.parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode
            )
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller: Any = None, event: Any = None) -> None:
        """The widgets connectGui does not bind, and the buttons."""
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for selector, checked in (
                (self.ui.healthyVolumesSelector, node.healthyVolumes),
                (self.ui.finetuneSegmentationsSelector, node.finetuneSegmentations),
            ):
                ids = {n.GetID() for n in checked if n is not None}
                for i in range(selector.nodeCount()):
                    n = selector.nodeFromIndex(i)
                    selector.setCheckState(
                        n, qt.Qt.Checked if n.GetID() in ids else qt.Qt.Unchecked
                    )
            organ = read_organ_mask_setting(node.parameterNode)
            self.ui.organMaskComboBox.currentIndex = list(OrganMaskChoice).index(
                OrganMaskChoice(organ.choice)
            )
            self.ui.organMaskSelector.setCurrentNode(organ.segmentation)
            self.ui.organMaskSelector.setCurrentSegmentID(organ.segment_id)
        finally:
            self._updatingGUI = False
        self.updateButtons()

    def updateParameterNodeFromGUI(self, *args: Any) -> None:
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        with slicer.util.NodeModify(node.parameterNode):
            node.healthyVolumes = list(self.ui.healthyVolumesSelector.checkedNodes())
            node.finetuneSegmentations = list(self.ui.finetuneSegmentationsSelector.checkedNodes())
            write_organ_mask_setting(node.parameterNode, self.organMaskSetting())
        self.updateButtons()

    def updateButtons(self) -> None:
        running = self._running is not None
        buttons = {
            "segment": (self.ui.segmentButton, _("Segment")),
            "pretrain": (self.ui.pretrainButton, _("Pretrain")),
            "finetune": (self.ui.finetuneButton, _("Fine-tune")),
            "install": (self.ui.installRuntimeButton, _("Install runtime")),
        }
        for kind, (button, text) in buttons.items():
            mine = running and kind == self._runningKind
            button.text = _("Cancel") if mine else text
            button.enabled = mine or not running
        node = self._parameterNode
        if node is not None:
            self.ui.profilePathLineEdit.enabled = node.profile is ProfileChoice.CUSTOM
            self.ui.modelPathLineEdit.enabled = node.model is ModelChoice.FILE
        self.ui.organMaskSelector.enabled = self.organMaskChoice() is OrganMaskChoice.SEGMENT

    # ---- gathering the choices -----------------------------------------------------------

    def params(self) -> Any:
        assert self._parameterNode is not None
        return self._parameterNode

    def _profile(self) -> str:
        params = self.params()
        if params.profile is not ProfileChoice.CUSTOM:
            return str(params.profile.value)
        path = _pathOrNone(params.profileFile)
        if path is None:
            raise UserError(_("Choose a profile file, or a built-in profile."))
        return path

    def _model(self) -> str | None:
        params = self.params()
        if params.model is ModelChoice.SHIPPED:
            return None
        path = _pathOrNone(params.modelFile)
        if path is None:
            raise UserError(_("Choose a model file, or the shipped model."))
        return path

    def segmentParameters(self) -> SegmentParameters:
        params = self.params()
        return SegmentParameters(
            profile=self._profile(),
            model=self._model(),
            device=params.device.value,
            threshold=None
            if params.threshold <= self.ui.thresholdSpinBox.minimum
            else params.threshold,
            overlap=None if params.overlap <= self.ui.overlapSpinBox.minimum else params.overlap,
            tta=params.tta,
            probability=params.probability,
            organ_mask=self.organMaskChoice().value,
        )

    def organMaskChoice(self) -> OrganMaskChoice:
        choices: list[OrganMaskChoice] = list(OrganMaskChoice)
        return choices[max(int(self.ui.organMaskComboBox.currentIndex), 0)]

    def organMaskSetting(self) -> OrganMaskSetting:
        return OrganMaskSetting(
            self.organMaskChoice().value,
            self.ui.organMaskSelector.currentNode(),
            self.ui.organMaskSelector.currentSegmentID() or "",
        )

    def organMask(self) -> OrganMask | None:
        """The segment to search inside, for "From a segment" (else None)."""
        return self.organMaskSetting().organ()

    # ---- running -------------------------------------------------------------------------

    def _start(self, kind: str, start: Any) -> None:
        """Runs ``start`` (which returns a RunningJob) and shows errors in the panel."""
        assert self.logic is not None
        self.logic.cli_path = _pathOrNone(self.params().cliPath)
        self.ui.logTextEdit.clear()
        try:
            if kind != "install" and not self.ensureRuntime():
                return
            running = start()
        except (UserError, CliNotFoundError, RuntimeSetupError) as e:
            self.showError(str(e))
            return
        self._running, self._runningKind = running, kind
        self.ui.progressBar.setRange(0, 0)  # busy until the first progress line
        self.ui.progressBar.show()
        if kind != "install":
            self.appendLog(" ".join(running.job.argv))
        self._timer.start()
        self.updateButtons()

    def onSegmentButton(self) -> None:
        if self._running is not None:
            self.cancelRunning()
            return
        assert self.logic is not None
        logic, params = self.logic, self.params()
        self._start(
            "segment",
            lambda: logic.start_segment(
                params.inputVolume,
                self.segmentParameters(),
                self.organMask(),
                params.outputSegmentation,
                on_line=self.appendLog,
                on_progress=self.onProgress,
            ),
        )

    def onPretrainButton(self) -> None:
        if self._running is not None:
            self.cancelRunning()
            return
        assert self.logic is not None
        logic, params = self.logic, self.params()

        def start() -> RunningJob:
            pretrain = PretrainParameters(
                out_dir=_pathOrNone(params.pretrainOutput) or "",
                steps=params.pretrainSteps,
                device=params.device.value,
                healthy_folder=_pathOrNone(params.healthyFolder),
                profile=self._profile(),
            )
            volumes = [n for n in params.healthyVolumes if n is not None]
            return logic.start_pretrain(volumes, pretrain, self.appendLog, self.onProgress)

        self._start("pretrain", start)

    def onFinetuneButton(self) -> None:
        if self._running is not None:
            self.cancelRunning()
            return
        assert self.logic is not None
        logic, params = self.logic, self.params()

        def start() -> RunningJob:
            finetune = FinetuneParameters(
                out_dir=_pathOrNone(params.finetuneOutput) or "",
                steps=params.finetuneSteps,
                profile=self._profile(),
                model=self._model(),
                device=params.device.value,
            )
            nodes = [n for n in params.finetuneSegmentations if n is not None]
            return logic.start_finetune(nodes, finetune, self.appendLog, self.onProgress)

        self._start("finetune", start)

    def onProgress(self, progress: Progress) -> None:
        bar = self.ui.progressBar
        bar.setRange(0, 1000)
        bar.setValue(int(1000 * progress.fraction))
        bar.setFormat(f"{progress.what} {progress.done}/{progress.total}")

    def appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def showError(self, message: str) -> None:
        self.appendLog(_("Error: ") + message)
        slicer.util.errorDisplay(message, windowTitle=_("LayerSeg"))

    def onTimer(self) -> None:
        running = self._running
        if running is None or running.poll() is None:
            return
        self._timer.stop()
        kind = self._runningKind
        assert self.logic is not None
        try:
            if isinstance(running, InstallJob):
                runtime = running.check_success()
                self.appendLog(
                    _("Done: the LayerSeg runtime is installed in {path}.").format(
                        path=runtime.root
                    )
                )
            elif kind == "segment":
                result = self.logic.finish_segment(running)
                self.ui.outputSegmentationSelector.setCurrentNode(result.segmentation)
                self.appendLog(
                    _("Done: {voxels} tumour voxels in segment {name} of {node}.").format(
                        voxels=result.voxels, name=TUMOUR_NAME, node=result.segmentation.GetName()
                    )
                )
                self.reportSearchedRegion(result)
            else:
                model = self.logic.finish_run(running)
                params = self.params()
                params.model = ModelChoice.FILE
                params.modelFile = Path(model)
                self.appendLog(
                    _("Done: model written to {path}; it is now the selected model.").format(
                        path=model
                    )
                )
        except (UserError, RuntimeSetupError) as e:
            self.showError(str(e))
        finally:
            self._running, self._runningKind = None, ""
            self.ui.progressBar.hide()
            self.updateButtons()
            self.updateRuntimeStatus()

    def reportSearchedRegion(self, result: SegmentResult) -> None:
        """Says where the search ran, and repeats the CLI's warnings (an implausible brain
        extraction among them) after the Done line, where they are seen."""
        if result.brain_segment_id is not None:
            self.appendLog(
                _("The search ran inside the automatic brain mask: segment {name}.").format(
                    name=BRAIN_NAME
                )
            )
        elif result.organ_mask == "auto":
            self.appendLog(_("No automatic brain mask was used: the whole scan was searched."))
        for warning in result.warnings:
            self.appendLog(_("Warning: ") + warning)
        if result.warnings:
            logging.warning("LayerSeg: %s", "; ".join(result.warnings))

    def cancelRunning(self) -> None:
        running = self._running
        if running is None:
            return
        self._timer.stop()
        with slicer.util.tryWithErrorDisplay(_("Failed to stop the process."), waitCursor=True):
            running.cancel()
        self._running, self._runningKind = None, ""
        self.appendLog(_("Cancelled."))
        if hasattr(self, "ui"):
            self.ui.progressBar.hide()
            self.updateButtons()

    # ---- the runtime (the flow is LayerSegLib.install's; the widget asks and shows) --------

    def saveRuntimeSettings(self) -> None:
        settings = qt.QSettings()
        for key, widgetName in RUNTIME_SETTINGS.items():
            settings.setValue(key, getattr(self.ui, widgetName).text.strip())

    def runtimeSource(self) -> Any:
        return self.install.source(
            self.ui.runtimeSourceLineEdit.text,
            self.ui.runtimeRequirementLineEdit.text,
            self.ui.runtimeDependencyIndexLineEdit.text,
        )

    def updateRuntimeStatus(self) -> None:
        runtime = self.install.runtime
        if runtime.installed:
            text = _("Runtime: installed in {path}").format(path=runtime.root)
        else:
            text = _("Runtime: not installed")
        self.ui.runtimeStatusLabel.text = text

    def ensureRuntime(self) -> bool:
        """True when a layerseg command line is there to run. Otherwise offers to install the
        runtime (which runs in the background; the user starts the job again once it is done)
        and returns False."""
        assert self.logic is not None
        readiness = self.install.readiness(self.logic.cli, self.runtimeSource())
        if readiness is Readiness.NEEDS_SOURCE:
            self.ui.advancedCollapsibleButton.collapsed = False
            self.showError(_(NO_SOURCE))
        elif readiness is Readiness.INSTALL:
            self.onInstallRuntimeButton()
        return readiness is Readiness.READY

    def onInstallRuntimeButton(self) -> None:
        if self._running is not None:
            if self._runningKind == "install":
                self.cancelRunning()
            return
        self.saveRuntimeSettings()
        try:
            plan = self.install.plan(self.runtimeSource())
        except RuntimeSetupError as e:
            self.showError(str(e))
            return
        if not slicer.util.confirmOkCancelDisplay(
            plan.summary() + "\n\n" + _("Install now?"),
            windowTitle=_("LayerSeg: install the runtime"),
        ):
            return
        self._start("install", lambda: self.install.start(plan, self.appendLog, self.onProgress))


#
# LayerSegLogic
#


class LayerSegLogic(ScriptedLoadableModuleLogic, Logic):
    """The module logic on Slicer's scene. All the work is in ``LayerSegLib.logic.Logic``,
    which tests run without Slicer on the slicer-core wheel."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        Logic.__init__(self, slicer.mrmlScene, runtime_root=runtimeRoot())

    def getParameterNode(self) -> Any:
        """The module's parameter node, as a LayerSegParameterNode."""
        wrap: Any = LayerSegParameterNode
        return wrap(super().getParameterNode())


#
# LayerSegTest
#


class LayerSegTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test). The input checks and the NIfTI round trip always
    run; the end-to-end segmentation needs the layerseg package and a shipped model, and is
    reported as skipped (not passed) when they are missing. The full tests run without
    Slicer: tests/test_slicer.py."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_bad_inputs, self.test_export_round_trip, self.test_segment):
            self.setUp()
            test()

    def _sample(self) -> Any:
        import SampleData

        return SampleData.downloadSample("MRBrainTumor2")

    def test_bad_inputs(self) -> None:
        self.delayDisplay("Input checks")
        import numpy as np

        for volume, expected in (
            (None, "Select an input volume"),
            (slicer.util.addVolumeFromArray(np.zeros((1, 16, 16), np.int16)), "2D"),
        ):
            with self.assertRaises(UserError) as raised:
                check_volume(volume)
            self.assertIn(expected, str(raised.exception))
        volume = self._sample()
        warp = vtk.vtkThinPlateSplineTransform()
        source, target = vtk.vtkPoints(), vtk.vtkPoints()
        for p, q in (((0, 0, 0), (0, 0, 5)), ((50, 0, 0), (50, 3, 0)), ((0, 50, 0), (0, 50, 0))):
            source.InsertNextPoint(p)
            target.InsertNextPoint(q)
        warp.SetSourceLandmarks(source)
        warp.SetTargetLandmarks(target)
        warp.SetBasisToR()
        warpNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
        warpNode.SetAndObserveTransformToParent(warp)
        volume.SetAndObserveTransformNodeID(warpNode.GetID())
        with self.assertRaises(UserError) as raised:
            check_volume(volume)
        self.assertIn("non-linear", str(raised.exception))

    def test_export_round_trip(self) -> None:
        self.delayDisplay("NIfTI export keeps voxels and geometry")
        import tempfile

        import numpy as np

        from LayerSegLib.scene import ScratchScene, check_same_grid

        volume = self._sample()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "scan.nii"
            scratch = ScratchScene()
            scratch.write_volume(volume, path)
            back = scratch.read(path, labelmap=False)
            check_same_grid(back, volume, path)
            np.testing.assert_array_equal(
                slicer.util.arrayFromVolume(back), slicer.util.arrayFromVolume(volume)
            )

    def test_segment(self) -> None:
        self.delayDisplay("Segmenting MRBrainTumor2")
        logic = LayerSegLogic()
        try:
            logic.cli()
        except CliNotFoundError as e:
            self.skipTest(f"the LayerSeg runtime is not installed: {e}")
        volume = self._sample()
        try:
            result = logic.segment(volume, SegmentParameters(device="cpu"), timeout=600)
        except UserError as e:
            if "no shipped model" in str(e):
                self.skipTest(str(e))
            raise
        segment = result.segmentation.GetSegmentation().GetSegment(result.segment_id)
        self.assertEqual(segment.GetName(), TUMOUR_NAME)
        # brain-mri extracts the brain (Automatic, the default) and shows it beside the tumour.
        self.assertIsNotNone(result.brain_segment_id, result.warnings)
        brain = result.segmentation.GetSegmentation().GetSegment(result.brain_segment_id)
        self.assertEqual(brain.GetName(), BRAIN_NAME)
        self.assertEqual(
            result.segmentation.GetNodeReference(
                result.segmentation.GetReferenceImageGeometryReferenceRole()
            ),
            volume,
        )
        logging.info("LayerSeg: %d tumour voxels", result.voxels)
        self.delayDisplay("Test passed")
