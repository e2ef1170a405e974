//! Make the `layerseg` binary (and this crate's tests) find libtorch and keep its CUDA backend:
//! - an rpath to the torch/lib folder it was built against, so no LD_LIBRARY_PATH is needed;
//! - `--no-as-needed` before libtorch_cuda, or the linker drops it (nothing references it
//!   directly) and CUDA silently reports unavailable (tch-rs#980, #907).

fn main() {
    let lib =
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports the libtorch lib dir");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    // Lets the tests check that the CUDA backend is kept whenever this torch has one.
    println!("cargo:rustc-env=LAYERSEG_LIBTORCH_LIB={lib}");
    println!("cargo:rerun-if-changed=build.rs");
}
