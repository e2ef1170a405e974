use std::path::PathBuf;

/// Errors from the LayerSeg core. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },

    #[error("{}: permission denied", path.display())]
    PermissionDenied { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a NIfTI-1 file: {reason}", path.display())]
    NotNifti { path: PathBuf, reason: String },

    #[error("{}: truncated file: expected {expected} bytes of {what}, found {found}", path.display())]
    Truncated {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
    },

    #[error("{}: unsupported NIfTI datatype {code} ({name}); supported: uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64", path.display())]
    UnsupportedDatatype {
        path: PathBuf,
        code: i16,
        name: String,
    },

    #[error("{}: bad dimensions {dims:?}: {reason}", path.display())]
    BadDimensions {
        path: PathBuf,
        dims: Vec<i64>,
        reason: String,
    },

    #[error("{}: {voxels} voxels per volume exceed the limit of {limit} (raise it with LAYERSEG_MAX_VOXELS)", path.display())]
    TooLarge {
        path: PathBuf,
        voxels: u64,
        limit: u64,
    },

    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error("{what}: {reason}")]
    Mismatch { what: String, reason: String },

    #[error("cancelled")]
    Cancelled,

    /// A profile that cannot be used; `key` is the JSON path (e.g. `synthesis.opacity`).
    #[error("profile {origin}: {}{reason}", key_prefix(.key))]
    Profile {
        origin: String,
        key: String,
        reason: String,
    },

    /// An in-memory input that cannot be used (e.g. an empty organ mask, an all-zero texture).
    #[error("{what}: {reason}")]
    InvalidInput { what: String, reason: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl Error {
    /// Map an I/O error on `path` to the most specific variant.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { path },
            std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { path },
            _ => Error::Io { path, source },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
