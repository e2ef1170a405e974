//! LayerSeg on libtorch: device selection now; the network, losses and loops build on it.

pub mod device;

pub use device::{select_device, DeviceChoice, Runtime};
