//! Progress reported to an optional Python callable `callback(what, done, total)`, and Ctrl-C
//! (or an exception raised by the callback) turned into cancellation of the Rust work.

use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub struct PyProgress {
    callback: Option<Py<PyAny>>,
    what: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    /// The first exception raised by the callback or a signal handler, re-raised afterwards.
    error: Mutex<Option<PyErr>>,
}

impl PyProgress {
    pub fn new(callback: Option<Py<PyAny>>) -> PyProgress {
        PyProgress {
            callback,
            what: Mutex::new(String::new()),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    /// Call back (with the GIL) and look for pending signals such as Ctrl-C.
    fn report(&self) {
        Python::attach(|py| {
            let result = py.check_signals().and_then(|()| match &self.callback {
                Some(cb) => {
                    let what = self.what.lock().unwrap().clone();
                    let args = (
                        what,
                        self.done.load(Ordering::SeqCst),
                        self.total.load(Ordering::SeqCst),
                    );
                    cb.call1(py, args).map(|_| ())
                }
                None => Ok(()),
            });
            if let Err(e) = result {
                self.cancelled.store(true, Ordering::SeqCst);
                self.error.lock().unwrap().get_or_insert(e);
            }
        });
    }

    /// The exception that cancelled the work, if any: re-raise it instead of a generic error.
    pub fn take_error(&self) -> Option<PyErr> {
        self.error.lock().unwrap().take()
    }
}

impl layerseg_core::Progress for PyProgress {
    fn start(&self, what: &str, total: u64) {
        *self.what.lock().unwrap() = what.to_string();
        self.total.store(total, Ordering::SeqCst);
        self.done.store(0, Ordering::SeqCst);
        self.report();
    }

    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
        self.report();
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}
