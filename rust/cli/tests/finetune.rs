//! `layerseg finetune` and `layerseg adapt` end to end on real sample scans, with the tiny golden
//! BasicUNet (features 4,4,8,8,16,4; tests/golden/make_basicunet_golden.py) on a 32^3 grid.

use std::path::{Path, PathBuf};
use std::process::Output;

use layerseg_core::io::{read_labels, write_labels, ReadOptions};
use layerseg_core::Profile;

mod common;
use common::{layerseg, sample};

fn golden_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/basicunet_weights.safetensors")
}

/// brain-mri squashed onto a 32^3 grid for the tiny network, with adaptation thresholds loose
/// enough for an untrained model (the built-in ones expect a pretrained one).
fn tiny_profile(dir: &Path) -> PathBuf {
    let mut p = Profile::builtin("brain-mri").unwrap();
    p.name = "tiny-brain".into();
    p.resample.target_size = Some([32, 32, 32]);
    p.inference.patch_size = [32, 32, 32];
    p.network.features = [4, 4, 8, 8, 16, 4];
    let mut rule = p.adaptation();
    rule.max_recomposition_l1 = 10.0;
    rule.min_label_voxels = 1;
    p.adaptation = Some(rule);
    let path = dir.join("tiny.json");
    std::fs::write(&path, p.to_json()).unwrap();
    path
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(args: &[&str]) -> String {
    let out = layerseg(args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Segment `scan` (inside `organ`) with `model` and score it against `truth` with
/// `layerseg evaluate`.
fn dice(
    dir: &Path,
    name: &str,
    model: &Path,
    profile: &Path,
    scan: &Path,
    organ: &Path,
    truth: &Path,
) -> f64 {
    let mask = dir.join(format!("{name}.nii.gz"));
    let report = dir.join(format!("{name}.json"));
    run_ok(&[
        "segment",
        s(scan),
        "--out",
        s(&mask),
        "--model",
        s(model),
        "--profile",
        s(profile),
        "--organ-mask",
        s(organ),
        "--device",
        "cpu",
    ]);
    run_ok(&[
        "evaluate",
        "--pred",
        s(&mask),
        "--truth",
        s(truth),
        "--json",
        s(&report),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    json["cases"][0]["metrics"]["dice"].as_f64().unwrap()
}

fn write_datalist(dir: &Path, name: &str, json: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An all-background label map on `scan`'s grid: a real scan as a tumour-free case.
fn empty_label(scan: &Path, out: &Path) -> PathBuf {
    let (image, _) = layerseg_core::read_image(scan, &ReadOptions::default()).unwrap();
    let zeros = image.with_data(image.data.mapv(|_| 0u8));
    write_labels(out, &zeros, None).unwrap();
    out.to_path_buf()
}

/// liver-ct cropped to the liver and squashed onto a 32^3 grid for the tiny network.
fn tiny_liver_profile(dir: &Path) -> PathBuf {
    let mut p = Profile::builtin("liver-ct").unwrap();
    p.name = "tiny-liver".into();
    p.resample.target_size = Some([32, 32, 32]);
    p.resample.target_spacing_mm = None;
    p.inference.patch_size = [32, 32, 32];
    p.network.features = [4, 4, 8, 8, 16, 4];
    // The golden network's layers are untrained: the layer rule would judge by noise.
    p.inference.layer_rule = None;
    let path = dir.join("tiny-liver.json");
    std::fs::write(&path, p.to_json()).unwrap();
    path
}

/// The LiTS case: its tumour is large enough in a 32^3 liver box for 30 steps of a tiny network
/// to learn (MRBrainTumor2's enhancing tumour is 0.25% of a 32^3 head and needs far more).
#[test]
fn finetuning_on_one_real_case_beats_zero_shot() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let profile = tiny_liver_profile(tmp);
    let (scan, truth, liver) = (
        sample("lits117", "image.nii.gz"),
        sample("lits117", "tumor.nii.gz"),
        sample("lits117", "liver.nii.gz"),
    );
    // Absolute paths in a datalist elsewhere (relative ones are resolved against its folder);
    // "organ" is the liver mask the profile crops to.
    let list = write_datalist(
        tmp,
        "list.json",
        serde_json::json!({"training": [{"image": scan, "label": truth, "organ": liver}]}),
    );
    let run = tmp.join("run");
    // Without augmentation: 30 steps are too few to learn through it (it is tested apart).
    let stdout = run_ok(&[
        "finetune",
        "--datalist",
        s(&list),
        "--out",
        s(&run),
        "--model",
        s(&golden_weights()),
        "--profile",
        s(&profile),
        "--steps",
        "30",
        "--batch",
        "1",
        "--lr",
        "0.01",
        "--validate-every",
        "10",
        "--checkpoint-every",
        "10",
        "--no-augmentation",
        "--device",
        "cpu",
    ]);
    assert!(stdout.contains("(on the training cases)"), "{stdout}");
    let model = run.join("model.safetensors");
    let before = dice(
        tmp,
        "zero-shot",
        &golden_weights(),
        &profile,
        &scan,
        &liver,
        &truth,
    );
    let after = dice(tmp, "finetuned", &model, &profile, &scan, &liver, &truth);
    assert!(
        after > before + 0.2,
        "fine-tuned Dice {after} vs zero-shot {before}"
    );

    // The report agrees with evaluate: the run's model is its best validation.
    let report = read_json(&run.join("finetune.json"));
    let fold = &report["folds"][0];
    let best = fold["best_dice"].as_f64().unwrap();
    assert!((best - after).abs() < 1e-9, "{best} vs {after}");
    assert!((fold["start_dice"].as_f64().unwrap() - before).abs() < 1e-9);
    let card = read_json(&run.join("model.json"));
    assert_eq!(card["profile"], "tiny-liver");
    assert_eq!(card["step"], fold["best_step"]);
    // The shared loop's outputs: checkpoints, metrics with the Dice, curves.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let dices = metrics
        .lines()
        .filter(|l| l.contains("validation_dice"))
        .count();
    assert_eq!(dices, 4, "steps 0, 10, 20, 30:\n{metrics}");
    assert!(run.join("checkpoints").read_dir().unwrap().count() >= 1);
    assert!(run.join("curves.png").is_file());
}

#[test]
fn two_fold_cross_validation_reports_each_fold() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let profile = tiny_profile(tmp);
    // A tumour case and a healthy brain, both real scans, in the images/labels folder layout.
    for sub in ["images", "labels"] {
        std::fs::create_dir(tmp.join(sub)).unwrap();
    }
    std::fs::copy(
        sample("mrbraintumor2", "image.nii.gz"),
        tmp.join("images/tumour.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        sample("mrbraintumor2", "label.nii.gz"),
        tmp.join("labels/tumour.nii.gz"),
    )
    .unwrap();
    let colin = sample("colin27", "image.nii.gz");
    std::fs::copy(&colin, tmp.join("images/healthy.nii.gz")).unwrap();
    empty_label(&colin, &tmp.join("labels/healthy.nii.gz"));
    let run = tmp.join("cv");
    let out = layerseg(&[
        "finetune",
        "--datalist",
        s(tmp),
        "--folds",
        "2",
        "--out",
        s(&run),
        "--model",
        s(&golden_weights()),
        "--profile",
        s(&profile),
        "--steps",
        "4",
        "--validate-every",
        "2",
        "--device",
        "cpu",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Whole-head scans without brain masks are cropped to their brain, as `segment` does.
    for case in ["tumour", "healthy"] {
        let needle = format!("{case}.nii.gz: brain extraction");
        assert!(stderr.contains(&needle), "{needle:?} in {stderr}");
    }
    assert!(stdout.contains("fold 0: validation Dice "), "{stdout}");
    assert!(stdout.contains("fold 1: validation Dice "), "{stdout}");
    assert!(
        stdout.contains("mean validation Dice over 2 folds"),
        "{stdout}"
    );
    let report = read_json(&run.join("finetune.json"));
    let folds = report["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 2);
    // Sorted folder order: healthy is case 0 (fold 0), tumour case 1 (fold 1).
    assert_eq!(folds[0]["validation_cases"], serde_json::json!(["healthy"]));
    assert_eq!(folds[1]["validation_cases"], serde_json::json!(["tumour"]));
    assert_eq!(folds[1]["training_cases"], serde_json::json!(["healthy"]));
    let mut sum = 0.0;
    for (k, fold) in folds.iter().enumerate() {
        let best = fold["best_dice"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&best));
        sum += best;
        let fold_dir = run.join(format!("fold-{k}"));
        assert!(fold_dir.join("model.safetensors").is_file());
        assert!(fold_dir.join("curves.png").is_file());
    }
    let mean = report["mean_dice"].as_f64().unwrap();
    assert!((mean - sum / 2.0).abs() < 1e-12);
}

fn expect_error(args: &[&str], needles: &[&str]) -> String {
    let out = layerseg(args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].starts_with("layerseg: error: "), "{stderr}");
    for needle in needles {
        assert!(errors[0].contains(needle), "says {needle:?}: {stderr}");
    }
    errors[0].to_string()
}

#[test]
fn bad_datalists_name_every_offender() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let profile = tiny_profile(tmp);
    let (scan, truth) = (
        sample("mrbraintumor2", "image.nii.gz"),
        sample("mrbraintumor2", "label.nii.gz"),
    );
    let golden = golden_weights();
    let base = |list: &Path, out: &str| -> Vec<String> {
        [
            "finetune",
            "--datalist",
            s(list),
            "--out",
            s(&tmp.join(out)),
            "--model",
            s(&golden),
            "--profile",
            s(&profile),
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec()
    };
    let call = |args: &[String], needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(&args, needles)
    };

    // Missing files: every one named, relative paths resolved against the datalist's folder.
    let missing = write_datalist(
        tmp,
        "missing.json",
        serde_json::json!({
            "training": [{"image": scan, "label": "nowhere/a_seg.nii.gz"}],
            "validation": [{"image": "gone.nii.gz", "label": truth}],
        }),
    );
    let err = call(&base(&missing, "r1"), &["2 missing files"]);
    assert!(err.contains(s(&tmp.join("nowhere/a_seg.nii.gz"))), "{err}");
    assert!(err.contains(s(&tmp.join("gone.nii.gz"))), "{err}");
    assert!(!tmp.join("r1").exists());

    // A multi-label map and a label on another grid, reported together.
    let (labels, _) = read_labels(&truth, &ReadOptions::default()).unwrap();
    let multi = tmp.join("multi.nii.gz");
    write_labels(&multi, &labels.with_data(labels.data.mapv(|v| v * 7)), None).unwrap();
    let colin_label = empty_label(
        &sample("colin27", "image.nii.gz"),
        &tmp.join("colin0.nii.gz"),
    );
    let bad = write_datalist(
        tmp,
        "bad.json",
        serde_json::json!({"training": [
            {"image": scan, "label": multi},
            {"image": scan, "label": colin_label},
        ]}),
    );
    let err = call(
        &base(&bad, "r2"),
        &["2 bad cases", "label values 7", "another grid"],
    );
    assert!(
        err.contains("multi.nii.gz") && err.contains("colin0.nii.gz"),
        "{err}"
    );
    assert!(!tmp.join("r2").exists());

    // A label map names its tumour value: then the multi-label case trains.
    let mapped = write_datalist(
        tmp,
        "mapped.json",
        serde_json::json!({"training": [{"image": scan, "label": multi}]}),
    );
    let mut args = base(&mapped, "r3");
    args.extend(["--label-value", "7", "--steps", "1"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(&args);
    let report = read_json(&tmp.join("r3/finetune.json"));
    assert_eq!(report["folds"][0]["steps"], 1);

    // A rerun into the same folder needs --resume.
    let err = expect_error(&args, &["already has checkpoints"]);
    assert!(err.contains("r3"), "{err}");
}

#[test]
fn adapt_runs_a_round_on_real_scans_and_repeats_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let profile = tiny_profile(tmp);
    let scans = [
        sample("mrbraintumor2", "image.nii.gz"),
        sample("colin27", "image.nii.gz"),
        sample("mrhead", "image.nii.gz"),
    ];
    let golden = golden_weights();
    let adapt = |out: &Path| {
        let mut args = vec!["adapt", "--images"];
        args.extend(scans.iter().map(|p| s(p)));
        args.extend([
            "--out",
            s(out),
            "--model",
            s(&golden),
            "--profile",
            s(&profile),
            "--rounds",
            "1",
            "--steps",
            "3",
            "--device",
            "cpu",
            "--seed",
            "5",
        ]);
        run_ok(&args)
    };
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    let stdout = adapt(&a);
    assert!(stdout.contains("round 1: kept "), "{stdout}");
    assert!(stdout.contains("recomposition L1 "), "{stdout}");
    adapt(&b);

    let report = read_json(&a.join("adapt.json"));
    let round = &report["rounds"][0];
    let kept = round["kept"].as_array().unwrap();
    // keep_fraction 0.5 of 3 scans: the two with the lowest recomposition error.
    assert_eq!(kept.len(), 2, "{round}");
    for when in ["before", "after"] {
        let cases = round[when]["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            assert!(case["recomposition_l1"].as_f64().unwrap().is_finite());
        }
    }
    for name in kept {
        let file = format!("round-1/pseudo/{}.nii.gz", name.as_str().unwrap());
        assert_eq!(
            std::fs::read(a.join(&file)).unwrap(),
            std::fs::read(b.join(&file)).unwrap(),
            "{file}"
        );
    }
    // The same seed gives the same scores and the same weights.
    let other = read_json(&b.join("adapt.json"));
    for when in ["before", "after"] {
        assert_eq!(round[when], other["rounds"][0][when]);
    }
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    assert!(a.join("round-1/curves.png").is_file());
}

#[test]
fn finetuning_resumes_and_reads_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let profile = tiny_liver_profile(tmp);
    let list = write_datalist(
        tmp,
        "list.json",
        serde_json::json!({"training": [{
            "image": sample("lits117", "image.nii.gz"),
            "label": sample("lits117", "tumor.nii.gz"),
            "organ": sample("lits117", "liver.nii.gz"),
        }]}),
    );
    let config = tmp.join("finetune.json");
    std::fs::write(
        &config,
        r#"{"train": {"steps": 2, "batch_size": 1, "validate_every": 2, "checkpoint_every": 2},
            "augmentation": {"mirror_p": 0.0}, "positive_fraction": 1.0}"#,
    )
    .unwrap();
    let run = tmp.join("run");
    let golden = golden_weights();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "finetune",
            "--datalist",
            s(&list),
            "--out",
            s(&run),
            "--model",
            s(&golden),
            "--profile",
            s(&profile),
            "--config",
            s(&config),
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let call = |a: Vec<String>| run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    call(args(&[]));
    call(args(&["--steps", "4", "--resume"]));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = records
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    let validated: Vec<u64> = records
        .iter()
        .filter(|r| r.get("validation_dice").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(validated, [0, 2, 4]);
    // The file's settings reached the run and its record.
    let card = read_json(&run.join("checkpoints/step-000000004/card.json"));
    assert_eq!(card["training"]["config"]["batch_size"], 1);
    assert_eq!(
        card["training"]["objective"]["augmentation"]["mirror_p"],
        0.0
    );
    assert_eq!(card["training"]["objective"]["positive_fraction"], 1.0);

    std::fs::write(&config, r#"{"train": {"stepz": 4}}"#).unwrap();
    expect_error(
        &args(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
        &["finetune.json", "unknown field `stepz`"],
    );
}
