pub mod evaluate;
pub mod info;
pub mod runtime;
pub mod segment;
pub mod synthesize;
