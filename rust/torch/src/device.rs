//! Choosing where tensors live: CUDA when present (or asked for), CPU otherwise.

use std::fmt;
use std::str::FromStr;
use tch::Device;

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The first CUDA GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(DeviceError::Unknown(other.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected auto, cpu or cuda")]
    Unknown(String),
    #[error("--device cuda was asked for, but no CUDA GPU is usable ({0})")]
    NoCuda(String),
}

/// Resolve a device choice against what this machine has.
pub fn select_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(DeviceError::NoCuda(Runtime::detect().to_string())),
    }
}

/// What libtorch sees on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// libtorch_cuda is mapped into this process (false when the linker dropped it, or with a
    /// CPU-only torch).
    pub cuda_backend_loaded: bool,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cpu_threads: i32,
}

impl Runtime {
    pub fn detect() -> Runtime {
        let cuda_backend_loaded = std::fs::read_to_string("/proc/self/maps")
            .map(|maps| maps.contains("libtorch_cuda.so"))
            .unwrap_or(false);
        Runtime {
            cuda_backend_loaded,
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cpu_threads: tch::get_num_threads(),
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "libtorch CUDA backend {}, CUDA {} ({} device(s)), {} CPU thread(s)",
            if self.cuda_backend_loaded {
                "loaded"
            } else {
                "not loaded"
            },
            if self.cuda_available {
                "available"
            } else {
                "not available"
            },
            self.cuda_devices,
            self.cpu_threads
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("AUTO".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("gpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn cpu_always_works_and_auto_matches_availability() {
        assert_eq!(select_device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        let auto = select_device(DeviceChoice::Auto).unwrap();
        assert_eq!(auto.is_cuda(), tch::Cuda::is_available());
        let t = tch::Tensor::ones([2, 2], (tch::Kind::Float, auto));
        assert_eq!(t.sum(tch::Kind::Float).double_value(&[]), 4.0);
    }
}
