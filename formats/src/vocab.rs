//! Tokenizers between Hugging Face (`tokenizer.json`, `tokenizer_config.json`,
//! `chat_template.jinja`) and GGUF (`tokenizer.ggml.*`, `tokenizer.chat_template`), for
//! byte-level BPE. llama.cpp knows a pre-tokenizer (the split before BPE) only by name, so the
//! name is chosen by matching the Hugging Face pre-tokenizer against the ones below, and import
//! writes the named one back. A tokenizer that matches none is refused with the reason.

use std::path::Path;

use serde_json::{json, Value};

use crate::gguf::MetaValue;

/// Qwen2's split (and that of tokenizers `lehr tokenizer train` makes): llama.cpp's `qwen2`.
pub const QWEN2_PRE: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split (digits in threes): llama.cpp's `llama-bpe`.
pub const LLAMA3_PRE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizers known by name: (llama.cpp's name, Hugging Face's pre-tokenizer).
fn known() -> Vec<(&'static str, Value)> {
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    vec![
        ("qwen2", json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PRE), byte_level(false)]})),
        ("llama-bpe", json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_PRE), byte_level(false)]})),
        (
            "smollm",
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        ),
        ("gpt-2", byte_level(true)),
    ]
}

/// What decides the ids: each step's type and the settings that change its output.
fn signature(pre: &Value) -> Option<Vec<String>> {
    let steps: Vec<&Value> = match pre["type"].as_str()? {
        "Sequence" => pre["pretokenizers"].as_array()?.iter().collect(),
        _ => vec![pre],
    };
    steps
        .into_iter()
        .map(|p| {
            Some(match p["type"].as_str()? {
                "Split" => format!(
                    "Split {:?} {} {}",
                    p["pattern"]["Regex"].as_str().or(p["pattern"]["String"].as_str())?,
                    p["behavior"].as_str().unwrap_or_default(),
                    p["invert"].as_bool().unwrap_or(false)
                ),
                "Digits" => format!("Digits {}", p["individual_digits"].as_bool().unwrap_or(false)),
                "ByteLevel" => format!(
                    "ByteLevel {} {}",
                    p["add_prefix_space"].as_bool().unwrap_or(true),
                    p["use_regex"].as_bool().unwrap_or(true)
                ),
                other => other.to_string(),
            })
        })
        .collect()
}

/// llama.cpp's name for a Hugging Face pre-tokenizer, if it knows it.
pub fn pre_name(pre: &Value) -> Option<&'static str> {
    let sig = signature(pre)?;
    known().into_iter().find(|(_, p)| signature(p).as_ref() == Some(&sig)).map(|(n, _)| n)
}

/// A token named in `tokenizer_config.json`: a string or `{"content": …}`.
fn token_text(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

/// The `tokenizer.ggml.*` metadata of the tokenizer in `tokenizer.json` (with the
/// `tokenizer_config.json` and `chat_template.jinja` beside it, when present) for a model of
/// `vocab_size` embeddings. `Err` says why it cannot be converted.
pub fn gguf_meta(tokenizer_json: &Path, vocab_size: usize) -> Result<Vec<(String, MetaValue)>, String> {
    let read = |p: &Path| -> Result<Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", p.display()))
    };
    let t = read(tokenizer_json)?;
    let dir = tokenizer_json.parent().unwrap_or(Path::new("."));
    let config = match dir.join("tokenizer_config.json") {
        p if p.is_file() => read(&p)?,
        _ => json!({}),
    };
    let model = &t["model"];
    if model["type"] != "BPE" {
        return Err(format!("a {} tokenizer; the GGUF conversion handles byte-level BPE", model["type"]));
    }
    let pre = pre_name(&t["pre_tokenizer"]).ok_or_else(|| {
        format!(
            "its pre-tokenizer ({}) is none that llama.cpp knows by name (`tokenizer.ggml.pre`: qwen2, llama-bpe, \
             smollm, gpt-2), so llama.cpp would split text differently; use a tokenizer with one of those splits \
             (`lehr tokenizer train` makes Qwen2's)",
            t["pre_tokenizer"]
        )
    })?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let vocab = model["vocab"].as_object().ok_or("no model.vocab")?;
    let mut ids = std::collections::HashMap::new();
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| format!("token {tok:?} has no integer id"))? as usize;
        if id >= vocab_size {
            return Err(format!("token id {id} is past the model's vocabulary of {vocab_size}"));
        }
        tokens[id] = Some((tok.clone(), 1));
        ids.insert(tok.clone(), id as u64);
    }
    let mut first_special = None;
    for a in t["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else { continue };
        let special = a["special"].as_bool().unwrap_or(false);
        if (id as usize) < vocab_size {
            tokens[id as usize] = Some((content.to_string(), if special { 3 } else { 4 }));
        }
        ids.insert(content.to_string(), id);
        if special && first_special.is_none() {
            first_special = Some(id);
        }
    }
    let id_of = |key: &str| token_text(&config[key]).and_then(|s| ids.get(s).copied());
    let eos = id_of("eos_token").or_else(|| ids.get("<|endoftext|>").copied()).or(first_special);
    let bos = id_of("bos_token");
    let unk = id_of("unk_token");
    let pad = id_of("pad_token").or(eos);
    // BOS is added when the config says so, or when the post-processor's template starts with it
    let template_bos =
        t["post_processor"]["single"][0]["SpecialToken"]["id"].as_str().and_then(|s| ids.get(s)).is_some();
    let add_bos = config["add_bos_token"].as_bool().unwrap_or(template_bos) && bos.is_some();
    // ids the tokenizer does not use (the model's vocabulary is padded): unused tokens
    let (names, types): (Vec<MetaValue>, Vec<MetaValue>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (s, ty) = t.unwrap_or_else(|| (format!("[PAD{i}]"), 5));
            (MetaValue::String(s), MetaValue::I32(ty))
        })
        .unzip();
    let merges: Vec<MetaValue> = model["merges"]
        .as_array()
        .ok_or("no model.merges")?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(MetaValue::String(s.clone())),
            Value::Array(p) if p.len() == 2 => Ok(MetaValue::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            other => Err(format!("a merge that is neither \"a b\" nor [a, b]: {other}")),
        })
        .collect::<Result<_, _>>()?;
    let mut meta = vec![
        ("tokenizer.ggml.model".to_string(), MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), MetaValue::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), MetaValue::Array(names)),
        ("tokenizer.ggml.token_type".to_string(), MetaValue::Array(types)),
        ("tokenizer.ggml.merges".to_string(), MetaValue::Array(merges)),
        ("tokenizer.ggml.add_bos_token".to_string(), MetaValue::Bool(add_bos)),
    ];
    for (key, id) in [("bos", bos), ("eos", eos), ("unknown", unk), ("padding", pad)] {
        if let Some(id) = id {
            meta.push((format!("tokenizer.ggml.{key}_token_id"), MetaValue::U32(id as u32)));
        }
    }
    let template = match dir.join("chat_template.jinja") {
        p if p.is_file() => Some(std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?),
        _ => config["chat_template"].as_str().map(str::to_string),
    };
    if let Some(template) = template {
        meta.push(("tokenizer.chat_template".into(), MetaValue::String(template)));
    }
    Ok(meta)
}

/// A Hugging Face tokenizer rebuilt from GGUF metadata.
pub struct HfTokenizer {
    pub tokenizer_json: Value,
    pub tokenizer_config: Value,
    pub vocab_size: usize,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
}

/// Rebuilds `tokenizer.json` and `tokenizer_config.json` from `tokenizer.ggml.*` (`get` looks
/// a key up).
pub fn from_gguf<'a>(get: impl Fn(&str) -> Option<&'a MetaValue>) -> Result<HfTokenizer, String> {
    let strings = |k: &str| -> Option<Vec<String>> {
        match get(k) {
            Some(MetaValue::Array(v)) => Some(v.iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect()),
            _ => None,
        }
    };
    let tokens = strings("tokenizer.ggml.tokens").ok_or("no tokenizer.ggml.tokens")?;
    let types: Vec<i64> = match get("tokenizer.ggml.token_type") {
        Some(MetaValue::Array(v)) => v
            .iter()
            .map(|t| match t {
                MetaValue::I32(x) => *x as i64,
                other => other.as_u64().unwrap_or(1) as i64,
            })
            .collect(),
        _ => vec![1; tokens.len()],
    };
    let merges = strings("tokenizer.ggml.merges").ok_or("no tokenizer.ggml.merges (a BPE tokenizer is needed)")?;
    let model = get("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or_default();
    let pre = get("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("default");
    let pre_tokenizer = known().into_iter().find(|(n, _)| *n == pre).map(|(_, p)| p);
    let (true, Some(pre_tokenizer)) = (model == "gpt2", pre_tokenizer) else {
        return Err(format!(
            "tokenizer `{model}` with pre-tokenizer `{pre}`; lehr rebuilds byte-level BPE (gpt2) with qwen2, \
             llama-bpe, smollm or gpt-2 splits"
        ));
    };
    let id = |k: &str| get(&format!("tokenizer.ggml.{k}_token_id")).and_then(MetaValue::as_u64);
    let (bos, eos, unk, pad) = (id("bos"), id("eos"), id("unknown"), id("padding"));
    let add_bos = matches!(get("tokenizer.ggml.add_bos_token"), Some(MetaValue::Bool(true))) && bos.is_some();

    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, (tok, ty)) in tokens.iter().zip(types.iter().chain(std::iter::repeat(&1))).enumerate() {
        match ty {
            3 | 4 => {
                added.push(json!({
                    "id": i, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": *ty == 4, "special": *ty == 3,
                }));
                // in the model's vocabulary too, as transformers writes it: an added token the
                // vocabulary lacks gets a new id from `tokenizers` (SmolLM2's <|im_end|>: 49137
                // instead of 2, the id the model emits)
                vocab.insert(tok.clone(), json!(i));
            }
            5 => {}
            _ => {
                vocab.insert(tok.clone(), json!(i));
            }
        }
    }
    let name = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize).cloned());
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let post_processor = match (add_bos, name(bos)) {
        (true, Some(b)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b.clone(): {"id": b, "ids": [bos], "tokens": [b]}},
        }),
        _ => byte_level.clone(),
    };
    let tokenizer_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": name(unk), "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(bos), "eos_token": name(eos),
        "unk_token": name(unk), "pad_token": name(pad.or(eos)), "add_bos_token": add_bos,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(t) = get("tokenizer.chat_template").and_then(MetaValue::as_str) {
        tokenizer_config["chat_template"] = json!(t);
    }
    Ok(HfTokenizer { tokenizer_json, tokenizer_config, vocab_size: tokens.len(), bos, eos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizers_are_named_as_llama_cpp_names_them() {
        for (name, pre) in known() {
            assert_eq!(pre_name(&pre), Some(name));
        }
        // settings that do not change ids do not matter; ones that do, do
        let mut qwen = known()[0].1.clone();
        qwen["pretokenizers"][1]["trim_offsets"] = json!(false);
        assert_eq!(pre_name(&qwen), Some("qwen2"));
        qwen["pretokenizers"][1]["add_prefix_space"] = json!(true);
        assert_eq!(pre_name(&qwen), None);
        assert_eq!(pre_name(&json!({"type": "Metaspace", "replacement": "▁"})), None);
    }
}
