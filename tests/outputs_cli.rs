//! `output.overwrite = true` replaces a finished run: the old manifest goes first, then every
//! file it lists (so parts the new run does not write are gone), and files it never listed stay.

mod common;

use common::*;

fn build(dir: &std::path::Path, inputs: &[&str], out: &std::path::Path, overwrite: bool) -> std::process::Output {
    let paths: Vec<String> =
        inputs.iter().map(|f| format!("\"{}\"", repo().join("examples/data").join(f).display())).collect();
    let spec = format!(
        "version = 1\n[input]\npaths = [{}]\n[output]\npath = \"{}\"\nformats = [\"jsonl.zst\"]\nattributes = false\noverwrite = {overwrite}\n",
        paths.join(", "),
        out.display()
    );
    let path = dir.join(format!("spec-{}.toml", inputs.len()));
    std::fs::write(&path, spec).unwrap();
    lehr().args(["corpus", "build"]).arg(&path).output().unwrap()
}

#[test]
fn overwrite_removes_the_previous_runs_files_and_keeps_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = build(dir.path(), &["en.jsonl", "zh.jsonl", "ko.jsonl"], &out, false);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let parts = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("part-"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(parts(&out).len(), 3);
    std::fs::write(out.join("notes.txt"), "mine").unwrap();

    // without overwrite: refused, nothing touched
    let again = build(dir.path(), &["en.jsonl"], &out, false);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("overwrite"));
    assert_eq!(parts(&out).len(), 3);

    let second = build(dir.path(), &["en.jsonl"], &out, true);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(parts(&out), vec!["part-00000.jsonl.zst".to_string()], "the old run's other parts are gone");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1);
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine", "files no manifest listed stay");
}
