pub mod info;
pub mod runtime;
