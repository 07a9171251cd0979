//! Link flags for libtorch, taken from torch-sys (which finds it through `LIBTORCH`).
//!
//! - an rpath to libtorch's `lib/` (and PyTorch's NCCL), so binaries run without
//!   `LD_LIBRARY_PATH`;
//! - `libtorch_cuda` kept with `--no-as-needed`: nothing references its symbols directly, so the
//!   linker would drop it and CUDA would look unavailable at run time.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // link args only reach this crate's own tests; pass the directory on to dependents
        // (the lehr CLI's build.rs applies the same flags to its binary)
        println!("cargo:libtorch_lib={lib}");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // PyTorch's NCCL (scripts/setup.sh links libnccl.so there) for the `nccl` feature.
        let nccl = std::path::Path::new(&lib).join("../../nvidia/nccl/lib");
        if nccl.is_dir() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", nccl.display());
        }
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
