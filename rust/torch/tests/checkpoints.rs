//! Checkpoints: atomic writes, discovery for `--resume`, pruning, and SIGKILL while writing.

use std::path::Path;
use std::time::{Duration, Instant};

use layerseg_torch::checkpoint::{
    latest_checkpoint, list_checkpoints, save_checkpoint, write_atomic, ModelCard,
};
use layerseg_torch::network::load_weights;
use layerseg_torch::{BasicUNetConfig, Error, LossValues, Model};
use tch::{Device, Kind, Tensor};

fn tiny() -> BasicUNetConfig {
    BasicUNetConfig {
        features: [2, 2, 2, 2, 2, 2],
        ..BasicUNetConfig::default()
    }
}

fn card(step: u64) -> ModelCard {
    let mut card = ModelCard::new(&tiny(), Device::Cpu);
    card.step = step;
    card.profile = Some("brain-mri".to_string());
    card.losses = Some(LossValues {
        total: 1.5,
        ..LossValues::default()
    });
    card.training = serde_json::json!({"lr": 0.01});
    card
}

fn optimizer_state(model: &Model) -> Vec<(String, Tensor)> {
    model
        .vs
        .variables()
        .into_iter()
        .map(|(name, t)| (format!("exp_avg.{name}"), t.detach().copy()))
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn latest_is_the_highest_complete_step_and_round_trips() {
    let run = tempfile::tempdir().unwrap();
    assert!(latest_checkpoint(run.path()).unwrap().is_none());
    let model = Model::new(&tiny(), Device::Cpu).unwrap();
    let state = optimizer_state(&model);
    for step in [5, 20, 10] {
        save_checkpoint(run.path(), &card(step), &model.vs, Some(&state), 10).unwrap();
    }
    // Leftovers of an interrupted save and a folder without a card are not checkpoints.
    let root = run.path().join("checkpoints");
    std::fs::create_dir_all(root.join(".tmp-abc")).unwrap();
    std::fs::create_dir_all(root.join("step-000000099")).unwrap();

    let latest = latest_checkpoint(run.path()).unwrap().unwrap();
    assert_eq!(latest.card.step, 20);
    assert_eq!(latest.card, {
        let mut c = card(20);
        c.optimizer_state = true;
        c
    });
    latest.check_config(&tiny()).unwrap();

    let mut reloaded = Model::new(&tiny(), Device::Cpu).unwrap();
    load_weights(&mut reloaded.vs, &latest.weights_path()).unwrap();
    for (name, t) in model.vs.variables() {
        assert!(t.equal(&reloaded.vs.variables()[&name]), "{name}");
    }
    let restored = latest.optimizer_state(Device::Cpu).unwrap();
    assert_eq!(restored.len(), state.len());
}

#[test]
fn keeps_only_the_newest() {
    let run = tempfile::tempdir().unwrap();
    let model = Model::new(&tiny(), Device::Cpu).unwrap();
    for step in 1..=5 {
        save_checkpoint(run.path(), &card(step), &model.vs, None, 2).unwrap();
    }
    let steps: Vec<u64> = list_checkpoints(run.path())
        .unwrap()
        .iter()
        .map(|c| c.card.step)
        .collect();
    assert_eq!(steps, [4, 5]);
    assert!(leftovers(&run.path().join("checkpoints")).is_empty());
}

#[test]
fn another_width_is_refused() {
    let run = tempfile::tempdir().unwrap();
    let model = Model::new(&tiny(), Device::Cpu).unwrap();
    save_checkpoint(run.path(), &card(1), &model.vs, None, 1).unwrap();
    let latest = latest_checkpoint(run.path()).unwrap().unwrap();
    let wider = BasicUNetConfig {
        features: [4, 4, 4, 4, 4, 4],
        ..tiny()
    };
    let err = latest.check_config(&wider).unwrap_err();
    assert!(err.to_string().contains("another network width"), "{err}");
}

#[test]
fn failed_atomic_write_leaves_nothing_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    let fail = |tmp: &Path| {
        std::fs::write(tmp, "half a fi").unwrap();
        Err(Error::Config("disk full".to_string()))
    };
    assert!(write_atomic(&path, fail).is_err());
    assert!(!path.exists());
    assert!(leftovers(dir.path()).is_empty());

    write_atomic(&path, |tmp| {
        std::fs::write(tmp, "old").unwrap();
        Ok(())
    })
    .unwrap();
    assert!(write_atomic(&path, fail).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn failed_checkpoint_leaves_no_folder_and_keeps_the_previous() {
    let run = tempfile::tempdir().unwrap();
    let model = Model::new(&tiny(), Device::Cpu).unwrap();
    save_checkpoint(run.path(), &card(1), &model.vs, None, 1).unwrap();
    // safetensors cannot store complex numbers, so this save fails half-way.
    let bad = vec![(
        "bad".to_string(),
        Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu)),
    )];
    assert!(save_checkpoint(run.path(), &card(2), &model.vs, Some(&bad), 1).is_err());
    let all = list_checkpoints(run.path()).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].card.step, 1);
    assert!(leftovers(&run.path().join("checkpoints")).is_empty());
    assert!(!run.path().join("checkpoints/step-000000002").exists());
}

#[test]
fn a_kill_while_replacing_a_step_loses_no_checkpoint() {
    // Saving step 3 again (a resume at the final step) moves the old step-3 aside, then renames
    // the new one into place. Killed between the two renames, only the old one is left, under a
    // temporary name, and the older checkpoints have been pruned: it must still be found.
    let run = tempfile::tempdir().unwrap();
    let model = Model::new(&tiny(), Device::Cpu).unwrap();
    save_checkpoint(run.path(), &card(3), &model.vs, None, 1).unwrap();
    let root = run.path().join("checkpoints");
    std::fs::rename(
        root.join("step-000000003"),
        root.join(".tmp-replaced-000000003"),
    )
    .unwrap();
    let latest = latest_checkpoint(run.path())
        .unwrap()
        .expect("the moved-aside checkpoint");
    assert_eq!(latest.card.step, 3);
    assert_eq!(latest.dir, root.join("step-000000003"));
    let mut again = Model::new(&tiny(), Device::Cpu).unwrap();
    load_weights(&mut again.vs, &latest.weights_path()).unwrap();
    // The next save keeps it until the new one is in place.
    save_checkpoint(run.path(), &card(4), &model.vs, None, 1).unwrap();
    let steps: Vec<u64> = list_checkpoints(run.path())
        .unwrap()
        .iter()
        .map(|c| c.card.step)
        .collect();
    assert_eq!(steps, [4]);
    assert!(leftovers(&root).is_empty());
}

/// Child half of `sigkill_while_writing_keeps_a_loadable_checkpoint`: saves checkpoints in a loop
/// until killed. Does nothing unless that test starts it.
#[test]
#[ignore = "helper process for the SIGKILL test"]
fn checkpoint_writer_child() {
    let Some(run) = std::env::var_os("LAYERSEG_SIGKILL_RUN") else {
        return;
    };
    let config = BasicUNetConfig {
        features: [16, 16, 32, 32, 64, 16],
        ..BasicUNetConfig::default()
    };
    let model = Model::new(&config, Device::Cpu).unwrap();
    let state = optimizer_state(&model);
    for step in 1.. {
        let mut c = ModelCard::new(&config, Device::Cpu);
        c.step = step;
        save_checkpoint(Path::new(&run), &c, &model.vs, Some(&state), 2).unwrap();
    }
}

#[test]
fn sigkill_while_writing_keeps_a_loadable_checkpoint() {
    let config = BasicUNetConfig {
        features: [16, 16, 32, 32, 64, 16],
        ..BasicUNetConfig::default()
    };
    for (round, delay_ms) in [0u64, 7, 23, 41].into_iter().enumerate() {
        let run = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "checkpoint_writer_child",
                "--nocapture",
            ])
            .env("LAYERSEG_SIGKILL_RUN", run.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while list_checkpoints(run.path()).unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "child wrote nothing"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let latest = latest_checkpoint(run.path()).unwrap().unwrap();
        let mut model = Model::new(&config, Device::Cpu).unwrap();
        load_weights(&mut model.vs, &latest.weights_path())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(!latest.optimizer_state(Device::Cpu).unwrap().is_empty());
    }
}
