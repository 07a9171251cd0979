//! A source that fails mid-stream (a connection reset inside a gzip object, as S3 does under
//! load) must not look like a truncated file: the attempt fails retryably, the next attempt
//! reads the whole object, and the job's output is identical, byte for byte, to a clean run's.
//! The coordinator and a worker run in this process; the faulty store is registered under its
//! own URL scheme.

use std::fmt;
use std::io::Write;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use lehr_proto::pb;
use lehr_proto::CoordinatorApi;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use tokio_util::sync::CancellationToken;

/// Serves a local directory; the first `fails` reads of a `.gz` object break after `after`
/// bytes with a connection reset.
#[derive(Debug)]
struct ResetOnce {
    inner: LocalFileSystem,
    fails: AtomicUsize,
    after: usize,
    gets: AtomicUsize,
}

impl fmt::Display for ResetOnce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResetOnce({})", self.inner)
    }
}

/// `inner` cut after `after` bytes by a connection reset.
fn reset_stream(inner: BoxStream<'static, Result<Bytes>>, after: usize) -> BoxStream<'static, Result<Bytes>> {
    let reset = || object_store::Error::Generic {
        store: "ResetOnce",
        source: Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer")),
    };
    futures::stream::unfold((inner, 0usize, false), move |(mut s, sent, done)| async move {
        if done {
            return None;
        }
        match s.next().await {
            Some(Ok(b)) if sent + b.len() >= after => {
                // the bytes before the cut, then the reset
                let head = b.slice(..after - sent);
                let rest: BoxStream<'static, Result<Bytes>> = futures::stream::iter(vec![Err(reset())]).boxed();
                Some((Ok(head), (rest, after, false)))
            }
            Some(Ok(b)) => {
                let n = b.len();
                Some((Ok(b), (s, sent + n, false)))
            }
            Some(Err(e)) => Some((Err(e), (s, sent, true))),
            None => None,
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for ResetOnce {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        if !location.as_ref().ends_with(".gz") || head {
            return Ok(r);
        }
        self.gets.fetch_add(1, Ordering::SeqCst);
        let fail = self.fails.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if !fail {
            return Ok(r);
        }
        let (meta, range, attributes) = (r.meta.clone(), r.range.clone(), r.attributes.clone());
        let payload = GetResultPayload::Stream(reset_stream(r.into_stream(), self.after));
        Ok(GetResult { payload, meta, range, attributes })
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

/// Runs one corpus job in this process and returns its final status.
async fn run_job(state: &FsPath, spec: String) -> pb::JobStatus {
    let shutdown = CancellationToken::new();
    let config = lehr_coordinator::CoordinatorConfig {
        state: state.into(),
        listen: None,
        http_listen: None,
        token: None,
        tls: None,
        scheduler: lehr_coordinator::SchedulerConfig { lease_ttl_ms: 5_000, max_attempts: 3 },
    };
    let running = lehr_coordinator::start(config, shutdown.clone()).await.unwrap();
    let api: Arc<dyn CoordinatorApi> = running.api.clone();
    let worker =
        tokio::spawn(lehr_worker::start(lehr_worker::WorkerConfig::default(), api.clone(), shutdown.child_token()));
    let job = api
        .submit_job(pb::SubmitJobRequest { kind: "corpus".into(), spec, base_dir: "/".into(), name: String::new() })
        .await
        .unwrap();
    let status = loop {
        let r = api
            .get_job(pb::GetJobRequest { job_id: job.job_id.clone(), include_tasks: true, ..Default::default() })
            .await
            .unwrap();
        let status = r.job.unwrap();
        if status.state().is_terminal() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    shutdown.cancel();
    let _ = worker.await;
    status
}

fn spec(input: &str, output: &FsPath) -> String {
    format!(
        "version = 1\n[input]\npaths = [\"{input}\"]\n[[stage]]\ntype = \"normalize\"\n[output]\npath = \"{}\"\nformats = [\"jsonl.zst\"]\nattributes = false\n",
        output.display()
    )
}

fn parts(dir: &FsPath) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_stream_is_retried_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // the store serves `data/`; URLs are reset-once://bucket/KEY, so the object is bucket/KEY
    std::fs::create_dir_all(data.join("bucket")).unwrap();
    // Real documents (the repo's sample, en/zh/ko), gzipped into one object.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for lang in ["en", "zh", "ko"] {
        gz.write_all(&std::fs::read(common_repo().join(format!("examples/data/{lang}.jsonl"))).unwrap()).unwrap();
    }
    let gz = gz.finish().unwrap();
    assert!(gz.len() > 200_000, "the sample should be large enough to cut: {} bytes", gz.len());
    std::fs::write(data.join("bucket/docs.jsonl.gz"), &gz).unwrap();

    let store = Arc::new(ResetOnce {
        inner: LocalFileSystem::new_with_prefix(&data).unwrap(),
        fails: AtomicUsize::new(1),
        after: gz.len() / 2,
        gets: AtomicUsize::new(0),
    });
    lehr_pipeline::store::register_scheme("reset-once", store.clone());

    let clean = run_job(
        &dir.path().join("state-a"),
        spec(&data.join("bucket/docs.jsonl.gz").display().to_string(), &dir.path().join("clean")),
    )
    .await;
    assert_eq!(clean.state(), pb::JobState::Succeeded, "{}", clean.error);
    let flaky =
        run_job(&dir.path().join("state-b"), spec("reset-once://bucket/docs.jsonl.gz", &dir.path().join("flaky")))
            .await;
    assert_eq!(flaky.state(), pb::JobState::Succeeded, "{}", flaky.error);
    assert_eq!(store.fails.load(Ordering::SeqCst), 0, "the fault was injected");
    assert!(store.gets.load(Ordering::SeqCst) >= 2, "the shard was read again");

    let (a, b) = (parts(&dir.path().join("clean")), parts(&dir.path().join("flaky")));
    assert!(!a.is_empty());
    assert_eq!(a.iter().map(|p| &p.0).collect::<Vec<_>>(), b.iter().map(|p| &p.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between the clean and the faulty run");
    }
    let rejects = std::fs::read_to_string(dir.path().join("flaky/rejects.jsonl")).unwrap();
    assert!(rejects.trim().is_empty(), "no record was blamed for the reset: {rejects}");
    assert_eq!(clean.stages[0].docs_out, flaky.stages[0].docs_out);
}

fn common_repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
