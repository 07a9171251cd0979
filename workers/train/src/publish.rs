//! Checkpoints through `object_store`: when `--out` is a URL (`s3://`, `gs://`, `az://`), the
//! trainer works in a local scratch directory and publishes each checkpoint to the URL —
//! every file of `checkpoints/step-N/` (large ones as multipart uploads), then `metrics.jsonl`
//! and `eval.jsonl`, and `checkpoints/latest` last, so a reader never sees a pointer to a
//! partial checkpoint (a single object PUT is atomic). A run starting on a fresh machine pulls
//! the latest checkpoint and the logs first, so any host resumes any run.

use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use lehr_pipeline::store::{self, Location};
use object_store::PutPayload;

use crate::TrainError;

/// Files at least this big go up in parts (`LEHR_MULTIPART_BYTES` overrides it).
const MULTIPART_BYTES: u64 = 64 << 20;
const PART_BYTES: usize = 5 << 20;

/// Where a run's checkpoints are published.
pub struct Remote {
    pub url: String,
    loc: Location,
    multipart_bytes: u64,
}

fn remote_err(what: &str) -> impl Fn(String) -> TrainError + '_ {
    move |e| TrainError::Data(format!("{what}: {e}"))
}

impl Remote {
    pub fn new(url: &str) -> Result<Self, TrainError> {
        let loc = store::resolve(url).map_err(|e| TrainError::Data(e.to_string()))?;
        let multipart_bytes = std::env::var("LEHR_MULTIPART_BYTES")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&b| b >= 5 << 20) // S3's smallest part
            .unwrap_or(MULTIPART_BYTES);
        Ok(Remote { url: loc.url.clone(), loc, multipart_bytes })
    }

    /// Downloads the latest published checkpoint (unless the scratch directory already holds
    /// it) and the logs into `local`, and points `local`'s `latest` at it. Returns its name.
    pub async fn pull_latest(&self, local: &Path) -> Result<Option<String>, TrainError> {
        let local_latest = local.join("checkpoints/latest");
        let Some(latest) =
            self.loc.get("checkpoints/latest").await.map_err(|e| remote_err(&self.url)(e.to_string()))?
        else {
            // A fresh run at this URL: whatever the scratch holds is from another run.
            for stale in [local_latest, local.join("metrics.jsonl"), local.join("eval.jsonl")] {
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| TrainError::Io(stale.display().to_string(), e))?;
                }
            }
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&latest).trim().to_string();
        if name.is_empty() || name.contains('/') || name.contains("..") {
            return Err(TrainError::Data(format!("{}/checkpoints/latest names `{name}`, not a checkpoint", self.url)));
        }
        let prefix = format!("checkpoints/{name}");
        let ckpt = store::resolve(&self.loc.child_url(&prefix)).map_err(|e| TrainError::Data(e.to_string()))?;
        // Local files are trusted only when this scratch already points at the same checkpoint
        // (this host wrote or fetched it in this run); otherwise everything is fetched again.
        let ours = std::fs::read_to_string(&local_latest).is_ok_and(|n| n.trim() == name);
        if fetch_into(&ckpt, &local.join("checkpoints").join(&name), ours).await? == 0 {
            return Err(TrainError::Data(format!("{}/{prefix}/ is empty but `latest` names it", self.url)));
        }
        for log in ["metrics.jsonl", "eval.jsonl"] {
            if let Some(bytes) = self.loc.get(log).await.map_err(|e| TrainError::Data(e.to_string()))? {
                let path = local.join(log);
                std::fs::write(&path, &bytes).map_err(|e| TrainError::Io(path.display().to_string(), e))?;
            }
        }
        std::fs::write(&local_latest, &name).map_err(|e| TrainError::Io(local_latest.display().to_string(), e))?;
        Ok(Some(name))
    }

    /// Publishes `local/checkpoints/NAME/`, the logs, and then the `latest` pointer.
    pub async fn push_checkpoint(&self, local: &Path, name: &str) -> Result<(), TrainError> {
        let dir = local.join("checkpoints").join(name);
        let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::Io(dir.display().to_string(), e))?;
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        for path in files {
            let rel = format!("checkpoints/{name}/{}", path.file_name().expect("file").to_string_lossy());
            upload(&self.loc, &rel, &path, self.multipart_bytes).await?;
        }
        for log in ["metrics.jsonl", "eval.jsonl"] {
            let path = local.join(log);
            if path.is_file() {
                upload(&self.loc, log, &path, self.multipart_bytes).await?;
            }
        }
        self.loc.put("checkpoints/latest", name.as_bytes().to_vec()).await.map_err(|e| TrainError::Data(e.to_string()))
    }
}

impl Remote {
    /// The checkpoint directories published under `checkpoints/`.
    pub async fn checkpoint_names(&self) -> Result<Vec<String>, TrainError> {
        let loc = store::resolve(&self.loc.child_url("checkpoints")).map_err(|e| TrainError::Data(e.to_string()))?;
        let files = loc.list_files().await.map_err(|e| TrainError::Data(e.to_string()))?;
        let mut names: Vec<String> =
            files.iter().filter_map(|f| f.split_once('/').map(|(d, _)| d.to_string())).collect();
        names.dedup();
        Ok(names)
    }

    pub async fn delete_checkpoint(&self, name: &str) -> Result<(), TrainError> {
        self.loc.delete_prefix(&format!("checkpoints/{name}")).await.map_err(|e| TrainError::Data(e.to_string()))?;
        Ok(())
    }
}

/// Downloads every file under `url` (one checkpoint directory) into `local`.
pub async fn fetch_dir(url: &str, local: &Path) -> Result<(), TrainError> {
    let loc = store::resolve(url).map_err(|e| TrainError::Data(e.to_string()))?;
    if fetch_into(&loc, local, false).await? == 0 {
        return Err(TrainError::Data(format!("nothing under {url}")));
    }
    Ok(())
}

/// Downloads every object under `loc` into `local` (same relative paths) and returns how many
/// there are; with `keep_same_size`, a local file of the remote's size is kept as it is.
async fn fetch_into(loc: &Location, local: &Path, keep_same_size: bool) -> Result<usize, TrainError> {
    let files = loc.list_files().await.map_err(|e| TrainError::Data(e.to_string()))?;
    for f in &files {
        let target = local.join(f);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| TrainError::Io(parent.display().to_string(), e))?;
        }
        if keep_same_size {
            let have = std::fs::metadata(&target).ok().map(|m| m.len());
            if have.is_some() && have == loc.size(f).await.map_err(|e| TrainError::Data(e.to_string()))? {
                continue;
            }
        }
        download(loc, f, &target).await?;
    }
    Ok(files.len())
}

async fn upload(loc: &Location, rel: &str, path: &Path, multipart_bytes: u64) -> Result<(), TrainError> {
    let io = |e| TrainError::Io(path.display().to_string(), e);
    let size = std::fs::metadata(path).map_err(io)?.len();
    let fail = |e: object_store::Error| TrainError::Data(format!("uploading {}: {e}", loc.child_url(rel)));
    if size < multipart_bytes {
        let bytes = std::fs::read(path).map_err(io)?;
        loc.store.put(&loc.child(rel), PutPayload::from(bytes)).await.map_err(fail)?;
        return Ok(());
    }
    let f = std::fs::File::open(path).map_err(io)?;
    loc.put_multipart_file(rel, f, PART_BYTES)
        .await
        .map_err(|e| TrainError::Data(format!("uploading {}: {e}", loc.child_url(rel))))
}

async fn download(loc: &Location, rel: &str, target: &Path) -> Result<(), TrainError> {
    let fail = |e: object_store::Error| TrainError::Data(format!("downloading {}: {e}", loc.child_url(rel)));
    let tmp = target.with_extension("part");
    let io = |e| TrainError::Io(tmp.display().to_string(), e);
    let mut out = std::fs::File::create(&tmp).map_err(io)?;
    let mut stream = loc.store.get(&loc.child(rel)).await.map_err(fail)?.into_stream();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk.map_err(fail)?).map_err(io)?;
    }
    out.sync_all().map_err(io)?;
    std::fs::rename(&tmp, target).map_err(|e| TrainError::Io(target.display().to_string(), e))
}
