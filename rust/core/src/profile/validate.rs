//! Semantic checks of a parsed profile. Each failure is `(key path, reason)`.

use super::*;

type Check = std::result::Result<(), (String, String)>;

fn fail(key: &str, reason: impl Into<String>) -> Check {
    Err((key.to_string(), reason.into()))
}

/// `min <= max`, both finite and inside `[lo, hi]`.
fn range(key: &str, r: &Range, lo: f64, hi: f64) -> Check {
    if !r.min.is_finite() || !r.max.is_finite() {
        return fail(key, "min and max must be finite numbers");
    }
    if r.min > r.max {
        return fail(key, format!("min {} > max {}", r.min, r.max));
    }
    if r.min < lo || r.max > hi {
        return fail(
            key,
            format!("[{}, {}] is outside the allowed [{lo}, {hi}]", r.min, r.max),
        );
    }
    Ok(())
}

fn range_u32(key: &str, r: &Range<u32>, lo: u32, hi: u32) -> Check {
    if r.min > r.max {
        return fail(key, format!("min {} > max {}", r.min, r.max));
    }
    if r.min < lo || r.max > hi {
        return fail(
            key,
            format!("[{}, {}] is outside the allowed [{lo}, {hi}]", r.min, r.max),
        );
    }
    Ok(())
}

fn positive(key: &str, v: f64) -> Check {
    if !(v.is_finite() && v > 0.0) {
        return fail(key, format!("must be a positive number, got {v}"));
    }
    Ok(())
}

const BIG: f64 = 1e9;

impl Profile {
    pub(super) fn validate(&self) -> Check {
        if let Some(adaptation) = &self.adaptation {
            adaptation.validate()?;
        }
        if self.name.trim().is_empty() {
            return fail("name", "must not be empty");
        }
        match &self.normalisation {
            Normalisation::ZscoreNonzero { min_std } => {
                positive("normalisation.min_std", *min_std)?
            }
            Normalisation::HuWindow {
                min,
                max,
                out_min,
                out_max,
            } => {
                range(
                    "normalisation",
                    &Range {
                        min: *min,
                        max: *max,
                    },
                    -BIG,
                    BIG,
                )?;
                if min == max || out_min >= out_max {
                    return fail(
                        "normalisation",
                        "the window and output range must not be empty",
                    );
                }
            }
        }
        match &self.roi {
            Roi::ForegroundCrop { margin_mm } | Roi::OrganMask { margin_mm } => {
                if !(margin_mm.is_finite() && *margin_mm >= 0.0) {
                    return fail("roi.margin_mm", "must be a number >= 0");
                }
            }
        }
        self.validate_resample()?;
        self.synthesis.validate()?;
        if self.network.in_channels == 0 || self.network.out_channels != 3 {
            return fail(
                "network",
                "in_channels must be >= 1 and out_channels 3 (healthy, tumour, mask)",
            );
        }
        if self.network.features.contains(&0) {
            return fail("network.features", "every feature count must be >= 1");
        }
        let inf = &self.inference;
        if inf.patch_size.iter().any(|&p| p < 32 || p % 16 != 0) {
            return fail(
                "inference.patch_size",
                "each size must be a multiple of 16 and at least 32 (the U-Net halves it four \
                 times, and a one-voxel bottleneck cannot be instance-normalised)",
            );
        }
        if !(0.0..1.0).contains(&inf.overlap) {
            return fail("inference.overlap", "must be in [0, 1)");
        }
        if !(inf.threshold > 0.0 && inf.threshold < 1.0) {
            return fail("inference.threshold", "must be in (0, 1)");
        }
        if let Some(rule) = &inf.layer_rule {
            if !(rule.margin.is_finite() && rule.margin >= 0.0) {
                return fail("inference.layer_rule.margin", "must be a number >= 0");
            }
            if !(rule.min_lesion_mm3.is_finite() && rule.min_lesion_mm3 >= 0.0) {
                return fail(
                    "inference.layer_rule.min_lesion_mm3",
                    "must be a number >= 0",
                );
            }
        }
        if let Some(b) = &inf.bias_correction {
            b.validate()?;
        }
        let t = &self.training;
        positive("training.lr", t.lr)?;
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return fail("training.betas", "each beta must be in [0, 1)");
        }
        positive("training.eps", t.eps)?;
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return fail("training.weight_decay", "must be a number >= 0");
        }
        if t.batch_size == 0 || t.max_epochs == 0 || t.samples_per_epoch == 0 {
            return fail(
                "training",
                "batch_size, max_epochs and samples_per_epoch must be >= 1",
            );
        }
        let Scheduler::ReduceOnPlateau { factor, min_lr, .. } = t.scheduler;
        if !(factor > 0.0 && factor < 1.0) {
            return fail("training.scheduler.factor", "must be in (0, 1)");
        }
        if !(min_lr.is_finite() && min_lr >= 0.0) {
            return fail("training.scheduler.min_lr", "must be a number >= 0");
        }
        Ok(())
    }

    fn validate_resample(&self) -> Check {
        let r = &self.resample;
        match (&r.target_size, &r.target_spacing_mm) {
            (None, None) => fail("resample", "set target_size or target_spacing_mm (or both)"),
            (Some(s), _) if s.contains(&0) => fail("resample.target_size", "sizes must be >= 1"),
            (_, Some(s)) if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) => {
                fail("resample.target_spacing_mm", "spacings must be positive")
            }
            _ => Ok(()),
        }
    }
}

impl Synthesis {
    fn validate(&self) -> Check {
        if self.size.is_empty() {
            return fail("synthesis.size", "needs at least one size class");
        }
        let elastic_shape = matches!(self.shape, Shape::ElasticEllipsoid { .. });
        let mut total = 0.0;
        for (i, class) in self.size.iter().enumerate() {
            let key = format!("synthesis.size[{i}]");
            if !(class.weight.is_finite() && class.weight >= 0.0) {
                return fail(&format!("{key}.weight"), "must be a number >= 0");
            }
            total += class.weight;
            if class.components.is_empty() {
                return fail(&format!("{key}.components"), "needs at least one component");
            }
            for (j, c) in class.components.iter().enumerate() {
                let key = format!("{key}.components[{j}]");
                range_u32(&format!("{key}.count"), &c.count, 1, 100)?;
                match &c.size {
                    Size::VolumeMm3 { volume_mm3 } => {
                        range(&format!("{key}.size.volume_mm3"), volume_mm3, 1e-3, BIG)?
                    }
                    Size::RadiusMm { radius_mm } => {
                        range(&format!("{key}.size.radius_mm"), radius_mm, 1e-3, 1e4)?
                    }
                }
                let sk = format!("{key}.shape_elastic_sigma_mm");
                match (&c.shape_elastic_sigma_mm, elastic_shape) {
                    (Some(s), true) => range(&sk, s, 0.0, 1e3)?,
                    (None, true) => return fail(&sk, "required by the elastic_ellipsoid shape"),
                    (Some(_), false) => {
                        return fail(&sk, "only used by the elastic_ellipsoid shape")
                    }
                    (None, false) => {}
                }
            }
        }
        if total <= 0.0 {
            return fail("synthesis.size", "the class weights must not all be 0");
        }
        match &self.shape {
            Shape::StarFbm {
                octaves,
                amplitude,
                offset,
                persistence,
                lacunarity,
            } => {
                range_u32("synthesis.shape.octaves", octaves, 1, 12)?;
                range("synthesis.shape.amplitude", amplitude, 0.0, 0.95)?;
                range("synthesis.shape.offset", offset, -1e6, 1e6)?;
                positive("synthesis.shape.persistence", *persistence)?;
                positive("synthesis.shape.lacunarity", *lacunarity)?;
            }
            Shape::ElasticEllipsoid { control_points } => {
                if !(4..=32).contains(control_points) {
                    return fail("synthesis.shape.control_points", "must be in [4, 32]");
                }
            }
        }
        match &self.aspect {
            Aspect::Paper { q } => range("synthesis.aspect.q", q, 1e-2, 1.0)?,
            Aspect::PerAxis { scale } => range("synthesis.aspect.scale", scale, 1e-2, 1e2)?,
        }
        range("synthesis.rotation_deg", &self.rotation_deg, -360.0, 360.0)?;
        if let Placement::BboxFraction { x, y, z } = &self.placement {
            for (axis, list) in [("x", x), ("y", y), ("z", z)] {
                let key = format!("synthesis.placement.{axis}");
                if list.is_empty() {
                    return fail(&key, "needs at least one interval");
                }
                for (i, r) in list.iter().enumerate() {
                    range(&format!("{key}[{i}]"), r, 0.0, 1.0)?;
                }
            }
        }
        self.validate_texture()?;
        range("synthesis.opacity", &self.opacity, 0.0, 1.0)?;
        range(
            "synthesis.edge_blur_sigma_mm",
            &self.edge_blur_sigma_mm,
            0.0,
            50.0,
        )?;
        if let Some(a) = &self.acquisition {
            a.validate()?;
        }
        Ok(())
    }

    fn validate_texture(&self) -> Check {
        match &self.texture {
            Texture::Scan {
                elastic,
                blur_sigma_mm,
            } => {
                let n = elastic.control_points;
                if !(4..=64).contains(&n) {
                    return fail(
                        "synthesis.texture.elastic.control_points",
                        "must be in [4, 64]",
                    );
                }
                if 2 * elastic.locked_borders >= n {
                    return fail(
                        "synthesis.texture.elastic.locked_borders",
                        format!(
                            "{} locked layers on each side leave no free control point of {n}",
                            elastic.locked_borders
                        ),
                    );
                }
                range(
                    "synthesis.texture.elastic.max_displacement_mm",
                    &elastic.max_displacement_mm,
                    0.0,
                    1e3,
                )?;
                range("synthesis.texture.blur_sigma_mm", blur_sigma_mm, 0.0, 50.0)?;
            }
            Texture::Noise {
                sigma_a_mm,
                sigma_b_mm,
                scale,
                base,
                mean_level,
                threshold,
            } => {
                range("synthesis.texture.sigma_a_mm", sigma_a_mm, 0.0, 50.0)?;
                range("synthesis.texture.sigma_b_mm", sigma_b_mm, 0.0, 50.0)?;
                range("synthesis.texture.scale", scale, 0.0, 1.0)?;
                range("synthesis.texture.base", base, 0.0, 1.0)?;
                range("synthesis.texture.mean_level", mean_level, 0.0, 1.0)?;
                if !(0.0..1.0).contains(threshold) {
                    return fail("synthesis.texture.threshold", "must be in [0, 1)");
                }
            }
        }
        match &self.intensity {
            Intensity::RatioToHealthyMean { modes } => {
                if modes.is_empty() {
                    return fail("synthesis.intensity.modes", "needs at least one mode");
                }
                let mut total = 0.0;
                for (i, m) in modes.iter().enumerate() {
                    let key = format!("synthesis.intensity.modes[{i}]");
                    if !(m.weight.is_finite() && m.weight >= 0.0) {
                        return fail(&format!("{key}.weight"), "must be a number >= 0");
                    }
                    total += m.weight;
                    range(&format!("{key}.ratio"), &m.ratio, 0.0, 1e3)?;
                    if let Some(core) = &m.core {
                        range(&format!("{key}.core.fraction"), &core.fraction, 0.0, 1.0)?;
                        range(&format!("{key}.core.ratio"), &core.ratio, 0.0, 1e3)?;
                    }
                }
                if total <= 0.0 {
                    return fail("synthesis.intensity.modes", "the weights must not all be 0");
                }
            }
            Intensity::HuDrop { drop_hu } => {
                range("synthesis.intensity.drop_hu", drop_hu, -1e4, 1e4)?
            }
        }
        Ok(())
    }
}

fn probability(key: &str, p: f64) -> Check {
    if !(0.0..=1.0).contains(&p) {
        return fail(key, format!("probability {p} is not in [0, 1]"));
    }
    Ok(())
}

impl Acquisition {
    fn validate(&self) -> Check {
        const K: &str = "synthesis.acquisition";
        if !self.background.is_finite() {
            return fail(&format!("{K}.background"), "must be a finite number");
        }
        if let Some(t) = &self.slice_thickness {
            probability(&format!("{K}.slice_thickness.probability"), t.probability)?;
            range(
                &format!("{K}.slice_thickness.thickness_mm"),
                &t.thickness_mm,
                1e-2,
                100.0,
            )?;
        }
        if let Some(c) = &self.contrast {
            probability(&format!("{K}.contrast.probability"), c.probability)?;
            range(&format!("{K}.contrast.factor"), &c.factor, 1e-2, 100.0)?;
        }
        if let Some(g) = &self.gamma {
            probability(&format!("{K}.gamma.probability"), g.probability)?;
            range(&format!("{K}.gamma.gamma"), &g.gamma, 1e-2, 100.0)?;
        }
        if let Some(b) = &self.bias_field {
            probability(&format!("{K}.bias_field.probability"), b.probability)?;
            if !(1..=8).contains(&b.order) {
                return fail(&format!("{K}.bias_field.order"), "must be in [1, 8]");
            }
            range(&format!("{K}.bias_field.strength"), &b.strength, 0.0, 5.0)?;
        }
        if let Some(n) = &self.noise {
            probability(&format!("{K}.noise.probability"), n.probability)?;
            range(&format!("{K}.noise.sigma"), &n.sigma, 0.0, BIG)?;
        }
        if let Some(c) = &self.coverage {
            probability(&format!("{K}.coverage.probability"), c.probability)?;
            range(&format!("{K}.coverage.fraction"), &c.fraction, 1e-2, 1.0)?;
        }
        Ok(())
    }
}

impl BiasCorrection {
    pub(super) fn validate(&self) -> Check {
        if !(1..=5).contains(&self.levels) || self.iterations == 0 {
            return fail(
                "inference.bias_correction",
                "levels must be 1 to 5 and iterations >= 1",
            );
        }
        if !(16..=4096).contains(&self.histogram_bins) || !(1..=8).contains(&self.shrink) {
            return fail(
                "inference.bias_correction",
                "histogram_bins must be 16 to 4096 and shrink 1 to 8",
            );
        }
        positive("inference.bias_correction.fwhm", self.fwhm)?;
        positive("inference.bias_correction.wiener_noise", self.wiener_noise)?;
        positive("inference.bias_correction.convergence", self.convergence)?;
        Ok(())
    }
}
