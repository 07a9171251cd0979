//! Outputs in bounded memory: a shard writer whose spools spill to temporary files after a few
//! KiB and whose parquet row groups hold a few KiB of text writes the same documents as one
//! that keeps everything in memory (jsonl.zst byte for byte), and a spilled body uploads in
//! multipart chunks to exactly its bytes.

use std::path::Path;

use lehr_pipeline::plan::{InputFile, InputFormat, Shard};
use lehr_pipeline::read::{read_shard, ReadStats};
use lehr_pipeline::spec::{ByteSize, InputSpec, InvalidUtf8, OutputFormat, OutputSpec, UnreadableFile};
use lehr_pipeline::spool::Body;
use lehr_pipeline::write::ShardWriter;
use lehr_pipeline::Document;

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

fn read(path: &Path, format: InputFormat) -> Vec<Document> {
    let size = std::fs::metadata(path).unwrap().len();
    let shard = Shard {
        file: InputFile { url: path.to_string_lossy().into(), size, format },
        file_index: 0,
        start: 0,
        end: size,
        range_index: 0,
    };
    let mut docs = Vec::new();
    read_shard(&shard, &input(), &mut ReadStats::default(), &mut |d| {
        docs.push(d);
        Ok(())
    })
    .unwrap();
    docs
}

fn write(docs: &[Document], spool: usize, batch: usize) -> Vec<(&'static str, Body)> {
    let output = OutputSpec {
        path: "/unused".into(),
        formats: vec![OutputFormat::JsonlZst, OutputFormat::Parquet],
        zstd_level: 3,
        overwrite: false,
        partition_by: None,
        attributes: false,
        score_dropped: true,
        tokenize: None,
    };
    let mut w = ShardWriter::with_limits(&output, None, spool, batch).unwrap();
    for d in docs {
        w.write(d.clone()).unwrap();
    }
    w.finish().unwrap()
}

#[tokio::test]
async fn spilled_outputs_hold_the_same_documents() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/zh.jsonl");
    let docs = read(&sample, InputFormat::Jsonl);
    assert!(docs.len() > 100);
    let whole = write(&docs, 1 << 30, 1 << 30);
    let spilled = write(&docs, 4096, 8192);
    assert!(whole.iter().all(|(_, b)| b.in_memory().is_some()));
    assert!(spilled.iter().all(|(_, b)| b.in_memory().is_none()), "every format spilled to a temporary file");
    let dir = tempfile::tempdir().unwrap();
    let out = lehr_pipeline::store::resolve(&dir.path().to_string_lossy()).unwrap();
    for ((ext, a), (ext2, b)) in whole.into_iter().zip(spilled) {
        assert_eq!(ext, ext2);
        let (a_sha, b_sha, b_len) = (a.sha256.clone(), b.sha256.clone(), b.len);
        if ext == "jsonl.zst" {
            assert_eq!(a_sha, b_sha, "jsonl.zst is byte-identical whatever the spool limit");
        }
        // the spilled body goes to the store in multipart chunks, byte for byte
        let name = format!("spilled.{ext}");
        out.put_body(&name, b).await.unwrap();
        let on_disk = std::fs::read(dir.path().join(&name)).unwrap();
        assert_eq!(on_disk.len() as u64, b_len);
        assert_eq!(lehr_pipeline::write::sha256_hex(&on_disk), b_sha);
        out.put_body(&format!("whole.{ext}"), a).await.unwrap();
        // and reads back as the same documents
        let format = if ext == "parquet" { InputFormat::Parquet } else { InputFormat::JsonlZst };
        let back = read(&dir.path().join(&name), format);
        let texts = |v: &[Document]| v.iter().map(|d| (d.id.clone(), d.text.clone())).collect::<Vec<_>>();
        assert_eq!(texts(&back), texts(&docs), "{ext}");
        assert_eq!(texts(&read(&dir.path().join(format!("whole.{ext}")), format)), texts(&docs));
    }
}
