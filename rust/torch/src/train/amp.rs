//! Mixed precision on CUDA: a float16 autocast forward pass, and a dynamic loss scale so that
//! small float16 gradients do not flush to zero. The scale follows
//! `torch.cuda.amp.GradScaler`: start at 2^16, halve and skip the step when a gradient is not
//! finite, double after 2000 good steps in a row.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub scale: f64,
    pub good_steps: u64,
    pub growth_interval: u64,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl GradScaler {
    /// The loss to call `backward` on.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_mul_scalar(self.scale)?)
    }

    /// Divide the gradients of `params` by the scale, in place. Returns whether all are finite.
    pub fn unscale(&self, params: &[Tensor]) -> Result<bool> {
        let inverse = 1.0 / self.scale;
        let mut finite = true;
        tch::no_grad(|| -> Result<()> {
            for p in params {
                let mut grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let _ = grad.f_mul_scalar_(inverse)?;
                finite &= grad.f_isfinite()?.f_all()?.int64_value(&[]) != 0;
            }
            Ok(())
        })?;
        Ok(finite)
    }

    /// After a step: back off on overflow, grow after a run of good steps.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
        }
    }
}

/// Run `forward` under float16 autocast when `enabled` (CUDA only; the CPU path stays float32).
pub fn forward<T>(enabled: bool, forward: impl FnOnce() -> Result<T>) -> Result<T> {
    tch::autocast(enabled, forward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn unscale_restores_gradients_and_spots_overflow() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let scaler = GradScaler::default();
        let loss = (&p * 2.0).sum(Kind::Float);
        scaler.scale(&loss).unwrap().backward();
        assert!(scaler.unscale(std::slice::from_ref(&p)).unwrap());
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![2.0, 2.0, 2.0]);

        let q = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let huge = (&q * f64::from(f32::MAX)).sum(Kind::Float);
        scaler.scale(&huge).unwrap().backward();
        assert!(!scaler.unscale(std::slice::from_ref(&q)).unwrap());
    }

    #[test]
    fn scale_backs_off_and_grows() {
        let mut s = GradScaler {
            growth_interval: 2,
            ..Default::default()
        };
        s.update(false);
        assert_eq!(s.scale, 32768.0);
        s.update(true);
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
    }
}
