//! LayerSeg on libtorch: device selection, the BasicUNet, the layer-decomposition losses and
//! checkpoints.

pub mod brain;
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod inference;
pub mod losses;
pub mod network;
pub mod train;

pub use device::{select_device, DeviceChoice, Runtime};
pub use error::{Error, Result};
pub use losses::{
    finetune_losses, layer_losses, recomposition_l1, FinetuneWeights, LossValues, LossWeights,
    Losses,
};
pub use network::{BasicUNet, BasicUNetConfig, Model};
pub use tch::Device;
