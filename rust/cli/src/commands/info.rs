use anyhow::Result;
use layerseg_core::io::{read_image, NiftiMeta, ReadOptions};
use layerseg_core::Image;
use serde_json::json;
use std::path::PathBuf;

/// `layerseg info FILE...`: the first thing to run on a new scan.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NIfTI files (.nii or .nii.gz).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON object per file instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let opts = ReadOptions::default();
    let mut failed = 0;
    for file in &args.files {
        match read_image(file, &opts) {
            Ok((image, meta)) => {
                crate::warn_all(&meta);
                let summary = summarize(&image, &meta);
                if args.json {
                    println!("{summary}");
                } else {
                    print!("{}", render_text(&summary));
                }
            }
            Err(e) if args.files.len() > 1 => {
                eprintln!("layerseg: error: {e}");
                failed += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} files could not be read", args.files.len());
    }
    Ok(())
}

/// Everything `info` reports, as JSON (the text form is rendered from it).
pub fn summarize(image: &Image, meta: &NiftiMeta) -> serde_json::Value {
    let (mut min, mut max, mut sum, mut sum_sq) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0);
    let mut nonzero = 0u64;
    for &v in image.data.iter() {
        let v = v as f64;
        min = min.min(v);
        max = max.max(v);
        sum += v;
        sum_sq += v * v;
        nonzero += (v != 0.0) as u64;
    }
    let n = image.data.len() as f64;
    let mean = sum / n;
    let std = (sum_sq / n - mean * mean).max(0.0).sqrt();
    let round = |v: f64| (v * 1e6).round() / 1e6;
    json!({
        "file": meta.path.display().to_string(),
        "shape": meta.dims,
        "spacing_mm": image.spacing().map(round),
        "orientation": image.orientation().code(),
        "datatype": meta.datatype,
        "scl_slope": meta.header.scl_slope,
        "scl_inter": meta.header.scl_inter,
        "affine_source": format!("{:?}", meta.affine_source).to_lowercase(),
        "affine": image.affine.map(|row| row.map(round)),
        "range": [round(min), round(max)],
        "mean": round(mean),
        "std": round(std),
        "nonzero_fraction": round(nonzero as f64 / n),
        "warnings": meta.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    })
}

pub fn render_text(s: &serde_json::Value) -> String {
    let nums = |v: &serde_json::Value, sep: &str| {
        v.as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    let mut out = format!(
        "{}\n  shape        {}\n  spacing      {} mm\n  orientation  {}\n  datatype     {}",
        s["file"].as_str().unwrap_or_default(),
        nums(&s["shape"], " x "),
        nums(&s["spacing_mm"], " x "),
        s["orientation"].as_str().unwrap_or_default(),
        s["datatype"].as_str().unwrap_or_default(),
    );
    if s["scl_slope"].as_f64() != Some(1.0) && s["scl_slope"].as_f64() != Some(0.0)
        || s["scl_inter"].as_f64() != Some(0.0)
    {
        out.push_str(&format!(
            " (scl_slope {}, scl_inter {})",
            s["scl_slope"], s["scl_inter"]
        ));
    }
    out.push_str(&format!(
        "\n  range        {} .. {}  (mean {}, std {})\n  affine       from {}\n",
        s["range"][0],
        s["range"][1],
        s["mean"],
        s["std"],
        s["affine_source"].as_str().unwrap_or_default()
    ));
    for row in s["affine"].as_array().unwrap_or(&vec![]).iter().take(3) {
        out.push_str(&format!("               [{}]\n", nums(row, ", ")));
    }
    out
}
