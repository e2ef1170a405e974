//! The profile parser and validator on arbitrary text. A profile it accepts must round-trip
//! through JSON and be usable: drawing synthesis parameters from it on a small scan must give
//! parameters or an error, never a panic or a runaway allocation.
#![no_main]

use layerseg_core::synth::{Inputs, Synthesizer};
use layerseg_core::{Image, Profile, Volume};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn scan() -> &'static Image {
    static SCAN: OnceLock<Image> = OnceLock::new();
    SCAN.get_or_init(|| {
        let data = ndarray::Array3::from_shape_fn((12, 12, 10), |(i, j, k)| {
            let d = (i as f32 - 6.0).powi(2) + (j as f32 - 6.0).powi(2) + (k as f32 - 5.0).powi(2);
            if d < 20.0 {
                100.0 + (i * j + k) as f32
            } else {
                0.0
            }
        });
        let affine = [
            [-2.0, 0.0, 0.0, 10.0],
            [0.0, -2.0, 0.0, 12.0],
            [0.0, 0.0, 2.5, -8.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        Volume::new(data, affine)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = Profile::from_json(text, "fuzz.json") else {
        return;
    };
    let again = Profile::from_json(&profile.to_json(), "round trip").expect("round trip");
    assert_eq!(profile, again);
    if let Ok(synth) = Synthesizer::new(Inputs::new(scan())) {
        for seed in 0..2 {
            let _ = synth.sample(&profile, seed);
        }
    }
});
