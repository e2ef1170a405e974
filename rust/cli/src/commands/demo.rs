use anyhow::{bail, Context, Result};
use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::samples::sample_cache;
use std::path::{Path, PathBuf};

use super::{evaluate, segment};
use crate::figures::{write_figure, Outline, GREEN, ORGAN, RED};

/// `layerseg demo`: take a real tumour scan from the sample cache, segment it zero-shot with the
/// shipped model, draw the result and score it against the scan's own ground truth.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which real tumour case to run.
    #[arg(long, value_enum, default_value_t = DemoCase::Mrbraintumor2)]
    pub case: DemoCase,
    /// Folder for the mask, the overlay PNG and metrics.json.
    #[arg(long, default_value = "demo-output")]
    pub out: PathBuf,
    /// Weights to run instead of the shipped model of the case's profile.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the network runs: auto (CUDA when a GPU is visible, else CPU), cpu, or cuda.
    #[arg(long, default_value = "auto")]
    pub device: layerseg_torch::DeviceChoice,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DemoCase {
    /// T1 post-contrast brain MRI with an enhancing tumour (3D Slicer's MRBrainTumor2), whole head.
    Mrbraintumor2,
    /// Contrast liver CT with tumours (LiTS volume 117), searched inside its liver mask.
    Lits117,
}

impl DemoCase {
    fn sample(self) -> &'static str {
        match self {
            DemoCase::Mrbraintumor2 => "mrbraintumor2",
            DemoCase::Lits117 => "lits117",
        }
    }

    fn profile(self) -> &'static str {
        match self {
            DemoCase::Mrbraintumor2 => "brain-mri",
            DemoCase::Lits117 => "liver-ct",
        }
    }

    /// (tumour truth, organ mask given to the model and the scores) inside the sample folder.
    fn files(self) -> (&'static str, Option<&'static str>) {
        match self {
            DemoCase::Mrbraintumor2 => ("label.nii.gz", None),
            DemoCase::Lits117 => ("tumor.nii.gz", Some("liver.nii.gz")),
        }
    }

    /// The organ mask's name in the figure's legend.
    fn organ(self) -> &'static str {
        match self {
            DemoCase::Mrbraintumor2 => "brain",
            DemoCase::Lits117 => "liver",
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let name = args.case.sample();
    let folder = sample_folder(name)?;
    let (truth, organ) = args.case.files();
    let organ = organ.map(|f| folder.join(f));
    let scan = folder.join("image.nii.gz");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create folder", args.out.display()))?;
    let mask = args.out.join(format!("{name}_mask.nii.gz"));
    let overlay = args.out.join(format!("{name}_overlay.png"));
    let metrics = args.out.join(format!("{name}_metrics.json"));
    // The brain case has no brain mask: segment extracts one and saves it for the figure.
    let extracted = args
        .out
        .join(format!("{name}_{}.nii.gz", args.case.organ()));
    // A mask left by an earlier run must not be drawn when this run extracts none.
    if extracted.exists() {
        std::fs::remove_file(&extracted)
            .with_context(|| format!("{}: cannot remove", extracted.display()))?;
    }
    let (organ_mask, save_organ_mask) = match &organ {
        Some(file) => (segment::OrganMask::File(file.clone()), None),
        None => (segment::OrganMask::Auto, Some(extracted.clone())),
    };

    eprintln!("layerseg demo: segmenting {} zero-shot", scan.display());
    segment::run(segment::Args {
        inputs: vec![scan.clone()],
        out: mask.clone(),
        model: args.model,
        profile: Some(args.case.profile().into()),
        organ_mask,
        save_organ_mask: save_organ_mask.clone(),
        raw_mask: false,
        prob: None,
        layers: None,
        // The demo draws its own overlay below, with the truth and the Dice.
        overlay: None,
        device: args.device,
        threshold: None,
        overlap: None,
        batch_size: 1,
        tta: false,
        min_size_mm3: 0.0,
    })?;
    eprintln!("layerseg demo: scoring against the sample's ground truth ({truth})");
    evaluate::run(evaluate::Args {
        pred: mask.clone(),
        truth: folder.join(truth),
        truth_label: None,
        organ_mask: organ.clone(),
        json: Some(metrics.clone()),
        csv: None,
        figures: None,
        image: None,
    })?;
    let dice = read_dice(&metrics)?;
    let title = format!("{name} zero-shot ({})  Dice {dice:.3}", args.case.profile());
    draw_overlay(
        &overlay,
        &scan,
        &mask,
        &folder.join(truth),
        organ
            .as_deref()
            .or(save_organ_mask.as_deref().filter(|p| p.exists()))
            .map(|p| (p, args.case.organ())),
        &title,
    )?;
    println!("mask:    {}", mask.display());
    println!("overlay: {}", overlay.display());
    println!("metrics: {}", metrics.display());
    Ok(())
}

/// The Dice that `evaluate` wrote into its JSON report.
fn read_dice(path: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    doc["cases"][0]["metrics"]["dice"]
        .as_f64()
        .with_context(|| format!("{}: no Dice in it", path.display()))
}

/// The scan with the truth (green), the prediction (red) and the organ mask (blue) outlined.
fn draw_overlay(
    path: &Path,
    scan: &Path,
    prediction: &Path,
    truth: &Path,
    organ: Option<(&Path, &str)>,
    title: &str,
) -> Result<()> {
    let opts = ReadOptions::default();
    let (image, _) = read_image(scan, &opts)?;
    let mask = |p: &Path| -> Result<ndarray::Array3<bool>> {
        let (labels, _) = read_labels(p, &opts)?;
        image.ensure_same_grid("scan", &labels, &p.display().to_string())?;
        Ok(labels.data.mapv(|v| v > 0))
    };
    let (truth, prediction) = (mask(truth)?, mask(prediction)?);
    let organ = organ
        .map(|(p, label)| mask(p).map(|m| (m, label)))
        .transpose()?;
    let mut outlines = vec![
        Outline {
            mask: &truth,
            color: GREEN,
            label: "truth",
        },
        Outline {
            mask: &prediction,
            color: RED,
            label: "prediction",
        },
    ];
    if let Some((m, label)) = &organ {
        outlines.push(Outline {
            mask: m,
            color: ORGAN,
            label,
        });
    }
    write_figure(path, &image, &outlines, Some(title))
}

/// The converted sample's folder in the sample cache (layerseg-core's `sample_cache`). The demo
/// only reads it: fetching is the sample tool's job (`make demo` runs it first), so a missing
/// sample is an error that names the command that fetches it.
fn sample_folder(name: &str) -> Result<PathBuf> {
    let folder = sample_cache().join(name);
    if !folder.join("sample.json").is_file() {
        bail!(
            "{}: the {name} sample is not fetched; fetch it with `python -m layerseg.samples fetch --only {name}` (into $LAYERSEG_DATA, else ~/.cache/layerseg/samples)",
            folder.display()
        );
    }
    Ok(folder)
}
