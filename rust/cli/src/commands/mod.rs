pub mod adapt;
pub mod evaluate;
pub mod finetune;
pub mod info;
pub mod pretrain;
pub mod runtime;
pub mod segment;
pub mod synthesize;
