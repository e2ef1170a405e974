//! The core [`Progress`] trait drawn as an indicatif progress bar on stderr (hidden when stderr
//! is not a terminal, so logs and tests stay clean), with Ctrl-C (SIGINT) and SIGTERM as cancel:
//! the first signal asks the work to stop cleanly (training checkpoints and exports its model,
//! a segmentation writes nothing), a second one exits at once.
//!
//! With `LAYERSEG_PROGRESS=lines` in the environment the bar is replaced by plain lines that a
//! parent process (the Slicer module) can parse, at most a few per second:
//!
//! ```text
//! layerseg: progress WHAT DONE/TOTAL
//! layerseg: MESSAGE
//! ```

use indicatif::{ProgressBar, ProgressStyle};
use layerseg_core::{CancelFlag, Progress};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that selects plain progress lines, and its value.
pub const PROGRESS_ENV: &str = "LAYERSEG_PROGRESS";
pub const PROGRESS_LINES: &str = "lines";

/// Plain lines are printed no more often than this (the last one of a phase always is).
const LINE_INTERVAL: Duration = Duration::from_millis(250);

/// Set by the signal handler, installed once per process by the first [`Bar`].
fn cancel_flag() -> &'static CancelFlag {
    static FLAG: OnceLock<CancelFlag> = OnceLock::new();
    FLAG.get_or_init(|| {
        let installed = ctrlc::set_handler(|| {
            let flag = cancel_flag();
            if flag.is_set() {
                eprintln!("layerseg: interrupted again, exiting now");
                // `_exit`, not `process::exit`: the latter runs libtorch's static destructors
                // while the main thread is still inside libtorch, which dumped a C++ backtrace
                // or crashed (SIGSEGV). Outputs are written through temporary files, so none is
                // left half-written either way.
                // SAFETY: `_exit` ends the process at once; it touches no Rust state.
                unsafe { libc::_exit(130) };
            }
            eprintln!("layerseg: interrupted, stopping cleanly (interrupt again to exit now)");
            flag.cancel();
        });
        if let Err(e) = installed {
            eprintln!("layerseg: warning: cannot catch Ctrl-C ({e}); it will stop at once");
        }
        CancelFlag::default()
    })
}

pub struct Bar(Inner);

enum Inner {
    Drawn(ProgressBar),
    Lines(Lines),
}

struct Lines {
    what: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Lines {
    fn print(&self, force: bool) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if force || last.is_none_or(|t| t.elapsed() >= LINE_INTERVAL) {
            *last = Some(Instant::now());
            let what = self.what.lock().unwrap_or_else(|e| e.into_inner());
            let done = self.done.load(Ordering::SeqCst);
            let total = self.total.load(Ordering::SeqCst);
            eprintln!("layerseg: progress {what} {done}/{total}");
        }
    }
}

impl Bar {
    pub fn new() -> Self {
        cancel_flag();
        if std::env::var(PROGRESS_ENV).is_ok_and(|v| v == PROGRESS_LINES) {
            return Bar(Inner::Lines(Lines {
                what: Mutex::new(String::new()),
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                last: Mutex::new(None),
            }));
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar(Inner::Drawn(bar))
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        match &self.0 {
            Inner::Drawn(bar) => {
                bar.set_message(what.to_string());
                bar.set_length(total);
                bar.set_position(0);
            }
            Inner::Lines(lines) => {
                *lines.what.lock().unwrap_or_else(|e| e.into_inner()) = what.replace(' ', "_");
                lines.total.store(total, Ordering::SeqCst);
                lines.done.store(0, Ordering::SeqCst);
                lines.print(true);
            }
        }
    }

    fn advance(&self, n: u64) {
        match &self.0 {
            Inner::Drawn(bar) => bar.inc(n),
            Inner::Lines(lines) => {
                let done = lines.done.fetch_add(n, Ordering::SeqCst) + n;
                lines.print(done >= lines.total.load(Ordering::SeqCst));
            }
        }
    }

    fn message(&self, text: &str) {
        match &self.0 {
            Inner::Drawn(bar) => bar.println(text),
            Inner::Lines(_) => eprintln!("layerseg: {text}"),
        }
    }

    fn finish(&self) {
        if let Inner::Drawn(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }

    fn cancelled(&self) -> bool {
        cancel_flag().is_set()
    }
}
