//! Checkpoints that a crash or a full disk can never leave half-written under the name
//! `latest` points at: every file is written into a temporary directory, fsynced, listed with
//! its size in `checkpoint.json`, the directory is fsynced and renamed into place, its parent
//! fsynced, and only then does `latest` move (written to a temporary name, fsynced, renamed).
//! On resume a checkpoint whose files are missing or short is skipped with a warning, and the
//! newest complete one is used instead.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The list of a checkpoint's files and their sizes, written last inside the directory.
pub const SEAL_NAME: &str = "checkpoint.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Seal {
    files: Vec<(String, u64)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io(path.display().to_string(), e)
}

/// fsync of a file or a directory (a directory's fsync makes the names in it durable).
pub fn sync_path(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// Writes `bytes` to `path` and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(path))
}

/// The temporary directory a checkpoint named `name` is written into under `root`.
pub fn staging_dir(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".{name}.partial"))
}

/// Seals the staged directory `staging` and moves it to `root/name`, durably; returns the final
/// directory. A checkpoint of the same name already there (a rerun of a step) is replaced.
pub fn commit_dir(staging: &Path, root: &Path, name: &str) -> Result<PathBuf, TrainError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(staging).map_err(io(staging))? {
        let entry = entry.map_err(io(staging))?;
        let path = entry.path();
        if path.is_file() {
            sync_path(&path)?;
            let size = entry.metadata().map_err(io(&path))?.len();
            files.push((entry.file_name().to_string_lossy().to_string(), size));
        }
    }
    files.sort();
    let seal = serde_json::to_vec_pretty(&Seal { files }).expect("seal serializes");
    write_synced(&staging.join(SEAL_NAME), &seal)?;
    sync_path(staging)?;
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(staging, &dir).map_err(io(&dir))?;
    sync_path(root)?;
    Ok(dir)
}

/// Points `root/latest` at `name`, durably (write a temporary name, fsync, rename, fsync root).
pub fn point_latest(root: &Path, name: &str) -> Result<(), TrainError> {
    let tmp = root.join("latest.tmp");
    write_synced(&tmp, name.as_bytes())?;
    std::fs::rename(&tmp, root.join("latest")).map_err(io(root))?;
    sync_path(root)
}

/// Why `dir` is not a complete checkpoint, if it is not: a file its seal lists is missing or
/// has another size, or (for checkpoints from before seals) a core file is missing.
pub fn torn(dir: &Path) -> Option<String> {
    let seal_path = dir.join(SEAL_NAME);
    match std::fs::read(&seal_path) {
        Ok(bytes) => {
            let seal: Seal = match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => return Some(format!("{} is unreadable ({e})", seal_path.display())),
            };
            for (name, size) in &seal.files {
                match std::fs::metadata(dir.join(name)) {
                    Ok(m) if m.len() == *size => {}
                    Ok(m) => return Some(format!("{name} has {} bytes, {size} were written", m.len())),
                    Err(_) => return Some(format!("{name} is missing")),
                }
            }
            None
        }
        Err(_) => ["trainer.json", "model.safetensors", "optimizer.safetensors"]
            .iter()
            .find(|f| !dir.join(f).is_file())
            .map(|f| format!("{f} is missing (and there is no {SEAL_NAME})")),
    }
}

/// The checkpoint to resume from under `root` (`out/checkpoints`): the one `latest` names when
/// it is complete; else, with a warning, the newest complete `step-*` directory.
pub fn resume_point(root: &Path) -> Result<Option<PathBuf>, TrainError> {
    let latest = root.join("latest");
    let named = match std::fs::read_to_string(&latest) {
        Ok(name) => Some(name.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(TrainError::Io(latest.display().to_string(), e)),
    };
    if let Some(name) = &named {
        let dir = root.join(name);
        match torn(&dir) {
            None => return Ok(Some(dir)),
            Some(why) => eprintln!("warning: checkpoint {} is torn ({why}); looking for an older one", dir.display()),
        }
    }
    let mut steps: Vec<(u64, PathBuf)> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                Some((name.strip_prefix("step-")?.parse::<u64>().ok()?, e.path()))
            })
            .collect(),
        Err(_) => return Ok(None),
    };
    steps.sort();
    for (_, dir) in steps.into_iter().rev() {
        if Some(dir.file_name().expect("named").to_string_lossy().to_string()) == named {
            continue;
        }
        match torn(&dir) {
            None => {
                if named.is_some() {
                    eprintln!("warning: resuming from {} instead", dir.display());
                }
                return Ok(Some(dir));
            }
            Some(why) => eprintln!("warning: skipping torn checkpoint {} ({why})", dir.display()),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(root: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let s = staging_dir(root, name);
        std::fs::create_dir_all(&s).unwrap();
        for (f, b) in files {
            std::fs::write(s.join(f), b).unwrap();
        }
        s
    }

    const CORE: [(&str, &[u8]); 3] =
        [("trainer.json", b"{}"), ("model.safetensors", b"weights"), ("optimizer.safetensors", b"moments")];

    #[test]
    fn latest_never_names_a_torn_checkpoint_and_resume_skips_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let s = stage(root, "step-00000004", &CORE);
        let d4 = commit_dir(&s, root, "step-00000004").unwrap();
        assert!(!s.exists() && torn(&d4).is_none());
        point_latest(root, "step-00000004").unwrap();

        // A crash while writing step 8: the staging directory exists, latest is untouched.
        stage(root, "step-00000008", &CORE[..1]);
        assert_eq!(resume_point(root).unwrap().unwrap(), d4);

        // Step 8 committed and named, then a file of it is cut short (a disk that lied).
        let s = stage(root, "step-00000008", &CORE);
        let d8 = commit_dir(&s, root, "step-00000008").unwrap();
        point_latest(root, "step-00000008").unwrap();
        assert_eq!(resume_point(root).unwrap().unwrap(), d8);
        std::fs::write(d8.join("model.safetensors"), b"wei").unwrap();
        assert!(torn(&d8).unwrap().contains("model.safetensors has 3 bytes, 7 were written"));
        assert_eq!(resume_point(root).unwrap().unwrap(), d4, "the torn step 8 is skipped");
        // a missing file too
        std::fs::remove_file(d8.join("model.safetensors")).unwrap();
        assert!(torn(&d8).unwrap().contains("missing"));
        assert_eq!(resume_point(root).unwrap().unwrap(), d4);
        // a checkpoint from before seals counts when its core files are there
        std::fs::remove_file(d4.join(SEAL_NAME)).unwrap();
        assert!(torn(&d4).is_none());
        std::fs::remove_file(d4.join("optimizer.safetensors")).unwrap();
        assert_eq!(resume_point(root).unwrap(), None);
    }

    #[test]
    fn a_step_written_twice_replaces_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let d = commit_dir(&stage(root, "step-00000002", &CORE), root, "step-00000002").unwrap();
        commit_dir(&stage(root, "step-00000002", &[("trainer.json", b"{\"step\":2}")]), root, "step-00000002").unwrap();
        assert_eq!(std::fs::read(d.join("trainer.json")).unwrap(), b"{\"step\":2}");
        assert!(!d.join("model.safetensors").exists());
    }
}
