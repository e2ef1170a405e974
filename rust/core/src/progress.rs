//! Progress reporting and cancellation for long work. The library reports through this trait;
//! the CLI draws progress bars, Python forwards to a callback, Slicer reads progress lines.

use std::sync::atomic::{AtomicBool, Ordering};

pub trait Progress: Sync {
    /// A new phase of `total` units (cases, steps, windows) begins.
    fn start(&self, _what: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A free-form status line (e.g. losses).
    fn message(&self, _text: &str) {}
    fn finish(&self) {}
    /// Long loops poll this and stop early (leaving no partial output) when it turns true.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing and is never cancelled.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A cancellation flag that a signal handler or another thread can set.
#[derive(Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
