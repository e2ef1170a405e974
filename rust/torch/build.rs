//! This crate's test binaries find libtorch and keep its CUDA backend (`layerseg-build-libtorch`).

fn main() {
    layerseg_build_libtorch::link_binaries();
}
