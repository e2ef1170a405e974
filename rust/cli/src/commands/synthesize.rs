use anyhow::{bail, Context, Result};
use layerseg_core::io::{read_image, read_labels, write_image, write_labels, ReadOptions};
use layerseg_core::synth::{Inputs, Synthesizer};
use layerseg_core::{Image, Profile, Progress};
use std::path::{Path, PathBuf};

use crate::args::ProfileArg;
use crate::figures::{write_figure, Outline, RED};
use crate::output::write_text_atomic;
use crate::progress::Bar;

/// `layerseg synthesize`: blend synthetic tumours into a healthy scan.
///
/// Case i (0-based) uses seed `SEED + i` and is written to `OUT/case_NNNN/`: `image.nii.gz`
/// (the blended scan), `mask.nii.gz`, `healthy.nii.gz` and `tumour.nii.gz` (the layers), all on
/// the healthy scan's grid and header geometry, and `params.json`, the parameters actually
/// drawn (enough to regenerate the case). `--preview` adds `preview.png`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// The healthy scan (NIfTI).
    #[arg(long)]
    pub healthy: PathBuf,
    /// Organ (or brain) mask on the healthy scan's grid; tumours are placed in it and clipped to it.
    #[arg(long)]
    pub organ_mask: Option<PathBuf>,
    /// Scans to take tumour texture from (any grid); one is drawn per case. Without any, the
    /// healthy scan itself is used (for profiles whose texture is a scan).
    #[arg(long = "texture", num_args = 1..)]
    pub textures: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Seed of the first case.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write preview.png: axial, coronal and sagittal slices through the tumour, mask in red.
    #[arg(long)]
    pub preview: bool,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub fn run(args: Args) -> Result<()> {
    let profile = Profile::load(&args.profile.profile)?;
    let opts = ReadOptions::default();
    let (healthy, meta) = read_image(&args.healthy, &opts)?;
    crate::warn_all(&meta);
    let organ = match &args.organ_mask {
        Some(p) => {
            let (m, mmeta) = read_labels(p, &opts)?;
            crate::warn_all(&mmeta);
            Some(m)
        }
        None => None,
    };
    let mut textures: Vec<Image> = Vec::new();
    for p in &args.textures {
        let (t, tmeta) = read_image(p, &opts)?;
        crate::warn_all(&tmeta);
        textures.push(t);
    }
    let inputs = Inputs {
        healthy: &healthy,
        organ_mask: organ.as_ref(),
        textures: &textures,
    };
    let synth = Synthesizer::new(inputs).map_err(|e| describe_input_error(e, &args))?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    let inputs_paths: Vec<&PathBuf> = std::iter::once(&args.healthy)
        .chain(&args.organ_mask)
        .chain(&args.textures)
        .collect();

    let bar = Bar::new();
    bar.start("synthesize", u64::from(args.count));
    for i in 0..args.count {
        let seed = args.seed.wrapping_add(u64::from(i));
        let (params, out) = synth.generate(&profile, seed)?;
        let dir = args.out.join(format!("case_{i:04}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create the case folder", dir.display()))?;
        let file = |name: &str| dir.join(name);
        for name in [
            "image.nii.gz",
            "mask.nii.gz",
            "healthy.nii.gz",
            "tumour.nii.gz",
        ] {
            if inputs_paths.iter().any(|p| same_file(p, &file(name))) {
                bail!(
                    "{}: is an input; refusing to overwrite it",
                    file(name).display()
                );
            }
        }
        write_image(file("image.nii.gz"), &out.image, Some(&meta))?;
        write_labels(file("mask.nii.gz"), &out.mask, Some(&meta))?;
        write_image(
            file("healthy.nii.gz"),
            out.healthy_or(&healthy),
            Some(&meta),
        )?;
        write_image(file("tumour.nii.gz"), &out.tumour, Some(&meta))?;
        write_text_atomic(&file("params.json"), &params.to_json())?;
        if args.preview {
            let mask = out.mask.data.mapv(|v| v > 0);
            let outline = [Outline {
                mask: &mask,
                color: RED,
                label: "synthetic tumour",
            }];
            let title = format!("case_{i:04} (seed {seed})");
            write_figure(&file("preview.png"), &out.image, &outline, Some(&title))?;
        }
        bar.advance(1);
    }
    bar.finish();
    println!(
        "wrote {} case(s) to {} (profile {}, seeds {}..={})",
        args.count,
        args.out.display(),
        profile.name,
        args.seed,
        args.seed
            .wrapping_add(u64::from(args.count.saturating_sub(1)))
    );
    Ok(())
}

/// Name the file behind an input error from the core (which knows only roles).
fn describe_input_error(e: layerseg_core::Error, args: &Args) -> anyhow::Error {
    use layerseg_core::Error;
    let path = match &e {
        Error::Mismatch { what, .. } | Error::InvalidInput { what, .. } => {
            if what.starts_with("organ mask") {
                args.organ_mask.clone()
            } else if what.starts_with("healthy scan") {
                Some(args.healthy.clone())
            } else if let Some(n) = what
                .strip_prefix("texture scan ")
                .and_then(|n| n.parse::<usize>().ok())
            {
                args.textures.get(n.wrapping_sub(1)).cloned()
            } else {
                None
            }
        }
        _ => None,
    };
    match path {
        Some(p) => anyhow::Error::new(e).context(format!("{}", p.display())),
        None => e.into(),
    }
}
