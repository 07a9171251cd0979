//! Planning: input paths and globs → the sorted list of input files → shards.
//!
//! Files are sorted by URL and deduplicated, so the same inputs always give the same shards in
//! the same order, whatever the listing order of the store. Uncompressed JSONL and parquet files
//! larger than `split-size` become several byte-range shards (a line, or a parquet row group,
//! belongs to the shard holding its first byte); gzip and zstd files are one shard each.

use futures::TryStreamExt;
use globset::GlobBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, PipelineResult};
use crate::store;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    Jsonl,
    JsonlGz,
    JsonlZst,
    Parquet,
}

impl InputFormat {
    /// The format implied by a file name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        let jsonl = |stem: &str| stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson");
        if n.ends_with(".parquet") {
            Some(InputFormat::Parquet)
        } else if let Some(stem) = n.strip_suffix(".gz") {
            jsonl(stem).then_some(InputFormat::JsonlGz)
        } else if let Some(stem) = n.strip_suffix(".zst").or_else(|| n.strip_suffix(".zstd")) {
            jsonl(stem).then_some(InputFormat::JsonlZst)
        } else if jsonl(&n) {
            Some(InputFormat::Jsonl)
        } else {
            None
        }
    }
}

/// One input file found by planning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFile {
    /// Absolute local path or URL.
    pub url: String,
    pub size: u64,
    pub format: InputFormat,
}

/// The unit of work of a read stage: a whole file or a byte range of one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shard {
    pub file: InputFile,
    /// Position of the file in the sorted input list.
    pub file_index: u32,
    /// Byte range `[start, end)`; `end == file.size` for the last range of a file.
    pub start: u64,
    pub end: u64,
    /// Position of this range among the file's ranges.
    pub range_index: u32,
}

impl Shard {
    pub fn is_whole_file(&self) -> bool {
        self.start == 0 && self.end == self.file.size
    }

    /// `path [start..end)` for people.
    pub fn describe(&self) -> String {
        if self.is_whole_file() {
            self.file.url.clone()
        } else {
            format!("{} [{}..{})", self.file.url, self.start, self.end)
        }
    }
}

fn glob_start(s: &str) -> Option<usize> {
    s.find(['*', '?', '[', '{'])
}

/// Lists the files one input entry stands for (a file, a directory, or a glob).
pub async fn expand_input(path: &str) -> PipelineResult<Vec<InputFile>> {
    let (base, pattern) = match glob_start(path) {
        Some(i) => {
            let slash = path[..i].rfind('/').ok_or_else(|| {
                PipelineError::Location(path.into(), "a glob needs a directory part (e.g. data/*.jsonl)".into())
            })?;
            (&path[..slash], Some(&path[slash + 1..]))
        }
        None => (path, None),
    };
    let loc = store::resolve(if base.is_empty() { "/" } else { base })?;

    if pattern.is_none() {
        // A single file?
        match loc.store.head(&loc.prefix).await {
            Ok(meta) => {
                let format = InputFormat::from_name(path).ok_or_else(|| unknown_format(path))?;
                return Ok(vec![InputFile { url: path.to_string(), size: meta.size, format }]);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) if loc.local.as_ref().is_some_and(|p| p.is_dir()) => {
                let _ = e;
            }
            Err(e) => return Err(PipelineError::Store { location: path.into(), source: e }),
        }
    }

    let matcher = pattern
        .map(|p| {
            GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| PipelineError::Location(path.into(), format!("bad glob: {e}")))
        })
        .transpose()?;

    let mut files = Vec::new();
    let listed: Vec<object_store::ObjectMeta> = match loc.store.list(Some(&loc.prefix)).try_collect().await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(PipelineError::Store { location: path.into(), source: e }),
    };
    for meta in listed {
        let rel = match meta.location.prefix_match(&loc.prefix) {
            Some(parts) => parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
            None => continue,
        };
        if rel.split('/').any(|part| part.starts_with('.') || part.starts_with('_')) {
            continue; // hidden files, and lehr's own `_lehr/` attempt directories
        }
        let url =
            if loc.local.is_some() { format!("{}/{}", base.trim_end_matches('/'), rel) } else { loc.child_url(&rel) };
        match &matcher {
            Some(m) => {
                if !m.is_match(&rel) {
                    continue;
                }
                let format = InputFormat::from_name(&rel).ok_or_else(|| unknown_format(&url))?;
                files.push(InputFile { url, size: meta.size, format });
            }
            None => {
                // Directory listing: take the files whose format we know.
                if let Some(format) = InputFormat::from_name(&rel) {
                    files.push(InputFile { url, size: meta.size, format });
                }
            }
        }
    }
    if files.is_empty() {
        return Err(PipelineError::Location(
            path.into(),
            "matches no input file (jsonl, jsonl.gz, jsonl.zst or parquet)".into(),
        ));
    }
    Ok(files)
}

fn unknown_format(path: &str) -> PipelineError {
    PipelineError::Location(
        path.into(),
        "cannot tell the format from the name; use .jsonl, .jsonl.gz, .jsonl.zst or .parquet".into(),
    )
}

/// Expands all inputs into a sorted, deduplicated file list.
pub async fn list_inputs(paths: &[String]) -> PipelineResult<Vec<InputFile>> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(expand_input(p).await?);
    }
    files.sort_by(|a, b| a.url.cmp(&b.url));
    files.dedup_by(|a, b| a.url == b.url);
    Ok(files)
}

/// Cuts files into shards: byte ranges of `split_size` for uncompressed JSONL and parquet,
/// whole files otherwise. Empty files still get one (empty) shard so that they appear in reports.
pub fn split(files: &[InputFile], split_size: u64) -> Vec<Shard> {
    let mut shards = Vec::new();
    for (file_index, file) in files.iter().enumerate() {
        let splittable = matches!(file.format, InputFormat::Jsonl | InputFormat::Parquet);
        let ranges: Vec<(u64, u64)> = if splittable && file.size > split_size {
            (0..file.size).step_by(split_size as usize).map(|s| (s, (s + split_size).min(file.size))).collect()
        } else {
            vec![(0, file.size)]
        };
        for (range_index, (start, end)) in ranges.into_iter().enumerate() {
            shards.push(Shard {
                file: file.clone(),
                file_index: file_index as u32,
                start,
                end,
                range_index: range_index as u32,
            });
        }
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(InputFormat::from_name("a/en.jsonl"), Some(InputFormat::Jsonl));
        assert_eq!(InputFormat::from_name("en.jsonl.gz"), Some(InputFormat::JsonlGz));
        assert_eq!(InputFormat::from_name("en.JSONL.ZST"), Some(InputFormat::JsonlZst));
        assert_eq!(InputFormat::from_name("zh.parquet"), Some(InputFormat::Parquet));
        assert_eq!(InputFormat::from_name("notes.txt"), None);
        assert_eq!(InputFormat::from_name("x.tar.gz"), None);
    }

    #[test]
    fn split_covers_each_byte_once() {
        let f = |url: &str, size, format| InputFile { url: url.into(), size, format };
        let files = vec![
            f("/a.jsonl", 10_000, InputFormat::Jsonl),
            f("/b.jsonl.gz", 10_000, InputFormat::JsonlGz),
            f("/d.parquet", 10_000, InputFormat::Parquet),
            f("/c.jsonl", 0, InputFormat::Jsonl),
        ];
        let shards = split(&files, 4096);
        let a: Vec<_> = shards.iter().filter(|s| s.file.url == "/a.jsonl").map(|s| (s.start, s.end)).collect();
        assert_eq!(a, vec![(0, 4096), (4096, 8192), (8192, 10_000)]);
        assert_eq!(shards.iter().filter(|s| s.file.url == "/b.jsonl.gz").count(), 1);
        assert_eq!(shards.iter().filter(|s| s.file.url == "/c.jsonl").count(), 1);
        assert_eq!(shards.iter().filter(|s| s.file.url == "/d.parquet").count(), 3);
    }
}
