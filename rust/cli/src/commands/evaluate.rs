use anyhow::{bail, Context, Result};
use layerseg_core::io::{case_name, read_labels, scan_files, ReadOptions};
use layerseg_core::metrics::{evaluate, Metrics};
use ndarray::Array3;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::output::write_text_atomic;

/// `layerseg evaluate`: compare predicted masks with ground truth, in physical units.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Predicted mask, or a folder of them (matched to the truth by file name).
    #[arg(long)]
    pub pred: PathBuf,
    /// Ground-truth label map, or a folder of them.
    #[arg(long)]
    pub truth: PathBuf,
    /// Only this truth label counts as tumour (default: every non-zero label).
    #[arg(long)]
    pub truth_label: Option<u8>,
    /// Evaluate only inside this organ mask (a file, or a folder matched by name).
    #[arg(long)]
    pub organ_mask: Option<PathBuf>,
    /// Write per-case metrics and the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write per-case metrics as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write one PNG per case: the slice through the largest lesion, prediction and truth outlined.
    #[arg(long)]
    pub figures: Option<PathBuf>,
}

struct Case {
    name: String,
    pred: PathBuf,
    truth: PathBuf,
    organ: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let cases = pair_cases(&args)?;
    let opts = ReadOptions::default();
    let mut rows = Vec::new();
    let mut failed = 0usize;
    for case in &cases {
        match evaluate_case(case, args.truth_label, &opts, args.figures.as_deref()) {
            Ok(m) => rows.push((case.name.clone(), m)),
            Err(e) => {
                eprintln!("layerseg: error: {}: {e:#}", case.name);
                failed += 1;
            }
        }
    }
    print_table(&rows);
    let summary = summarize(&rows);
    if let Some(path) = &args.json {
        let cases: Vec<_> = rows
            .iter()
            .map(|(n, m)| json!({"case": n, "metrics": m}))
            .collect();
        let doc = json!({"cases": cases, "summary": summary});
        write_text_atomic(path, &serde_json::to_string_pretty(&doc)?)?;
    }
    if let Some(path) = &args.csv {
        write_text_atomic(path, &to_csv(&rows))?;
    }
    if failed > 0 {
        bail!("{failed} of {} cases could not be evaluated", cases.len());
    }
    Ok(())
}

fn evaluate_case(
    case: &Case,
    truth_label: Option<u8>,
    opts: &ReadOptions,
    figures: Option<&Path>,
) -> Result<Metrics> {
    let (pred, _) = read_labels(&case.pred, opts)?;
    let (truth, _) = read_labels(&case.truth, opts)?;
    let truth_name = format!("truth {}", case.truth.display());
    truth.ensure_same_grid(&truth_name, &pred, &case.pred.display().to_string())?;
    let region = match &case.organ {
        Some(path) => {
            let (organ, _) = read_labels(path, opts)?;
            truth.ensure_same_grid(&truth_name, &organ, &path.display().to_string())?;
            Some(organ.data.mapv(|v| v > 0))
        }
        None => None,
    };
    let truth_mask: Array3<bool> = match truth_label {
        Some(label) => {
            let present: BTreeSet<u8> = truth.data.iter().copied().collect();
            if !present.contains(&label) {
                bail!(
                    "{}: --truth-label {label} does not occur in it (labels present: {present:?})",
                    case.truth.display()
                );
            }
            truth.data.mapv(|v| v == label)
        }
        None => truth.data.mapv(|v| v > 0),
    };
    let pred_mask = pred.data.mapv(|v| v > 0);
    if let Some(dir) = figures {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        crate::figures::write_overlay_figure(
            &dir.join(format!("{}.png", case.name)),
            &truth,
            &pred_mask,
            &truth_mask,
        )?;
    }
    Ok(evaluate(
        &pred_mask,
        &truth_mask,
        truth.spacing(),
        region.as_ref(),
    ))
}

/// Files pair up directly; folders pair up by file name (the truth folder decides the cases).
fn pair_cases(args: &Args) -> Result<Vec<Case>> {
    let is_dir = |p: &Path| p.is_dir();
    if !args.truth.exists() {
        bail!("{}: file not found", args.truth.display());
    }
    if !args.pred.exists() {
        bail!("{}: file not found", args.pred.display());
    }
    if !is_dir(&args.truth) {
        return Ok(vec![Case {
            name: case_name(&args.truth),
            pred: args.pred.clone(),
            truth: args.truth.clone(),
            organ: args.organ_mask.clone(),
        }]);
    }
    if !is_dir(&args.pred) {
        bail!(
            "{}: --truth is a folder, so --pred must be one too",
            args.pred.display()
        );
    }
    let mut cases = Vec::new();
    for truth in scan_files(&args.truth)? {
        let file = truth.file_name().expect("listed files have names");
        let pred = args.pred.join(file);
        if !pred.exists() {
            eprintln!(
                "layerseg: warning: {}: no prediction for this case",
                pred.display()
            );
            continue;
        }
        let organ = match &args.organ_mask {
            Some(dir) if dir.is_dir() => Some(dir.join(file)),
            other => other.clone(),
        };
        cases.push(Case {
            name: case_name(&truth),
            pred,
            truth,
            organ,
        });
    }
    if cases.is_empty() {
        bail!(
            "{}: no NIfTI truth file has a matching prediction in {}",
            args.truth.display(),
            args.pred.display()
        );
    }
    Ok(cases)
}

const COLUMNS: [&str; 13] = [
    "dice",
    "jaccard",
    "hd95_mm",
    "assd_mm",
    "sensitivity",
    "specificity",
    "precision",
    "truth_ml",
    "pred_ml",
    "lesions",
    "lesions_detected",
    "lesions_missed",
    "false_positive_components",
];

fn values(m: &Metrics) -> Vec<Option<f64>> {
    let v = serde_json::to_value(m).expect("metrics serialise");
    COLUMNS.iter().map(|c| v[c].as_f64()).collect()
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "nan".to_string(), |x| format!("{x:.4}"))
}

fn to_csv(rows: &[(String, Metrics)]) -> String {
    let mut out = format!("case,{}\n", COLUMNS.join(","));
    for (name, m) in rows {
        let vals: Vec<String> = values(m).into_iter().map(fmt).collect();
        out.push_str(&format!("{name},{}\n", vals.join(",")));
    }
    out
}

/// Mean, std and median of each metric over the cases where it is defined.
fn summarize(rows: &[(String, Metrics)]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (c, column) in COLUMNS.iter().enumerate() {
        let mut vals: Vec<f64> = rows.iter().filter_map(|(_, m)| values(m)[c]).collect();
        if vals.is_empty() {
            continue;
        }
        vals.sort_by(f64::total_cmp);
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let mid = vals.len() / 2;
        let median = if vals.len() % 2 == 0 {
            (vals[mid - 1] + vals[mid]) / 2.0
        } else {
            vals[mid]
        };
        out.insert(
            column.to_string(),
            json!({"mean": mean, "std": std, "median": median, "n": vals.len()}),
        );
    }
    serde_json::Value::Object(out)
}

fn print_table(rows: &[(String, Metrics)]) {
    println!(
        "{:<28} {:>7} {:>9} {:>9} {:>7} {:>7} {:>9}",
        "case", "dice", "hd95_mm", "assd_mm", "sens", "spec", "lesions"
    );
    for (name, m) in rows {
        println!(
            "{:<28} {:>7.4} {:>9} {:>9} {:>7.4} {:>7.4} {:>4}/{:<4}",
            name,
            m.dice,
            fmt(m.hd95_mm),
            fmt(m.assd_mm),
            m.sensitivity,
            m.specificity,
            m.lesions_detected,
            m.lesions
        );
    }
    if rows.len() > 1 {
        let mean = rows.iter().map(|(_, m)| m.dice).sum::<f64>() / rows.len() as f64;
        println!("mean dice over {} cases: {mean:.4}", rows.len());
    }
}
