//! Splitting: whatever the shard size, the shards of a file read exactly the documents of the
//! whole file, in order, and bad records keep their file line (or row) numbers.

use std::path::{Path, PathBuf};

use lehr_pipeline::manifest;
use lehr_pipeline::plan::{split, InputFile, InputFormat};
use lehr_pipeline::spec::{ByteSize, InputSpec, InvalidUtf8, OutputFormat, OutputSpec, UnreadableFile};
use lehr_pipeline::task::{process, RunOptions, ShardResult, ShardTask, TaskProgress};
use lehr_pipeline::Document;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Reads a file cut into shards of `split_size`; returns the documents and the shard results.
fn read_split(path: &Path, format: InputFormat, split_size: u64) -> (Vec<Document>, Vec<ShardResult>) {
    let size = std::fs::metadata(path).unwrap().len();
    let file = InputFile { url: path.to_string_lossy().into(), size, format };
    let mut docs = Vec::new();
    let mut results = Vec::new();
    for (i, shard) in split(&[file], split_size).into_iter().enumerate() {
        let task = ShardTask {
            task_index: i as u32,
            dedup: None,
            shard,
            input: InputSpec {
                paths: vec![],
                text_field: "text".into(),
                id_field: "id".into(),
                split_size: ByteSize(split_size),
                invalid_utf8: InvalidUtf8::Reject,
                unreadable_file: UnreadableFile::Fail,
                max_line_bytes: lehr_pipeline::spec::ByteSize(lehr_pipeline::spec::DEFAULT_MAX_LINE_BYTES),
            },
            stages: vec![],
            output: OutputSpec {
                path: "/unused".into(),
                formats: vec![OutputFormat::JsonlZst],
                zstd_level: 1,
                overwrite: false,
                partition_by: None,
                attributes: false,
                score_dropped: true,
                tokenize: None,
            },
        };
        let (r, files) = process(&task, &TaskProgress::default(), &RunOptions::default(), None).unwrap();
        for f in files {
            let bytes = f.body.into_vec().unwrap();
            let text = zstd::decode_all(&bytes[..]).unwrap();
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                docs.push(serde_json::from_slice(line).unwrap());
            }
        }
        results.push(r);
    }
    (docs, results)
}

#[test]
fn jsonl_ranges_read_every_line_once() {
    let path = repo().join("examples/data/en.jsonl");
    let (whole, _) = read_split(&path, InputFormat::Jsonl, 1 << 30);
    assert_eq!(whole.len(), 600);
    for split_size in [4096, 10_000, 65_536, 333_333] {
        let (docs, results) = read_split(&path, InputFormat::Jsonl, split_size);
        assert!(results.len() > 1, "{split_size}");
        assert_eq!(docs, whole, "split at {split_size}");
    }
}

#[test]
fn split_jsonl_reports_file_line_numbers() {
    let path = repo().join("tests/data/bad_input/trailing_garbage.jsonl");
    let (_, mut results) = read_split(&path, InputFormat::Jsonl, 4096.min(std::fs::metadata(&path).unwrap().len() / 3));
    assert!(results.len() >= 3);
    manifest::resolve_lines(&mut results);
    let mut lines: Vec<u64> = results.iter().flat_map(|r| r.read.bad.iter().map(|b| b.line)).collect();
    lines.sort();
    assert_eq!(lines, vec![4, 5]);
}

#[test]
fn parquet_row_groups_split_by_byte_range() {
    use polars::prelude::*;
    // 900 zh documents in row groups of 40 rows; every 97th text is null.
    let text = std::fs::read_to_string(repo().join("examples/data/zh.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<String> = rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let texts: Vec<Option<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| if i % 97 == 5 { None } else { Some(r["text"].as_str().unwrap().to_string()) })
        .collect();
    let n = ids.len();
    let mut df = DataFrame::new(n, vec![Column::new("id".into(), ids), Column::new("text".into(), texts)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zh.parquet");
    let mut f = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(&mut f).with_row_group_size(Some(40)).finish(&mut df).unwrap();
    drop(f);

    let (whole, whole_results) = read_split(&path, InputFormat::Parquet, 1 << 30);
    assert_eq!(whole_results.len(), 1);
    let nulls: Vec<u64> = (0..n as u64).filter(|i| i % 97 == 5).map(|i| i + 1).collect();
    assert_eq!(whole.len(), n - nulls.len());
    for split_size in [8192, 50_000, 200_000] {
        let (docs, results) = read_split(&path, InputFormat::Parquet, split_size);
        assert!(results.len() > 2, "{split_size}");
        assert_eq!(docs, whole, "split at {split_size}");
        let mut bad: Vec<u64> = results.iter().flat_map(|r| r.read.bad.iter().map(|b| b.line)).collect();
        bad.sort();
        assert_eq!(bad, nulls, "row numbers count from the start of the file");
        let rows_read: u64 = results.iter().map(|r| r.read.lines).sum();
        assert_eq!(rows_read, n as u64);
    }
}
