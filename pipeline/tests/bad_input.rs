//! Every file of the fixtures' `bad_input/`: bad records are skipped and reported with file and
//! line, every good record is kept, unreadable files fail with a clear error, nothing crashes.
//! Expectations come from the fixture's own `expected.json`.

use std::path::{Path, PathBuf};

use lehr_pipeline::plan::{InputFile, InputFormat, Shard};
use lehr_pipeline::spec::{ByteSize, InputSpec, InvalidUtf8, OutputFormat, OutputSpec, UnreadableFile};
use lehr_pipeline::task::{process, RunOptions, ShardResult, ShardTask, TaskProgress};
use lehr_pipeline::PipelineError;
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bad_input")
}

/// The 5 MiB single-line file: from ../shared when present, otherwise generated alike.
fn huge_file() -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/bad_input/huge_single_line.jsonl");
    if shared.exists() {
        return shared;
    }
    let path = std::env::temp_dir().join(format!("lehr-huge-{}.jsonl", std::process::id()));
    let big = "lehr ".repeat(1 << 20);
    let mut s = serde_json::json!({"id": "huge", "text": big}).to_string();
    s.push('\n');
    s.push_str("{\"id\": \"a\", \"text\": \"small one\"}\n{\"id\": \"b\", \"text\": \"small two\"}\n");
    std::fs::write(&path, s).unwrap();
    path
}

fn input(policy: UnreadableFile) -> InputSpec {
    InputSpec {
        paths: vec![],
        text_field: "text".into(),
        id_field: "id".into(),
        split_size: ByteSize(64 << 20),
        invalid_utf8: InvalidUtf8::Reject,
        unreadable_file: policy,
        max_line_bytes: lehr_pipeline::spec::ByteSize(lehr_pipeline::spec::DEFAULT_MAX_LINE_BYTES),
    }
}

fn run(path: &Path, policy: UnreadableFile) -> Result<ShardResult, PipelineError> {
    run_with(path, input(policy))
}

/// Reads a whole file with these input options and no stage.
fn run_with(path: &Path, input: InputSpec) -> Result<ShardResult, PipelineError> {
    let size = std::fs::metadata(path).unwrap().len();
    let url = path.to_string_lossy().to_string();
    let format = InputFormat::from_name(&url).unwrap();
    let task = ShardTask {
        task_index: 0,
        dedup: None,
        shard: Shard { file: InputFile { url, size, format }, file_index: 0, start: 0, end: size, range_index: 0 },
        input,
        stages: vec![],
        output: OutputSpec {
            path: "/unused".into(),
            formats: vec![OutputFormat::JsonlZst],
            zstd_level: 3,
            overwrite: false,
            partition_by: None,
            attributes: false,
            score_dropped: true,
            tokenize: None,
        },
    };
    process(&task, &TaskProgress::default(), &RunOptions::default(), None).map(|(r, _)| r)
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers(v: Option<&Value>) -> Vec<u64> {
    v.and_then(Value::as_array).map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect()).unwrap_or_default()
}

#[test]
fn every_bad_input_file_behaves_as_expected() {
    let expected = expected();
    assert!(expected.len() >= 16, "expected.json lists the fixture files");
    for (name, exp) in &expected {
        let path = if name == "huge_single_line.jsonl" { huge_file() } else { data_dir().join(name) };
        let outcome = run(&path, UnreadableFile::Fail);
        let unreadable = matches!(name.as_str(), "wrong_schema.parquet" | "text_is_int.parquet" | "not_json.txt.jsonl");
        if unreadable {
            let err = outcome.expect_err(name).to_string();
            assert!(err.contains(name), "{name}: error names the file: {err}");
            match name.as_str() {
                "wrong_schema.parquet" => assert!(err.contains("no `text` column") && err.contains("doc_id"), "{err}"),
                "text_is_int.parquet" => assert!(err.contains("column `text` is i64, expected string"), "{err}"),
                _ => assert!(err.contains("is this a JSONL file?"), "{err}"),
            }
            // With `unreadable-file = "skip"` the file is recorded, not fatal.
            let skipped = run(&path, UnreadableFile::Skip).unwrap();
            assert!(skipped.skipped_file.is_some(), "{name}");
            assert_eq!(skipped.docs_written, 0, "{name}");
            continue;
        }
        let r = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        let policy = exp
            .get("policy_dependent_lines")
            .or_else(|| exp.get("policy_dependent_rows"))
            .and_then(Value::as_object)
            .map(|m| m.len() as u64)
            .unwrap_or(0);
        let good =
            exp.get("good").or_else(|| exp.get("good_complete_lines_recoverable")).and_then(Value::as_u64).unwrap();
        // This reader's policy keeps every policy-dependent record (ids coerced or generated,
        // unknown languages kept, controls left for `normalize`, empty text left for `min-length`).
        assert_eq!(r.read.docs, good + policy, "{name}: documents kept");
        assert_eq!(r.docs_written, r.read.docs, "{name}: no stage, every document is written");
        let mut bad_lines: Vec<u64> = r.read.bad.iter().map(|b| b.line).collect();
        let mut expected_bad = numbers(exp.get("bad_lines").or_else(|| exp.get("bad_rows")));
        if name == "truncated.jsonl.gz" {
            // the cut line is reported as the stream's end, not as a record
            assert_eq!(r.read.warnings.len(), 1, "{name}");
            assert!(r.read.warnings[0].contains("unexpected end of gzip stream"), "{:?}", r.read.warnings);
            expected_bad = vec![good + 1];
        }
        bad_lines.sort();
        assert_eq!(bad_lines, expected_bad, "{name}: bad lines reported");
        assert_eq!(r.read.bad_records, expected_bad.len() as u64, "{name}");
        for b in &r.read.bad {
            assert!(b.file.ends_with(name.as_str()) || name == "huge_single_line.jsonl", "{name}: {b:?}");
            assert!(!b.reason.is_empty());
        }
        if let Some(blank) = exp.get("blank_lines") {
            assert_eq!(r.read.blank_lines, numbers(Some(blank)).len() as u64, "{name}");
        }
    }
}

#[test]
fn bom_and_crlf_are_stripped() {
    let r = run(&data_dir().join("bom_crlf.jsonl"), UnreadableFile::Fail).unwrap();
    assert_eq!(r.read.docs, 5);
    assert_eq!(r.read.bad_records, 0);
}

#[test]
fn invalid_utf8_can_be_repaired_instead() {
    let mut inp = input(UnreadableFile::Fail);
    inp.invalid_utf8 = InvalidUtf8::Replace;
    let r = run_with(&data_dir().join("invalid_utf8.jsonl"), inp).unwrap();
    assert_eq!(r.read.docs, 15);
    assert_eq!(r.read.utf8_repaired, 4);
    assert_eq!(r.read.bad_records, 0);
}

#[test]
fn example_specs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            // Run specs (training schedules) have a sequence length; the rest are pipeline specs.
            let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            if table.contains_key("sequence-length") {
                lehr_schedules::RunSpec::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            } else {
                lehr_pipeline::PipelineSpec::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
            n += 1;
        }
    }
    assert!(n >= 1);
}
