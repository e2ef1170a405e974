//! Choosing where tensors live: CUDA when present (or asked for), CPU otherwise.

use std::fmt;
use std::str::FromStr;
use tch::Device;

/// What the user asked for with `--device` (or Python's `device=`): `auto`, `cpu`, `cuda` (the
/// first GPU) or `cuda:N`. Any other name is refused rather than guessed at (`gpu`, `mps`, ...).
/// Serialised as that same text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// The first CUDA GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// CUDA GPU number N (`cuda:N`, counted from 0 as `nvidia-smi` and torch count them).
    CudaIndex(usize),
}

/// The accepted names, as error messages list them.
pub const DEVICE_NAMES: &str = "auto, cpu, cuda or cuda:N (N = 0, 1, ...)";

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::CudaIndex(n)),
                _ => Err(DeviceError::Unknown(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, DeviceError> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(choice: DeviceChoice) -> String {
        choice.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda => f.write_str("cuda"),
            DeviceChoice::CudaIndex(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected {DEVICE_NAMES}")]
    Unknown(String),
    #[error("device {0} was asked for, but no CUDA GPU is usable ({1})")]
    NoCuda(DeviceChoice, String),
    #[error("device cuda:{0} was asked for, but this machine has {1} CUDA GPU(s) (cuda:0 to cuda:{max})", max = .1 - 1)]
    NoSuchGpu(usize, i64),
}

/// Resolve a device choice against what this machine has.
pub fn select_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda | DeviceChoice::CudaIndex(_) if !tch::Cuda::is_available() => {
            Err(DeviceError::NoCuda(choice, Runtime::detect().to_string()))
        }
        DeviceChoice::Cuda => Ok(Device::Cuda(0)),
        DeviceChoice::CudaIndex(n) => {
            let count = tch::Cuda::device_count();
            if (n as i64) < count {
                Ok(Device::Cuda(n))
            } else {
                Err(DeviceError::NoSuchGpu(n, count))
            }
        }
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
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::CudaIndex(1)
        );
        assert_eq!(DeviceChoice::CudaIndex(1).to_string(), "cuda:1");
        // Names that are not ours are refused, not taken for the nearest guess.
        for name in ["gpu", "tpu", "cuda:", "cuda:x", "cuda:-1", "mps", ""] {
            let err = name.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("{name:?}")) && err.contains("auto, cpu, cuda or cuda:N"),
                "{err}"
            );
        }
    }

    #[test]
    fn serialises_as_its_name() {
        let json = serde_json::to_string(&DeviceChoice::CudaIndex(2)).unwrap();
        assert_eq!(json, "\"cuda:2\"");
        let back: DeviceChoice = serde_json::from_str("\"cpu\"").unwrap();
        assert_eq!(back, DeviceChoice::Cpu);
        assert!(serde_json::from_str::<DeviceChoice>("\"gpu\"").is_err());
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
