//! The `layerseg` binary (and this crate's tests) find libtorch and keep its CUDA backend
//! (`layerseg-build-libtorch`).

fn main() {
    layerseg_build_libtorch::link_binaries();
}
