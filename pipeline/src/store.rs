//! Every byte the pipeline reads or writes goes through `object_store`: a local path (the
//! default) or `s3://`, `gs://`, `az://` URLs. S3 takes the usual `AWS_*` environment variables
//! (`AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for S3-compatible servers such as MinIO or moto).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::error::{PipelineError, PipelineResult};
use crate::spool::Body;

/// Part size of multipart uploads (S3 wants at least 5 MiB per part but the last).
pub const PUT_CHUNK_BYTES: usize = 16 << 20;
/// Parts uploading at once.
pub const PUT_CHUNKS_IN_FLIGHT: usize = 4;

/// A resolved location: the store, the key prefix inside it, and the user-facing URL.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// `file:///abs/dir` or `s3://bucket/prefix`, without a trailing slash.
    pub url: String,
    /// For local locations, the directory on disk.
    pub local: Option<PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// True for `scheme://...` strings other than `file://`.
pub fn is_remote(s: &str) -> bool {
    s.contains("://") && !s.starts_with("file://")
}

/// Makes a user path absolute: remote URLs stay, `file://` is stripped, relative local paths
/// are joined to `base_dir`.
pub fn absolutize(s: &str, base_dir: &FsPath) -> String {
    if is_remote(s) {
        return s.trim_end_matches('/').to_string();
    }
    let p = s.strip_prefix("file://").unwrap_or(s);
    let p = FsPath::new(p);
    let joined = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
    // Lexical normalization (no filesystem access, so globs stay intact): object-store paths
    // reject `.` and `..` segments.
    let mut abs = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                abs.pop();
            }
            other => abs.push(other.as_os_str()),
        }
    }
    let text = abs.to_string_lossy().to_string();
    if text.len() > 1 {
        text.trim_end_matches('/').to_string()
    } else {
        text
    }
}

type Registry = std::sync::RwLock<std::collections::HashMap<String, Arc<dyn ObjectStore>>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Serves `scheme://host/path` URLs from `store` in this process (the key is `host/path`): for
/// programs that embed lehr with a store of their own (in memory, a proxy, a fault injector in
/// tests). Registered schemes win over the built-in ones.
pub fn register_scheme(scheme: &str, store: Arc<dyn ObjectStore>) {
    registry().write().expect("store registry poisoned").insert(scheme.to_string(), store);
}

/// Resolves an absolute local path or a URL to a location.
pub fn resolve(s: &str) -> PipelineResult<Location> {
    if is_remote(s) {
        let url = url::Url::parse(s).map_err(|e| PipelineError::Location(s.into(), e.to_string()))?;
        let registered = registry().read().expect("store registry poisoned").get(url.scheme()).cloned();
        if let Some(store) = registered {
            let key = format!("{}/{}", url.host_str().unwrap_or(""), url.path().trim_matches('/'));
            let prefix = Path::from(key.trim_matches('/'));
            return Ok(Location { store, prefix, url: s.trim_end_matches('/').to_string(), local: None });
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| {
                    PipelineError::Location(s.into(), "an s3 URL needs a bucket: s3://bucket/prefix".into())
                })?;
                Arc::new(
                    AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()
                        .map_err(|e| PipelineError::Store { location: s.into(), source: e })?,
                )
            }
            other => {
                return Err(PipelineError::Location(
                    s.into(),
                    format!("unsupported scheme `{other}`; this build reads local paths and s3:// URLs"),
                ))
            }
        };
        let prefix = Path::from(url.path().trim_matches('/'));
        return Ok(Location { store, prefix, url: s.trim_end_matches('/').to_string(), local: None });
    }
    let p = s.strip_prefix("file://").unwrap_or(s);
    let path = FsPath::new(p);
    if !path.is_absolute() {
        return Err(PipelineError::Location(s.into(), "local paths must be absolute here".into()));
    }
    let prefix = Path::from_absolute_path(path).map_err(|e| PipelineError::Location(s.into(), e.to_string()))?;
    Ok(Location {
        store: Arc::new(LocalFileSystem::new()),
        prefix,
        url: format!("file://{}", p.trim_end_matches('/')),
        local: Some(path.to_path_buf()),
    })
}

/// Reads one whole file given as an absolute local path or a URL; `what` names it in errors.
pub async fn read_file(s: &str, what: &str) -> PipelineResult<bytes::Bytes> {
    let trimmed = s.trim_end_matches('/');
    let (dir, name) = trimmed
        .rsplit_once('/')
        .ok_or_else(|| PipelineError::Location(s.into(), "expected an absolute path or URL to a file".into()))?;
    let dir =
        if dir.is_empty() || dir.ends_with(':') || dir.ends_with("//") { format!("{dir}/") } else { dir.to_string() };
    resolve(&dir)?.get_required(name, what).await
}

impl Location {
    /// The key of `rel` (a `/`-separated relative path) under this location.
    pub fn child(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    /// The URL of `rel` under this location, for messages and manifests.
    pub fn child_url(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel)
    }

    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> PipelineResult<()> {
        let key = self.child(rel);
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| PipelineError::Store { location: self.child_url(rel), source: e })?;
        Ok(())
    }

    /// Writes a finished [`Body`]: whole when it is in memory, else streamed from its temporary
    /// file in multipart chunks of [`PUT_CHUNK_BYTES`] (a few chunks in flight, never the file).
    pub async fn put_body(&self, rel: &str, body: Body) -> PipelineResult<()> {
        match body.into_parts() {
            Ok(bytes) => self.put(rel, bytes).await,
            Err(file) => self.put_multipart_file(rel, file, PUT_CHUNK_BYTES).await,
        }
    }

    /// Streams `file` (from its current position) to `rel` in multipart parts of `part_bytes`,
    /// [`PUT_CHUNKS_IN_FLIGHT`] at a time. Any error aborts the upload, so no orphaned parts are
    /// left (and billed) at the store.
    pub async fn put_multipart_file(&self, rel: &str, file: std::fs::File, part_bytes: usize) -> PipelineResult<()> {
        use tokio::io::AsyncReadExt;
        let key = self.child(rel);
        let store_err = |e| PipelineError::Store { location: self.child_url(rel), source: e };
        let upload = self.store.put_multipart(&key).await.map_err(store_err)?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, part_bytes);
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; part_bytes.min(1 << 20)];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(PipelineError::Io {
                        location: format!("the file for {}", self.child_url(rel)),
                        source: e,
                    });
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PUT_CHUNKS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(store_err(e));
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(store_err)?;
        Ok(())
    }

    pub async fn get(&self, rel: &str) -> PipelineResult<Option<bytes::Bytes>> {
        let key = self.child(rel);
        match self.store.get(&key).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(|e| PipelineError::Store { location: self.child_url(rel), source: e })?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(PipelineError::Store { location: self.child_url(rel), source: e }),
        }
    }

    /// [`get`](Self::get) for a file that must be there; `what` says what it is in the error.
    pub async fn get_required(&self, rel: &str, what: &str) -> PipelineResult<bytes::Bytes> {
        self.get(rel).await?.ok_or_else(|| PipelineError::Other(format!("{} is missing ({what})", self.child_url(rel))))
    }

    pub async fn exists(&self, rel: &str) -> PipelineResult<bool> {
        match self.store.head(&self.child(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(PipelineError::Store { location: self.child_url(rel), source: e }),
        }
    }

    /// The size of `rel`, or `None` when it does not exist.
    pub async fn size(&self, rel: &str) -> PipelineResult<Option<u64>> {
        match self.store.head(&self.child(rel)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(PipelineError::Store { location: self.child_url(rel), source: e }),
        }
    }

    /// The sha256 (hex) of `rel`, streamed (never held whole), or `None` when it does not exist.
    pub async fn sha256(&self, rel: &str) -> PipelineResult<Option<String>> {
        use futures::StreamExt;
        use sha2::Digest;
        let err = |e| PipelineError::Store { location: self.child_url(rel), source: e };
        let mut stream = match self.store.get(&self.child(rel)).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(err)?);
        }
        Ok(Some(hex::encode(hasher.finalize())))
    }

    /// Copies `from` to `to` (both relative), replacing `to`. Idempotent.
    pub async fn copy(&self, from: &str, to: &str) -> PipelineResult<()> {
        self.store
            .copy(&self.child(from), &self.child(to))
            .await
            .map_err(|e| PipelineError::Store { location: self.child_url(from), source: e })
    }

    /// Every object under this location, as paths relative to it (missing location: none).
    pub async fn list_files(&self) -> PipelineResult<Vec<String>> {
        use futures::TryStreamExt;
        let keys: Vec<Path> = match self.store.list(Some(&self.prefix)).map_ok(|m| m.location).try_collect().await {
            Ok(k) => k,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(PipelineError::Store { location: self.url.clone(), source: e }),
        };
        let base: Vec<_> = self.prefix.parts().collect();
        Ok(keys
            .into_iter()
            .map(|k| k.parts().skip(base.len()).map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .collect())
    }

    /// Removes what a killed write left next to `names` on a local file system: object_store
    /// writes `NAME#N` and renames it to `NAME`, so a process killed in between leaves the
    /// staging file (listings skip it, so nothing else ever would). Returns how many went.
    /// A no-op for object stores, whose uploads become visible whole or not at all.
    pub fn remove_staging_leftovers<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> usize {
        let Some(local) = &self.local else { return 0 };
        let mut by_dir: std::collections::BTreeMap<PathBuf, std::collections::BTreeSet<String>> = Default::default();
        for name in names {
            let path = local.join(name);
            if let (Some(dir), Some(file)) = (path.parent(), path.file_name()) {
                by_dir.entry(dir.to_path_buf()).or_default().insert(file.to_string_lossy().into_owned());
            }
        }
        let mut removed = 0;
        for (dir, files) in by_dir {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let entry_name = entry.file_name().to_string_lossy().into_owned();
                let Some((base, suffix)) = entry_name.rsplit_once('#') else { continue };
                let staging = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) && files.contains(base);
                if staging && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Deletes the object `rel`. Missing is fine.
    pub async fn delete(&self, rel: &str) -> PipelineResult<()> {
        self.delete_key(&self.child(rel)).await
    }

    async fn delete_key(&self, key: &Path) -> PipelineResult<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(PipelineError::Store { location: key.to_string(), source: e }),
        }
    }

    /// Deletes every object under `rel` (a directory-like prefix). Missing is fine.
    pub async fn delete_prefix(&self, rel: &str) -> PipelineResult<usize> {
        use futures::TryStreamExt;
        let prefix = self.child(rel);
        let keys: Vec<Path> = match self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await {
            Ok(k) => k,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(PipelineError::Store { location: self.child_url(rel), source: e }),
        };
        for key in &keys {
            self.delete_key(key).await?;
        }
        if let Some(local) = &self.local {
            // LocalFileSystem leaves empty directories behind.
            let _ = std::fs::remove_dir_all(local.join(rel));
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolutize_normalizes_local_paths_and_keeps_urls() {
        let base = FsPath::new("/work/main");
        assert_eq!(absolutize("../shared/x/*.jsonl", base), "/work/shared/x/*.jsonl");
        assert_eq!(absolutize("./data/", base), "/work/main/data");
        assert_eq!(absolutize("/abs/./a/../b", base), "/abs/b");
        assert_eq!(absolutize("file:///abs/x", base), "/abs/x");
        assert_eq!(absolutize("s3://bucket/a/../b/", base), "s3://bucket/a/../b");
    }

    #[test]
    fn staging_leftovers_of_named_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for f in ["a.txt", "a.txt#0", "a.txt#12", "a.txt#x", "sub/c.bin#1", "other#3", "a.txt#"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let out = resolve(&dir.path().to_string_lossy()).unwrap();
        assert_eq!(out.remove_staging_leftovers(["a.txt", "sub/c.bin", "missing/d"]), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.txt", "a.txt#", "a.txt#x", "other#3", "sub"]);
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);
    }
}
