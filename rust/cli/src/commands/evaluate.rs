use anyhow::{bail, Context, Result};
use layerseg_core::io::{case_name, read_image, read_labels, scan_files, ReadOptions};
use layerseg_core::metrics::{evaluate, Metrics};
use ndarray::Array3;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::figures::{Outline, GREEN, RED};
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
    /// Write one PNG per case into this folder: axial, coronal and sagittal slices through the
    /// truth's largest extent, truth outlined in green and the prediction in red, Dice in the
    /// title. The outlines are drawn over the scan given with --image.
    #[arg(long)]
    pub figures: Option<PathBuf>,
    /// The scan the masks belong to (or a folder of them, matched by name), drawn under the
    /// outlines of --figures; without it they are drawn on black.
    #[arg(long)]
    pub image: Option<PathBuf>,
}

struct Case {
    name: String,
    pred: PathBuf,
    truth: PathBuf,
    organ: Option<PathBuf>,
    image: Option<PathBuf>,
}

/// File names that say what a file holds but not which case it is.
const GENERIC_NAMES: [&str; 16] = [
    "image",
    "scan",
    "label",
    "labels",
    "mask",
    "tumor",
    "tumour",
    "seg",
    "segmentation",
    "prediction",
    "pred",
    "truth",
    "gt",
    "liver",
    "brain",
    "organ",
];

/// The case a file belongs to: its name without the extension, or its folder's name when the
/// file name is generic (`case_007/label.nii.gz` is case_007).
pub fn case_label(path: &Path) -> String {
    let name = case_name(path);
    if !GENERIC_NAMES.contains(&name.to_lowercase().as_str()) {
        return name;
    }
    let parent = std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    parent.filter(|p| !p.is_empty()).unwrap_or(name)
}

pub fn run(args: Args) -> Result<()> {
    let cases = pair_cases(&args)?;
    if args.figures.is_some() && args.image.is_none() {
        eprintln!(
            "layerseg: warning: --figures without --image: the outlines are drawn on black, \
             without the scan's anatomy"
        );
    }
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
    let metrics = evaluate(&pred_mask, &truth_mask, truth.spacing(), region.as_ref());
    if let Some(dir) = figures {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        let background = match &case.image {
            Some(path) => {
                let (image, _) = read_image(path, opts)?;
                truth.ensure_same_grid(&truth_name, &image, &path.display().to_string())?;
                image
            }
            None => truth.with_data(Array3::zeros(truth.data.raw_dim())),
        };
        let title = format!("{}  Dice {:.3}", case.name, metrics.dice);
        crate::figures::write_figure(
            &dir.join(format!("{}.png", case.name)),
            &background,
            &[
                Outline {
                    mask: &truth_mask,
                    color: GREEN,
                    label: "truth",
                },
                Outline {
                    mask: &pred_mask,
                    color: RED,
                    label: "prediction",
                },
            ],
            Some(&title),
        )?;
    }
    Ok(metrics)
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
            name: case_label(&args.pred),
            pred: args.pred.clone(),
            truth: args.truth.clone(),
            organ: args.organ_mask.clone(),
            image: args.image.clone(),
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
        let image = match &args.image {
            Some(dir) if dir.is_dir() => Some(dir.join(file)),
            other => other.clone(),
        };
        cases.push(Case {
            // Files of one folder have distinct names; their folder would name them all alike.
            name: case_name(&pred),
            pred,
            truth,
            organ,
            image,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_named_by_the_file_or_its_folder_when_the_name_is_generic() {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("lits117");
        std::fs::create_dir(&case).unwrap();
        for (file, name) in [
            ("tumor.nii.gz", "lits117"),
            ("label.nii", "lits117"),
            ("Image.nii.gz", "lits117"),
            ("prediction.nii.gz", "lits117"),
            ("patient_12.nii.gz", "patient_12"),
            ("lits117_mask.nii.gz", "lits117_mask"),
        ] {
            assert_eq!(case_label(&case.join(file)), name, "{file}");
        }
        // A relative generic name still finds its folder.
        let here = std::env::current_dir().unwrap();
        let expected = here.file_name().unwrap().to_string_lossy();
        assert_eq!(case_label(Path::new("mask.nii.gz")), expected);
    }
}
