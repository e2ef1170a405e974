//! ReduceLROnPlateau with `torch.optim.lr_scheduler.ReduceLROnPlateau` semantics for mode "min",
//! relative threshold and no cooldown, plus the paper's early stop (no improvement for a number
//! of periods, or the learning rate below a floor).

use serde::{Deserialize, Serialize};

/// Scheduler settings; defaults are the paper's (method.md section 6), with "epoch" read as one
/// period of [`crate::train::TrainConfig::period_steps`] steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlateauConfig {
    pub factor: f64,
    /// Periods without improvement tolerated before the learning rate is cut.
    pub patience: u32,
    /// An improvement must beat the best by this fraction (PyTorch's `threshold`, rel mode).
    pub threshold: f64,
    pub min_lr: f64,
    /// Training stops after this many periods without improvement (0: never).
    pub early_stop_patience: u32,
    /// Training stops once the learning rate falls below this.
    pub stop_below_lr: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            min_lr: 0.0,
            early_stop_patience: 40,
            stop_below_lr: 1e-6,
        }
    }
}

/// The scheduler's state, saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub config: PlateauConfig,
    pub best: Option<f64>,
    /// Periods since the last improvement, reset when the learning rate is cut.
    pub bad_periods: u32,
    /// Periods since the best value, never reset (for the early stop).
    pub periods_since_best: u32,
}

/// What the scheduler decided after a period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauDecision {
    pub lr: f64,
    pub stop: bool,
}

impl Plateau {
    pub fn new(config: PlateauConfig) -> Plateau {
        Plateau {
            config,
            best: None,
            bad_periods: 0,
            periods_since_best: 0,
        }
    }

    /// Feeds one period's mean loss; returns the learning rate to use next and whether to stop.
    pub fn step(&mut self, metric: f64, lr: f64) -> PlateauDecision {
        let c = self.config;
        let improved = match self.best {
            None => true,
            Some(best) => metric < best * (1.0 - c.threshold),
        };
        if improved {
            self.best = Some(metric);
            self.bad_periods = 0;
            self.periods_since_best = 0;
        } else {
            self.bad_periods += 1;
            self.periods_since_best += 1;
        }
        let mut new_lr = lr;
        if self.bad_periods > c.patience {
            let reduced = (lr * c.factor).max(c.min_lr);
            if lr - reduced > 1e-8 {
                new_lr = reduced;
            }
            self.bad_periods = 0;
        }
        let stop = new_lr < c.stop_below_lr
            || (c.early_stop_patience > 0 && self.periods_since_best >= c.early_stop_patience);
        PlateauDecision { lr: new_lr, stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plateau(patience: u32) -> Plateau {
        Plateau::new(PlateauConfig {
            patience,
            early_stop_patience: 0,
            ..PlateauConfig::default()
        })
    }

    #[test]
    fn cuts_after_patience_bad_periods_like_pytorch() {
        // PyTorch: with patience 2, the third period without improvement cuts the rate.
        let mut p = plateau(2);
        let mut lr = 1.0;
        let mut lrs = Vec::new();
        for metric in [1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6] {
            lr = p.step(metric, lr).lr;
            lrs.push(lr);
        }
        let expected = [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01];
        for (got, want) in lrs.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{lrs:?}");
        }
    }

    #[test]
    fn tiny_improvements_do_not_count() {
        let mut p = plateau(0);
        assert_eq!(p.step(1.0, 1.0).lr, 1.0);
        // 1e-5 relative is below the 1e-4 threshold: a bad period, and patience 0 cuts at once.
        assert!((p.step(0.99999, 1.0).lr - 0.1).abs() < 1e-12);
    }

    #[test]
    fn stops_on_low_lr_or_long_plateau() {
        let mut p = Plateau::new(PlateauConfig {
            patience: 100,
            early_stop_patience: 3,
            ..PlateauConfig::default()
        });
        assert!(!p.step(1.0, 1e-2).stop);
        assert!(!p.step(1.0, 1e-2).stop);
        assert!(!p.step(1.0, 1e-2).stop);
        assert!(p.step(1.0, 1e-2).stop);
        assert!(plateau(5).step(1.0, 1e-7).stop);
    }
}
