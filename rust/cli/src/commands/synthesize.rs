use anyhow::{bail, Context, Result};
use layerseg_core::io::{read_image, read_labels, write_image, write_labels, ReadOptions};
use layerseg_core::synth::{Inputs, Synthesized, Synthesizer};
use layerseg_core::{Image, Profile, Progress};
use std::path::{Path, PathBuf};

use crate::progress::Bar;

/// `layerseg synthesize`: blend synthetic tumours into a healthy scan.
///
/// Case i (0-based) uses seed `SEED + i` and is written to `OUT/case_NNNN/`: `image.nii.gz`
/// (the blended scan), `mask.nii.gz`, `healthy.nii.gz` and `tumour.nii.gz` (the layers), all on
/// the healthy scan's grid and header geometry, and `params.json`, the parameters actually
/// drawn (enough to regenerate the case). `--preview` adds `preview.png`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in profile (brain-mri, liver-ct) or a profile JSON file.
    #[arg(long, default_value = "brain-mri")]
    pub profile: String,
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
    let profile = Profile::load(&args.profile)?;
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
        write_image(file("healthy.nii.gz"), &healthy, Some(&meta))?;
        write_image(file("tumour.nii.gz"), &out.tumour, Some(&meta))?;
        write_atomic(&file("params.json"), params.to_json().as_bytes())?;
        if args.preview {
            write_atomic(&file("preview.png"), &preview_png(&out)?)?;
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// A slice panel: width, height, and the RAS voxel shown at (column, row).
type Panel<'a> = (usize, usize, Box<dyn Fn(usize, usize) -> [usize; 3] + 'a>);

/// Axial, coronal and sagittal slices (RAS, radiological: patient right on the left) through
/// the tumour's centre of mass, side by side, intensities windowed to the 1st..99th
/// percentile, the mask outlined in red.
pub fn preview_png(out: &Synthesized) -> Result<Vec<u8>> {
    use layerseg_core::Reorientation;
    let (img, _) = Reorientation::to_ras(&out.image);
    let (mask, _) = Reorientation::to_ras(&out.mask);
    let [nx, ny, nz] = img.shape();
    let (mut c, mut n) = ([0.0f64; 3], 0.0);
    for ((x, y, z), &m) in mask.data.indexed_iter() {
        if m != 0 {
            c[0] += x as f64;
            c[1] += y as f64;
            c[2] += z as f64;
            n += 1.0;
        }
    }
    let centre = if n > 0.0 {
        c.map(|v| (v / n).round() as usize)
    } else {
        [nx / 2, ny / 2, nz / 2]
    };
    let mut values: Vec<f32> = img.data.iter().copied().collect();
    values.sort_by(f32::total_cmp);
    let pick = |q: f64| values[((values.len() - 1) as f64 * q) as usize];
    let (lo, hi) = (pick(0.01), pick(0.99).max(pick(0.01) + 1e-6));
    let panels: [Panel; 3] = [
        (
            nx,
            ny,
            Box::new(|col, row| [nx - 1 - col, ny - 1 - row, centre[2]]),
        ),
        (
            nx,
            nz,
            Box::new(|col, row| [nx - 1 - col, centre[1], nz - 1 - row]),
        ),
        (
            ny,
            nz,
            Box::new(|col, row| [centre[0], ny - 1 - col, nz - 1 - row]),
        ),
    ];
    let width: usize = panels.iter().map(|p| p.0).sum::<usize>() + 2 * 4;
    let height = panels.iter().map(|p| p.1).max().unwrap_or(1);
    let mut rgb = vec![0u8; width * height * 3];
    let mut x0 = 0;
    for (w, h, at) in &panels {
        let inside = |col: isize, row: isize| {
            col >= 0
                && row >= 0
                && (col as usize) < *w
                && (row as usize) < *h
                && mask.data[at(col as usize, row as usize)] != 0
        };
        for row in 0..*h {
            for col in 0..*w {
                let v = img.data[at(col, row)];
                let g = (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
                let (ci, ri) = (col as isize, row as isize);
                let edge = inside(ci, ri)
                    && !(inside(ci - 1, ri)
                        && inside(ci + 1, ri)
                        && inside(ci, ri - 1)
                        && inside(ci, ri + 1));
                let px = (row * width + x0 + col) * 3;
                rgb[px..px + 3].copy_from_slice(&if edge { [255, 32, 32] } else { [g, g, g] });
            }
        }
        x0 += w + 4;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().context("preview: PNG header")?;
        writer.write_image_data(&rgb).context("preview: PNG data")?;
    }
    Ok(bytes)
}
