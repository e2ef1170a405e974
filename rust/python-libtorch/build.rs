//! The extension finds libtorch through torch, with an rpath as a fallback
//! (`layerseg-build-libtorch`).

fn main() {
    layerseg_build_libtorch::link_extension();
}
