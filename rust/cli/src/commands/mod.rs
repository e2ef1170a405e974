pub mod evaluate;
pub mod info;
pub mod runtime;
