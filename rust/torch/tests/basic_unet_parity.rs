//! Parity of our BasicUNet with MONAI's.
//!
//! Golden values come from `tests/golden/make_basicunet_golden.py` (MONAI `BasicUNet`, features
//! (4, 4, 8, 8, 16, 4), odd input sizes that exercise the replicate padding). The Python side of
//! the round trip is `tests/test_network_parity.py`, which runs `writes_weights_for_python` with
//! `LAYERSEG_ROUNDTRIP_DIR` set and loads what it writes into MONAI with `strict=True`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use layerseg_torch::network::weights::{read_state_dict, state_dict_shapes};
use layerseg_torch::{BasicUNetConfig, Error, Model};
use tch::{Device, Kind, Tensor};

const FEATURES: [i64; 6] = [4, 4, 8, 8, 16, 4];
const TOLERANCE: f64 = 1e-5;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

fn config() -> BasicUNetConfig {
    BasicUNetConfig {
        features: FEATURES,
        ..BasicUNetConfig::default()
    }
}

fn golden_io() -> (Tensor, Tensor) {
    let io: BTreeMap<String, Tensor> =
        read_state_dict(&golden("basicunet_io.safetensors"), Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    (io["input"].shallow_clone(), io["output"].shallow_clone())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn run(model: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.net.forward_t(x, false)).unwrap()
}

#[test]
fn state_dict_names_and_shapes_equal_monai() {
    let model = Model::new(&config(), Device::Cpu).unwrap();
    let ours = state_dict_shapes(&model.vs);
    let monai: BTreeMap<String, Vec<i64>> =
        read_state_dict(&golden("basicunet_weights.safetensors"), Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (name, t.size()))
            .collect();
    assert_eq!(ours, monai);
    assert_eq!(ours.len(), 82);
    assert_eq!(
        ours["upcat_1.upsample.deconv.weight"],
        [4, 4, 2, 2, 2],
        "upcat_1 does not halve"
    );
}

fn assert_matches_monai(weights: &str) {
    let model = Model::load(&config(), Device::Cpu, &golden(weights)).unwrap();
    let (x, expected) = golden_io();
    let y = run(&model, &x);
    let diff = max_abs_diff(&y, &expected);
    println!("{weights}: max |ours - MONAI| = {diff:e}");
    assert!(diff <= TOLERANCE, "{weights}: max abs diff {diff}");
}

#[test]
fn safetensors_from_monai_gives_monai_output() {
    assert_matches_monai("basicunet_weights.safetensors");
}

#[test]
fn torch_save_from_monai_gives_monai_output() {
    assert_matches_monai("basicunet_weights.pt");
}

/// The backward pass too: gradients of `probe_loss` in `make_basicunet_golden.py`.
#[test]
fn gradients_match_monai() {
    let model = Model::load(&config(), Device::Cpu, &golden("basicunet_weights.pt")).unwrap();
    let io: BTreeMap<String, Tensor> =
        read_state_dict(&golden("basicunet_io.safetensors"), Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    let y = model.net.forward_t(&io["input"], true).unwrap();
    let loss = y.square().mean(Kind::Float) + y.select(1, 2).sigmoid().mean(Kind::Float);
    loss.backward();
    let params = model.vs.variables();
    let mut checked = 0;
    for (key, expected) in &io {
        let Some(name) = key.strip_prefix("grad.") else {
            continue;
        };
        let grad = params[name].grad();
        let diff = max_abs_diff(&grad, expected);
        let scale = expected.abs().max().double_value(&[]);
        println!("grad {name}: max |ours - MONAI| = {diff:e} (max |grad| {scale:e})");
        assert!(diff <= 1e-4 * scale + 1e-9, "{name}: {diff}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn our_safetensors_reload_exactly() {
    tch::manual_seed(7);
    let model = Model::new(&config(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.safetensors");
    model.save_safetensors(&path).unwrap();
    let reloaded = Model::load(&config(), Device::Cpu, &path).unwrap();
    let (x, _) = golden_io();
    assert_eq!(max_abs_diff(&run(&model, &x), &run(&reloaded, &x)), 0.0);
}

/// Writes freshly initialised weights and their output on the golden input for the Python half
/// of the round trip, into `$LAYERSEG_ROUNDTRIP_DIR` (a temporary folder when unset).
#[test]
fn writes_weights_for_python() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("LAYERSEG_ROUNDTRIP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    tch::manual_seed(11);
    let model = Model::new(&config(), Device::Cpu).unwrap();
    model
        .save_safetensors(&dir.join("ours_weights.safetensors"))
        .unwrap();
    let (x, _) = golden_io();
    let y = run(&model, &x);
    let io = [("input".to_string(), x), ("output".to_string(), y)];
    layerseg_torch::network::weights::write_tensors(&io, &dir.join("ours_io.safetensors")).unwrap();
}

#[test]
fn other_width_is_refused_with_the_names() {
    let wider = BasicUNetConfig {
        features: [4, 4, 8, 8, 32, 4],
        ..config()
    };
    let err = Model::load(&wider, Device::Cpu, &golden("basicunet_weights.pt")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::WeightsMismatch { .. }), "{msg}");
    assert!(msg.contains("11 tensor(s) differ"), "{msg}");
    assert!(
        msg.contains("down_4.convs.conv_0.adn.N.bias: file [16], network [32]"),
        "{msg}"
    );
}

#[test]
fn unknown_formats_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("weights.pt");
    std::fs::write(&text, "not weights").unwrap();
    let err = Model::load(&config(), Device::Cpu, &text).unwrap_err();
    assert!(matches!(err, Error::WeightsFormat { .. }), "{err}");

    let pickle = dir.path().join("legacy.pt");
    std::fs::write(&pickle, [0x80u8, 0x02, b'c']).unwrap();
    let err = Model::load(&config(), Device::Cpu, &pickle).unwrap_err();
    assert!(err.to_string().contains("legacy"), "{err}");

    let err = Model::load(&config(), Device::Cpu, &dir.path().join("none.pt")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn too_small_or_wrong_rank_inputs_are_shape_errors() {
    let model = Model::new(&config(), Device::Cpu).unwrap();
    for shape in [
        vec![1i64, 1, 16, 16, 15],
        vec![1, 2, 16, 16, 16],
        vec![16, 16, 16],
    ] {
        let x = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
        let err = model.net.forward_t(&x, false).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{shape:?}: {err}");
    }
}

#[test]
fn cuda_matches_cpu_when_present() {
    if !tch::Cuda::is_available() {
        return;
    }
    let cpu = Model::load(&config(), Device::Cpu, &golden("basicunet_weights.pt")).unwrap();
    let gpu = Model::load(&config(), Device::Cuda(0), &golden("basicunet_weights.pt")).unwrap();
    let (x, expected) = golden_io();
    let y_gpu = run(&gpu, &x.to_device(Device::Cuda(0))).to_device(Device::Cpu);
    let diff = max_abs_diff(&y_gpu, &expected);
    println!("cuda: max |ours - MONAI(cpu)| = {diff:e}");
    assert!(diff <= 1e-4, "{diff}");
    assert!(max_abs_diff(&run(&cpu, &x), &expected) <= TOLERANCE);
}
