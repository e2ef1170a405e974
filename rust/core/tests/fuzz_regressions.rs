//! Inputs that once crashed a fuzz target (`fuzz/`, docs/reliability.md), kept as they were
//! found. Each must now give a result or an error, never a panic. The file name says what was
//! wrong; `nifti-*` files go through the NIfTI reader, `profile-*` through the profile parser.

use layerseg_core::io::{read_image_bytes, ReadOptions};
use layerseg_core::Profile;
use std::path::PathBuf;

fn cases(prefix: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn nifti_crashes_now_read_or_fail_cleanly() {
    let found = cases("nifti-");
    assert!(!found.is_empty());
    for (path, bytes) in found {
        match read_image_bytes(&bytes, &path, &ReadOptions::default()) {
            Ok((image, meta)) => assert_eq!(image.data.shape(), &meta.dims[..3], "{path:?}"),
            Err(e) => assert!(e.to_string().contains("fuzz_regressions"), "{e}"),
        }
    }
}

#[test]
fn profile_crashes_now_parse_or_fail_cleanly() {
    for (path, bytes) in cases("profile-") {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let origin = path.display().to_string();
            if let Ok(p) = Profile::from_json(text, &origin) {
                assert_eq!(Profile::from_json(&p.to_json(), &origin).unwrap(), p);
            }
        }
    }
}
