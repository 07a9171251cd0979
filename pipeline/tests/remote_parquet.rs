//! Byte-range shards of a remote parquet file fetch only the footer and their own row groups
//! (range GETs into a sparse temporary file), not the whole object once per shard, and read
//! exactly the documents a local read does.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use lehr_pipeline::plan::{split, InputFile, InputFormat};
use lehr_pipeline::read::{read_shard, ReadStats};
use lehr_pipeline::spec::{ByteSize, InputSpec, InvalidUtf8, UnreadableFile};
use lehr_pipeline::Document;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// An in-memory store that counts the bytes its GETs ask for.
#[derive(Debug, Default)]
struct Counting {
    inner: InMemory,
    fetched: AtomicU64,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting")
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        if !head {
            self.fetched.fetch_add(r.range.end - r.range.start, Ordering::SeqCst);
        }
        Ok(r)
    }
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let opts = GetOptions { range: Some(GetRange::Bounded(r.clone())), ..Default::default() };
            out.push(self.get_opts(location, opts).await?.bytes().await?);
        }
        Ok(out)
    }
    async fn delete(&self, location: &Path) -> Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

fn input() -> InputSpec {
    InputSpec {
        paths: vec![],
        text_field: "text".into(),
        id_field: "id".into(),
        split_size: ByteSize(1 << 30),
        invalid_utf8: InvalidUtf8::Reject,
        unreadable_file: UnreadableFile::Fail,
        max_line_bytes: ByteSize(lehr_pipeline::spec::DEFAULT_MAX_LINE_BYTES),
    }
}

/// Every shard of `file` cut at `split_size`, read on a blocking thread (as workers do).
async fn read_all(file: InputFile, split_size: u64) -> Vec<Vec<Document>> {
    let mut out = Vec::new();
    for shard in split(&[file], split_size) {
        let docs = tokio::task::spawn_blocking(move || {
            let mut docs = Vec::new();
            read_shard(&shard, &input(), &mut ReadStats::default(), &mut |d| {
                docs.push(d);
                Ok(())
            })
            .unwrap();
            docs
        })
        .await
        .unwrap();
        out.push(docs);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_byte_range_shards_fetch_their_row_groups_only() {
    use polars::prelude::*;
    let text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/zh.jsonl"))
            .unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<String> = rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let texts: Vec<String> = rows.iter().map(|r| r["text"].as_str().unwrap().to_string()).collect();
    let mut df =
        DataFrame::new(ids.len(), vec![Column::new("id".into(), ids), Column::new("text".into(), texts)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zh.parquet");
    let mut f = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(&mut f).with_row_group_size(Some(50)).finish(&mut df).unwrap();
    drop(f);
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len() as u64;

    let store = std::sync::Arc::new(Counting::default());
    store.put(&Path::from("bucket/zh.parquet"), PutPayload::from(bytes)).await.unwrap();
    lehr_pipeline::store::register_scheme("countingpq", store.clone());

    let local = InputFile { url: path.to_string_lossy().into(), size, format: InputFormat::Parquet };
    let remote = InputFile { url: "countingpq://bucket/zh.parquet".into(), size, format: InputFormat::Parquet };
    let whole: Vec<Document> = read_all(local.clone(), 1 << 30).await.concat();
    assert!(whole.len() > 500);

    for split_size in [16_384u64, 100_000] {
        store.fetched.store(0, Ordering::SeqCst);
        let local_shards = read_all(local.clone(), split_size).await;
        let remote_shards = read_all(remote.clone(), split_size).await;
        assert!(remote_shards.len() > 3, "{split_size}: several shards");
        assert_eq!(remote_shards, local_shards, "each remote shard reads what the local one does");
        assert_eq!(remote_shards.concat(), whole);
        let fetched = store.fetched.load(Ordering::SeqCst);
        // the row groups once, plus a footer per shard: far less than the file per shard
        assert!(
            fetched < size + remote_shards.len() as u64 * (size / 10),
            "{split_size}: fetched {fetched} bytes for {} shards of a {size}-byte file",
            remote_shards.len()
        );
        assert!(fetched < size * remote_shards.len() as u64 / 2);
    }
    // a whole-file shard still reads everything (streamed), once
    store.fetched.store(0, Ordering::SeqCst);
    assert_eq!(read_all(remote.clone(), 1 << 30).await.concat(), whole);
    assert_eq!(store.fetched.load(Ordering::SeqCst), size);
}
