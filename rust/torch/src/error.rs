use std::path::PathBuf;

use crate::device::DeviceError;

/// Errors from the LayerSeg torch crate. Variants about files name the file; variants about
/// tensors say what was expected and what came.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Device(#[from] DeviceError),

    /// Volumes, profiles and preprocessing.
    #[error(transparent)]
    Core(#[from] layerseg_core::Error),

    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A weights file that is neither safetensors nor a `torch.save` zip of a flat state dict.
    #[error("{}: unsupported weights format: {reason}", path.display())]
    WeightsFormat { path: PathBuf, reason: String },

    /// A weights file whose names or shapes do not match the network (e.g. another width).
    #[error("{}: weights do not fit this network: {reason}", path.display())]
    WeightsMismatch { path: PathBuf, reason: String },

    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: String,
        expected: String,
        got: Vec<i64>,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("{}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },

    /// A sample source (e.g. synthesis) failed on one sample.
    #[error("sample {index}: {source}")]
    Source {
        index: u64,
        #[source]
        source: SourceError,
    },

    #[error("training diverged at step {step}: the loss is {value}")]
    Diverged { step: u64, value: f64 },

    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error type a sample source (`train::SampleSource`) reports; the trainer adds the sample
/// index ([`Error::Source`]). Defined here, below the trainer, so errors depend on nothing above.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

impl From<tch::TchError> for Error {
    fn from(source: tch::TchError) -> Self {
        Error::Torch {
            context: "libtorch".to_string(),
            source,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { path },
            _ => Error::Io { path, source },
        }
    }
}

/// Adds what was being done to a libtorch error.
pub(crate) trait TorchContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Torch {
            context: what(),
            source,
        })
    }
}
