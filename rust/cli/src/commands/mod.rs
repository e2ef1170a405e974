pub mod demo;
pub mod evaluate;
pub mod info;
pub mod pretrain;
pub mod runtime;
pub mod segment;
pub mod synthesize;
