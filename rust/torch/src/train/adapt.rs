//! Self-training on a site's unlabelled scans (`layerseg adapt`; the JBHI paper's Stage II,
//! method.md section 8): each round the model segments every scan, pseudo-labels come from the
//! mask and the residual between input and healthy layer, the scans whose recomposition error
//! is low are kept, and the model fine-tunes on them ([`super::finetune_cases`], the shared
//! loop). The rule and thresholds are the profile's `adaptation` section
//! ([`layerseg_core::profile::Adaptation`]).
//!
//! Label-free scores before and after each round, per scan and averaged:
//! - `recomposition_l1`: mean |x − (ŝ·p + n̂·(1 − p))| over the network grid (lower is better);
//! - `agreement`: the Dice between the mask (p ≥ `mask_threshold`) and the residual map
//!   (signed x − n̂ ≥ `residual_threshold`) inside the region of interest: how much the two
//!   heads agree on where the tumour is (1 when both are empty);
//! - `tumour_fraction`: the fraction of the region the mask calls tumour.
//!
//! Everything is a function of the scans, the profile, the starting weights and the seed.

use std::path::{Path, PathBuf};

use layerseg_core::datalist::unique_names;
use layerseg_core::io::write_labels;
use layerseg_core::preprocess::{preprocess, Prepared};
use layerseg_core::profile::Adaptation;
use layerseg_core::{NoProgress, Profile};
use ndarray::{Array3, Axis, Zip};
use serde::Serialize;

use super::finetune::{finetune_cases, FinetuneConfig};
use super::labelled::GridCase;
use super::run::{copy_model, RunOptions, MODEL_FILE};
use super::synthetic::{invalid, ScanInput};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::inference::{sliding_window, WindowOptions};
use crate::network::{BasicUNetConfig, Model, HEALTHY_CHANNEL, MASK_CHANNEL, TUMOUR_CHANNEL};

/// The summary file of [`adapt`] in the output folder.
pub const ADAPT_REPORT: &str = "adapt.json";

/// Self-training settings: the selection rule and the training of each round.
#[derive(Clone, Debug)]
pub struct AdaptConfig {
    pub rounds: usize,
    pub rule: Adaptation,
    /// Each round's training (its `train.steps` are the round's steps; its seed plus the
    /// round number seeds the round).
    pub finetune: FinetuneConfig,
}

impl AdaptConfig {
    /// The profile's `adaptation` section over the fine-tuning defaults.
    pub fn for_profile(profile: &Profile) -> AdaptConfig {
        let rule = profile.adaptation();
        let mut finetune = FinetuneConfig::for_profile(profile);
        finetune.train.steps = rule.steps_per_round;
        finetune.train.adam.lr = rule.lr;
        finetune.train.checkpoint_every = rule.steps_per_round.max(1);
        AdaptConfig {
            rounds: rule.rounds,
            rule,
            finetune,
        }
    }
}

/// One scan's label-free scores and what the selection made of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseScore {
    pub name: String,
    pub recomposition_l1: f64,
    pub agreement: f64,
    pub tumour_fraction: f64,
    /// Voxels of the pseudo-label on the network grid.
    pub pseudo_voxels: usize,
    pub kept: bool,
}

/// Scores of every scan under one model, and their means.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundScores {
    pub recomposition_l1: f64,
    pub agreement: f64,
    pub tumour_fraction: f64,
    pub cases: Vec<CaseScore>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AdaptRound {
    pub round: usize,
    /// The scores of the model the round starts from (with the selection made on them) ...
    pub before: RoundScores,
    /// ... and of the model it trained.
    pub after: RoundScores,
    pub kept: Vec<String>,
    pub run_dir: PathBuf,
    pub model: PathBuf,
}

/// The result of [`adapt`], also written to `OUT/adapt.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AdaptReport {
    pub rounds: Vec<AdaptRound>,
    /// The last round's model, copied to `OUT/model.safetensors`.
    pub model: PathBuf,
}

struct Scan {
    name: String,
    image: layerseg_core::Image,
    prepared: Prepared,
}

/// One scan under one model: its scores and pseudo-label on the network grid.
struct Scored {
    score: CaseScore,
    pseudo: Array3<u8>,
}

fn score(scan: &Scan, model: &Model, profile: &Profile, rule: &Adaptation) -> Result<Scored> {
    let input = &scan.prepared.input;
    let window = WindowOptions {
        roi: profile.inference.patch_size,
        overlap: profile.inference.overlap,
        batch_size: 1,
        flip_tta: false,
    };
    let out = sliding_window(model, input.view(), &window, &NoProgress)?;
    let channel = |c: i64| out.index_axis(Axis(0), c as usize);
    let (healthy, tumour, logit) = (
        channel(HEALTHY_CHANNEL),
        channel(TUMOUR_CHANNEL),
        channel(MASK_CHANNEL),
    );
    let (mt, rt) = (rule.mask_threshold as f32, rule.residual_threshold as f32);
    let mut pseudo = Array3::<u8>::zeros(input.raw_dim());
    let (mut l1, mut mask_n, mut residual_n, mut both, mut region_n) =
        (0f64, 0u64, 0u64, 0u64, 0u64);
    Zip::from(&mut pseudo)
        .and(input)
        .and(&healthy)
        .and(&tumour)
        .and(&logit)
        .and(&scan.prepared.region)
        .for_each(|q, &x, &n, &s, &m, &inside| {
            let p = 1.0 / (1.0 + (-m).exp());
            l1 += f64::from((x - (n + p * (s - n))).abs());
            if !inside {
                return;
            }
            region_n += 1;
            let masked = p >= mt;
            let residual = rule.residual_sign.apply(x - n) >= rt;
            mask_n += u64::from(masked);
            residual_n += u64::from(residual);
            if masked && residual {
                both += 1;
                *q = 1;
            }
        });
    let pseudo_voxels = both as usize;
    let agreement = if mask_n + residual_n == 0 {
        1.0
    } else {
        2.0 * both as f64 / (mask_n + residual_n) as f64
    };
    Ok(Scored {
        score: CaseScore {
            name: scan.name.clone(),
            recomposition_l1: l1 / input.len().max(1) as f64,
            agreement,
            tumour_fraction: mask_n as f64 / region_n.max(1) as f64,
            pseudo_voxels,
            kept: false,
        },
        pseudo,
    })
}

/// Scores every scan and marks the ones the rule keeps: recomposition error at most the
/// maximum, a large enough pseudo-label, and among the `keep_fraction` lowest errors.
fn score_all(
    scans: &[Scan],
    model: &Model,
    profile: &Profile,
    rule: &Adaptation,
) -> Result<(RoundScores, Vec<Array3<u8>>)> {
    let mut scored = scans
        .iter()
        .map(|s| score(s, model, profile, rule))
        .collect::<Result<Vec<_>>>()?;
    let mut candidates: Vec<usize> = (0..scored.len())
        .filter(|&i| {
            let s = &scored[i].score;
            s.recomposition_l1 <= rule.max_recomposition_l1
                && s.pseudo_voxels >= rule.min_label_voxels.max(1)
        })
        .collect();
    candidates.sort_by(|&a, &b| {
        let (x, y) = (&scored[a].score, &scored[b].score);
        x.recomposition_l1
            .total_cmp(&y.recomposition_l1)
            .then(a.cmp(&b))
    });
    let quota = ((rule.keep_fraction * scans.len() as f64).round() as usize).max(1);
    for &i in candidates.iter().take(quota) {
        scored[i].score.kept = true;
    }
    let n = scored.len().max(1) as f64;
    let mean = |f: fn(&CaseScore) -> f64| scored.iter().map(|s| f(&s.score)).sum::<f64>() / n;
    let scores = RoundScores {
        recomposition_l1: mean(|c| c.recomposition_l1),
        agreement: mean(|c| c.agreement),
        tumour_fraction: mean(|c| c.tumour_fraction),
        cases: scored.iter().map(|s| s.score.clone()).collect(),
    };
    Ok((scores, scored.into_iter().map(|s| s.pseudo).collect()))
}

fn describe(scores: &RoundScores) -> String {
    format!(
        "recomposition L1 {:.4}, mask/residual agreement {:.3}, tumour fraction {:.4}",
        scores.recomposition_l1, scores.agreement, scores.tumour_fraction
    )
}

/// Self-trains the weights at `init` on unlabelled `scans` for `config.rounds` rounds into
/// `run.run_dir`: `round-R/` holds each round's run (checkpoints, metrics, model) and its
/// pseudo-labels (`pseudo/NAME.nii.gz`, on each scan's grid); `model.safetensors` is the last
/// round's model and `adapt.json` the report.
pub fn adapt(
    scans: Vec<ScanInput>,
    profile: &Profile,
    net: &BasicUNetConfig,
    init: &Path,
    config: &AdaptConfig,
    run: &RunOptions,
) -> Result<AdaptReport> {
    if scans.is_empty() {
        return Err(Error::Config("no scans to adapt to".to_string()));
    }
    if config.rounds == 0 {
        return Err(Error::Config(
            "adaptation needs at least one round".to_string(),
        ));
    }
    let out = run.run_dir;
    for r in 1..=config.rounds {
        let dir = out.join(format!("round-{r}"));
        if dir.exists() {
            return Err(invalid(
                &dir,
                "already exists: choose another output folder (adapt does not resume)",
            ));
        }
    }
    let names = unique_names(&scans.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
    let scans = scans
        .into_iter()
        .zip(names)
        .map(|(s, name)| {
            let prepared =
                preprocess(&s.image, s.organ.as_ref(), profile).map_err(|e| invalid(&s.name, e))?;
            Ok(Scan {
                name,
                image: s.image,
                prepared,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let rule = &config.rule;
    let mut current = init.to_path_buf();
    let mut model = Model::load(net, run.device, &current)?;
    run.progress
        .message(&format!("scoring {} scan(s)", scans.len()));
    let (mut before, mut pseudo) = score_all(&scans, &model, profile, rule)?;
    let mut rounds = Vec::new();
    for r in 1..=config.rounds {
        if run.progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let kept: Vec<usize> = (0..scans.len()).filter(|&i| before.cases[i].kept).collect();
        run.progress.message(&format!(
            "round {r}: {}; keeping {} of {} scan(s)",
            describe(&before),
            kept.len(),
            scans.len()
        ));
        if kept.is_empty() {
            let why: Vec<String> = before
                .cases
                .iter()
                .map(|c| {
                    format!(
                        "{} (recomposition L1 {:.4}, pseudo-label {} voxels)",
                        c.name, c.recomposition_l1, c.pseudo_voxels
                    )
                })
                .collect();
            return Err(Error::Config(format!(
                "round {r}: no scan passes the profile's adaptation rule (recomposition L1 at \
                 most {}, pseudo-label at least {} voxels): {}",
                rule.max_recomposition_l1,
                rule.min_label_voxels,
                why.join("; ")
            )));
        }
        let dir = out.join(format!("round-{r}"));
        let labels_dir = dir.join("pseudo");
        std::fs::create_dir_all(&labels_dir).map_err(|e| Error::io(&labels_dir, e))?;
        let mut grid = Vec::new();
        for &i in &kept {
            let scan = &scans[i];
            let native = scan.prepared.mapping.labels_to_input_grid(pseudo[i].view());
            let path = labels_dir.join(format!("{}.nii.gz", scan.name));
            write_labels(&path, &scan.image.with_data(native.data), None)?;
            grid.push(GridCase {
                name: scan.name.clone(),
                input: scan.prepared.input.clone(),
                label: std::mem::take(&mut pseudo[i]),
            });
        }
        let mut finetune = config.finetune.clone();
        finetune.seed = finetune.seed.wrapping_add(r as u64);
        let round_run = RunOptions {
            run_dir: &dir,
            resume: false,
            ..run.clone()
        };
        drop(model);
        let (report, _) = finetune_cases(grid, &[], profile, net, &current, &finetune, &round_run)?;
        current = report.model.clone();
        model = Model::load(net, run.device, &current)?;
        run.progress
            .message(&format!("round {r}: scoring the new model"));
        let (after, next_pseudo) = score_all(&scans, &model, profile, rule)?;
        run.progress
            .message(&format!("round {r} done: {}", describe(&after)));
        rounds.push(AdaptRound {
            round: r,
            before: before.clone(),
            after: after.clone(),
            kept: kept.iter().map(|&i| scans[i].name.clone()).collect(),
            run_dir: dir,
            model: current.clone(),
        });
        before = after;
        pseudo = next_pseudo;
    }
    let final_model = out.join(MODEL_FILE);
    copy_model(&current, &final_model)?;
    let report = AdaptReport {
        rounds,
        model: final_model,
    };
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Config(format!("adaptation report: {e}")))?;
    let path = out.join(ADAPT_REPORT);
    write_atomic(&path, |tmp| {
        std::fs::write(tmp, &json).map_err(|e| Error::io(tmp, e))
    })?;
    Ok(report)
}
