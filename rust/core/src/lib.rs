//! LayerSeg core: volumes, NIfTI I/O and orientation handling.
//!
//! This crate never links libtorch, so it builds and tests in seconds.

pub mod error;
pub mod io;
pub mod orientation;
pub mod progress;
pub mod volume;

pub use error::{Error, Result};
pub use io::{
    read_image, read_labels, write_image, write_labels, NiftiMeta, ReadOptions, ReadWarning,
};
pub use orientation::{Orientation, Reorientation};
pub use progress::{CancelFlag, NoProgress, Progress};
pub use volume::{Affine, Image, LabelMap, Volume};
