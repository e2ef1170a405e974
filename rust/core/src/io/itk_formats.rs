//! NRRD (`.nrrd`, `.nhdr`) and MetaImage (`.mha`, `.mhd`), the formats 3D Slicer and ITK save
//! every day, read and written with the same rules as NIfTI: the header is checked before voxel
//! memory is allocated, the geometry is kept exactly (both store LPS directions and origin; we
//! convert to and from our RAS affine), and every integer and float voxel type is read.
//!
//! Written here because no maintained Rust crate reads and writes both with their geometry
//! (the `nrrd`-named crates handle neither detached data nor space directions). Compression is
//! `flate2`'s gzip (NRRD) and zlib (MetaImage), as ITK writes them.

use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::affine::{spacing, Affine};
use crate::error::{Error, Result};

/// The voxel types both formats share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Element {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Element {
    fn size(self) -> usize {
        match self {
            Element::I8 | Element::U8 => 1,
            Element::I16 | Element::U16 => 2,
            Element::I32 | Element::U32 | Element::F32 => 4,
            Element::I64 | Element::U64 | Element::F64 => 8,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Element::I8 => "int8",
            Element::U8 => "uint8",
            Element::I16 => "int16",
            Element::U16 => "uint16",
            Element::I32 => "int32",
            Element::U32 => "uint32",
            Element::I64 => "int64",
            Element::U64 => "uint64",
            Element::F32 => "float32",
            Element::F64 => "float64",
        }
    }

    /// NRRD's type names are ours but for the two float types.
    fn nrrd_name(self) -> &'static str {
        match self {
            Element::F32 => "float",
            Element::F64 => "double",
            other => other.name(),
        }
    }

    fn meta_name(self) -> &'static str {
        match self {
            Element::I8 => "MET_CHAR",
            Element::U8 => "MET_UCHAR",
            Element::I16 => "MET_SHORT",
            Element::U16 => "MET_USHORT",
            Element::I32 => "MET_INT",
            Element::U32 => "MET_UINT",
            Element::I64 => "MET_LONG_LONG",
            Element::U64 => "MET_ULONG_LONG",
            Element::F32 => "MET_FLOAT",
            Element::F64 => "MET_DOUBLE",
        }
    }

    fn from_nrrd(name: &str) -> Option<Element> {
        Some(match name {
            "signed char" | "int8" | "int8_t" => Element::I8,
            "uchar" | "unsigned char" | "uint8" | "uint8_t" => Element::U8,
            "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
                Element::I16
            }
            "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
                Element::U16
            }
            "int" | "signed int" | "int32" | "int32_t" => Element::I32,
            "uint" | "unsigned int" | "uint32" | "uint32_t" => Element::U32,
            "longlong"
            | "long long"
            | "long long int"
            | "signed long long"
            | "signed long long int"
            | "int64"
            | "int64_t" => Element::I64,
            "ulonglong"
            | "unsigned long long"
            | "unsigned long long int"
            | "uint64"
            | "uint64_t" => Element::U64,
            "float" => Element::F32,
            "double" => Element::F64,
            _ => return None,
        })
    }

    fn from_meta(name: &str) -> Option<Element> {
        Some(match name {
            "MET_CHAR" => Element::I8,
            "MET_UCHAR" => Element::U8,
            "MET_SHORT" => Element::I16,
            "MET_USHORT" => Element::U16,
            "MET_INT" | "MET_LONG" => Element::I32,
            "MET_UINT" | "MET_ULONG" => Element::U32,
            "MET_LONG_LONG" => Element::I64,
            "MET_ULONG_LONG" => Element::U64,
            "MET_FLOAT" => Element::F32,
            "MET_DOUBLE" => Element::F64,
            _ => return None,
        })
    }

    /// The voxels of `bytes` as float32, as the NIfTI reader gives them.
    fn decode(self, bytes: &[u8], big_endian: bool) -> Vec<f32> {
        macro_rules! each {
            ($t:ty) => {
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| {
                        let raw = c.try_into().expect("chunk of the element size");
                        let v = if big_endian {
                            <$t>::from_be_bytes(raw)
                        } else {
                            <$t>::from_le_bytes(raw)
                        };
                        v as f32
                    })
                    .collect()
            };
        }
        match self {
            Element::I8 => each!(i8),
            Element::U8 => each!(u8),
            Element::I16 => each!(i16),
            Element::U16 => each!(u16),
            Element::I32 => each!(i32),
            Element::U32 => each!(u32),
            Element::I64 => each!(i64),
            Element::U64 => each!(u64),
            Element::F32 => each!(f32),
            Element::F64 => each!(f64),
        }
    }
}

/// What a NRRD or MetaImage header says, before any voxel is read.
pub(super) struct Parsed {
    pub dims: [usize; 3],
    pub element: Element,
    pub affine: Affine,
    /// Voxels in Fortran order (first axis fastest), as float32.
    pub values: Vec<f32>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Our RAS affine from LPS axis vectors (each the axis direction times its spacing) and origin.
fn affine_from_lps(axes: [[f64; 3]; 3], origin: [f64; 3]) -> Affine {
    let ras = |v: f64, row: usize| if row < 2 { -v } else { v };
    let mut a = [[0.0; 4]; 4];
    for row in 0..3 {
        for (col, axis) in axes.iter().enumerate() {
            a[row][col] = ras(axis[row], row);
        }
        a[row][3] = ras(origin[row], row);
    }
    a[3][3] = 1.0;
    a
}

/// LPS axis vectors (column `c` of the affine, flipped) and origin of our RAS affine.
fn lps_from_affine(a: &Affine) -> ([[f64; 3]; 3], [f64; 3]) {
    let lps = |v: f64, row: usize| if row < 2 { -v } else { v };
    let axes = [0, 1, 2].map(|c| [0, 1, 2].map(|r| lps(a[r][c], r)));
    let origin = [0, 1, 2].map(|r| lps(a[r][3], r));
    (axes, origin)
}

fn numbers<const N: usize>(path: &Path, field: &str, text: &str) -> Result<[f64; N]> {
    let values: Vec<f64> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| invalid(path, format!("{field}: not numbers: {text:?}")))?;
    <[f64; N]>::try_from(values).map_err(|v| {
        invalid(
            path,
            format!("{field}: expected {N} numbers, got {}", v.len()),
        )
    })
}

fn sizes(path: &Path, field: &str, text: &str, max_voxels: u64) -> Result<[usize; 3]> {
    let dims = numbers::<3>(path, field, text)?;
    if dims.iter().any(|&d| d < 1.0 || d.fract() != 0.0) {
        return Err(invalid(
            path,
            format!("{field}: sizes must be positive integers"),
        ));
    }
    let dims = dims.map(|d| d as usize);
    let voxels = dims.iter().map(|&d| d as u64).product::<u64>();
    if voxels > max_voxels {
        return Err(invalid(
            path,
            format!("{voxels} voxels exceed the limit of {max_voxels} (LAYERSEG_MAX_VOXELS)"),
        ));
    }
    Ok(dims)
}

/// Decompresses (when asked) and decodes exactly the voxels the header promises.
fn voxels(
    path: &Path,
    data: &[u8],
    compression: Option<&str>,
    dims: [usize; 3],
    element: Element,
    big_endian: bool,
) -> Result<Vec<f32>> {
    let expected = dims.iter().product::<usize>() * element.size();
    let mut raw = Vec::with_capacity(expected);
    let read = match compression {
        None => data.take(expected as u64).read_to_end(&mut raw),
        Some("gzip") => GzDecoder::new(data)
            .take(expected as u64)
            .read_to_end(&mut raw),
        Some(_) => ZlibDecoder::new(data)
            .take(expected as u64)
            .read_to_end(&mut raw),
    };
    read.map_err(|e| invalid(path, format!("corrupt compressed voxel data ({e})")))?;
    if raw.len() != expected {
        return Err(invalid(
            path,
            format!(
                "truncated: {} bytes of voxel data, the header needs {expected}",
                raw.len()
            ),
        ));
    }
    Ok(element.decode(&raw, big_endian))
}

/// The data of a detached header (`data file:` / `ElementDataFile`), beside the header.
fn detached(path: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let file = path.parent().unwrap_or(Path::new(".")).join(name);
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    Ok((file, bytes))
}

/// A NRRD file (`NRRD000x` magic), attached or detached data.
pub(super) fn read_nrrd(path: &Path, bytes: &[u8], max_voxels: u64) -> Result<Parsed> {
    // A detached header (.nhdr) may end with the file instead of a blank line.
    let (header, body) = split_header(bytes, b"\n\n")
        .or_else(|| split_header(bytes, b"\r\n\r\n"))
        .or_else(|| Some((std::str::from_utf8(bytes).ok()?, &[][..])))
        .ok_or_else(|| invalid(path, "NRRD header does not end (no blank line)"))?;
    let mut lines = header.lines();
    let magic = lines.next().unwrap_or("");
    if !magic.starts_with("NRRD000") {
        return Err(invalid(path, "not a NRRD file: wrong magic"));
    }
    let mut fields = BTreeMap::new();
    for line in lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.contains(":=") {
            continue; // key/value pairs: free-form metadata, not geometry
        }
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| invalid(path, format!("NRRD header line without a field: {line:?}")))?;
        fields.insert(
            key.trim().to_lowercase().replace("datafile", "data file"),
            value.trim(),
        );
    }
    let field = |key: &str| {
        fields
            .get(key)
            .copied()
            .ok_or_else(|| invalid(path, format!("NRRD header has no {key:?} field")))
    };
    if field("dimension")? != "3" {
        return Err(invalid(
            path,
            format!(
                "{}-dimensional NRRD; only 3D scalar volumes are read",
                field("dimension")?
            ),
        ));
    }
    let type_name = field("type")?;
    let element = Element::from_nrrd(type_name)
        .ok_or_else(|| invalid(path, format!("unsupported NRRD type {type_name:?}")))?;
    let dims = sizes(path, "sizes", field("sizes")?, max_voxels)?;
    for skip in ["line skip", "byte skip", "lineskip", "byteskip"] {
        if fields.get(skip).is_some_and(|v| *v != "0") {
            return Err(invalid(path, format!("NRRD {skip:?} is not supported")));
        }
    }
    let compression = match field("encoding")? {
        "raw" => None,
        "gzip" | "gz" => Some("gzip"),
        other => {
            return Err(invalid(
                path,
                format!("NRRD encoding {other:?} is not supported (raw and gzip are)"),
            ))
        }
    };
    let big_endian = fields.get("endian").is_some_and(|e| *e == "big");
    let affine = nrrd_geometry(path, &fields)?;
    let values = match fields.get("data file") {
        Some(name) => {
            let (file, data) = detached(path, name)?;
            voxels(&file, &data, compression, dims, element, big_endian)?
        }
        None => voxels(path, body, compression, dims, element, big_endian)?,
    };
    Ok(Parsed {
        dims,
        element,
        affine,
        values,
    })
}

fn nrrd_geometry(path: &Path, fields: &BTreeMap<String, &str>) -> Result<Affine> {
    let space = fields.get("space").copied();
    let flip: [f64; 3] = match space {
        Some("left-posterior-superior" | "LPS") | None => [1.0, 1.0, 1.0],
        Some("right-anterior-superior" | "RAS") => [-1.0, -1.0, 1.0],
        Some("left-anterior-superior" | "LAS") => [1.0, -1.0, 1.0],
        Some(other) => {
            return Err(invalid(
                path,
                format!("NRRD space {other:?} is not supported (LPS, RAS and LAS are)"),
            ))
        }
    };
    let to_lps = |v: [f64; 3]| [v[0] * flip[0], v[1] * flip[1], v[2] * flip[2]];
    let axes = match (fields.get("space directions"), fields.get("spacings")) {
        (Some(text), _) => {
            let v = numbers::<9>(path, "space directions", text)?;
            [0, 1, 2].map(|a| to_lps([v[3 * a], v[3 * a + 1], v[3 * a + 2]]))
        }
        // No space: ITK's reading, spacings along LPS axes.
        (None, Some(text)) => {
            let s = numbers::<3>(path, "spacings", text)?;
            [[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]]
        }
        (None, None) => [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    let origin = match fields.get("space origin") {
        Some(text) => to_lps(numbers::<3>(path, "space origin", text)?),
        None => [0.0; 3],
    };
    Ok(affine_from_lps(axes, origin))
}

fn split_header<'a>(bytes: &'a [u8], end: &[u8]) -> Option<(&'a str, &'a [u8])> {
    let at = bytes.windows(end.len()).position(|w| w == end)?;
    let header = std::str::from_utf8(&bytes[..at]).ok()?;
    Some((header, &bytes[at + end.len()..]))
}

/// A MetaImage file: `Key = Value` lines ending with `ElementDataFile`, then (for `LOCAL`) the
/// voxels.
pub(super) fn read_metaimage(path: &Path, bytes: &[u8], max_voxels: u64) -> Result<Parsed> {
    let mut fields = BTreeMap::new();
    let mut rest = bytes;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| invalid(path, "MetaImage header has no ElementDataFile line"))?;
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| invalid(path, "not a MetaImage file: binary bytes in the header"))?;
        rest = &rest[end + 1..];
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_string();
        let done = key == "ElementDataFile";
        fields.insert(key, value.trim().to_string());
        if done {
            break;
        }
    }
    let field = |key: &str| {
        fields
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| invalid(path, format!("MetaImage header has no {key} field")))
    };
    if field("NDims")? != "3" {
        return Err(invalid(
            path,
            format!(
                "{}-dimensional MetaImage; only 3D volumes are read",
                field("NDims")?
            ),
        ));
    }
    if fields
        .get("ElementNumberOfChannels")
        .is_some_and(|c| c != "1")
    {
        return Err(invalid(path, "MetaImage with several channels per voxel"));
    }
    let type_name = field("ElementType")?;
    let element = Element::from_meta(type_name)
        .ok_or_else(|| invalid(path, format!("unsupported ElementType {type_name:?}")))?;
    let dims = sizes(path, "DimSize", field("DimSize")?, max_voxels)?;
    let true_field = |key: &str| {
        fields
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let big_endian = true_field("BinaryDataByteOrderMSB") || true_field("ElementByteOrderMSB");
    let compression = true_field("CompressedData").then_some("zlib");
    let spacing = match fields.get("ElementSpacing") {
        Some(text) => numbers::<3>(path, "ElementSpacing", text)?,
        None => [1.0; 3],
    };
    let directions = ["TransformMatrix", "Rotation", "Orientation"]
        .iter()
        .find_map(|k| fields.get(*k).map(|text| numbers::<9>(path, k, text)))
        .transpose()?
        .unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    let origin = ["Offset", "Origin", "Position"]
        .iter()
        .find_map(|k| fields.get(*k).map(|text| numbers::<3>(path, k, text)))
        .transpose()?
        .unwrap_or([0.0; 3]);
    // As ITK reads it: row `a` of TransformMatrix is the direction of voxel axis `a`.
    let axes = [0, 1, 2].map(|a| [0, 1, 2].map(|r| directions[3 * a + r] * spacing[a]));
    let affine = affine_from_lps(axes, origin);
    let values = match field("ElementDataFile")? {
        "LOCAL" => voxels(path, rest, compression, dims, element, big_endian)?,
        "LIST" => return Err(invalid(path, "MetaImage with a list of slice files")),
        name if name.contains('%') => {
            return Err(invalid(path, "MetaImage with a pattern of slice files"))
        }
        name => {
            let (file, data) = detached(path, name)?;
            voxels(&file, &data, compression, dims, element, big_endian)?
        }
    };
    Ok(Parsed {
        dims,
        element,
        affine,
        values,
    })
}

/// A volume's voxels (Fortran order), little-endian.
pub(super) struct Encoded<'a> {
    pub dims: [usize; 3],
    pub element: Element,
    pub bytes: &'a [u8],
}

fn join(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{}", v + 0.0))
        .collect::<Vec<_>>()
        .join(" ")
}

fn vector(v: &[f64; 3]) -> String {
    format!("({},{},{})", v[0] + 0.0, v[1] + 0.0, v[2] + 0.0)
}

/// NRRD bytes: an attached, gzip-compressed volume in LPS, as 3D Slicer writes it.
pub(super) fn nrrd_bytes(voxels: &Encoded<'_>, affine: &Affine) -> std::io::Result<Vec<u8>> {
    let (axes, origin) = lps_from_affine(affine);
    let [a, b, c] = voxels.dims;
    let mut out = format!(
        "NRRD0004\n# Complete NRRD file format specification at:\n\
         # http://teem.sourceforge.net/nrrd/format.html\n\
         type: {}\ndimension: 3\nspace: left-posterior-superior\nsizes: {a} {b} {c}\n\
         space directions: {} {} {}\nkinds: domain domain domain\nendian: little\n\
         encoding: gzip\nspace origin: {}\n\n",
        voxels.element.nrrd_name(),
        vector(&axes[0]),
        vector(&axes[1]),
        vector(&axes[2]),
        vector(&origin)
    )
    .into_bytes();
    let mut gz = GzEncoder::new(&mut out, Compression::default());
    gz.write_all(voxels.bytes)?;
    gz.finish()?;
    Ok(out)
}

/// MetaImage bytes: one `.mha` file, zlib-compressed, as ITK writes it.
pub(super) fn metaimage_bytes(voxels: &Encoded<'_>, affine: &Affine) -> std::io::Result<Vec<u8>> {
    let (axes, origin) = lps_from_affine(affine);
    let spacing = spacing(affine);
    let directions: Vec<f64> = (0..3)
        .flat_map(|a| (0..3).map(move |r| (a, r)))
        .map(|(a, r)| axes[a][r] / spacing[a])
        .collect();
    let mut compressed = ZlibEncoder::new(Vec::new(), Compression::default());
    compressed.write_all(voxels.bytes)?;
    let compressed = compressed.finish()?;
    let [a, b, c] = voxels.dims;
    let mut out = format!(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n\
         CompressedData = True\nCompressedDataSize = {}\nTransformMatrix = {}\nOffset = {}\n\
         CenterOfRotation = 0 0 0\nElementSpacing = {}\nDimSize = {a} {b} {c}\n\
         ElementType = {}\nElementDataFile = LOCAL\n",
        compressed.len(),
        join(&directions),
        join(&origin),
        join(&spacing),
        voxels.element.meta_name()
    )
    .into_bytes();
    out.extend_from_slice(&compressed);
    Ok(out)
}
