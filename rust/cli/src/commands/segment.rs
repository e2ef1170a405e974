use anyhow::{bail, Context, Result};
use layerseg_core::io::{
    case_name, read_image, read_labels, scan_files, write_image, write_labels, ReadOptions,
};
use layerseg_core::{Profile, Progress};
use layerseg_torch::brain::BrainExtractor;
use layerseg_torch::inference::{segment, SegmentOptions};
use layerseg_torch::network::Model;
use layerseg_torch::{select_device, DeviceChoice};
use std::path::{Path, PathBuf};

use crate::figures::{write_figure, Outline, ORGAN, RED};
use crate::progress::Bar;
use layerseg_app::models;

/// `layerseg segment`: scans in, tumour masks out, each on its scan's own grid.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NIfTI scans, or folders of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The mask file (one input), or a folder (several inputs): NAME.nii.gz per scan.
    #[arg(long)]
    pub out: PathBuf,
    // `model`, `profile` and `device` say what `args::ModelArgs` and `args::DeviceArg` say; they
    // stay plain fields because `demo` builds these arguments field by field.
    /// Weights (.safetensors with its card, or a PyTorch state dict); default: the model shipped
    /// for the profile.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A built-in profile (brain-mri, liver-ct) or a profile JSON file; default: the model
    /// card's profile, else brain-mri.
    #[arg(long)]
    pub profile: Option<String>,
    /// Where to search: `auto` (brain extraction for profiles that ask for it, as brain-mri
    /// does; nothing for the others), `none` (the whole scan), or an organ or brain mask file
    /// on the scan's grid (a folder, matched by name, for several inputs).
    #[arg(long, default_value = "auto", value_name = "auto|none|FILE")]
    pub organ_mask: OrganMask,
    /// Also write the organ or brain mask the search used (a folder for several inputs).
    #[arg(long)]
    pub save_organ_mask: Option<PathBuf>,
    /// Write the network's own mask, without the profile's layer rule (README, "The layer rule").
    #[arg(long)]
    pub raw_mask: bool,
    /// Also write the tumour probability (float32) here (a folder for several inputs).
    #[arg(long)]
    pub prob: Option<PathBuf>,
    /// Also write the healthy and tumour layers, and the image minus the healthy layer
    /// (normalised units), into this folder (NAME_healthy, NAME_tumour, NAME_residual.nii.gz).
    #[arg(long)]
    pub layers: Option<PathBuf>,
    /// Also write a PNG with the mask outlined on the scan (a folder for several inputs).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Where the network runs: auto (CUDA when a GPU is visible, else CPU), cpu, cuda, or
    /// cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Threshold on the mask probability, in [0, 1] (default: the profile's; 0.5 for the
    /// built-in brain-mri and liver-ct).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Sliding-window overlap, a fraction of the window in [0, 1) (default: the profile's; 0.25
    /// for the built-in profiles).
    #[arg(long)]
    pub overlap: Option<f64>,
    /// Windows per forward pass (more is faster on a GPU and needs more memory).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Average with mirrored copies along each axis (4 passes).
    #[arg(long)]
    pub tta: bool,
    /// Remove connected components smaller than this many mm^3 (0 keeps every component the
    /// profile's layer rule keeps; its own smallest lesion, 100 mm^3 for the built-in
    /// profiles, applies unless --raw-mask).
    #[arg(long, default_value_t = 0.0)]
    pub min_size_mm3: f64,
}

/// What `--organ-mask` asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum OrganMask {
    Auto,
    None,
    File(PathBuf),
}

impl std::str::FromStr for OrganMask {
    type Err = std::convert::Infallible;

    /// `auto` and `none` are the choices; anything else is a path (`./auto` for a file so named).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "auto" => OrganMask::Auto,
            "none" => OrganMask::None,
            path => OrganMask::File(PathBuf::from(path)),
        })
    }
}

/// Output paths of one case.
struct Case {
    input: PathBuf,
    /// The name its outputs take in a folder (unique within the run).
    name: String,
    organ: OrganMask,
    organ_out: Option<PathBuf>,
    mask: PathBuf,
    prob: Option<PathBuf>,
    overlay: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let opts = SegmentOptions {
        threshold: args.threshold,
        overlap: args.overlap,
        batch_size: Some(args.batch_size),
        flip_tta: args.tta,
        min_component_mm3: args.min_size_mm3,
        layers: args.layers.is_some(),
        raw_mask: args.raw_mask,
    };
    opts.validate()?;
    let cases = plan_cases(&args)?;
    let (model_file, profile) =
        models::resolve_with_profile(args.model.as_deref(), args.profile.as_deref())?;
    let device = select_device(args.device)?;
    let model = Model::load(&model_file.config(&profile), device, &model_file.weights)
        .with_context(|| format!("{}: cannot load the model", model_file.weights.display()))?;
    let extractor =
        if profile.inference.brain_extraction && cases.iter().any(|c| c.organ == OrganMask::Auto) {
            Some(models::brain_extractor(device)?)
        } else {
            None
        };
    let bar = Bar::new();
    let run = Run {
        args: &args,
        profile: &profile,
        model: &model,
        extractor: extractor.as_ref(),
        opts: &opts,
        bar: &bar,
    };
    let mut failed = 0;
    for (n, case) in cases.iter().enumerate() {
        if bar.cancelled() {
            bail!("cancelled after {n} of {} scans", cases.len());
        }
        if cases.len() > 1 {
            bar.message(&format!(
                "[{}/{}] {}",
                n + 1,
                cases.len(),
                case.input.display()
            ));
        }
        match run.case(case) {
            Ok(voxels) => eprintln!(
                "{}: {voxels} tumour voxels -> {}",
                case.input.display(),
                case.mask.display()
            ),
            Err(e) if cases.len() > 1 && !bar.cancelled() => {
                eprintln!("layerseg: error: {}: {e:#}", case.input.display());
                failed += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if failed > 0 {
        bail!("{failed} of {} scans failed", cases.len());
    }
    Ok(())
}

/// What every case of one `segment` run shares.
struct Run<'a> {
    args: &'a Args,
    profile: &'a Profile,
    model: &'a Model,
    extractor: Option<&'a BrainExtractor>,
    opts: &'a SegmentOptions,
    bar: &'a Bar,
}

impl Run<'_> {
    fn case(&self, case: &Case) -> Result<usize> {
        let read = ReadOptions::default();
        let (image, meta) = read_image(&case.input, &read)?;
        crate::warn_all(&meta);
        if let Some(why) = self.profile.modality_mismatch(&image.data) {
            eprintln!("layerseg: warning: {}: {why}", case.input.display());
        }
        let organ = match (&case.organ, self.extractor) {
            (OrganMask::File(path), _) => Some(read_labels(path, &read)?.0),
            (OrganMask::Auto, Some(extractor)) => {
                self.bar
                    .message(&format!("{}: brain extraction", case.input.display()));
                let automatic = extractor
                    .automatic_mask(&image, &case.input)
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(|| format!("{}: brain extraction", case.input.display()))?;
                if let Some(warning) = &automatic.warning {
                    eprintln!("layerseg: warning: {warning}");
                }
                automatic.organ().cloned()
            }
            _ => None,
        };
        let result = segment(
            &image,
            organ.as_ref(),
            self.profile,
            self.model,
            self.opts,
            self.bar,
        )
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("{}", case.input.display()))?;
        let voxels = result.mask.data.iter().filter(|&&v| v > 0).count();
        write_labels(&case.mask, &result.mask, Some(&meta))?;
        self.write_extras(case, &image, &meta, organ.as_ref(), &result)?;
        Ok(voxels)
    }

    fn write_extras(
        &self,
        case: &Case,
        image: &layerseg_core::Image,
        meta: &layerseg_core::io::NiftiMeta,
        organ: Option<&layerseg_core::LabelMap>,
        result: &layerseg_torch::inference::Segmentation,
    ) -> Result<()> {
        let args = self.args;
        let meta = Some(meta);
        match (&case.organ_out, organ) {
            (Some(path), Some(organ)) => write_labels(path, organ, meta)?,
            // After a failed extraction its own warning has said so already.
            (Some(path), None) if !(case.organ == OrganMask::Auto && self.extractor.is_some()) => {
                eprintln!(
                    "layerseg: warning: {}: no organ or brain mask was used, so {} is not written",
                    case.input.display(),
                    path.display()
                )
            }
            _ => {}
        }
        if let Some(path) = &case.prob {
            write_image(path, &result.probability, meta)?;
        }
        if let Some(dir) = &args.layers {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create folder", dir.display()))?;
            let name = &case.name;
            let layers = [
                ("healthy", &result.healthy),
                ("tumour", &result.tumour),
                ("residual", &result.residual),
            ];
            for (layer, volume) in layers {
                if let Some(volume) = volume {
                    let path = dir.join(format!("{name}_{layer}.nii.gz"));
                    write_image(path, volume, meta)?;
                }
            }
        }
        if let Some(path) = &case.overlay {
            let mask = result.mask.data.mapv(|v| v > 0);
            let organ = organ.map(|o| o.data.mapv(|v| v > 0));
            let mut outlines = vec![Outline {
                mask: &mask,
                color: RED,
                label: "prediction",
            }];
            if let Some(organ) = &organ {
                outlines.push(Outline {
                    mask: organ,
                    color: ORGAN,
                    label: if self.profile.inference.brain_extraction {
                        "brain"
                    } else {
                        "organ"
                    },
                });
            }
            write_figure(path, image, &outlines, Some(&case.name))?;
        }
        Ok(())
    }
}

/// One input file: outputs are files. Several, or a folder: outputs are folders of NAME.nii.gz.
fn plan_cases(args: &Args) -> Result<Vec<Case>> {
    let mut inputs = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            inputs.extend(scan_files(input)?);
        } else {
            inputs.push(input.clone());
        }
    }
    if inputs.is_empty() {
        let folder = &args.inputs[0];
        layerseg_core::io::refuse_dicom_folder(folder)?;
        bail!(
            "no scans ({}) in {}",
            layerseg_core::io::SCAN_EXTENSIONS.join(", "),
            folder.display()
        );
    }
    let batch = inputs.len() > 1 || args.inputs[0].is_dir();
    let names = if batch {
        let folders = [
            ("--out", Some(&args.out)),
            ("--prob", args.prob.as_ref()),
            ("--overlay", args.overlay.as_ref()),
            ("--save-organ-mask", args.save_organ_mask.as_ref()),
        ];
        for (flag, dir) in folders {
            if let Some(dir) = dir {
                refuse_file_name_for_folder(flag, dir, inputs.len())?;
            }
        }
        unique_case_names(&inputs)?
    } else {
        vec![case_name(&inputs[0])]
    };
    let in_folder = |dir: &Path, name: &str, suffix: &str| dir.join(format!("{name}{suffix}"));
    let mut cases = Vec::new();
    for (input, name) in inputs.into_iter().zip(names) {
        let (mask, prob, overlay, organ, organ_out) = if batch {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("{}: cannot create folder", args.out.display()))?;
            for dir in [&args.prob, &args.overlay, &args.save_organ_mask]
                .into_iter()
                .flatten()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{}: cannot create folder", dir.display()))?;
            }
            (
                in_folder(&args.out, &name, ".nii.gz"),
                args.prob.as_ref().map(|d| in_folder(d, &name, ".nii.gz")),
                args.overlay.as_ref().map(|d| in_folder(d, &name, ".png")),
                match &args.organ_mask {
                    OrganMask::File(d) if d.is_dir() => {
                        OrganMask::File(d.join(input.file_name().unwrap()))
                    }
                    other => other.clone(),
                },
                args.save_organ_mask
                    .as_ref()
                    .map(|d| in_folder(d, &name, ".nii.gz")),
            )
        } else {
            (
                args.out.clone(),
                args.prob.clone(),
                args.overlay.clone(),
                args.organ_mask.clone(),
                args.save_organ_mask.clone(),
            )
        };
        for out in [
            Some(&mask),
            prob.as_ref(),
            overlay.as_ref(),
            organ_out.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("{}: cannot create folder", parent.display()))?;
            }
            crate::output::check_writable(out)?;
        }
        refuse_overwriting_input(&input, &mask)?;
        for out in prob.iter().chain(&organ_out) {
            refuse_overwriting_input(&input, out)?;
        }
        cases.push(Case {
            input,
            name,
            organ,
            organ_out,
            mask,
            prob,
            overlay,
        });
    }
    Ok(cases)
}

/// Several scans write one file each into a folder; a folder named like a file (`m.nii.gz`) is
/// almost certainly a mistake, so it is refused rather than created.
fn refuse_file_name_for_folder(flag: &str, dir: &Path, scans: usize) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_lowercase());
    let file_like = [".nii", ".nii.gz", ".gz", ".png", ".nrrd", ".mha", ".mhd"];
    if dir.is_dir() || !name.is_some_and(|n| file_like.iter().any(|ext| n.ends_with(ext))) {
        return Ok(());
    }
    bail!(
        "{flag} {}: {scans} scans write one file each, so {flag} must be a folder, not a file name",
        dir.display()
    )
}

/// Output names for a batch, unique within it: the scan's name (`image` for
/// `A/image.nii.gz`), with as many parent folders prefixed as it takes to tell clashing scans
/// apart (`A_image`, `B_image`). The same scan given twice is refused.
fn unique_case_names(inputs: &[PathBuf]) -> Result<Vec<String>> {
    use std::collections::HashMap;
    use std::path::Component;

    let parts: Vec<Vec<String>> = inputs
        .iter()
        .map(|input| {
            let absolute = std::path::absolute(input).unwrap_or_else(|_| input.clone());
            let mut parts: Vec<String> = absolute
                .parent()
                .into_iter()
                .flat_map(Path::components)
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            parts.push(case_name(input));
            parts
        })
        .collect();
    let mut depth = vec![1; inputs.len()];
    loop {
        let names: Vec<String> = parts
            .iter()
            .zip(&depth)
            .map(|(parts, &depth)| parts[parts.len() - depth..].join("_"))
            .collect();
        let mut holders: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            holders.entry(name).or_default().push(i);
        }
        let clashes: Vec<&Vec<usize>> = holders.values().filter(|h| h.len() > 1).collect();
        let Some(first) = clashes.first() else {
            return Ok(names);
        };
        let mut deepened = false;
        for &i in clashes.iter().copied().flatten() {
            if depth[i] < parts[i].len() {
                depth[i] += 1;
                deepened = true;
            }
        }
        if !deepened {
            bail!(
                "{} and {} would write the same output {}: give each scan once",
                inputs[first[0]].display(),
                inputs[first[1]].display(),
                names[first[0]]
            );
        }
    }
}

fn refuse_overwriting_input(input: &Path, output: &Path) -> Result<()> {
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "{}: the output would overwrite the input scan",
            output.display()
        );
    }
    Ok(())
}
