//! Pretraining (method.md sections 5 and 6): the layer-decomposition objective on synthetic
//! samples, run by the shared training loop ([`super::run::train`]).

use std::sync::Arc;

use ndarray::Array3;
use tch::{Device, Tensor};

use super::run::{time_steps, train, Objective, RunOptions, Validation};
use super::source::{Batch, Sample, SampleSource, VALIDATION_BASE};
use super::{TrainConfig, TrainReport};
use crate::error::{Error, Result};
use crate::losses::{layer_losses, recomposition_l1, Losses};
use crate::network::{BasicUNetConfig, Model};

/// Pretrains a `net`-shaped BasicUNet on `source` into `run.run_dir`: checkpoints under
/// `checkpoints/`, per-step metrics in `metrics.jsonl`, and the final `model.safetensors` with
/// its card `model.json`.
pub fn pretrain<S: SampleSource + ?Sized + 'static>(
    source: Arc<S>,
    net: &BasicUNetConfig,
    config: &TrainConfig,
    run: &RunOptions,
) -> Result<TrainReport> {
    pretrain_with_real(source, net, config, run, &[])
}

/// [`pretrain`], also scoring unlabelled real volumes (normalised, on the network grid, each
/// (D, H, W)) by the recomposition L1 at every validation: `validation_real` in the metrics.
pub fn pretrain_with_real<S: SampleSource + ?Sized + 'static>(
    source: Arc<S>,
    net: &BasicUNetConfig,
    config: &TrainConfig,
    run: &RunOptions,
    real: &[Array3<f32>],
) -> Result<TrainReport> {
    config.validate()?;
    let samples = if config.validate_every > 0 {
        validation_samples(source.as_ref(), config.validation_samples)?
    } else {
        Vec::new()
    };
    let objective = Pretraining {
        weights: config.loss_weights,
        samples,
        real: real.to_vec(),
    };
    train(source, net, config, run, &objective)
}

pub(super) fn validation_samples<S: SampleSource + ?Sized>(
    source: &S,
    n: u64,
) -> Result<Vec<Sample>> {
    (0..n)
        .map(|i| {
            let index = VALIDATION_BASE + i;
            source
                .sample(index)
                .map_err(|source| Error::Source { index, source })
        })
        .collect()
}

/// The pretraining objective (method.md sections 5 and 6): the layer-decomposition losses,
/// validated by the recomposition L1 on held-out synthetic samples and, when given, on
/// unlabelled real volumes.
pub(super) struct Pretraining {
    pub(super) weights: crate::losses::LossWeights,
    pub(super) samples: Vec<Sample>,
    pub(super) real: Vec<Array3<f32>>,
}

impl Pretraining {
    /// Mean recomposition L1 over the validation samples, batch by batch, without gradients.
    fn validate_synthetic(&self, model: &Model, device: Device, batch_size: usize) -> Result<f64> {
        let samples = &self.samples;
        let mut total = 0.0;
        for chunk in samples.chunks(batch_size) {
            let batch = Batch::from_samples(chunk, device)?;
            let scores = tch::no_grad(|| -> Result<Tensor> {
                let pred = model.net.forward_t(&batch.image, false)?;
                recomposition_l1(&pred, &batch.image)
            })?;
            total += scores
                .f_sum(tch::Kind::Double)
                .and_then(|t| t.f_double_value(&[]))
                .map_err(Error::from)?;
        }
        Ok(total / samples.len() as f64)
    }

    /// Mean recomposition L1 over unlabelled real volumes, one at a time (shapes may differ).
    fn validate_real(&self, model: &Model, device: Device) -> Result<f64> {
        let volumes = &self.real;
        let mut total = 0.0;
        for volume in volumes {
            let (d, h, w) = volume.dim();
            let flat: Vec<f32> = volume.iter().copied().collect();
            let score = tch::no_grad(|| -> Result<f64> {
                let image = Tensor::f_from_slice(&flat)
                    .and_then(|t| t.f_reshape([1, 1, d as i64, h as i64, w as i64]))
                    .and_then(|t| t.f_to_device(device))?;
                let pred = model.net.forward_t(&image, false)?;
                Ok(recomposition_l1(&pred, &image)?.f_double_value(&[0])?)
            })?;
            total += score;
        }
        Ok(total / volumes.len() as f64)
    }
}

impl Objective for Pretraining {
    fn name(&self) -> &'static str {
        "pretrain"
    }

    fn losses(&self, pred: &Tensor, batch: &Batch) -> Result<Losses> {
        layer_losses(
            pred,
            &batch.healthy,
            &batch.tumour,
            &batch.mask,
            &self.weights,
        )
    }

    fn validate(&self, model: &Model, device: Device, batch_size: usize) -> Result<Validation> {
        let score = self.validate_synthetic(model, device, batch_size)?;
        let mut scores = vec![("validation", score)];
        if !self.real.is_empty() {
            scores.push(("validation_real", self.validate_real(model, device)?));
        }
        Ok(Validation {
            scores,
            card_validation: Some(score),
            ..Validation::default()
        })
    }
}

/// Seconds per pretraining step (forward, losses, backward, Adam, reading the loss values, as in
/// [`pretrain()`]) on one fixed batch already on `device`, the mean over `steps` after `warmup`
/// untimed ones. For benchmarks against other implementations of the same step.
pub fn time_train_step(
    net: &BasicUNetConfig,
    config: &TrainConfig,
    device: Device,
    samples: &[Sample],
    warmup: u64,
    steps: u64,
) -> Result<f64> {
    let objective = Pretraining {
        weights: config.loss_weights,
        samples: Vec::new(),
        real: Vec::new(),
    };
    time_steps(&objective, net, config, device, samples, warmup, steps)
}
