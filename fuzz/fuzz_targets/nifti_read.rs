//! The NIfTI reader on arbitrary bytes, plain or gzip: it must return a volume that matches its
//! header, or an error, and never panic, hang or allocate more than the bytes justify.
#![no_main]

use layerseg_core::io::{read_image_bytes, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = ReadOptions::default();
    if let Ok((image, meta)) = read_image_bytes(data, "fuzz.nii", &opts) {
        let shape = image.data.shape();
        assert_eq!(shape, &meta.dims[..3]);
        assert!(image.data.iter().all(|v| v.is_finite()));
        assert!(image.affine.iter().flatten().all(|v| v.is_finite()));
        let sp = meta.spacing();
        assert!(sp.iter().all(|s| s.is_finite() && *s > 0.0), "{sp:?}");
        // What the CLI does next with a scan: a label map must be integers, or an error.
        let _ = image
            .data
            .iter()
            .all(|&v| v.fract() == 0.0 && (0.0..=255.0).contains(&v));
    }
});
