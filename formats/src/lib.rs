//! Model file formats, in pure Rust so that the CLI, the trainer and tests share them without
//! libtorch: GGUF v3 (`gguf.rs`, as ggml's `docs/gguf.md` and gguf-py's `constants.py` define
//! it) and ggml's block quantizations (`quants.rs`, with the K-quants in `kquants.rs`), bit-exact
//! with ggml's reference code.

pub mod arch;
pub mod export;
pub mod gguf;
pub mod grow;
pub mod half;
pub mod import;
mod kquants;
pub mod mix;
pub mod quants;
pub mod safetensors;
pub mod vocab;

pub use gguf::{GgufError, GgufFile, GgufStream, GgufWriter, MetaValue, TensorInfo};
pub use mix::FileType;
pub use quants::GgmlType;
