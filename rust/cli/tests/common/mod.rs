//! Shared by this crate's integration tests: the `layerseg` binary, run without LD_LIBRARY_PATH
//! (it must find libtorch through its rpath), and the real sample scans.

#![allow(dead_code)]

use std::process::{Command, Output};

#[path = "../../../test-support/samples.rs"]
mod samples;
pub use samples::sample;

pub fn layerseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerseg"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("the layerseg binary runs")
}
