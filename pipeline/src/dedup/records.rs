//! The fixed-size little-endian records the dedup phases pass through the object store. Each
//! file starts with an 8-byte magic naming its record type; a file whose length is not the
//! magic plus a whole number of records is refused (a torn write never passes as data).

use crate::error::{PipelineError, PipelineResult};

/// A band hash of one document (phase 1 → 2). Sorted by `(hash, key)` within a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SigRecord {
    pub hash: u128,
    /// `(shard << 32) | row`.
    pub key: u64,
    /// Text bytes after the stages (for the `longest` keep rule).
    pub len: u32,
}

/// Two documents that share a band (phase 2 → 3); `a.key < b.key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeRecord {
    pub a: u64,
    pub a_len: u32,
    pub b: u64,
    pub b_len: u32,
}

/// A document of a cluster of two or more (phase 3 → 4), sorted by row within a shard's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterRecord {
    pub row: u32,
    /// The smallest key in the cluster: its id.
    pub cluster: u64,
    pub size: u32,
    pub survivor: bool,
}

pub(crate) trait Record: Sized {
    const MAGIC: &'static [u8; 8];
    const SIZE: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Record for SigRecord {
    const MAGIC: &'static [u8; 8] = b"LEHRSIG1";
    const SIZE: usize = 28;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        SigRecord {
            hash: u128::from_le_bytes(b[..16].try_into().expect("16 bytes")),
            key: u64_at(b, 16),
            len: u32_at(b, 24),
        }
    }
}

impl Record for EdgeRecord {
    const MAGIC: &'static [u8; 8] = b"LEHREDG1";
    const SIZE: usize = 24;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.a.to_le_bytes());
        out.extend_from_slice(&self.a_len.to_le_bytes());
        out.extend_from_slice(&self.b.to_le_bytes());
        out.extend_from_slice(&self.b_len.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        EdgeRecord { a: u64_at(b, 0), a_len: u32_at(b, 8), b: u64_at(b, 12), b_len: u32_at(b, 20) }
    }
}

impl Record for ClusterRecord {
    const MAGIC: &'static [u8; 8] = b"LEHRCLU1";
    const SIZE: usize = 17;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.row.to_le_bytes());
        out.extend_from_slice(&self.cluster.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.push(self.survivor as u8);
    }
    fn get(b: &[u8]) -> Self {
        ClusterRecord { row: u32_at(b, 0), cluster: u64_at(b, 4), size: u32_at(b, 12), survivor: b[16] != 0 }
    }
}

pub(crate) fn encode<R: Record>(records: &[R]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + records.len() * R::SIZE);
    out.extend_from_slice(R::MAGIC);
    for r in records {
        r.put(&mut out);
    }
    out
}

/// Decodes a record file, appending to `into`; `what` names it in errors.
pub(crate) fn decode_into<R: Record>(bytes: &[u8], what: &str, into: &mut Vec<R>) -> PipelineResult<()> {
    if bytes.len() < 8 || &bytes[..8] != R::MAGIC || !(bytes.len() - 8).is_multiple_of(R::SIZE) {
        return Err(PipelineError::Other(format!(
            "{what}: not a complete {} file ({} bytes)",
            String::from_utf8_lossy(R::MAGIC),
            bytes.len()
        )));
    }
    into.reserve((bytes.len() - 8) / R::SIZE);
    into.extend(bytes[8..].chunks_exact(R::SIZE).map(R::get));
    Ok(())
}

/// Reads a shard's cluster file (phase 3's output).
pub fn read_clusters(bytes: &[u8], what: &str) -> PipelineResult<Vec<ClusterRecord>> {
    let mut v = Vec::new();
    decode_into(bytes, what, &mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_torn_files() {
        let sigs = vec![SigRecord { hash: u128::MAX - 3, key: 5 << 32 | 9, len: 77 }];
        let bytes = encode(&sigs);
        let mut back = Vec::new();
        decode_into::<SigRecord>(&bytes, "t", &mut back).unwrap();
        assert_eq!(back, sigs);
        assert!(decode_into::<SigRecord>(&bytes[..bytes.len() - 1], "t", &mut back).is_err());
        assert!(decode_into::<EdgeRecord>(&bytes, "t", &mut Vec::new()).is_err());
        let c = vec![ClusterRecord { row: 3, cluster: 1 << 40, size: 4, survivor: true }];
        assert_eq!(read_clusters(&encode(&c), "t").unwrap(), c);
        let e = vec![EdgeRecord { a: 1, a_len: 2, b: 3, b_len: 4 }];
        let mut eb = Vec::new();
        decode_into::<EdgeRecord>(&encode(&e), "t", &mut eb).unwrap();
        assert_eq!(eb, e);
    }
}
