//! Reading a NIfTI-1 file safely: the header is parsed and checked (magic, dimensions, datatype,
//! voxel offset, affine) before any voxel memory is allocated, and exactly the bytes of the first
//! 3D volume are read.

use flate2::read::GzDecoder;
use nifti::NiftiHeader;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{nifti_error, AffineSource, NiftiMeta, ReadOptions, ReadWarning, HEADER_SIZE};
use crate::affine::{determinant3, Affine};
use crate::error::{Error, Result};

/// Validate the header and read exactly the bytes of the first 3D volume.
pub(super) fn read_raw(
    path: &Path,
    opts: &ReadOptions,
) -> Result<(NiftiHeader, Vec<u8>, NiftiMeta)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "is a directory, not a NIfTI file".into(),
        });
    }
    let len = file.metadata().map(|m| m.len()).ok();
    read_raw_from(path, file, len, opts)
}

/// As [`read_raw`], from any byte source of `len` bytes (when known); `path` only names the
/// source in errors.
pub(super) fn read_raw_from(
    path: &Path,
    source: impl Read,
    len: Option<u64>,
    opts: &ReadOptions,
) -> Result<(NiftiHeader, Vec<u8>, NiftiMeta)> {
    let mut buffered = BufReader::new(source);
    let mut magic = [0u8; 2];
    let gz = match buffered.fill_buf_peek(&mut magic) {
        Ok(n) => n == 2 && magic == [0x1f, 0x8b],
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut reader: Box<dyn Read + '_> = if gz {
        Box::new(GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let read_err = |e: std::io::Error| {
        if gz {
            Error::Invalid {
                path: path.to_path_buf(),
                reason: format!("corrupt or truncated gzip stream ({e})"),
            }
        } else {
            Error::io(path, e)
        }
    };

    let mut head = Vec::with_capacity(HEADER_SIZE);
    (&mut reader)
        .take(HEADER_SIZE as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    if head.len() < HEADER_SIZE {
        return Err(Error::NotNifti {
            path: path.to_path_buf(),
            reason: format!(
                "only {} bytes, a NIfTI-1 header needs {HEADER_SIZE}",
                head.len()
            ),
        });
    }
    let mut header = NiftiHeader::from_reader(&head[..]).map_err(|e| match e {
        nifti::NiftiError::InvalidFormat => Error::NotNifti {
            path: path.to_path_buf(),
            reason: "wrong magic (expected \"n+1\"); LayerSeg reads NIfTI-1, NRRD and MetaImage \
                     files"
                .into(),
        },
        other => nifti_error(path, other),
    })?;
    if header.sizeof_hdr != HEADER_SIZE as i32 {
        return Err(Error::NotNifti {
            path: path.to_path_buf(),
            reason: format!(
                "sizeof_hdr is {}, expected 348 (NIfTI-2 is not supported)",
                header.sizeof_hdr
            ),
        });
    }
    if &header.magic != b"n+1\0" {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "a header-only .hdr/.img pair is not supported; convert it to .nii".into(),
        });
    }
    let (dims, volume_voxels, total_volumes) = validate_dims(path, &header, opts)?;
    let (datatype, bytes_per_voxel) = datatype_of(path, header.datatype)?;

    let vox_offset = header.vox_offset;
    if !(vox_offset.is_finite() && vox_offset >= HEADER_SIZE as f32 && vox_offset < 1e9) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("bad vox_offset {vox_offset}"),
        });
    }
    let skip = vox_offset as u64 - HEADER_SIZE as u64;
    let skipped =
        std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink()).map_err(read_err)?;
    let expected = volume_voxels * bytes_per_voxel;
    if skipped < skip {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "header extensions and voxel data",
            expected: skip + expected,
            found: skipped,
        });
    }
    // A header may promise more than the file holds: reserve no more than the source can
    // decode to (deflate expands at most 1032-fold), and grow with the data actually present.
    let plausible = match len {
        Some(n) if gz => n.saturating_mul(1032),
        Some(n) => n,
        None => 1 << 26,
    };
    let mut raw = Vec::with_capacity(expected.min(plausible) as usize);
    reader
        .take(expected)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    if (raw.len() as u64) < expected {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "voxel data",
            expected,
            found: raw.len() as u64,
        });
    }

    let (affine, affine_source) = header_affine(path, &header, &dims)?;
    let mut warnings = Vec::new();
    if total_volumes > 1 {
        warnings.push(ReadWarning::ExtraVolumes {
            total: total_volumes,
        });
    }
    // A 2D file is one slice: its first three dims are the volume's, whatever dim[3] holds.
    let all_dims: Vec<usize> = dims
        .iter()
        .copied()
        .chain((4..=header.dim[0] as usize).map(|d| header.dim[d] as usize))
        .collect();
    // From here on the header describes exactly the 3D volume that was read.
    header.dim = [
        3,
        dims[0] as u16,
        dims[1] as u16,
        dims[2] as u16,
        1,
        1,
        1,
        1,
    ];
    let meta = NiftiMeta {
        path: path.to_path_buf(),
        header: header.clone(),
        dims: all_dims,
        datatype,
        affine,
        affine_source,
        warnings,
    };
    Ok((header, raw, meta))
}

fn validate_dims(
    path: &Path,
    header: &NiftiHeader,
    opts: &ReadOptions,
) -> Result<([usize; 3], u64, u64)> {
    let ndim = header.dim[0] as usize;
    let as_signed: Vec<i64> = header.dim.iter().map(|&d| d as i16 as i64).collect();
    let bad = |reason: &str| Error::BadDimensions {
        path: path.to_path_buf(),
        dims: as_signed[1..=ndim.clamp(1, 7)].to_vec(),
        reason: reason.to_string(),
    };
    if !(2..=7).contains(&ndim) {
        return Err(Error::BadDimensions {
            path: path.to_path_buf(),
            dims: as_signed.clone(),
            reason: format!("dim[0] = {} (expected 2 to 7 dimensions)", as_signed[0]),
        });
    }
    if as_signed[1..=ndim].iter().any(|&d| d <= 0) {
        return Err(bad("every dimension must be positive"));
    }
    let mut dims = [1usize; 3];
    for (d, slot) in dims.iter_mut().enumerate().take(ndim.min(3)) {
        *slot = header.dim[d + 1] as usize;
    }
    let volume_voxels = dims.iter().map(|&d| d as u64).product::<u64>();
    let total_volumes = (4..=ndim).map(|d| header.dim[d] as u64).product::<u64>();
    if volume_voxels > opts.max_voxels {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            voxels: volume_voxels,
            limit: opts.max_voxels,
        });
    }
    Ok((dims, volume_voxels, total_volumes))
}

fn datatype_of(path: &Path, code: i16) -> Result<(&'static str, u64)> {
    match code {
        2 => Ok(("uint8", 1)),
        256 => Ok(("int8", 1)),
        512 => Ok(("uint16", 2)),
        4 => Ok(("int16", 2)),
        768 => Ok(("uint32", 4)),
        8 => Ok(("int32", 4)),
        1280 => Ok(("uint64", 8)),
        1024 => Ok(("int64", 8)),
        16 => Ok(("float32", 4)),
        64 => Ok(("float64", 8)),
        _ => Err(Error::UnsupportedDatatype {
            path: path.to_path_buf(),
            code,
            name: match code {
                1 => "binary",
                32 => "complex64",
                128 => "rgb24",
                1536 => "float128",
                1792 => "complex128",
                2048 => "complex256",
                2304 => "rgba32",
                _ => "not a NIfTI datatype",
            }
            .to_string(),
        }),
    }
}

/// The voxel-to-RAS affine as nibabel's `get_best_affine` gives it: sform, else qform, else pixdim.
/// Written here rather than taken from the crate because its qform reader panics on bad pixdim.
fn header_affine(
    path: &Path,
    h: &NiftiHeader,
    dims: &[usize; 3],
) -> Result<(Affine, AffineSource)> {
    let (affine, source) = if h.sform_code > 0 {
        let r = |row: &[f32; 4]| [row[0] as f64, row[1] as f64, row[2] as f64, row[3] as f64];
        (
            [
                r(&h.srow_x),
                r(&h.srow_y),
                r(&h.srow_z),
                [0.0, 0.0, 0.0, 1.0],
            ],
            AffineSource::Sform,
        )
    } else if h.qform_code > 0 {
        let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let rot = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let zooms = [
            h.pixdim[1].abs() as f64,
            h.pixdim[2].abs() as f64,
            h.pixdim[3].abs() as f64 * qfac,
        ];
        let t = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = rot[r][c] * zooms[c];
            }
            m[r][3] = t[r];
        }
        m[3][3] = 1.0;
        (m, AffineSource::Qform)
    } else {
        let zoom = |d: usize| {
            let z = h.pixdim[d + 1].abs() as f64;
            if z > 0.0 {
                z
            } else {
                1.0
            }
        };
        let z = [-zoom(0), zoom(1), zoom(2)];
        let mut m = [[0.0; 4]; 4];
        for d in 0..3 {
            m[d][d] = z[d];
            m[d][3] = -((dims[d] as f64 - 1.0) / 2.0) * z[d];
        }
        m[3][3] = 1.0;
        (m, AffineSource::Pixdim)
    };
    let finite = affine.iter().flatten().all(|v| v.is_finite());
    if !finite || determinant3(&affine).abs() < 1e-12 {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("degenerate {source:?} affine {affine:?}").to_lowercase(),
        });
    }
    Ok((affine, source))
}

/// Peek at the first bytes of a buffered reader without consuming them.
trait PeekExt {
    fn fill_buf_peek(&mut self, out: &mut [u8]) -> std::io::Result<usize>;
}

impl<R: Read> PeekExt for BufReader<R> {
    fn fill_buf_peek(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        Ok(n)
    }
}
