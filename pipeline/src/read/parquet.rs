//! Parquet through polars. A shard is a byte range of the file: it reads the row groups that
//! start inside it (a whole-file shard reads them all), so large files split by row group
//! without the coordinator reading any parquet metadata. The file must have a string `text`
//! column (named by
//! `input.text-field`); `id` may be a string or an integer column (integers become strings),
//! `source` and `lang` are optional strings; other columns are kept as extra fields, rendered as
//! strings. A null `text` skips the row (counted, with its 1-based row number); a null `id` gets
//! a generated one.

use polars::prelude::*;

use super::{file_name, BadRecord, ReadStats};
use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::plan::Shard;
use crate::spec::InputSpec;

/// Reads the row groups whose first byte lies in the shard's range; returns them and the file
/// row number of their first row. Row groups are stored in order, so the chosen ones are
/// contiguous rows.
fn read_row_groups<R: polars::io::mmap::MmapBytesReader>(
    mut reader: ParquetReader<R>,
    shard: &Shard,
) -> PolarsResult<(DataFrame, usize)> {
    if shard.is_whole_file() {
        return Ok((reader.finish()?, 0));
    }
    let meta = reader.get_metadata()?.clone();
    let (mut first, mut rows, mut offset) = (None, 0usize, 0usize);
    for rg in &meta.row_groups {
        let start = rg.full_byte_range().start;
        if (shard.start..shard.end).contains(&start) {
            first.get_or_insert(offset);
            rows += rg.num_rows();
        }
        offset += rg.num_rows();
    }
    let first = first.unwrap_or(0);
    Ok((reader.with_slice(Some((first, rows))).finish()?, first))
}

/// A byte-range shard of a remote file, without downloading the file: a sparse temporary file
/// of the object's size holding the footer (metadata) and the byte ranges of the row groups that
/// start in the shard, each fetched with a range GET; the rest are holes the reader never
/// touches. Must run on a blocking thread of a tokio runtime.
fn fetch_sparse(shard: &Shard) -> PipelineResult<std::fs::File> {
    use std::io::{Seek, SeekFrom, Write};
    let url = &shard.file.url;
    let size = shard.file.size;
    let io = |e: std::io::Error| PipelineError::Io { location: url.clone(), source: e };
    let unreadable = |message: String| PipelineError::UnreadableFile { file: url.clone(), message };
    if size < 12 {
        return Err(unreadable(format!("{size} bytes is too small for a parquet file")));
    }
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| PipelineError::Other("remote reads need a tokio runtime".into()))?;
    let loc = crate::store::resolve(url)?;
    let get = |range: std::ops::Range<u64>| -> PipelineResult<bytes::Bytes> {
        handle
            .block_on(loc.store.get_range(&loc.prefix, range))
            .map_err(|e| PipelineError::Store { location: url.clone(), source: e })
    };
    let tail = get(size - 8..size)?;
    if &tail[4..] != b"PAR1" {
        return Err(unreadable("no parquet footer (the file does not end with PAR1)".into()));
    }
    let meta_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if meta_len + 12 > size {
        return Err(unreadable(format!("a footer of {meta_len} bytes does not fit in {size} bytes")));
    }
    let mut tmp = tempfile::tempfile().map_err(|e| PipelineError::Io { location: "temp file".into(), source: e })?;
    tmp.set_len(size).map_err(io)?;
    let put = |tmp: &mut std::fs::File, at: u64, bytes: &[u8]| -> PipelineResult<()> {
        tmp.seek(SeekFrom::Start(at)).map_err(io)?;
        tmp.write_all(bytes).map_err(io)
    };
    put(&mut tmp, 0, b"PAR1")?;
    let footer_start = size - 8 - meta_len;
    put(&mut tmp, footer_start, &get(footer_start..size)?)?;
    let meta = ParquetReader::new(tmp.try_clone().map_err(io)?)
        .get_metadata()
        .map_err(|e| unreadable(format!("not a readable parquet file: {e}")))?
        .clone();
    for rg in &meta.row_groups {
        let r = rg.full_byte_range();
        if (shard.start..shard.end).contains(&r.start) {
            put(&mut tmp, r.start, &get(r.start..r.end)?)?;
        }
    }
    tmp.rewind().map_err(io)?;
    Ok(tmp)
}

pub fn read_parquet(
    shard: &Shard,
    input: &InputSpec,
    stats: &mut ReadStats,
    on_doc: &mut dyn FnMut(Document) -> PipelineResult<()>,
) -> PipelineResult<()> {
    let url = &shard.file.url;
    let schema_err = |message: String| PipelineError::UnreadableFile { file: url.clone(), message };
    let polars_err = |e: PolarsError| PipelineError::UnreadableFile {
        file: url.clone(),
        message: format!("not a readable parquet file: {e}"),
    };
    let (df, first_row) = if crate::store::is_remote(url) && shard.is_whole_file() {
        // Parquet needs random access: a whole-file shard fetches the object to a temporary
        // file (streamed), as it reads every row group anyway.
        let mut tmp =
            tempfile::tempfile().map_err(|e| PipelineError::Io { location: "temp file".into(), source: e })?;
        let mut src = super::source::open_from(url, 0, shard.file.size)?;
        std::io::copy(&mut src, &mut tmp).map_err(|e| PipelineError::Io { location: url.clone(), source: e })?;
        read_row_groups(ParquetReader::new(tmp), shard).map_err(polars_err)?
    } else if crate::store::is_remote(url) {
        let tmp = fetch_sparse(shard)?;
        read_row_groups(ParquetReader::new(tmp), shard).map_err(polars_err)?
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let f = std::fs::File::open(path).map_err(|e| PipelineError::Io { location: url.clone(), source: e })?;
        read_row_groups(ParquetReader::new(f), shard).map_err(polars_err)?
    };
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let text_col = df.column(&input.text_field).map_err(|_| {
        schema_err(format!(
            "no `{}` column (columns: {}); set input.text-field to the text column",
            input.text_field,
            names.join(", ")
        ))
    })?;
    if text_col.dtype() != &DataType::String {
        return Err(schema_err(format!("column `{}` is {}, expected string", input.text_field, text_col.dtype())));
    }
    let texts = text_col.str().map_err(polars_err)?;
    let string_col = |name: &str, allow_int: bool| -> PipelineResult<Option<Column>> {
        let Ok(col) = df.column(name) else { return Ok(None) };
        let ok = col.dtype() == &DataType::String
            || col.dtype() == &DataType::Null
            || (allow_int && col.dtype().is_integer());
        if !ok {
            return Err(schema_err(format!(
                "column `{name}` is {}, expected string{}",
                col.dtype(),
                if allow_int { " or integer" } else { "" }
            )));
        }
        Ok(Some(col.cast(&DataType::String).map_err(polars_err)?))
    };
    let ids = string_col(&input.id_field, true)?;
    let sources = string_col("source", false)?;
    let langs = string_col("lang", false)?;
    let id_is_int = df.column(&input.id_field).map(|c| c.dtype().is_integer()).unwrap_or(false);
    let known = [input.text_field.as_str(), input.id_field.as_str(), "source", "lang"];
    let mut extras: Vec<(String, Column)> = Vec::new();
    for name in &names {
        if known.contains(&name.as_str()) {
            continue;
        }
        let col = df.column(name).map_err(polars_err)?;
        if let Ok(c) = col.cast(&DataType::String) {
            extras.push((name.clone(), c));
        } else {
            stats
                .warnings
                .push(format!("{url}: column `{name}` ({}) cannot be rendered as text and was not kept", col.dtype()));
        }
    }
    let get = |col: &Option<Column>, row: usize| -> Option<String> {
        col.as_ref().and_then(|c| c.str().ok()).and_then(|s| s.get(row)).map(str::to_string)
    };
    let file = file_name(url).to_string();
    for (row, text) in texts.iter().enumerate() {
        stats.lines += 1;
        let row_no = first_row as u64 + row as u64 + 1;
        let Some(text) = text else {
            stats.bad(BadRecord {
                file: url.clone(),
                line: row_no,
                line_resolved: true,
                byte_offset: None,
                reason: format!("row {row_no}: `{}` is null", input.text_field),
                stage: None,
                id: None,
            });
            continue;
        };
        let id = match get(&ids, row) {
            Some(id) => {
                if id_is_int {
                    stats.ids_coerced += 1;
                }
                id
            }
            None => {
                stats.ids_generated += 1;
                format!("{file}#row{row_no}")
            }
        };
        let mut doc = Document::new(id, text);
        doc.source = get(&sources, row);
        doc.lang = get(&langs, row);
        for (name, col) in &extras {
            if let Some(v) = col.str().ok().and_then(|s| s.get(row)) {
                doc.extra.insert(name.clone(), serde_json::Value::String(v.to_string()));
            }
        }
        stats.docs += 1;
        stats.bytes += doc.text.len() as u64;
        on_doc(doc)?;
    }
    Ok(())
}
