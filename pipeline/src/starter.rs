//! `lehr corpus init`: a commented starter spec for the given inputs. It parses back into a
//! valid [`PipelineSpec`](crate::PipelineSpec) (tested), so scripts can start from it.

/// Renders a TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub fn starter_spec(inputs: &[String], output: &str, name: Option<&str>) -> String {
    let paths = inputs.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
    let name = name.map(quote).unwrap_or_else(|| quote("corpus"));
    format!(
        r#"# lehr corpus pipeline (docs/pipeline.md documents every key).
# Run it:   lehr corpus build THIS_FILE            (embedded coordinator + local workers)
#           lehr corpus build THIS_FILE --coordinator http://HOST:7070
version = 1
name = {name}

[input]
# Local paths, directories, globs (`*`, `**`, `?`, `[..]`, `{{a,b}}`) or object-store URLs
# (s3://bucket/prefix/*.jsonl.zst). Formats by extension: .jsonl .jsonl.gz .jsonl.zst .parquet
paths = [{paths}]
# JSON keys / parquet columns of the text and the id (a missing id gets FILE@OFFSET).
text-field = "text"
id-field = "id"
# JSONL and parquet files bigger than this are split into byte-range shards (parquet by row group).
split-size = "64MiB"
# A line that is not valid UTF-8: "reject" (skip it, report file:line) or "replace" (U+FFFD).
invalid-utf8 = "reject"
# A file that cannot be read at all (wrong schema, not JSONL): "fail" the job, or "skip" it
# and list it in the manifest.
unreadable-file = "fail"

# Stages run in this order, fused in one pass over each shard.
[[stage]]
type = "normalize"
# "nfc" (default), "nfkc" (also folds full-width forms) or "none"
unicode = "nfc"
# drop control characters (except \n, \t), BOM and zero-width spaces; unify line ends
strip-control = true
# one space between words, trimmed lines, at most one blank line in a row
whitespace = true

# mask e-mails, phone numbers (international, zh, ko, US formats) and IP addresses
[[stage]]
type = "pii"
email = "<EMAIL>"
phone = "<PHONE>"
ip = "<IP>"

[[stage]]
type = "min-length"
# characters (not bytes) after normalization, so CJK and Latin text are measured alike
min-chars = 50
# max-chars = 1000000

[output]
path = {output}
# "jsonl.zst" and/or "parquet"; one part-NNNNN file per shard, plus manifest.json and rejects.jsonl
formats = ["jsonl.zst", "parquet"]
zstd-level = 3
# refuse to write into a directory that already holds a finished job unless true
overwrite = false
"#,
        output = quote(output),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;

    #[test]
    fn starter_parses_and_validates() {
        let text = starter_spec(&["data/*.jsonl".into(), "s3://b/x.parquet".into()], "out dir", Some("demo \"x\""));
        let spec = PipelineSpec::from_toml(&text).unwrap();
        assert_eq!(spec.input.paths, vec!["data/*.jsonl", "s3://b/x.parquet"]);
        assert_eq!(spec.output.path, "out dir");
        assert_eq!(spec.name.as_deref(), Some("demo \"x\""));
        assert_eq!(spec.stages.len(), 3);
    }
}
