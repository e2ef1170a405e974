//! The `layerseg` binary end to end: real sample scans, bad input, exit codes, libtorch linking.

use std::path::Path;
use std::process::Output;

mod common;
use common::{layerseg, sample};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn expect_one_line_error(args: &[&str], file: &Path, needle: &str) {
    let out = layerseg(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("layerseg: error: "), "{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains(needle), "says {needle:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn info_on_real_scans() {
    for (name, file, orientation) in [
        ("mrbraintumor2", "image.nii.gz", "LPS"),
        ("colin27", "image.nii.gz", "RAS"),
        ("mrhead", "image.nii.gz", "PIR"),
    ] {
        let path = sample(name, file);
        let out = layerseg(&["info", "--json", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["orientation"], orientation);
    }
}

#[test]
fn info_text_snapshot() {
    let path = sample("mrbraintumor2", "image.nii.gz");
    let out = layerseg(&["info", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(path.to_str().unwrap(), "MRBrainTumor2.nii.gz");
    insta::assert_snapshot!(text);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.nii.gz");
    expect_one_line_error(
        &["info", missing.to_str().unwrap()],
        &missing,
        "file not found",
    );

    let good = std::fs::read(sample("colin27", "image.nii.gz")).unwrap();
    let truncated = dir.path().join("truncated.nii.gz");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    expect_one_line_error(
        &["info", truncated.to_str().unwrap()],
        &truncated,
        "truncated",
    );

    let text = dir.path().join("notes.nii");
    std::fs::write(&text, "not a scan at all, just some text\n".repeat(20)).unwrap();
    expect_one_line_error(
        &["info", text.to_str().unwrap()],
        &text,
        "not a NIfTI-1 file",
    );
}

#[test]
fn many_files_report_each_failure_and_exit_nonzero() {
    let good = sample("colin27", "brain.nii.gz");
    let out = layerseg(&["info", "/nonexistent.nii", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("brain.nii.gz"));
    assert!(stderr(&out).contains("/nonexistent.nii: file not found"));
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(layerseg(&["info"]).status.code(), Some(2));
    assert_eq!(layerseg(&["no-such-command"]).status.code(), Some(2));
}

/// The binary must keep libtorch_cuda (the linker drops it otherwise) and find libtorch without
/// LD_LIBRARY_PATH.
#[test]
fn libtorch_and_its_cuda_backend_are_linked() {
    let out = layerseg(&["runtime"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let torch_lib = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv/lib/python3.11/site-packages/torch/lib");
    if torch_lib.join("libtorch_cuda.so").exists() {
        assert!(text.contains("CUDA backend loaded"), "{text}");
    }
}
