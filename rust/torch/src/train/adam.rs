//! Adam with the exact update of `torch.optim.Adam` (L2 weight decay added to the gradient, not
//! AdamW), written on tensors so that its state can be checkpointed: tch's `nn::Optimizer` wraps
//! the C++ optimiser and does not expose the moments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::error::{Error, Result, TorchContext};

/// Adam hyper-parameters; defaults are the paper's (method.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 3e-5,
        }
    }
}

struct Slot {
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// Adam over every trainable variable of a `VarStore`, keyed by state-dict name.
pub struct Adam {
    config: AdamConfig,
    lr: f64,
    /// Updates applied so far (PyTorch keeps one per parameter; ours all move together).
    steps: u64,
    /// Updates over which the step size ramps up linearly to the learning rate (0: none).
    warmup: u64,
    slots: BTreeMap<String, Slot>,
}

impl Adam {
    pub fn new(vs: &VarStore, config: AdamConfig) -> Result<Adam> {
        let mut slots = BTreeMap::new();
        for (name, param) in vs.variables() {
            if !param.requires_grad() {
                continue;
            }
            let zeros = || {
                param
                    .f_zeros_like()
                    .context(|| format!("Adam state of {name}"))
            };
            slots.insert(
                name.clone(),
                Slot {
                    exp_avg: zeros()?,
                    exp_avg_sq: zeros()?,
                    param,
                },
            );
        }
        Ok(Adam {
            config,
            lr: config.lr,
            steps: 0,
            warmup: 0,
            slots,
        })
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Ramps the step size up over the first `updates` updates: moments that restart from zero
    /// on trained weights make Adam's first steps as large as the learning rate in every weight.
    pub fn set_warmup(&mut self, updates: u64) {
        self.warmup = updates;
    }

    pub fn zero_grad(&mut self) {
        for slot in self.slots.values_mut() {
            let mut grad = slot.param.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// One update from the gradients currently in the parameters.
    pub fn step(&mut self) -> Result<()> {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let ramp = match self.warmup {
            0 => 1.0,
            n => (self.steps as f64 / n as f64).min(1.0),
        };
        let step_size = self.lr * ramp / bias_correction1;
        tch::no_grad(|| {
            for (name, slot) in self.slots.iter_mut() {
                let grad = slot.param.grad();
                if !grad.defined() {
                    continue;
                }
                update(slot, &grad, &c, step_size, bias_correction2_sqrt)
                    .context(|| format!("Adam update of {name}"))?;
            }
            Ok(())
        })
    }

    /// The moments as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for (name, slot) in &self.slots {
            out.push((format!("exp_avg.{name}"), slot.exp_avg.shallow_clone()));
            out.push((
                format!("exp_avg_sq.{name}"),
                slot.exp_avg_sq.shallow_clone(),
            ));
        }
        out
    }

    /// Restores moments saved by [`Adam::state`] and the step count, strictly.
    pub fn load_state(&mut self, state: &[(String, Tensor)], steps: u64, lr: f64) -> Result<()> {
        let given: BTreeMap<&str, &Tensor> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        if given.len() != 2 * self.slots.len() {
            return Err(Error::Config(format!(
                "optimiser state has {} tensors, this network needs {}",
                given.len(),
                2 * self.slots.len()
            )));
        }
        tch::no_grad(|| {
            for (name, slot) in self.slots.iter_mut() {
                for (prefix, dst) in [
                    ("exp_avg", &mut slot.exp_avg),
                    ("exp_avg_sq", &mut slot.exp_avg_sq),
                ] {
                    let key = format!("{prefix}.{name}");
                    let src = given
                        .get(key.as_str())
                        .ok_or_else(|| Error::Config(format!("optimiser state lacks {key}")))?;
                    if src.size() != dst.size() {
                        return Err(Error::Config(format!(
                            "optimiser state {key}: shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(src).context(|| format!("restoring {key}"))?;
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        self.lr = lr;
        Ok(())
    }
}

fn update(
    slot: &mut Slot,
    grad: &Tensor,
    c: &AdamConfig,
    step_size: f64,
    bias_correction2_sqrt: f64,
) -> Result<(), tch::TchError> {
    let grad = if c.weight_decay != 0.0 {
        grad.f_add(&slot.param.f_mul_scalar(c.weight_decay)?)?
    } else {
        grad.shallow_clone()
    };
    let _ = slot.exp_avg.f_lerp_(&grad, 1.0 - c.beta1)?;
    let _ = slot.exp_avg_sq.f_mul_scalar_(c.beta2)?;
    let _ = slot
        .exp_avg_sq
        .f_add_(&grad.f_mul(&grad)?.f_mul_scalar(1.0 - c.beta2)?)?;
    let denom = slot
        .exp_avg_sq
        .f_sqrt()?
        .f_div_scalar(bias_correction2_sqrt)?
        .f_add_scalar(c.eps)?;
    let _ = slot
        .param
        .f_sub_(&slot.exp_avg.f_div(&denom)?.f_mul_scalar(step_size)?)?;
    Ok(())
}
