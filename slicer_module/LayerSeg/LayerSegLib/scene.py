"""MRML helpers: checks on the user's nodes, NIfTI export and import through Slicer's own
storage nodes, and the Tumor segment. MRML and VTK only (no Qt), so this runs in Slicer and on
the ``slicer-core`` wheel alike.

Files are written and read in a private scratch scene, so the user's scene only ever sees
finished nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import slicer
import vtk

#: Name, colour and DICOM terminology (SNOMED CT "Neoplasm" under "Morphologically Altered
#: Structure") of the segment LayerSeg makes.
TUMOUR_NAME = "Tumor"
TUMOUR_COLOR = (0.85, 0.25, 0.2)
TUMOUR_TERMINOLOGY_FIELDS = (
    "Segmentation category and type - DICOM master list",
    "49755003", "SCT", "Morphologically Altered Structure",
    "108369006", "SCT", "Neoplasm",
    "", "", "",
    "Anatomic codes - DICOM master list",
    "", "", "",
    "", "", "",
)  # fmt: skip
#: The brain mask that automatic brain extraction gave, shown beside the tumour so that the
#: region searched can be seen: SNOMED CT "Brain" under "Anatomical Structure", in yellow,
#: apart from the red Tumor.
BRAIN_NAME = "Brain"
BRAIN_COLOR = (0.95, 0.85, 0.2)
BRAIN_TERMINOLOGY_FIELDS = (
    "Segmentation category and type - DICOM master list",
    "123037004", "SCT", "Anatomical Structure",
    "12738006", "SCT", "Brain",
    "", "", "",
    "Anatomic codes - DICOM master list",
    "", "", "",
    "", "", "",
)  # fmt: skip
#: The tag (and its value) that marks the segment LayerSeg made from the searched region, so
#: that the next automatic run replaces it and never a segment of the user's.
SEARCHED_REGION_TAG = ("LayerSeg", "searched region")

_BINARY = "Binary labelmap"
#: Largest difference between the input's voxel-to-world matrix and a result's that still
#: counts as the same grid (NIfTI stores float32).
_GEOMETRY_TOLERANCE = 1e-3


class UserError(RuntimeError):
    """Something the user must fix or know about; the message is meant for the panel.

    Not ``layerseg.LayerSegError``, the one exception of the layerseg package (a ValueError
    that both native extensions raise): that package is not in Slicer's Python (it lives in
    the runtime's own environment, see ``runtime.py``), and LayerSeg's failures reach this
    module only as the command line's exit status and its one-line message on stderr, which
    the logic wraps in this class together with the module's own checks."""


def _terminology(fields: tuple[str, ...]) -> str:
    return str(slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(*fields))


def tumour_terminology() -> str:
    return _terminology(TUMOUR_TERMINOLOGY_FIELDS)


def _matrix(node: Any) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m


def _rows(m: vtk.vtkMatrix4x4) -> list[list[float]]:
    return [[m.GetElement(r, c) for c in range(4)] for r in range(4)]


def check_volume(volume: Any) -> None:
    """Raises UserError when ``volume`` cannot be segmented, saying why."""
    if volume is None:
        raise UserError("Select an input volume.")
    name = volume.GetName()
    if not volume.IsA("vtkMRMLScalarVolumeNode") or volume.IsA("vtkMRMLLabelMapVolumeNode"):
        raise UserError(f"'{name}' is not a scalar (greyscale) volume.")
    image = volume.GetImageData()
    if image is None:
        raise UserError(f"'{name}' has no voxels.")
    dims = image.GetDimensions()
    if min(dims) < 2:
        shown = "x".join(str(d) for d in dims)
        raise UserError(f"'{name}' is a 2D image ({shown} voxels); LayerSeg segments 3D volumes.")
    if image.GetNumberOfScalarComponents() != 1:
        raise UserError(f"'{name}' has several components per voxel; choose a scalar volume.")
    transform = volume.GetParentTransformNode()
    if transform is not None and not transform.IsTransformToWorldLinear():
        raise UserError(
            f"'{name}' is under the non-linear transform '{transform.GetName()}'. Harden the "
            "transform on the volume (Data module: right-click the volume, Harden transform) "
            "and segment again."
        )


class ScratchScene:
    """A private MRML scene for writing and reading files."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()

    def _storage(self, path: Path) -> Any:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        self.scene.AddNode(storage)
        storage.SetFileName(str(path))
        storage.SetUseCompression(False)
        return storage

    def write_volume(self, volume: Any, path: Path) -> None:
        """Writes the voxels of ``volume`` on its own grid (its parent transform excluded)."""
        copy = slicer.vtkMRMLScalarVolumeNode()
        self.scene.AddNode(copy)
        copy.SetIJKToRASMatrix(_matrix(volume))
        copy.SetAndObserveImageData(volume.GetImageData())
        self._write(copy, path)

    def write_segment(self, segmentation: Any, segment_id: str, reference: Any, path: Path) -> int:
        """Writes one segment as a 0/1 label map on the grid of ``reference`` (through the
        transforms between them); returns its voxel count there. Nothing is added to the
        user's scene (Slicer's label map export would add a color table to it)."""
        image = segment_on_grid(segmentation, segment_id, reference)
        label = slicer.vtkMRMLLabelMapVolumeNode()
        self.scene.AddNode(label)
        label.SetIJKToRASMatrix(_matrix(reference))
        label.SetAndObserveImageData(image)
        self._write(label, path)
        return count_nonzero(image)

    def _write(self, node: Any, path: Path) -> None:
        storage = self._storage(path)
        if not storage.WriteData(node) or not path.is_file():
            raise UserError(f"cannot write {path}")

    def read(self, path: Path, labelmap: bool) -> Any:
        node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
        self.scene.AddNode(node)
        storage = self._storage(path)
        if not path.is_file() or not storage.ReadData(node) or node.GetImageData() is None:
            raise UserError(f"cannot read {path}")
        return node


def segment_on_grid(segmentation: Any, segment_id: str, reference: Any) -> vtk.vtkImageData:
    """The segment resampled (nearest neighbour) onto the voxel grid of the volume
    ``reference``, as 0/1 unsigned char voxels in IJK order."""
    if segmentation.GetSegmentation().GetSegment(segment_id) is None:
        raise UserError(f"'{segmentation.GetName()}' has no segment '{segment_id}'")
    labelmap = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation, segment_id, labelmap, False):
        raise UserError(
            f"segment '{segment_id}' of '{segmentation.GetName()}' has no binary labelmap"
        )
    target = slicer.vtkOrientedImageData()
    target.SetExtent(reference.GetImageData().GetExtent())
    target.SetImageToWorldMatrix(_matrix(reference))
    between = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(
        segmentation.GetParentTransformNode(), reference.GetParentTransformNode(), between
    )
    resample = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage
    resampled = slicer.vtkOrientedImageData()
    if labelmap.IsEmpty():
        resampled.ShallowCopy(target)
        resampled.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        resampled.GetPointData().GetScalars().Fill(0)
    elif not resample(labelmap, target, resampled, False, True, between, 0):
        raise UserError(
            f"cannot resample segment '{segment_id}' of '{segmentation.GetName()}' onto "
            f"'{reference.GetName()}'"
        )
    # Where the segment and the grid do not fully overlap, crop or pad to the grid.
    fit = vtk.vtkImageConstantPad()
    fit.SetInputData(resampled)
    fit.SetOutputWholeExtent(target.GetExtent())
    fit.SetConstant(0)
    binary = vtk.vtkImageThreshold()
    binary.SetInputConnection(fit.GetOutputPort())
    binary.ThresholdByUpper(1)
    binary.SetInValue(1)
    binary.SetOutValue(0)
    binary.SetOutputScalarTypeToUnsignedChar()
    binary.Update()
    out = vtk.vtkImageData()
    out.DeepCopy(binary.GetOutput())
    if out.GetDimensions() != reference.GetImageData().GetDimensions():
        raise UserError(
            f"segment '{segment_id}' of '{segmentation.GetName()}' did not land on the grid "
            f"of '{reference.GetName()}'"
        )
    out.SetOrigin(0, 0, 0)
    out.SetSpacing(1, 1, 1)
    return out


def count_nonzero(image: Any) -> int:
    from vtk.util.numpy_support import vtk_to_numpy

    scalars = image.GetPointData().GetScalars()
    return int((vtk_to_numpy(scalars) != 0).sum()) if scalars is not None else 0


def check_same_grid(result: Any, volume: Any, path: Path) -> None:
    """Raises UserError unless ``result`` lies on the voxel grid of ``volume``."""
    got, want = result.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions()
    if got != want:
        raise UserError(f"{path}: {got} voxels, but the input volume has {want}")
    a, b = _rows(_matrix(result)), _rows(_matrix(volume))
    worst = max(
        abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)
    )
    if worst > _GEOMETRY_TOLERANCE:
        raise UserError(f"{path}: not on the input volume's grid (differs by {worst:.3g})")


def _labelmap_segment(
    mask: Any, volume: Any, name: str, color: tuple[float, float, float], fields: tuple[str, ...]
) -> Any:
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(mask.GetImageData())
    image.SetImageToWorldMatrix(_matrix(volume))
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetColor(*color)
    segment.SetTag(segment.GetTerminologyEntryTagName(), _terminology(fields))
    segment.AddRepresentation(_BINARY, image)
    return segment


def tumour_segment(mask: Any, volume: Any) -> Any:
    """A "Tumor" segment holding ``mask`` (a label map node read from the CLI's output) on
    exactly the voxel grid of ``volume``."""
    return _labelmap_segment(mask, volume, TUMOUR_NAME, TUMOUR_COLOR, TUMOUR_TERMINOLOGY_FIELDS)


def brain_segment(mask: Any, volume: Any) -> Any:
    """A "Brain" segment holding the brain mask the CLI extracted (``--save-organ-mask``),
    tagged as the searched region."""
    segment = _labelmap_segment(mask, volume, BRAIN_NAME, BRAIN_COLOR, BRAIN_TERMINOLOGY_FIELDS)
    segment.SetTag(*SEARCHED_REGION_TAG)
    return segment


def searched_region_ids(segmentation_node: Any) -> list[str]:
    """The segments LayerSeg made from the region it searched (tagged SEARCHED_REGION_TAG)."""
    segmentation = segmentation_node.GetSegmentation()
    key, value = SEARCHED_REGION_TAG
    found = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        tag = vtk.reference("")
        if segmentation.GetSegment(segment_id).GetTag(key, tag) and tag.get() == value:
            found.append(str(segment_id))
    return found


def find_segment_id(segmentation_node: Any, name: str) -> str | None:
    """The id of the segment called ``name`` (case-insensitively), or None."""
    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        if segmentation.GetSegment(segment_id).GetName().lower() == name.lower():
            return str(segment_id)
    return None


def place_like(node: Any, volume: Any) -> None:
    """Puts ``node`` under the parent transform of ``volume`` and beside it in the subject
    hierarchy, so that it overlays the volume in world coordinates."""
    transform = volume.GetParentTransformNode()
    node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
    scene = node.GetScene()
    if scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode") is None:
        return
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(node), parent)
