//! The extension finds libtorch through torch itself: `layerseg_libtorch/__init__.py` imports torch first,
//! which maps libtorch (and its CUDA backend, when torch has one) into the process. The rpath is a
//! fallback for an installed wheel: site-packages/layerseg_libtorch/_native*.so -> site-packages/torch/lib.
//! There is no --no-as-needed here, so the same wheel loads with a CPU-only torch (Slicer's).

fn main() {
    let lib =
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports the libtorch lib dir");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rerun-if-changed=build.rs");
}
