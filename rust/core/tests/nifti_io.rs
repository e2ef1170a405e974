//! NIfTI round trips and every kind of bad input the reader must refuse cleanly.
//! Files are made with the writer, then patched byte by byte at the NIfTI-1 header offsets.

use layerseg_core::io::{
    read_image, read_image_bytes, read_labels, write_image, write_labels, AffineSource,
    ReadOptions, ReadWarning,
};
use layerseg_core::{Error, Image, LabelMap, Volume};
use ndarray::Array3;
use std::path::{Path, PathBuf};

#[path = "../../test-support/samples.rs"]
mod support;

const DIM: usize = 40;
const DATATYPE: usize = 70;
const BITPIX: usize = 72;
const SCL_SLOPE: usize = 112;
const SCL_INTER: usize = 116;
const SFORM_CODE: usize = 254;
const MAGIC: usize = 344;

fn lps_affine() -> [[f64; 4]; 4] {
    [
        [-0.9375, 0.0, 0.0, 120.5],
        [0.0, -0.9375, 0.0, 110.25],
        [0.0, 0.0, 1.2, -60.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

fn ramp(shape: (usize, usize, usize)) -> Image {
    let data = Array3::from_shape_fn(shape, |(i, j, k)| (i * 100 + j * 10 + k) as f32 - 50.0);
    Volume::new(data, lps_affine())
}

fn written(dir: &Path, name: &str, vol: &Image) -> PathBuf {
    let path = dir.join(name);
    write_image(&path, vol, None).unwrap();
    path
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).unwrap();
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).unwrap();
}

fn assert_affine_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a[r][c] - b[r][c]).abs() <= tol * b[r][c].abs().max(1.0),
                "{a:?} vs {b:?}"
            );
        }
    }
}

fn opts() -> ReadOptions {
    ReadOptions::default()
}

#[test]
fn float_round_trip_nii_and_gz_keeps_voxels_and_affine() {
    let dir = tempfile::tempdir().unwrap();
    let vol = ramp((5, 4, 3));
    for name in ["a.nii", "a.nii.gz"] {
        let path = written(dir.path(), name, &vol);
        let (back, meta) = read_image(&path, &opts()).unwrap();
        assert_eq!(back.data, vol.data);
        // The header stores float32.
        assert_affine_close(&back.affine, &vol.affine, 1e-6);
        assert_eq!(meta.datatype, "float32");
        assert_eq!(meta.affine_source, AffineSource::Sform);
        assert_eq!(back.orientation().code(), "LPS");
    }
    // Nothing but the two outputs: the temporary files were renamed into place.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn labels_written_for_a_scan_share_its_header_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let scan = written(dir.path(), "scan.nii.gz", &ramp((6, 5, 4)));
    let (image, meta) = read_image(&scan, &opts()).unwrap();
    let mask: LabelMap = image.with_data(image.data.mapv(|v| (v > 100.0) as u8));
    let out = dir.path().join("mask.nii.gz");
    write_labels(&out, &mask, Some(&meta)).unwrap();
    let (back, back_meta) = read_labels(&out, &opts()).unwrap();
    assert_eq!(back.data, mask.data);
    assert_eq!(back_meta.datatype, "uint8");
    let (h, g) = (&meta.header, &back_meta.header);
    assert_eq!((h.qform_code, h.sform_code), (g.qform_code, g.sform_code));
    assert_eq!(
        (h.srow_x, h.srow_y, h.srow_z),
        (g.srow_x, g.srow_y, g.srow_z)
    );
    assert_eq!(
        (h.quatern_b, h.quatern_c, h.quatern_d),
        (g.quatern_b, g.quatern_c, g.quatern_d)
    );
    assert_eq!(h.pixdim[..4], g.pixdim[..4]);
}

#[test]
fn integer_datatypes_and_scaling_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i16.nii");
    let data = Array3::from_shape_fn((3, 3, 2), |(i, j, k)| {
        (i as i16 - 1) * 1000 + j as i16 * 10 + k as i16
    });
    nifti::writer::WriterOptions::new(&path)
        .write_nifti(&data)
        .unwrap();
    patch(&path, SCL_SLOPE, &2.0f32.to_le_bytes());
    patch(&path, SCL_INTER, &(-5.0f32).to_le_bytes());
    let (img, meta) = read_image(&path, &opts()).unwrap();
    assert_eq!(meta.datatype, "int16");
    assert_eq!(img.data, data.mapv(|v| v as f32 * 2.0 - 5.0));

    for (name, code) in [
        ("u8.nii", "uint8"),
        ("i32.nii", "int32"),
        ("f64.nii", "float64"),
    ] {
        let path = dir.path().join(name);
        let values = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as u8);
        match code {
            "uint8" => nifti::writer::WriterOptions::new(&path)
                .write_nifti(&values)
                .unwrap(),
            "int32" => nifti::writer::WriterOptions::new(&path)
                .write_nifti(&values.mapv(|v| v as i32 - 7))
                .unwrap(),
            _ => nifti::writer::WriterOptions::new(&path)
                .write_nifti(&values.mapv(|v| v as f64 / 3.0))
                .unwrap(),
        }
        let (img, meta) = read_image(&path, &opts()).unwrap();
        assert_eq!(meta.datatype, code);
        let expected = match code {
            "uint8" => values.mapv(|v| v as f32),
            "int32" => values.mapv(|v| v as f32 - 7.0),
            _ => values.mapv(|v| (v as f64 / 3.0) as f32),
        };
        assert_eq!(img.data, expected);
    }
}

#[test]
fn qform_is_used_when_sform_code_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let vol = ramp((4, 4, 4));
    let path = written(dir.path(), "q.nii", &vol);
    patch(&path, SFORM_CODE, &0i16.to_le_bytes());
    let (img, meta) = read_image(&path, &opts()).unwrap();
    assert_eq!(meta.affine_source, AffineSource::Qform);
    assert_affine_close(&img.affine, &vol.affine, 1e-5);
}

fn expect_err(path: &Path) -> Error {
    let err = read_image(path, &opts()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "message must name the file: {text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    err
}

#[test]
fn missing_file() {
    let err = expect_err(Path::new("/nonexistent/scan.nii.gz"));
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "t.nii", &ramp((8, 8, 8)));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = expect_err(&path);
    assert!(
        matches!(
            err,
            Error::Truncated {
                expected: 2048,
                found: 1948,
                ..
            }
        ),
        "{err}"
    );

    std::fs::write(&path, &bytes[..200]).unwrap();
    assert!(matches!(expect_err(&path), Error::NotNifti { .. }));

    let gz = written(dir.path(), "t.nii.gz", &ramp((8, 8, 8)));
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let err = expect_err(&gz);
    assert!(
        matches!(err, Error::Truncated { .. } | Error::Invalid { .. }),
        "{err}"
    );
}

#[test]
fn wrong_magic_and_not_nifti_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "m.nii", &ramp((3, 3, 3)));
    patch(&path, MAGIC, b"abc\0");
    let err = expect_err(&path);
    assert!(err.to_string().contains("wrong magic"), "{err}");

    let text = dir.path().join("notes.nii");
    std::fs::write(&text, "this is not a scan\n".repeat(40)).unwrap();
    assert!(matches!(
        expect_err(&text),
        Error::NotNifti { .. } | Error::BadDimensions { .. }
    ));
}

#[test]
fn unsupported_datatype() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "c.nii", &ramp((3, 3, 3)));
    patch(&path, DATATYPE, &32i16.to_le_bytes());
    patch(&path, BITPIX, &64i16.to_le_bytes());
    let err = expect_err(&path);
    assert!(err.to_string().contains("complex64"), "{err}");
}

#[test]
fn zero_negative_and_absurd_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "d.nii", &ramp((3, 3, 3)));
    patch(&path, DIM + 2, &0i16.to_le_bytes());
    assert!(matches!(expect_err(&path), Error::BadDimensions { .. }));
    patch(&path, DIM + 2, &(-4i16).to_le_bytes());
    assert!(matches!(expect_err(&path), Error::BadDimensions { .. }));
    // 30000^3 voxels: refused from the header alone, before any allocation.
    for d in 1..=3 {
        patch(&path, DIM + 2 * d, &30000i16.to_le_bytes());
    }
    let err = expect_err(&path);
    assert!(
        matches!(
            err,
            Error::TooLarge {
                voxels: 27_000_000_000_000,
                ..
            }
        ),
        "{err}"
    );
    // Just under a raised limit it is a plain truncation, still without allocating 108 TB.
    let raised = ReadOptions {
        max_voxels: u64::MAX,
    };
    assert!(matches!(
        read_image(&path, &raised).unwrap_err(),
        Error::Truncated { .. }
    ));
}

#[test]
fn nan_and_inf_voxels_become_zero_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut vol = ramp((3, 3, 3));
    vol.data[[0, 0, 0]] = f32::NAN;
    vol.data[[1, 2, 0]] = f32::INFINITY;
    vol.data[[2, 2, 2]] = f32::NEG_INFINITY;
    let path = written(dir.path(), "n.nii.gz", &vol);
    let (img, meta) = read_image(&path, &opts()).unwrap();
    assert_eq!(meta.warnings, vec![ReadWarning::NonFinite { count: 3 }]);
    assert!(img.data.iter().all(|v| v.is_finite()));
    assert_eq!(img.data[[0, 0, 0]], 0.0);
    assert_eq!(img.data[[1, 1, 1]], vol.data[[1, 1, 1]]);
}

#[test]
fn four_d_input_reads_the_first_volume_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("4d.nii");
    let data = ndarray::Array4::from_shape_fn((3, 2, 2, 4), |(i, j, k, t)| {
        (t * 100 + i * 10 + j * 2 + k) as f32
    });
    nifti::writer::WriterOptions::new(&path)
        .write_nifti(&data)
        .unwrap();
    let (img, meta) = read_image(&path, &opts()).unwrap();
    assert_eq!(meta.dims, vec![3, 2, 2, 4]);
    assert_eq!(meta.warnings, vec![ReadWarning::ExtraVolumes { total: 4 }]);
    assert_eq!(img.data, data.index_axis(ndarray::Axis(3), 0));
}

#[test]
fn label_maps_must_hold_small_integers() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "l.nii", &ramp((3, 3, 3)));
    let err = read_labels(&path, &opts()).unwrap_err();
    assert!(err.to_string().contains("not a label map"), "{err}");
}

#[test]
fn failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/out.nii.gz");
    let err = write_image(&missing, &ramp((2, 2, 2)), None).unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bytes_in_memory_read_like_the_file() {
    for (name, file) in [
        ("totalseg_ct", "image.nii.gz"),
        ("mrbraintumor2", "label.nii.gz"),
    ] {
        let path = support::sample(name, file);
        let (from_file, meta) = read_image(&path, &opts()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (from_bytes, meta_b) = read_image_bytes(&bytes, &path, &opts()).unwrap();
        assert_eq!(from_file.data, from_bytes.data);
        assert_eq!(from_file.affine, from_bytes.affine);
        assert_eq!(meta.dims, meta_b.dims);
        // Cut short, the same bytes are a truncated gzip stream, named as the file.
        let err = read_image_bytes(&bytes[..bytes.len() / 2], &path, &opts()).unwrap_err();
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[cfg(unix)]
#[test]
fn outputs_never_replace_a_device_or_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("full.nii.gz");
    std::os::unix::fs::symlink("/dev/full", &link).unwrap();
    let err = write_image(&link, &ramp((2, 2, 2)), None).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let folder = dir.path().join("folder.nii");
    std::fs::create_dir(&folder).unwrap();
    let err = write_image(&folder, &ramp((2, 2, 2)), None).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn a_2d_file_reads_as_one_slice() {
    // Found by fuzzing: dim[0] = 2 used to index a third dimension that was not there.
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "slice.nii", &ramp((4, 3, 1)));
    patch(&path, DIM, &2i16.to_le_bytes());
    patch(&path, DIM + 6, &77i16.to_le_bytes()); // dim[3] is unused in a 2D file
    let (img, meta) = read_image(&path, &opts()).unwrap();
    assert_eq!(img.data.shape(), &[4, 3, 1]);
    assert_eq!(meta.dims, vec![4, 3, 1]);
    assert_eq!(img.data[[3, 2, 0]], ramp((4, 3, 1)).data[[3, 2, 0]]);
}
