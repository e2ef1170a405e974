//! `LAYERSEG_PROGRESS=lines`: plain progress lines on stderr for a parent process (the Slicer
//! module parses them), and none without it.

use std::process::{Command, Output};

mod common;
use common::sample;

fn synthesize(out: &std::path::Path, lines: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerseg"));
    cmd.args(["synthesize", "--profile", "liver-ct", "--healthy"])
        .arg(sample("totalseg_ct", "image.nii.gz"))
        .arg("--organ-mask")
        .arg(sample("totalseg_ct", "liver.nii.gz"))
        .arg("--out")
        .arg(out)
        .args(["--count", "3", "--seed", "1"])
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LAYERSEG_PROGRESS");
    if lines {
        cmd.env("LAYERSEG_PROGRESS", "lines");
    }
    cmd.output().expect("the layerseg binary runs")
}

#[test]
fn progress_lines_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = synthesize(&dir.path().join("a"), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let progress: Vec<(u64, u64)> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("layerseg: progress "))
        .map(|rest| {
            let (_what, counts) = rest.rsplit_once(' ').expect("WHAT DONE/TOTAL");
            let (done, total) = counts.split_once('/').expect("DONE/TOTAL");
            (done.parse().unwrap(), total.parse().unwrap())
        })
        .collect();
    assert_eq!(progress.first(), Some(&(0, 3)), "{stderr}");
    assert_eq!(progress.last(), Some(&(3, 3)), "{stderr}");
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0), "{stderr}");

    let quiet = synthesize(&dir.path().join("b"), false);
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("layerseg: progress"));
}
