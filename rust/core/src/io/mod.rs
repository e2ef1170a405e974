//! NIfTI-1 reading and writing (.nii and .nii.gz) on top of the `nifti` crate.
//!
//! Reading validates the header before anything is allocated, so a header that claims absurd
//! dimensions or a truncated file ends in a clear error, never a panic or a huge allocation.
//! Writing goes to a temporary file beside the target and is renamed into place, so a failure
//! leaves no partial file.

use nalgebra::Matrix4;
use ndarray::{Array3, ShapeBuilder};
use nifti::{DataElement, InMemNiftiVolume, IntoNdArray, NiftiHeader, XForm};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::volume::{affines_close, spacing, Affine, Image, LabelMap, Volume};

mod header;
use header::{read_raw, read_raw_from};

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

/// Read an intensity volume as float32, with `scl_slope`/`scl_inter` applied.
pub fn read_image(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<(Image, NiftiMeta)> {
    let path = path.as_ref();
    let (header, raw, meta) = read_raw(path, opts)?;
    image_from_raw(path, header, raw, meta)
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
    let [nx, ny, nz] = [meta.dims[0], meta.dims[1], meta.dims[2]];
    // The crate returns a Fortran-ordered array; keep that memory order, index as [i, j, k].
    let (mut values, _) = array.into_raw_vec_and_offset();
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
    Ok((Volume::new(data, meta.affine), meta))
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
    write_volume(path.as_ref(), vol, reference)
}

/// Write a uint8 label map. With `reference`, the output keeps that file's header geometry.
pub fn write_labels(
    path: impl AsRef<Path>,
    vol: &LabelMap,
    reference: Option<&NiftiMeta>,
) -> Result<()> {
    write_volume(path.as_ref(), vol, reference)
}

fn write_volume<T>(path: &Path, vol: &Volume<T>, reference: Option<&NiftiMeta>) -> Result<()>
where
    T: DataElement + bytemuck::Pod + Clone,
{
    check_replaceable(path)?;
    let header = output_header(vol, reference);
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid {
            path: path.to_path_buf(),
            reason: "output path has no file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Same extension as the target, so the writer compresses exactly when the target asks for it.
    // No other dots in the name: the writer rebuilds the path from its stem and extension.
    let suffix = if name.ends_with(".gz") {
        ".nii.gz"
    } else {
        ".nii"
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}-", name.replace('.', "-")))
        .suffix(suffix)
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    nifti::writer::WriterOptions::new(tmp.path())
        .reference_header(&header)
        .write_nifti(&vol.data)
        .map_err(|e| match e {
            nifti::NiftiError::Io(io) => Error::io(path, io),
            other => Error::Invalid {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    // Temporary files are private (0600); the output is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// An output may replace a regular file or nothing. Renaming a new file over a device such as
/// `/dev/full` or `/dev/null`, a pipe or a folder would destroy it, so those are refused.
pub fn check_replaceable(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "exists and is not a regular file; refusing to replace it with the output"
                .into(),
        }),
        _ => Ok(()),
    }
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

/// The `.nii` and `.nii.gz` files directly inside `dir`, sorted by path.
pub fn nifti_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_nifti(p))
        .collect();
    files.sort();
    Ok(files)
}

/// A scan's name without the folder and the `.nii`/`.nii.gz` extension.
pub fn case_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}

fn is_nifti(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}
