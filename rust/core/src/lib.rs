//! LayerSeg core: volumes, NIfTI I/O, orientation handling, profiles and tumour synthesis.
//!
//! This crate never links libtorch, so it builds and tests in seconds.

pub mod affine;
pub mod atomic;
pub mod augment;
pub mod bias;
pub mod brain;
pub mod datalist;
pub mod distance;
pub mod error;
pub mod io;
pub mod metrics;
pub mod model_card;
pub mod models;
pub mod orientation;
pub mod postprocess;
pub mod preprocess;
pub mod profile;
pub mod progress;
pub mod resample;
pub mod samples;
pub mod segmentation;
pub mod sliding_window;
pub mod synth;
pub mod volume;

pub use affine::{Affine, Orientation};
pub use error::{Error, Result};
pub use io::{
    read_image, read_labels, write_image, write_labels, NiftiMeta, ReadOptions, ReadWarning,
};
pub use orientation::Reorientation;
pub use profile::Profile;
pub use progress::{CancelFlag, NoProgress, Progress};
pub use volume::{Image, LabelMap, Volume};
