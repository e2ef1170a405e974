"""Renders the catalog screenshot (Screenshot01.png) offscreen, without a Slicer binary.

MRBrainTumor2 is loaded into an MRML scene from the slicer-core wheel and segmented by the
module's own Logic (``layerseg segment`` in a subprocess, the shipped brain model, automatic
brain mask). Slicer's own slice logic and displayable managers draw the three slice views and
the 3D view into offscreen VTK render windows (EGL; no X server needed). The script lays the
four views out as Slicer's Four-Up layout does (3D top left, then axial, sagittal, coronal) and
writes one PNG; Slicer's Qt widgets (view controllers, panel) are not drawn.

    python slicer_module/screenshot.py [--out slicer_module/Screenshot01.png] [--cli layerseg]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
import slicer
import vtk
from PIL import Image, PngImagePlugin

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "LayerSeg"))

from LayerSegLib.logic import Logic, SegmentResult  # noqa: E402
from LayerSegLib.parameters import SegmentParameters  # noqa: E402
from LayerSegLib.scene import segment_on_grid  # noqa: E402

#: Slicer's slice view names, orientations and bar colours, in Four-Up order after the 3D view.
SLICE_VIEWS = (
    ("Red", "Axial", (0.95, 0.33, 0.33)),
    ("Yellow", "Sagittal", (0.93, 0.84, 0.29)),
    ("Green", "Coronal", (0.43, 0.69, 0.38)),
)
#: Slicer's default 3D view background (a gradient) and its view bar colour.
BACKGROUND_3D = ((0.7568, 0.7647, 0.9098), (1.0, 1.0, 1.0))
BAR_3D = (0.45, 0.55, 0.85)
BAR_PX = 6


@dataclass
class Views:
    """An MRML scene set up with what Slicer's application gives its views: the application
    logic, and the colour logic that keeps the default colour tables in the scene (they go
    with it)."""

    scene: Any
    app: Any
    colors: Any


def new_scene() -> Views:
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLScene(scene)
    # The Segmentations module registers these at Slicer's startup; the 3D view needs surfaces.
    rules = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not rules.GetConverterRules():
        rules.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        rules.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    return Views(scene, app, colors)


def load_volume(views: Views, path: Path) -> Any:
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(path.name.split(".")[0])
    views.scene.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    views.scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise SystemExit(f"{path}: cannot read the volume")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def _window(width: int, height: int) -> tuple[Any, Any]:
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # displayable managers attach their widgets
    interactor.SetRenderWindow(window)
    return window, renderer


def _register(factory: Any, name: str) -> None:
    if not factory.IsDisplayableManagerRegistered(name):
        factory.RegisterDisplayableManager(name)


def _pixels(window: Any) -> np.ndarray:
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    rgb = np.array([scalars.GetTuple3(i) for i in range(width * height)], dtype=np.uint8)
    return rgb.reshape(height, width, 3)[::-1]


def render_slice(
    views: Views, volume: Any, name: str, orientation: str, centre: Sequence[float], size: int
) -> np.ndarray:
    """One slice view as Slicer draws it: the slice logic's blended layers, then the 2D
    displayable managers (segmentation fill and outline) on top."""
    window, renderer = _window(size, size)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(views.app)
    logic.SetMRMLScene(views.scene)
    slice_node = logic.AddSliceNode(name)
    logics = views.app.GetSliceLogics() or vtk.vtkCollection()
    logics.AddItem(logic)
    views.app.SetSliceLogics(logics)
    slice_node.SetOrientation(orientation)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    logic.ResizeSliceNode(size, size)
    logic.FitSliceToBackground(size, size)
    mapper = vtk.vtkImageMapper()
    mapper.SetInputConnection(logic.GetImageDataConnection())
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    image = vtk.vtkActor2D()
    image.SetMapper(mapper)
    renderer.AddViewProp(image)
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(views.app)
    _register(factory, "vtkMRMLSegmentationsDisplayableManager2D")
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(slice_node)
    slice_node.JumpSliceByCentering(*centre)
    return _pixels(window)


def render_3d(views: Views, segmentation: Any, size: int) -> np.ndarray:
    """The 3D view: the segments' closed surfaces (the Brain segment faint, as the module
    sets it) through the 3D displayable managers, seen from the front left and above."""
    segmentation.CreateClosedSurfaceRepresentation()
    window, renderer = _window(size, size)
    window.SetAlphaBitPlanes(1)
    window.SetMultiSamples(0)
    renderer.SetUseDepthPeeling(1)
    renderer.GradientBackgroundOn()
    renderer.SetBackground(*BACKGROUND_3D[0])
    renderer.SetBackground2(*BACKGROUND_3D[1])
    view = slicer.vtkMRMLViewNode()
    view.SetLayoutName("1")
    views.scene.AddNode(view)
    factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(views.app)
    _register(factory, "vtkMRMLSegmentationsDisplayableManager3D")
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(view)
    bounds = [0.0] * 6
    segmentation.GetRASBounds(bounds)
    centre = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*centre)
    camera.SetPosition(centre[0] - 300, centre[1] + 420, centre[2] + 260)
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera(bounds)
    camera.Zoom(1.6)
    renderer.ResetCameraClippingRange()
    return _pixels(window)


def _with_bar(panel: np.ndarray, colour: Sequence[float]) -> np.ndarray:
    bar = np.empty((BAR_PX, panel.shape[1], 3), np.uint8)
    bar[:] = [round(255 * c) for c in colour]
    return np.concatenate([bar, panel], axis=0)


def tumour_centre(result: SegmentResult, volume: Any) -> list[float]:
    mask = segment_on_grid(result.segmentation, result.segment_id, volume)
    shape = mask.GetDimensions()
    voxels = np.frombuffer(mask.GetPointData().GetScalars(), dtype=np.uint8)
    kji = np.argwhere(voxels.reshape(shape[::-1]) > 0).mean(axis=0)
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return list(m.MultiplyPoint([kji[2], kji[1], kji[0], 1.0])[:3])


def compose(views: Views, volume: Any, result: SegmentResult, size: int) -> np.ndarray:
    """The Four-Up picture: 3D and the axial view on top, sagittal and coronal below."""
    centre = tumour_centre(result, volume)
    panels = [_with_bar(render_3d(views, result.segmentation, size), BAR_3D)]
    for name, orientation, colour in SLICE_VIEWS:
        pixels = render_slice(views, volume, name, orientation, centre, size)
        panels.append(_with_bar(pixels, colour))
    gap = np.zeros((panels[0].shape[0], 2, 3), np.uint8)
    top = np.concatenate([panels[0], gap, panels[1]], axis=1)
    bottom = np.concatenate([panels[2], gap, panels[3]], axis=1)
    return np.concatenate([top, np.zeros((2, top.shape[1], 3), np.uint8), bottom], axis=0)


def save(picture: np.ndarray, out: Path, text: dict[str, str]) -> None:
    """A palette PNG (the catalog wants it small) carrying ``text`` as PNG text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    image = Image.fromarray(picture).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(out, optimize=True, pnginfo=info)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "Screenshot01.png")
    parser.add_argument("--scan", type=Path, help="default: the MRBrainTumor2 sample")
    parser.add_argument("--cli", default="layerseg", help="the layerseg command to run")
    parser.add_argument("--size", type=int, default=400, help="pixels per view")
    parser.add_argument("--profile", default="brain-mri")
    parser.add_argument("--model", help="default: the model shipped for the profile")
    parser.add_argument("--threshold", type=float, help="default: the profile's")
    args = parser.parse_args(argv)
    scan = args.scan
    if scan is None:
        from layerseg import samples

        scan = samples.fetch(["mrbraintumor2"])["mrbraintumor2"] / "image.nii.gz"
    views = new_scene()
    volume = load_volume(views, scan)
    params = SegmentParameters(
        profile=args.profile, model=args.model, device="cpu", threshold=args.threshold
    )
    result = Logic(views.scene, [args.cli]).segment(volume, params, timeout=1800)
    picture = compose(views, volume, result, args.size)
    save(
        picture,
        args.out,
        {
            "Title": f"LayerSeg in 3D Slicer: {scan.parent.name}",
            "Source": "slicer_module/screenshot.py (slicer-core, VTK offscreen)",
            "TumourVoxels": str(result.voxels),
            "Segments": "Tumor, Brain" if result.brain_segment_id else "Tumor",
        },
    )
    print(f"{args.out}: {picture.shape[1]}x{picture.shape[0]}, {result.voxels} tumour voxels")


if __name__ == "__main__":
    main()
