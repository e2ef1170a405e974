//! Brain extraction on real scans: Dice against the reference brain masks of the sample scans,
//! the skull-stripped SRI24 kept whole, and the same mask whatever the scan's voxel order.
//! The scans come from `python -m layerseg.samples fetch` (`make samples`).

#[path = "../../test-support/samples.rs"]
mod samples;

use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::{Image, LabelMap};
use layerseg_torch::brain::{BrainExtractor, BrainMask};
use ndarray::{Axis, Zip};
use std::path::Path;
use std::sync::OnceLock;
use tch::Device;

fn extractor() -> &'static BrainExtractor {
    static EXTRACTOR: OnceLock<BrainExtractor> = OnceLock::new();
    EXTRACTOR.get_or_init(|| {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let dir = BrainExtractor::find(&[models])
            .expect("models/deepbet holds the networks (`make models` fetches them)");
        BrainExtractor::load(&dir, Device::Cpu).unwrap()
    })
}

fn dice(a: &LabelMap, b: &LabelMap) -> f64 {
    let (mut both, mut total) = (0usize, 0usize);
    Zip::from(&a.data).and(&b.data).for_each(|&x, &y| {
        both += usize::from(x > 0 && y > 0);
        total += usize::from(x > 0) + usize::from(y > 0);
    });
    2.0 * both as f64 / total as f64
}

fn case(name: &str) -> (Image, LabelMap) {
    let opts = ReadOptions::default();
    let image = read_image(samples::sample(name, "image.nii.gz"), &opts)
        .unwrap()
        .0;
    let brain = read_labels(samples::sample(name, "brain.nii.gz"), &opts)
        .unwrap()
        .0;
    (image, brain)
}

fn extract(image: &Image) -> BrainMask {
    let brain = extractor().extract(image).unwrap();
    assert!(brain.mask.same_grid(image));
    brain
}

#[test]
fn whole_head_t1_scans_get_their_reference_brain() {
    // Colin27's reference (ch2bet) leaves out more CSF than the others: its Dice is the lowest.
    for (name, least) in [("colin27", 0.92), ("mni152", 0.95), ("itk_t1", 0.95)] {
        let (image, reference) = case(name);
        let brain = extract(&image);
        let d = dice(&brain.mask, &reference);
        eprintln!("{name}: Dice {d:.4}, {:.2} L", brain.litres);
        assert!(d >= least, "{name}: Dice {d:.4} < {least}");
        assert!(
            brain.implausible().is_none(),
            "{name}: {:.2} L",
            brain.litres
        );
    }
}

#[test]
fn a_skull_stripped_brain_survives() {
    let (image, reference) = case("sri24");
    let d = dice(&extract(&image).mask, &reference);
    assert!(d >= 0.95, "sri24: Dice {d:.4}");
}

#[test]
fn the_mask_does_not_depend_on_the_voxel_order() {
    let (image, _) = case("itk_t1");
    let brain = extract(&image).mask;
    // The same scan stored with the first two voxel axes swapped and the last one mirrored.
    let mut data = image.data.clone();
    data.swap_axes(0, 1);
    data.invert_axis(Axis(2));
    let mut affine = image.affine;
    for row in affine.iter_mut().take(3) {
        row.swap(0, 1);
        row[3] += row[2] * (image.shape()[2] - 1) as f64;
        row[2] = -row[2];
    }
    let reordered = Image::new(data.as_standard_layout().into_owned(), affine);
    let mut back = extract(&reordered).mask.data;
    back.invert_axis(Axis(2));
    back.swap_axes(0, 1);
    let agreement = dice(
        &brain,
        &brain.with_data(back.as_standard_layout().into_owned()),
    );
    assert!(agreement > 0.99, "Dice between voxel orders {agreement:.4}");
}
