//! Scan reading and writing: NIfTI-1 (.nii and .nii.gz) on top of the `nifti` crate, and NRRD
//! (.nrrd, .nhdr) and MetaImage (.mha, .mhd) in [`itk_formats`], under the same rules.
//!
//! Reading validates the header before anything is allocated, so a header that claims absurd
//! dimensions or a truncated file ends in a clear error, never a panic or a huge allocation.
//! Writing goes through [`crate::atomic`]: a temporary file beside the target, synced and renamed
//! into place, so a failure leaves no partial file.

use nalgebra::Matrix4;
use ndarray::{Array3, ShapeBuilder};
use nifti::{DataElement, InMemNiftiVolume, IntoNdArray, NiftiHeader, XForm};
use std::path::{Path, PathBuf};

use crate::affine::{affines_close, determinant3, spacing, Affine};
use crate::atomic::{check_replaceable, write_atomic, AtomicFile};
use crate::error::{Error, Result};
use crate::volume::{Image, LabelMap, Volume};
use std::io::{Read, Write};

mod header;
mod itk_formats;
use header::{read_raw, read_raw_from};
use itk_formats::Element;

pub(crate) const HEADER_SIZE: usize = 348;
/// Default ceiling on voxels per volume: 2^30 (4 GiB as float32). `LAYERSEG_MAX_VOXELS` raises it.
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Refuse volumes with more voxels than this, before allocating.
    pub max_voxels: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        let max_voxels = std::env::var("LAYERSEG_MAX_VOXELS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_VOXELS);
        ReadOptions { max_voxels }
    }
}

/// Something the reader fixed up and the user should hear about.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadWarning {
    /// A 4D (or higher) file: only the first 3D volume was read.
    ExtraVolumes { total: u64 },
    /// NaN or infinite voxels, replaced by 0.
    NonFinite { count: u64 },
}

impl std::fmt::Display for ReadWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadWarning::ExtraVolumes { total } => {
                write!(f, "file holds {total} volumes; only the first is used")
            }
            ReadWarning::NonFinite { count } => {
                write!(f, "{count} NaN or infinite voxels were set to 0")
            }
        }
    }
}

/// Where the affine came from, in the order NIfTI readers prefer them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    /// Neither code set: pixdim only, as nibabel's base affine.
    Pixdim,
    /// A NRRD or MetaImage file's own directions, spacing and origin (LPS, converted to RAS).
    Directions,
}

/// The header of a file that was read, kept so outputs can reuse its exact geometry.
#[derive(Clone, Debug)]
pub struct NiftiMeta {
    pub path: PathBuf,
    pub header: NiftiHeader,
    /// All dimensions as stored (3 or more).
    pub dims: Vec<usize>,
    pub datatype: &'static str,
    pub affine: Affine,
    pub affine_source: AffineSource,
    pub warnings: Vec<ReadWarning>,
}

impl NiftiMeta {
    pub fn spacing(&self) -> [f64; 3] {
        spacing(&self.affine)
    }
}

/// Read an intensity volume as float32 (NIfTI with `scl_slope`/`scl_inter` applied; NRRD and
/// MetaImage too, told apart by their content).
pub fn read_image(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<(Image, NiftiMeta)> {
    let path = path.as_ref();
    match sniff(path)? {
        Format::Nifti => {
            let (header, raw, meta) = read_raw(path, opts)?;
            image_from_raw(path, header, raw, meta)
        }
        format => read_itk_format(path, format, opts),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Nifti,
    Nrrd,
    MetaImage,
}

/// What to tell a user who gives us DICOM, which we do not read.
const DICOM_HINT: &str = "DICOM is not read; convert the series to NIfTI first, e.g. \
    `dcm2niix -z y -o OUT_FOLDER DICOM_FOLDER`, or load it in 3D Slicer's DICOM module and save \
    the volume as .nii.gz or .nrrd";

/// Enough of a file's start to tell the formats apart (DICOM's magic sits at byte 128).
fn first_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(132);
    std::fs::File::open(path)?
        .take(132)
        .read_to_end(&mut head)?;
    Ok(head)
}

fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

/// Refuses a folder of DICOM files (by `.dcm` extension or the `DICM` magic) with what to do.
pub fn refuse_dicom_folder(path: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Ok(());
    };
    let dicom = entries.filter_map(|e| e.ok()).take(50).any(|e| {
        let p = e.path();
        p.extension().is_some_and(|x| x.eq_ignore_ascii_case("dcm"))
            || first_bytes(&p).is_ok_and(|head| is_dicom(&head))
    });
    if dicom {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("a folder of DICOM files. {DICOM_HINT}"),
        });
    }
    Ok(())
}

/// The format of `path`, from its first bytes (and the `.mha`/`.mhd` extension, whose text
/// header has no fixed magic). A DICOM file, or a folder of them, is refused with what to do.
fn sniff(path: &Path) -> Result<Format> {
    if path.is_dir() {
        refuse_dicom_folder(path)?;
        return Ok(Format::Nifti); // the NIfTI reader says it is a folder
    }
    // A file that cannot be opened or read is left to the NIfTI reader, which names the problem.
    let head = first_bytes(path).unwrap_or_default();
    let name = path.to_string_lossy().to_lowercase();
    Ok(if head.starts_with(b"NRRD") {
        Format::Nrrd
    } else if head.starts_with(b"ObjectType")
        || head.starts_with(b"NDims")
        || name.ends_with(".mha")
        || name.ends_with(".mhd")
    {
        Format::MetaImage
    } else if is_dicom(&head) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("a DICOM file. {DICOM_HINT}"),
        });
    } else {
        Format::Nifti
    })
}

fn read_itk_format(path: &Path, format: Format, opts: &ReadOptions) -> Result<(Image, NiftiMeta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let parsed = match format {
        Format::Nrrd => itk_formats::read_nrrd(path, &bytes, opts.max_voxels)?,
        _ => itk_formats::read_metaimage(path, &bytes, opts.max_voxels)?,
    };
    if determinant3(&parsed.affine).abs() < 1e-12 {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "degenerate geometry: the axis directions do not span 3D".into(),
        });
    }
    let mut meta = NiftiMeta {
        path: path.to_path_buf(),
        header: NiftiHeader::default(),
        dims: parsed.dims.to_vec(),
        datatype: parsed.element.name(),
        affine: parsed.affine,
        affine_source: AffineSource::Directions,
        warnings: Vec::new(),
    };
    let image = volume_from_values(path, parsed.dims, parsed.values, &mut meta)?;
    meta.header = output_header(&image, None);
    Ok((image, meta))
}

/// Read an intensity volume from the bytes of a `.nii` or `.nii.gz` file already in memory;
/// `name` stands for the file in errors. Same checks and result as [`read_image`].
pub fn read_image_bytes(
    bytes: &[u8],
    name: impl AsRef<Path>,
    opts: &ReadOptions,
) -> Result<(Image, NiftiMeta)> {
    let name = name.as_ref();
    let (header, raw, meta) = read_raw_from(name, bytes, Some(bytes.len() as u64), opts)?;
    image_from_raw(name, header, raw, meta)
}

fn image_from_raw(
    path: &Path,
    header: NiftiHeader,
    raw: Vec<u8>,
    mut meta: NiftiMeta,
) -> Result<(Image, NiftiMeta)> {
    let volume = InMemNiftiVolume::from_raw_data(&header, raw).map_err(|e| nifti_error(path, e))?;
    let array = volume
        .into_ndarray::<f32>()
        .map_err(|e| nifti_error(path, e))?;
    let dims = [meta.dims[0], meta.dims[1], meta.dims[2]];
    // The crate returns a Fortran-ordered array; keep that memory order, index as [i, j, k].
    let (values, _) = array.into_raw_vec_and_offset();
    let image = volume_from_values(path, dims, values, &mut meta)?;
    Ok((image, meta))
}

/// The volume of Fortran-ordered `values` on `meta`'s grid; non-finite voxels become 0, with a
/// warning in `meta`.
fn volume_from_values(
    path: &Path,
    [nx, ny, nz]: [usize; 3],
    mut values: Vec<f32>,
    meta: &mut NiftiMeta,
) -> Result<Image> {
    let mut nonfinite = 0u64;
    for v in values.iter_mut().filter(|v| !v.is_finite()) {
        *v = 0.0;
        nonfinite += 1;
    }
    if nonfinite > 0 {
        meta.warnings
            .push(ReadWarning::NonFinite { count: nonfinite });
    }
    let data = Array3::from_shape_vec((nx, ny, nz).f(), values).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        reason: format!("voxel data does not match the header: {e}"),
    })?;
    Ok(Volume::new(data, meta.affine))
}

/// Read a label map: every voxel must be an integer in 0..=255.
pub fn read_labels(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<(LabelMap, NiftiMeta)> {
    let path = path.as_ref();
    let (image, meta) = read_image(path, opts)?;
    let bad = image
        .data
        .iter()
        .find(|&&v| v.fract() != 0.0 || !(0.0..=255.0).contains(&v));
    if let Some(v) = bad {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("not a label map: voxel value {v} is not an integer in 0..=255"),
        });
    }
    Ok((image.with_data(image.data.mapv(|v| v as u8)), meta))
}

/// Write float32 voxels. With `reference`, the output keeps that file's header geometry.
pub fn write_image(
    path: impl AsRef<Path>,
    vol: &Image,
    reference: Option<&NiftiMeta>,
) -> Result<()> {
    write_volume(path.as_ref(), vol, reference, Element::F32)
}

/// Write a uint8 label map. With `reference`, the output keeps that file's header geometry.
pub fn write_labels(
    path: impl AsRef<Path>,
    vol: &LabelMap,
    reference: Option<&NiftiMeta>,
) -> Result<()> {
    write_volume(path.as_ref(), vol, reference, Element::U8)
}

/// The output extensions we write, by the name's ending.
pub const OUTPUT_EXTENSIONS: [&str; 4] = [".nii.gz", ".nii", ".nrrd", ".mha"];

fn write_volume<T>(
    path: &Path,
    vol: &Volume<T>,
    reference: Option<&NiftiMeta>,
    element: Element,
) -> Result<()>
where
    T: DataElement + bytemuck::Pod + Clone,
{
    check_replaceable(path)?;
    let lower = path.to_string_lossy().to_lowercase();
    if lower.ends_with(".nrrd") || lower.ends_with(".mha") {
        return write_itk_format(path, vol, element, lower.ends_with(".nrrd"));
    }
    if !(lower.ends_with(".nii") || lower.ends_with(".nii.gz")) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "unsupported output format: name it {}",
                OUTPUT_EXTENSIONS.join(", ")
            ),
        });
    }
    let header = output_header(vol, reference);
    // Same extension as the target, so the writer compresses exactly when the target asks for it.
    let suffix = if path.to_string_lossy().ends_with(".gz") {
        ".nii.gz"
    } else {
        ".nii"
    };
    let out = AtomicFile::with_suffix(path, suffix)?;
    nifti::writer::WriterOptions::new(out.path())
        .reference_header(&header)
        .write_nifti(&vol.data)
        .map_err(|e| match e {
            nifti::NiftiError::Io(io) => Error::io(path, io),
            other => Error::Invalid {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    out.commit()
}

/// NRRD or MetaImage: the whole file is built in memory, then written beside the target and
/// renamed into place like the NIfTI outputs.
fn write_itk_format<T: bytemuck::Pod>(
    path: &Path,
    vol: &Volume<T>,
    element: Element,
    nrrd: bool,
) -> Result<()> {
    // Fortran order (first axis fastest), as both formats store voxels; little-endian, as every
    // target we build for is.
    let voxels: Vec<T> = vol.data.view().reversed_axes().iter().copied().collect();
    let encoded = itk_formats::Encoded {
        dims: vol.shape(),
        element,
        bytes: bytemuck::cast_slice(&voxels),
    };
    let bytes = if nrrd {
        itk_formats::nrrd_bytes(&encoded, &vol.affine)
    } else {
        itk_formats::metaimage_bytes(&encoded, &vol.affine)
    }
    .map_err(|e| Error::io(path, e))?;
    write_atomic(path, |out| {
        out.file().write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// The header for an output on `vol`'s grid. When the grid is the reference's, every geometry
/// field (qform, sform, codes, pixdim, units) is copied, so viewers place both files identically.
fn output_header<T>(vol: &Volume<T>, reference: Option<&NiftiMeta>) -> NiftiHeader {
    if let Some(meta) = reference {
        if affines_close(&meta.affine, &vol.affine, 1e-9) {
            let mut h = meta.header.clone();
            h.pixdim[4..].fill(1.0);
            h.cal_min = 0.0;
            h.cal_max = 0.0;
            return h;
        }
    }
    let mut h = NiftiHeader::default();
    if let Some(meta) = reference {
        h.xyzt_units = meta.header.xyzt_units;
        h.descrip = meta.header.descrip.clone();
    } else {
        h.xyzt_units = 2 | 8; // mm and seconds
    }
    let a = &vol.affine;
    #[rustfmt::skip]
    let m = Matrix4::new(
        a[0][0], a[0][1], a[0][2], a[0][3],
        a[1][0], a[1][1], a[1][2], a[1][3],
        a[2][0], a[2][1], a[2][2], a[2][3],
        0.0, 0.0, 0.0, 1.0,
    );
    h.set_sform(&m, XForm::ScannerAnat);
    h.set_qform(&m, XForm::ScannerAnat);
    let [sx, sy, sz] = spacing(a);
    h.pixdim[1] = sx as f32;
    h.pixdim[2] = sy as f32;
    h.pixdim[3] = sz as f32;
    h
}

pub(crate) fn nifti_error(path: &Path, e: nifti::NiftiError) -> Error {
    match e {
        nifti::NiftiError::Io(io) => Error::io(path, io),
        other => Error::Invalid {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// The scans (NIfTI, NRRD, MetaImage files, by extension) directly inside `dir`, sorted by path.
pub fn scan_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_scan(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Extensions of the scans we read.
pub const SCAN_EXTENSIONS: [&str; 6] = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"];

/// A scan's name without the folder and the extension (`.nii.gz`, `.nrrd`, ...).
pub fn case_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_lowercase();
    match SCAN_EXTENSIONS.iter().find(|ext| lower.ends_with(*ext)) {
        Some(ext) => name[..name.len() - ext.len()].to_string(),
        None => name,
    }
}

fn is_scan(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let lower = name.to_lowercase();
    SCAN_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}
