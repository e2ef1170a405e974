//! The single gate from Python into Rust work: the GIL is released while it runs, the work runs
//! in this process's own thread pool, and its error is mapped to a Python exception.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::errors::IntoPyErr;

pub fn without_gil<T, E, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    E: IntoPyErr + Send,
    F: Send + FnOnce() -> Result<T, E>,
{
    in_own_pool(py, work).map_err(IntoPyErr::into_py_err)
}

/// Runs `work` without the GIL, its parallel parts in [`pool`].
pub fn in_own_pool<T: Send>(py: Python<'_>, work: impl Send + FnOnce() -> T) -> T {
    let pool = pool();
    py.detach(|| pool.install(work))
}

/// The rayon pool of this process. rayon's global pool does not survive `fork()`: a child
/// forked after the parent ran parallel work (a MONAI `DataLoader` worker under Linux's default
/// start method) inherits the pool without its threads, and its first parallel call waits for
/// them forever. So calls from Python never use the global pool: they use this one, built anew
/// whenever the process id is not the one that built it. The inherited pool is leaked, not
/// dropped, because dropping it would signal threads that do not exist in the child.
fn pool() -> Arc<ThreadPool> {
    static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);
    let mut slot = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, pool)) = slot.as_ref() {
        if *owner == pid {
            return Arc::clone(pool);
        }
    }
    if let Some(inherited) = slot.take() {
        std::mem::forget(inherited);
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .thread_name(|i| format!("layerseg-{i}"))
            .build()
            .expect("cannot start LayerSeg's worker threads"),
    );
    *slot = Some((pid, Arc::clone(&pool)));
    pool
}
