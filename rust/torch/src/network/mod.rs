//! The layer-decomposition network: MONAI's 3D BasicUNet, block by block, under MONAI's
//! state-dict names.

mod basic_unet;
mod convolution;
mod sampling;
pub mod weights;

use std::path::Path;

use tch::nn::VarStore;
use tch::Device;

pub use basic_unet::{
    BasicUNet, BasicUNetConfig, HEALTHY_CHANNEL, MASK_CHANNEL, MIN_SPATIAL, TUMOUR_CHANNEL,
};
pub use convolution::{Convolution, TwoConv, INSTANCE_NORM_EPS, NEGATIVE_SLOPE};
pub use sampling::{Down, UpCat};
pub use weights::{load_weights, save_safetensors, sniff_format, WeightsFormat};

use crate::error::Result;

/// A BasicUNet together with the `VarStore` that owns its parameters.
#[derive(Debug)]
pub struct Model {
    pub vs: VarStore,
    pub net: BasicUNet,
}

impl Model {
    /// A freshly initialised network on `device`.
    pub fn new(config: &BasicUNetConfig, device: Device) -> Result<Model> {
        let vs = VarStore::new(device);
        let net = BasicUNet::new(vs.root(), config)?;
        Ok(Model { vs, net })
    }

    /// A network of shape `config` with the weights of `path` (safetensors or `torch.save` zip).
    pub fn load(config: &BasicUNetConfig, device: Device, path: &Path) -> Result<Model> {
        let mut model = Model::new(config, device)?;
        load_weights(&mut model.vs, path)?;
        Ok(model)
    }

    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        save_safetensors(&self.vs, path)
    }
}
