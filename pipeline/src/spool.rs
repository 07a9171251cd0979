//! Output bytes in bounded memory. A [`Spool`] keeps what is written in memory up to a limit,
//! then moves it to an anonymous temporary file (deleted when dropped, even on a crash) and
//! appends there; it hashes the bytes as they pass. The finished [`Body`] goes to the object
//! store whole when small, in multipart chunks read from the file when not — so a shard that
//! keeps 10 GB holds a few chunks in memory, not 10 GB.

use std::io::{self, Read, Seek, Write};

use sha2::{Digest, Sha256};

/// The sha256 of `bytes`, as lower-case hex (what manifests and results record).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes a spool holds in memory before it moves to a temporary file.
pub const SPOOL_MEMORY_BYTES: usize = 32 << 20;

pub struct Spool {
    mem: Vec<u8>,
    file: Option<io::BufWriter<std::fs::File>>,
    len: u64,
    hash: Sha256,
    limit: usize,
}

impl Default for Spool {
    fn default() -> Self {
        Spool::with_limit(SPOOL_MEMORY_BYTES)
    }
}

impl Spool {
    pub fn with_limit(limit: usize) -> Self {
        Spool { mem: Vec::new(), file: None, len: 0, hash: Sha256::new(), limit }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes moved to a temporary file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    pub fn finish(self) -> io::Result<Body> {
        let sha256 = hex::encode(self.hash.finalize());
        let data = match self.file {
            None => Data::Memory(self.mem),
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| e.into_error())?;
                f.flush()?;
                f.rewind()?;
                Data::File(f)
            }
        };
        Ok(Body { data, len: self.len, sha256 })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.mem.len() + buf.len() > self.limit {
            let mut f = io::BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => self.mem.extend_from_slice(buf),
        }
        self.hash.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Finished output bytes, with their length and sha256.
pub struct Body {
    data: Data,
    pub len: u64,
    pub sha256: String,
}

enum Data {
    Memory(Vec<u8>),
    File(std::fs::File),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if matches!(self.data, Data::File(_)) { "file" } else { "memory" };
        f.debug_struct("Body").field("len", &self.len).field("at", &at).field("sha256", &self.sha256).finish()
    }
}

impl Body {
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let sha256 = sha256_hex(&bytes);
        Body { len: bytes.len() as u64, data: Data::Memory(bytes), sha256 }
    }

    /// The bytes, when they are in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Memory(v) => Some(v),
            Data::File(_) => None,
        }
    }

    /// Either the bytes (in memory) or a reader over the temporary file.
    pub fn into_parts(self) -> Result<Vec<u8>, std::fs::File> {
        match self.data {
            Data::Memory(v) => Ok(v),
            Data::File(f) => Err(f),
        }
    }

    /// All the bytes in memory (tests, small files).
    pub fn into_vec(self) -> io::Result<Vec<u8>> {
        match self.data {
            Data::Memory(v) => Ok(v),
            Data::File(mut f) => {
                let mut v = Vec::with_capacity(self.len as usize);
                f.read_to_end(&mut v)?;
                Ok(v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_limit_and_keeps_every_byte() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut small = Spool::with_limit(1000);
        let mut big = Spool::with_limit(1 << 20);
        for chunk in data.chunks(333) {
            small.write_all(chunk).unwrap();
            big.write_all(chunk).unwrap();
        }
        assert!(small.spilled() && !big.spilled());
        let (a, b) = (small.finish().unwrap(), big.finish().unwrap());
        assert!(a.in_memory().is_none() && b.in_memory().is_some());
        assert_eq!((a.len, &a.sha256), (data.len() as u64, &b.sha256));
        assert_eq!(a.sha256, Body::from_vec(data.clone()).sha256);
        assert_eq!(a.into_vec().unwrap(), data);
        assert_eq!(b.into_vec().unwrap(), data);
    }
}
