//! How LayerSeg's binaries and its Python extension find libtorch at run time, without
//! `LD_LIBRARY_PATH`: the one logic that the build scripts of `layerseg-torch`, `layerseg-cli`
//! and `layerseg-python-libtorch` call. Each of those crates depends on `torch-sys` only so that
//! its build script sees where libtorch is (`DEP_TCH_LIBTORCH_LIB`).

/// The libtorch lib folder that torch-sys built against.
fn libtorch_lib() -> String {
    std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports the libtorch lib dir")
}

/// For the crate's binaries and test binaries (the `layerseg` command, `cargo test`):
/// - an rpath to the torch/lib folder they were built against, so no LD_LIBRARY_PATH is needed;
/// - `--no-as-needed` before libtorch_cuda, or the linker drops it (nothing references it
///   directly) and CUDA silently reports unavailable (tch-rs#980, #907).
pub fn link_binaries() {
    let lib = libtorch_lib();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=build.rs");
}

/// For the Python extension (`layerseg_libtorch._native`), which finds libtorch through torch
/// itself: `layerseg_libtorch/__init__.py` imports torch first, which maps libtorch (and its CUDA
/// backend, when torch has one) into the process. The rpath is a fallback for an installed
/// wheel: site-packages/layerseg_libtorch/_native*.so -> site-packages/torch/lib. There is no
/// `--no-as-needed` here, so the same wheel loads with a CPU-only torch (Slicer's).
pub fn link_extension() {
    let lib = libtorch_lib();
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rerun-if-changed=build.rs");
}
