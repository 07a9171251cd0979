//! safetensors, read: an 8-byte little-endian header length, a JSON header naming each tensor's
//! dtype, shape and byte range, then the data. Tensors are read as f32 one at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::half::{bf16_to_f32, f16_to_f32};

#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a safetensors file ({why})")]
    Format { path: PathBuf, why: String },
    #[error("{path}: tensor `{name}` is {dtype}; lehr reads F32, F16 and BF16")]
    Dtype { path: PathBuf, name: String, dtype: String },
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct TensorEntry {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data_offsets: (usize, usize),
}

pub struct Safetensors {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, TensorEntry>,
    data: Data,
    start: usize,
}

/// The file's bytes: memory-mapped (pages load as tensors are read and can be dropped by the
/// kernel after), or read into memory where mapping is not possible.
enum Data {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Mapped(m) => m,
            Data::Read(v) => v,
        }
    }
}

impl Safetensors {
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: checkpoints are written once and renamed into place; another program
        // truncating the file while it is mapped would fault this process, the usual contract
        // of memory-mapped model files (transformers' safetensors and llama.cpp map them too).
        let data = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(m) => Data::Mapped(m),
            Err(_) => Data::Read(std::fs::read(path).map_err(io)?),
        };
        let fmt = |why: String| SafetensorsError::Format { path: path.to_path_buf(), why };
        if data.len() < 8 {
            return Err(fmt("shorter than its header length".into()));
        }
        let n = u64::from_le_bytes(data[..8].try_into().expect("8")) as usize;
        if 8 + n > data.len() {
            return Err(fmt(format!("a header of {n} bytes in a file of {}", data.len())));
        }
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&data[8..8 + n]).map_err(|e| fmt(format!("header: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let e: TensorEntry = serde_json::from_value(v).map_err(|e| fmt(format!("`{name}`: {e}")))?;
            if e.data_offsets.1 < e.data_offsets.0 || 8 + n + e.data_offsets.1 > data.len() {
                return Err(fmt(format!("`{name}`'s data lies outside the file")));
            }
            tensors.insert(name, e);
        }
        Ok(Safetensors { path: path.to_path_buf(), tensors, data, start: 8 + n })
    }

    /// A tensor's bytes as stored (its `dtype`, row-major).
    pub fn raw(&self, name: &str) -> Result<&[u8], SafetensorsError> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| SafetensorsError::Format { path: self.path.clone(), why: format!("no tensor `{name}`") })?;
        Ok(&self.data[self.start + e.data_offsets.0..self.start + e.data_offsets.1])
    }

    /// A tensor's values as f32 (row-major, the last dimension fastest).
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, SafetensorsError> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| SafetensorsError::Format { path: self.path.clone(), why: format!("no tensor `{name}`") })?;
        let b = &self.data[self.start + e.data_offsets.0..self.start + e.data_offsets.1];
        let elements: usize = e.shape.iter().product();
        let width = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => {
                return Err(SafetensorsError::Dtype { path: self.path.clone(), name: name.into(), dtype: other.into() })
            }
        };
        if b.len() != elements * width {
            return Err(SafetensorsError::Format {
                path: self.path.clone(),
                why: format!("`{name}` has {} bytes for {elements} {} values", b.len(), e.dtype),
            });
        }
        Ok(match e.dtype.as_str() {
            "F32" => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            "F16" => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            _ => b.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        })
    }
}

/// Creates `path` with a safetensors header for `entries` — (name, dtype, shape, bytes), in
/// the order their data will follow — and the `{"format": "pt"}` metadata transformers checks;
/// the caller writes the data and flushes.
fn create_with_header<'a>(
    path: &Path,
    entries: impl Iterator<Item = (&'a str, &'a str, &'a [usize], usize)>,
) -> Result<std::io::BufWriter<std::fs::File>, SafetensorsError> {
    use std::io::Write;
    let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, dtype, shape, n) in entries {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut h = serde_json::to_vec(&header).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&h).map_err(io)?;
    Ok(f)
}

/// Writes tensors as stored — `(name, dtype, shape, bytes)` — as a safetensors file.
pub fn write_raw(path: &Path, tensors: &[(String, String, Vec<usize>, &[u8])]) -> Result<(), SafetensorsError> {
    use std::io::Write;
    let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
    let entries = tensors.iter().map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.as_slice(), b.len()));
    let mut f = create_with_header(path, entries)?;
    for (_, _, _, bytes) in tensors {
        f.write_all(bytes).map_err(io)?;
    }
    f.flush().map_err(io)
}

/// Writes f32 tensors (row-major) as a safetensors file.
pub fn write_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), SafetensorsError> {
    use std::io::Write;
    let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
    let entries = tensors.iter().map(|(n, s, v)| (n.as_str(), "F32", s.as_slice(), v.len() * 4));
    let mut f = create_with_header(path, entries)?;
    for (_, _, values) in tensors {
        for chunk in values.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            f.write_all(&bytes).map_err(io)?;
        }
    }
    f.flush().map_err(io)
}
