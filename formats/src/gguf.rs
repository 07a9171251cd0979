//! GGUF v3: header (`GGUF`, version 3, tensor and metadata counts), typed key/value metadata,
//! tensor infos (name, dims in ggml order — fastest-varying first —, type, offset) and the
//! tensor data, each tensor at a multiple of `general.alignment` (32 by default) from the start
//! of the data section. Little-endian throughout.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::quants::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a GGUF file ({why})")]
    Format { path: PathBuf, why: String },
    #[error("{path}: GGUF version {version}; this reader knows 2 and 3")]
    Version { path: PathBuf, version: u32 },
    #[error("tensor `{name}`: {why}")]
    Tensor { name: String, why: String },
}

/// A metadata value. Arrays hold values of one type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) if v >= 0 => Some(v as u64),
            MetaValue::I16(v) if v >= 0 => Some(v as u64),
            MetaValue::I32(v) if v >= 0 => Some(v as u64),
            MetaValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short rendering for people (long arrays summarized).
    pub fn summary(&self) -> String {
        match self {
            MetaValue::String(s) if s.chars().count() > 60 => {
                format!("{:?}… ({} chars)", s.chars().take(60).collect::<String>(), s.chars().count())
            }
            MetaValue::String(s) => format!("{s:?}"),
            MetaValue::Array(v) if v.len() > 4 => {
                let head: Vec<String> = v.iter().take(3).map(MetaValue::summary).collect();
                format!("[{}, …] ({} items)", head.join(", "), v.len())
            }
            MetaValue::Array(v) => format!("[{}]", v.iter().map(MetaValue::summary).collect::<Vec<_>>().join(", ")),
            MetaValue::Bool(b) => b.to_string(),
            MetaValue::F32(f) => f.to_string(),
            MetaValue::F64(f) => f.to_string(),
            other => other.as_u64().map(|v| v.to_string()).unwrap_or_else(|| format!("{other:?}")),
        }
    }

    fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            MetaValue::U8(v) => w.write_all(&[*v]),
            MetaValue::I8(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::U16(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::I16(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::U32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::I32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::F32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::Bool(v) => w.write_all(&[*v as u8]),
            MetaValue::String(s) => write_str(w, s),
            MetaValue::U64(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::I64(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::F64(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::Array(items) => {
                let elem = items.first().map(MetaValue::type_id).unwrap_or(4);
                w.write_all(&elem.to_le_bytes())?;
                w.write_all(&(items.len() as u64).to_le_bytes())?;
                for it in items {
                    if it.type_id() != elem {
                        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a GGUF array holds one type"));
                    }
                    it.write(w)?;
                }
                Ok(())
            }
        }
    }
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// A tensor's description. `dims` are in ggml order: `dims[0]` is the row length.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    #[serde(rename = "type")]
    pub ty: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn bytes(&self) -> Option<u64> {
        self.ty.bytes_for(self.elements() as usize).map(|b| b as u64)
    }
}

/// Builds a GGUF file: metadata in insertion order, then tensors in insertion order.
#[derive(Default)]
pub struct GgufWriter {
    meta: Vec<(String, MetaValue)>,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key (replacing an earlier value of the same key).
    pub fn meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.meta.push((key.to_string(), value)),
        }
        self
    }

    fn alignment(&self) -> u64 {
        self.meta
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// `info`'s dims are whole blocks of its type (and `len` bytes, when given), and its name is
    /// none of `before`.
    fn check<'a>(
        info: &TensorInfo,
        len: Option<u64>,
        mut before: impl Iterator<Item = &'a str>,
    ) -> Result<(), GgufError> {
        let tensor_err = |why: String| GgufError::Tensor { name: info.name.clone(), why };
        match (info.bytes(), len) {
            (Some(b), Some(len)) if b != len => {
                return Err(tensor_err(format!("{len} bytes of data for {b} expected")));
            }
            (Some(_), _) => {}
            (None, _) => {
                return Err(tensor_err(format!(
                    "{} rows of {} are not whole {} blocks",
                    info.elements() / info.dims.first().copied().unwrap_or(1).max(1),
                    info.dims.first().copied().unwrap_or(0),
                    info.ty.name()
                )))
            }
        }
        if before.any(|n| n == info.name) {
            return Err(tensor_err("added twice".into()));
        }
        Ok(())
    }

    /// Adds a tensor: `dims` in ggml order, `data` already in `ty`'s encoding.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Result<&mut Self, GgufError> {
        let info = TensorInfo { name: name.to_string(), dims: dims.to_vec(), ty, offset: 0 };
        Self::check(&info, Some(data.len() as u64), self.tensors.iter().map(|(t, _)| t.name.as_str()))?;
        self.tensors.push((info, data));
        Ok(self)
    }

    /// Everything before the data section: header, metadata, tensor infos (offsets assigned in
    /// order) and the padding up to the alignment.
    fn header(&self, tensors: &[&TensorInfo]) -> io::Result<Vec<u8>> {
        let align = self.alignment();
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            write_str(&mut header, k)?;
            header.extend_from_slice(&v.type_id().to_le_bytes());
            v.write(&mut header)?;
        }
        let mut offset = 0u64;
        for t in tensors {
            write_str(&mut header, &t.name)?;
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.bytes().unwrap_or(0)).div_ceil(align) * align;
        }
        let pad = (header.len() as u64).div_ceil(align) * align - header.len() as u64;
        header.resize(header.len() + pad as usize, 0);
        Ok(header)
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let align = self.alignment();
        let infos: Vec<&TensorInfo> = self.tensors.iter().map(|(t, _)| t).collect();
        w.write_all(&self.header(&infos)?)?;
        for (_, data) in &self.tensors {
            w.write_all(data)?;
            let pad = (data.len() as u64).div_ceil(align) * align - data.len() as u64;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        Ok(())
    }

    pub fn write_file(&self, path: &Path) -> Result<(), GgufError> {
        let io_err = |source| GgufError::Io { path: path.to_path_buf(), source };
        let mut f = io::BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
        self.write_to(&mut f).map_err(io_err)?;
        f.flush().map_err(io_err)
    }

    /// Starts writing `path` tensor by tensor: the metadata set so far and the infos of
    /// `tensors` (name, dims in ggml order, type) go out now; each tensor's data follows through
    /// [`GgufStream::write`] in this order, so only one tensor need be in memory. The file
    /// appears under `path` only when [`GgufStream::finish`] succeeds.
    pub fn stream(&self, path: &Path, tensors: Vec<(String, Vec<u64>, GgmlType)>) -> Result<GgufStream, GgufError> {
        let infos: Vec<TensorInfo> =
            tensors.into_iter().map(|(name, dims, ty)| TensorInfo { name, dims, ty, offset: 0 }).collect();
        for (i, t) in infos.iter().enumerate() {
            Self::check(t, None, infos[..i].iter().map(|t| t.name.as_str()))?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.partial"));
        let io_err = |source| GgufError::Io { path: tmp.clone(), source };
        let mut out = io::BufWriter::new(std::fs::File::create(&tmp).map_err(io_err)?);
        let header = self.header(&infos.iter().collect::<Vec<_>>()).map_err(io_err)?;
        out.write_all(&header).map_err(io_err)?;
        Ok(GgufStream {
            path: path.to_path_buf(),
            tmp,
            out: Some(out),
            tensors: infos,
            next: 0,
            align: self.alignment(),
        })
    }
}

/// A GGUF file being written tensor by tensor ([`GgufWriter::stream`]). Dropped before
/// `finish`, it removes its partial file.
pub struct GgufStream {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<io::BufWriter<std::fs::File>>,
    tensors: Vec<TensorInfo>,
    next: usize,
    align: u64,
}

impl GgufStream {
    /// The next tensor's name, if any remain.
    pub fn next_name(&self) -> Option<&str> {
        self.tensors.get(self.next).map(|t| t.name.as_str())
    }

    /// Writes the data of tensor `name`, which must be the next one declared.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let tensor_err = |why: String| GgufError::Tensor { name: name.to_string(), why };
        let Some(t) = self.tensors.get(self.next) else { return Err(tensor_err("not declared".into())) };
        if t.name != name {
            return Err(tensor_err(format!("written out of order: `{}` comes next", t.name)));
        }
        let want = t.bytes().unwrap_or(0);
        if want != data.len() as u64 {
            return Err(tensor_err(format!("{} bytes of data for {want} expected", data.len())));
        }
        let pad = want.div_ceil(self.align) * self.align - want;
        let out = self.out.as_mut().expect("open until finished");
        let io_err = |source| GgufError::Io { path: self.tmp.clone(), source };
        out.write_all(data).map_err(io_err)?;
        out.write_all(&vec![0u8; pad as usize]).map_err(io_err)?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written, flushes, and moves the file into place. (No fsync:
    /// a crash leaves at most the `.partial` file, and an export can be run again; llama.cpp's
    /// and gguf-py's writers do not sync either.)
    pub fn finish(mut self) -> Result<(), GgufError> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::Tensor { name: t.name.clone(), why: "never written".into() });
        }
        let io_err = |source| GgufError::Io { path: self.tmp.clone(), source };
        let out = self.out.take().expect("open until finished");
        drop(out.into_inner().map_err(|e| io_err(e.into_error()))?);
        std::fs::rename(&self.tmp, &self.path).map_err(|source| GgufError::Io { path: self.path.clone(), source })
    }
}

impl Drop for GgufStream {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A GGUF file read into memory (metadata and tensor infos parsed; data sliced on demand).
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub meta: BTreeMap<String, MetaValue>,
    /// In file order.
    pub meta_order: Vec<String>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    data_start: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("meta", &self.meta.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("truncated: {n} bytes wanted at offset {} of {}", self.at, self.b.len()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        if n > (1 << 30) {
            return Err(format!("a string of {n} bytes"));
        }
        String::from_utf8(self.take(n as usize)?.to_vec()).map_err(|_| "a string that is not UTF-8".into())
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue, String> {
        let b = |c: &mut Self, n| c.take(n).map(|s| s.to_vec());
        Ok(match ty {
            0 => MetaValue::U8(b(self, 1)?[0]),
            1 => MetaValue::I8(b(self, 1)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(b(self, 2)?.try_into().expect("2"))),
            3 => MetaValue::I16(i16::from_le_bytes(b(self, 2)?.try_into().expect("2"))),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(self.u32()? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32()?)),
            7 => MetaValue::Bool(b(self, 1)?[0] != 0),
            8 => MetaValue::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deep".into());
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                if n > self.b.len() as u64 {
                    return Err(format!("an array of {n} items in a file of {} bytes", self.b.len()));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(self.u64()? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, bytes)
    }

    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, GgufError> {
        let fmt = |why: String| GgufError::Format { path: path.to_path_buf(), why };
        let mut c = Cursor { b: &bytes, at: 0 };
        if c.take(4).map_err(fmt)? != MAGIC {
            return Err(fmt("no GGUF magic".into()));
        }
        let version = c.u32().map_err(fmt)?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version { path: path.to_path_buf(), version });
        }
        let n_tensors = c.u64().map_err(fmt)?;
        let n_meta = c.u64().map_err(fmt)?;
        let mut meta = BTreeMap::new();
        let mut meta_order = Vec::new();
        for _ in 0..n_meta {
            let key = c.string().map_err(fmt)?;
            let ty = c.u32().map_err(fmt)?;
            let v = c.value(ty, 0).map_err(|e| fmt(format!("metadata `{key}`: {e}")))?;
            meta_order.push(key.clone());
            meta.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 20) as usize);
        for _ in 0..n_tensors {
            let name = c.string().map_err(fmt)?;
            let n_dims = c.u32().map_err(fmt)?;
            if n_dims > 8 {
                return Err(fmt(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>, _>>().map_err(fmt)?;
            let id = c.u32().map_err(fmt)?;
            let ty = GgmlType::from_id(id).ok_or_else(|| fmt(format!("tensor `{name}` has unknown type {id}")))?;
            let offset = c.u64().map_err(fmt)?;
            tensors.push(TensorInfo { name, dims, ty, offset });
        }
        let alignment = meta.get("general.alignment").and_then(MetaValue::as_u64).unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 {
            return Err(fmt("general.alignment is 0".into()));
        }
        let data_start = (c.at as u64).div_ceil(alignment) * alignment;
        let file =
            GgufFile { path: path.to_path_buf(), version, meta, meta_order, tensors, alignment, data_start, bytes };
        for t in &file.tensors {
            file.data(t)?;
        }
        Ok(file)
    }

    /// The bytes of a tensor (checked against the file's length).
    pub fn data(&self, t: &TensorInfo) -> Result<&[u8], GgufError> {
        let err = |why: String| GgufError::Tensor { name: t.name.clone(), why };
        let len =
            t.bytes().ok_or_else(|| err(format!("rows of {} are not whole {} blocks", t.dims[0], t.ty.name())))?;
        let start = self.data_start + t.offset;
        let end = start + len;
        if end > self.bytes.len() as u64 {
            return Err(err(format!("its data ends at byte {end}, past the end of the file ({})", self.bytes.len())));
        }
        Ok(&self.bytes[start as usize..end as usize])
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quants::{dequantize, quantize};

    #[test]
    fn writes_and_reads_back() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", MetaValue::String("qwen2".into()))
            .meta("qwen2.block_count", MetaValue::U32(2))
            .meta(
                "tokenizer.ggml.tokens",
                MetaValue::Array(vec![MetaValue::String("a".into()), MetaValue::String("b".into())]),
            )
            .meta("x.f", MetaValue::F32(0.5));
        let x: Vec<f32> = (0..96).map(|i| i as f32 / 10.0 - 4.0).collect();
        w.tensor("t.f32", &[32, 3], GgmlType::F32, quantize(GgmlType::F32, &x).unwrap()).unwrap();
        w.tensor("t.q8", &[32, 3], GgmlType::Q8_0, quantize(GgmlType::Q8_0, &x).unwrap()).unwrap();
        assert!(w.tensor("bad", &[30, 3], GgmlType::Q8_0, vec![0; 10]).is_err());
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::parse(Path::new("mem.gguf"), bytes.clone()).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.meta["qwen2.block_count"], MetaValue::U32(2));
        assert_eq!(f.meta_order[0], "general.architecture");
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensors[1].offset % 32, 0);
        assert_eq!(dequantize(GgmlType::F32, f.data(&f.tensors[0]).unwrap()).unwrap(), x);
        // truncated files are refused with the reason
        let cut = GgufFile::parse(Path::new("cut.gguf"), bytes[..bytes.len() - 40].to_vec()).unwrap_err();
        assert!(cut.to_string().contains("past the end"), "{cut}");
        let junk = GgufFile::parse(Path::new("j.gguf"), b"GGML....".to_vec()).unwrap_err();
        assert!(junk.to_string().contains("not a GGUF file"), "{junk}");
    }

    #[test]
    fn streaming_writes_the_same_file_and_leaves_nothing_when_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<f32> = (0..64).map(|i| i as f32 / 7.0).collect();
        let b: Vec<f32> = (0..32).map(|i| -(i as f32)).collect();
        let mut w = GgufWriter::new();
        w.meta("general.architecture", MetaValue::String("qwen2".into()));
        let (qa, qb) = (quantize(GgmlType::Q8_0, &a).unwrap(), quantize(GgmlType::F32, &b).unwrap());
        let plan = || vec![("a".to_string(), vec![32, 2], GgmlType::Q8_0), ("b".to_string(), vec![32], GgmlType::F32)];
        let streamed = dir.path().join("s.gguf");
        let mut s = w.stream(&streamed, plan()).unwrap();
        assert!(s.write("b", &qb).unwrap_err().to_string().contains("out of order"));
        assert!(s.write("a", &qa[1..]).unwrap_err().to_string().contains("bytes of data"));
        s.write("a", &qa).unwrap();
        s.write("b", &qb).unwrap();
        s.finish().unwrap();
        let mut whole = GgufWriter::new();
        whole.meta("general.architecture", MetaValue::String("qwen2".into()));
        whole.tensor("a", &[32, 2], GgmlType::Q8_0, qa.clone()).unwrap();
        whole.tensor("b", &[32], GgmlType::F32, qb.clone()).unwrap();
        let mut bytes = Vec::new();
        whole.write_to(&mut bytes).unwrap();
        assert_eq!(std::fs::read(&streamed).unwrap(), bytes);
        // unfinished: no file under the name, no partial file left
        let cut = dir.path().join("cut.gguf");
        let mut s = w.stream(&cut, plan()).unwrap();
        s.write("a", &qa).unwrap();
        assert!(s.finish().unwrap_err().to_string().contains("never written"));
        let mut s = w.stream(&cut, plan()).unwrap();
        s.write("a", &qa).unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only s.gguf");
        assert!(w.stream(&cut, vec![("x".into(), vec![40], GgmlType::Q8_0)]).is_err(), "40 is not whole blocks");
    }
}
