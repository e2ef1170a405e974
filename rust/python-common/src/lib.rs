//! What the two extensions share: `layerseg._layerseg` (layerseg-core only, no libtorch) and
//! `layerseg_libtorch._native` (libtorch). Every call into Rust work goes through [`gate`] (no
//! GIL, a fork-safe thread pool), and every error through [`errors::IntoPyErr`].

pub mod affine;
pub mod brain;
pub mod errors;
pub mod gate;
pub mod progress;
