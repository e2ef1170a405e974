//! Where training samples come from, and the background workers that prepare them.
//!
//! A [`SampleSource`] is a pure function of the sample index, so a run is reproducible and a
//! resumed run sees the samples it would have seen: step `s` with batch size `b` uses indices
//! `s*b .. s*b + b`. Validation samples use indices from [`VALIDATION_BASE`] up.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use ndarray::Array3;
use tch::{Device, Kind, Tensor};

pub use crate::error::SourceError;
use crate::error::{Error, Result, TorchContext};

/// Training samples use indices below this; validation samples this and up.
pub const VALIDATION_BASE: u64 = 1 << 62;

/// One synthetic training case: the blended image and its three targets, all (D, H, W) and of
/// one shape. `mask` is 1 inside the tumour and 0 elsewhere.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: Array3<f32>,
    pub healthy: Array3<f32>,
    pub tumour: Array3<f32>,
    pub mask: Array3<f32>,
}

/// A deterministic source of samples (e.g. on-the-fly synthesis from a profile and a seed).
pub trait SampleSource: Send + Sync {
    fn sample(&self, index: u64) -> std::result::Result<Sample, SourceError>;
}

/// A batch on the training device, each tensor (B, 1, D, H, W) float32.
#[derive(Debug)]
pub struct Batch {
    pub image: Tensor,
    pub healthy: Tensor,
    pub tumour: Tensor,
    pub mask: Tensor,
}

fn stack(arrays: &[&Array3<f32>], device: Device) -> Result<Tensor> {
    let (d, h, w) = arrays[0].dim();
    let mut flat = Vec::with_capacity(arrays.len() * d * h * w);
    for a in arrays {
        flat.extend(a.iter().copied());
    }
    let shape = [arrays.len() as i64, 1, d as i64, h as i64, w as i64];
    Tensor::f_from_slice(&flat)
        .and_then(|t| t.f_reshape(shape))
        .and_then(|t| t.f_to_device(device))
        .and_then(|t| t.f_to_kind(Kind::Float))
        .context(|| format!("moving a batch of shape {shape:?} to {device:?}"))
}

impl Batch {
    /// Stacks samples (of one shape) into a batch on `device`.
    pub fn from_samples(samples: &[Sample], device: Device) -> Result<Batch> {
        let Some(first) = samples.first() else {
            return Err(Error::Config("an empty batch".to_string()));
        };
        let dim = first.image.dim();
        for (i, s) in samples.iter().enumerate() {
            for (what, a) in [
                ("image", &s.image),
                ("healthy", &s.healthy),
                ("tumour", &s.tumour),
                ("mask", &s.mask),
            ] {
                if a.dim() != dim {
                    return Err(Error::Shape {
                        what: format!("sample {i} of the batch, {what}"),
                        expected: format!("{dim:?} like the batch's first image"),
                        got: a.shape().iter().map(|&x| x as i64).collect(),
                    });
                }
            }
        }
        let pick = |f: fn(&Sample) -> &Array3<f32>| -> Vec<&Array3<f32>> {
            samples.iter().map(f).collect()
        };
        Ok(Batch {
            image: stack(&pick(|s| &s.image), device)?,
            healthy: stack(&pick(|s| &s.healthy), device)?,
            tumour: stack(&pick(|s| &s.tumour), device)?,
            mask: stack(&pick(|s| &s.mask), device)?,
        })
    }
}

type Produced = (u64, std::result::Result<Sample, SourceError>);

/// Worker threads that call the source for consecutive indices ahead of the trainer, through a
/// bounded queue; samples come out in index order whatever the workers' timing.
pub struct Loader {
    receiver: Option<Receiver<Produced>>,
    pending: BTreeMap<u64, std::result::Result<Sample, SourceError>>,
    next: u64,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Starts `workers` threads (at least one) producing from index `start`, with at most
    /// `queue` finished samples waiting.
    pub fn start<S: SampleSource + ?Sized + 'static>(
        source: Arc<S>,
        start: u64,
        workers: usize,
        queue: usize,
    ) -> Loader {
        let (sender, receiver) = sync_channel::<Produced>(queue.max(1));
        let counter = Arc::new(AtomicU64::new(start));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..workers.max(1))
            .map(|_| {
                let (source, sender) = (Arc::clone(&source), sender.clone());
                let (counter, stop) = (Arc::clone(&counter), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let index = counter.fetch_add(1, Ordering::Relaxed);
                        if index >= VALIDATION_BASE {
                            break;
                        }
                        let sample =
                            std::panic::catch_unwind(AssertUnwindSafe(|| source.sample(index)))
                                .unwrap_or_else(|_| Err("the sample source panicked".into()));
                        if sender.send((index, sample)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Loader {
            receiver: Some(receiver),
            pending: BTreeMap::new(),
            next: start,
            stop,
            workers: handles,
        }
    }

    /// The next `n` samples in index order; a source error names the index.
    pub fn next_samples(&mut self, n: usize) -> Result<Vec<Sample>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let sample = match self.pending.remove(&self.next) {
                Some(s) => s,
                None => {
                    let receiver = self.receiver.as_ref().ok_or_else(stopped)?;
                    let (index, sample) = receiver.recv().map_err(|_| stopped())?;
                    self.pending.insert(index, sample);
                    continue;
                }
            };
            let index = self.next;
            self.next += 1;
            out.push(sample.map_err(|source| Error::Source { index, source })?);
        }
        Ok(out)
    }
}

fn stopped() -> Error {
    Error::Config("the sample workers stopped".to_string())
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks workers waiting on a full queue.
        self.receiver.take();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}
