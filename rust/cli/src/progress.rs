//! The core [`Progress`] trait drawn as an indicatif progress bar on stderr (hidden when stderr
//! is not a terminal, so logs and tests stay clean), with Ctrl-C (SIGINT) and SIGTERM as cancel:
//! the first signal asks the work to stop cleanly (training checkpoints and exports its model,
//! a segmentation writes nothing), a second one exits at once.

use indicatif::{ProgressBar, ProgressStyle};
use layerseg_core::{CancelFlag, Progress};
use std::sync::OnceLock;

/// Set by the signal handler, installed once per process by the first [`Bar`].
fn cancel_flag() -> &'static CancelFlag {
    static FLAG: OnceLock<CancelFlag> = OnceLock::new();
    FLAG.get_or_init(|| {
        let installed = ctrlc::set_handler(|| {
            let flag = cancel_flag();
            if flag.is_set() {
                eprintln!("layerseg: interrupted again, exiting now");
                std::process::exit(130);
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

pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        cancel_flag();
        Bar(bar)
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.0.set_message(what.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn message(&self, text: &str) {
        self.0.println(text);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }

    fn cancelled(&self) -> bool {
        cancel_flag().is_set()
    }
}
