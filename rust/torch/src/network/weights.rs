//! Weights in and out of a `VarStore` under MONAI's state-dict names, with no renaming.
//!
//! Reading accepts safetensors and the zip that Python's `torch.save` writes for a flat
//! `{name: tensor}` dict (read by libtorch's C++ loader; Python's unpickler never runs). Loading is
//! strict like `load_state_dict(strict=True)`: every name must be present with the same shape,
//! and no name may be left over. Writing is safetensors only.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// The on-disk weight formats we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    Safetensors,
    /// A `torch.save` zip archive (PyTorch >= 1.6 default) of a flat state dict.
    TorchZip,
}

/// Tells the format from the first bytes of the file, whatever its extension.
pub fn sniff_format(path: &Path) -> Result<WeightsFormat> {
    let mut head = [0u8; 9];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    let format_error = |reason: &str| Error::WeightsFormat {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(WeightsFormat::TorchZip);
    }
    if n == 9 && head[8] == b'{' {
        return Ok(WeightsFormat::Safetensors);
    }
    if n >= 1 && head[0] == 0x80 {
        return Err(format_error(
            "a legacy (pre-zip) pickle from torch.save; re-save it with a current torch.save, \
             or as safetensors with safetensors.torch.save_file",
        ));
    }
    Err(format_error(
        "expected safetensors, or a torch.save zip of a flat {name: tensor} state dict",
    ))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads all named tensors of a weights file, placed on `device`.
pub fn read_state_dict(path: &Path, device: Device) -> Result<Vec<(String, Tensor)>> {
    let format = sniff_format(path)?;
    let read = match format {
        WeightsFormat::Safetensors => Tensor::read_safetensors(path),
        WeightsFormat::TorchZip => Tensor::loadz_multi_with_device(path, device),
    };
    read.map_err(|e| Error::WeightsFormat {
        path: path.to_path_buf(),
        reason: match format {
            WeightsFormat::Safetensors => format!("unreadable safetensors: {e}"),
            WeightsFormat::TorchZip => format!(
                "libtorch could not read it as a flat {{name: tensor}} state dict (a nested \
                 checkpoint must be reduced to its state_dict first): {e}"
            ),
        },
    })
}

/// Names and shapes of every variable in `vs`, sorted by name.
pub fn state_dict_shapes(vs: &VarStore) -> BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect()
}

/// Loads a weights file into `vs` strictly: same names, same shapes. The variables keep their
/// dtype and device; values are converted.
pub fn load_weights(vs: &mut VarStore, path: &Path) -> Result<()> {
    let file: BTreeMap<String, Tensor> = read_state_dict(path, vs.device())?.into_iter().collect();
    let ours: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mismatch = |reason: String| Error::WeightsMismatch {
        path: path.to_path_buf(),
        reason,
    };
    let missing: Vec<&String> = ours.keys().filter(|k| !file.contains_key(*k)).collect();
    let unexpected: Vec<&String> = file.keys().filter(|k| !ours.contains_key(*k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(mismatch(format!(
            "missing {} name(s) {}; unexpected {} name(s) {}",
            missing.len(),
            preview(&missing),
            unexpected.len(),
            preview(&unexpected)
        )));
    }
    let mut wrong_shapes = Vec::new();
    for (name, var) in &ours {
        let src = &file[name];
        if src.size() != var.size() {
            wrong_shapes.push(format!(
                "{name}: file {:?}, network {:?}",
                src.size(),
                var.size()
            ));
        } else if !src.is_floating_point() {
            wrong_shapes.push(format!(
                "{name}: file dtype {:?} is not floating",
                src.kind()
            ));
        }
    }
    if !wrong_shapes.is_empty() {
        return Err(mismatch(format!(
            "{} tensor(s) differ (a checkpoint of another network width?): {}",
            wrong_shapes.len(),
            preview(&wrong_shapes)
        )));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in ours {
            var.f_copy_(&file[&name]).map_err(|e| Error::Torch {
                context: format!("copying {name} from {}", path.display()),
                source: e,
            })?;
        }
        Ok(())
    })
}

fn preview<T: std::fmt::Display>(items: &[T]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<String> = items.iter().take(SHOWN).map(|x| x.to_string()).collect();
    if items.len() > SHOWN {
        s.push(format!("… {} more", items.len() - SHOWN));
    }
    format!("[{}]", s.join(", "))
}

/// Writes every variable of `vs` to a safetensors file (not atomically; see
/// [`crate::checkpoint`] for that).
pub fn save_safetensors(vs: &VarStore, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    write_tensors(&named, path)
}

/// Writes named tensors to a safetensors file, making each contiguous first.
pub fn write_tensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let named: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.detach().contiguous()))
        .collect();
    Tensor::write_safetensors(&named, path).map_err(|e| match e {
        tch::TchError::SafeTensorError { .. } => Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        },
        e => Error::Torch {
            context: format!("writing {}", path.display()),
            source: e,
        },
    })
}
