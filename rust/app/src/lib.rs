//! LayerSeg's application layer: what a request to pretrain, fine-tune or adapt means, whichever
//! face made it. The command line (`layerseg-cli`) and the Python bindings
//! (`layerseg-python-libtorch`) only parse their arguments into a request, call it here and
//! print or return the report, so the same request checks the same things in the same order,
//! fails with the same message and builds the same configuration from either face.
//!
//! Also here: the model search (a given model, else the profile's shipped one) and the training
//! curves both faces draw. Errors are `anyhow` chains, since this is the edge of the libraries
//! below it: each face prints the chain as one line (the CLI) or raises it with its cause's
//! exception class (Python).

pub mod adapt;
pub mod curves;
pub mod finetune;
pub mod models;
pub mod pretrain;

use std::path::PathBuf;

/// Paths as one comma-separated list, for messages.
fn join(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
