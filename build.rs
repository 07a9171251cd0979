//! With the `train` feature, the lehr binary links libtorch through lehr-train: give it an rpath
//! to libtorch (no LD_LIBRARY_PATH needed) and keep libtorch_cuda, which nothing references
//! directly, so CUDA is visible at run time.
//!
//! `LEHR_NO_RPATH=1` (scripts/release.sh, for the train image) leaves the rpaths out: the binary
//! then finds libtorch through `LD_LIBRARY_PATH`, as the image sets it, and carries no path of
//! the machine that built it.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LEHR_TRAIN_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LEHR_NO_RPATH");
    let rpath = std::env::var("LEHR_NO_RPATH").map_or(true, |v| v.is_empty() || v == "0");
    if let Ok(lib) = std::env::var("DEP_LEHR_TRAIN_LIBTORCH_LIB") {
        if rpath {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        }
        // PyTorch's NCCL (scripts/setup.sh links libnccl.so there), for the `nccl` feature's
        // run-time loading.
        let nccl = std::path::Path::new(&lib).join("../../nvidia/nccl/lib");
        if rpath && nccl.is_dir() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", nccl.display());
        }
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-L{lib}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
