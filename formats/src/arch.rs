//! The model architectures lehr moves between Hugging Face and GGUF — Qwen2 (lehr's own
//! checkpoints), Qwen3 and Llama — and what differs between them: class names, the
//! hyperparameters as `{arch}.*` metadata, the tensor names, and Llama's rotary permutation of
//! q/k (llama.cpp rotates adjacent pairs; Hugging Face's Llama rotates the two halves of a head).

use serde_json::{json, Value};

use crate::gguf::MetaValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Qwen2,
    Qwen3,
    Llama,
}

impl Arch {
    /// From `config.json`'s `architectures[0]`.
    pub fn from_hf_class(class: &str) -> Option<Self> {
        match class {
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" => Some(Arch::Qwen3),
            "LlamaForCausalLM" => Some(Arch::Llama),
            _ => None,
        }
    }

    /// From GGUF's `general.architecture`.
    pub fn from_gguf(name: &str) -> Option<Self> {
        match name {
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }

    /// GGUF's `general.architecture`, which is also Hugging Face's `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }

    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }

    /// Whether q/k rows are permuted between the two layouts.
    pub fn permutes_qk(self) -> bool {
        self == Arch::Llama
    }
}

/// The hyperparameters both formats carry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hyper {
    pub arch: Arch,
    pub layers: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub context: u64,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub vocab: u64,
    pub tied: bool,
}

impl Hyper {
    /// From a Hugging Face `config.json`; `Err` names what is missing or unsupported.
    pub fn from_hf(config: &Value) -> Result<Self, String> {
        let class = config["architectures"][0].as_str().unwrap_or_default();
        let arch = Arch::from_hf_class(class).ok_or_else(|| {
            format!("architecture `{class}`; lehr converts Qwen2ForCausalLM, Qwen3ForCausalLM and LlamaForCausalLM")
        })?;
        if config.get("rope_scaling").is_some_and(|v| !v.is_null())
            || config["rope_parameters"]["rope_type"].as_str().is_some_and(|t| t != "default")
        {
            return Err("RoPE scaling (Llama 3.1 / YaRN) is not converted yet".into());
        }
        let num = |k: &str| config[k].as_u64().ok_or_else(|| format!("no integer `{k}`"));
        let heads = num("num_attention_heads")?;
        let hidden = num("hidden_size")?;
        Ok(Hyper {
            arch,
            layers: num("num_hidden_layers")?,
            hidden,
            intermediate: num("intermediate_size")?,
            heads,
            kv_heads: config["num_key_value_heads"].as_u64().unwrap_or(heads),
            head_dim: config["head_dim"].as_u64().unwrap_or(hidden / heads.max(1)),
            context: num("max_position_embeddings")?,
            rms_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: config["rope_theta"]
                .as_f64()
                .or_else(|| config["rope_parameters"]["rope_theta"].as_f64())
                .unwrap_or(10_000.0),
            vocab: num("vocab_size")?,
            tied: config["tie_word_embeddings"].as_bool().unwrap_or(false),
        })
    }

    /// The `{arch}.*` metadata llama.cpp reads.
    pub fn gguf_meta(&self) -> Vec<(String, MetaValue)> {
        let a = self.arch.name();
        let u = |v: u64| MetaValue::U32(v as u32);
        vec![
            (format!("{a}.context_length"), u(self.context)),
            (format!("{a}.embedding_length"), u(self.hidden)),
            (format!("{a}.block_count"), u(self.layers)),
            (format!("{a}.feed_forward_length"), u(self.intermediate)),
            (format!("{a}.attention.head_count"), u(self.heads)),
            (format!("{a}.attention.head_count_kv"), u(self.kv_heads)),
            (format!("{a}.attention.key_length"), u(self.head_dim)),
            (format!("{a}.attention.value_length"), u(self.head_dim)),
            (format!("{a}.rope.dimension_count"), u(self.head_dim)),
            (format!("{a}.rope.freq_base"), MetaValue::F32(self.rope_theta as f32)),
            (format!("{a}.attention.layer_norm_rms_epsilon"), MetaValue::F32(self.rms_eps as f32)),
            (format!("{a}.vocab_size"), u(self.vocab)),
        ]
    }

    /// From GGUF metadata (`get` looks a key up); `vocab` is the tokenizer's size and `tied`
    /// whether the file lacks `output.weight`.
    pub fn from_gguf(
        arch: Arch,
        get: impl Fn(&str) -> Option<MetaValue>,
        vocab: u64,
        tied: bool,
    ) -> Result<Self, String> {
        let a = arch.name();
        let u = |k: &str| get(&format!("{a}.{k}")).and_then(|v| v.as_u64()).ok_or_else(|| format!("no `{a}.{k}`"));
        let f = |k: &str, default: f64| match get(&format!("{a}.{k}")) {
            Some(MetaValue::F32(v)) => v as f64,
            Some(MetaValue::F64(v)) => v,
            _ => default,
        };
        let heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        Ok(Hyper {
            arch,
            layers: u("block_count")?,
            hidden,
            intermediate: u("feed_forward_length")?,
            heads,
            kv_heads: u("attention.head_count_kv").unwrap_or(heads),
            head_dim: u("attention.key_length").unwrap_or(hidden / heads.max(1)),
            context: u("context_length")?,
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-6),
            rope_theta: f("rope.freq_base", 10_000.0),
            vocab,
            tied,
        })
    }

    /// A Hugging Face `config.json` that transformers loads.
    pub fn hf_config(&self, attention_bias: bool, bos: Option<u64>, eos: Option<u64>) -> Value {
        let mut c = json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.name(),
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.context,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "attention_bias": attention_bias,
            "torch_dtype": "float32",
            "bos_token_id": bos,
            "eos_token_id": eos,
        });
        match self.arch {
            Arch::Qwen2 => c["use_sliding_window"] = json!(false),
            Arch::Qwen3 => c["use_sliding_window"] = json!(false),
            Arch::Llama => c["mlp_bias"] = json!(false),
        }
        c
    }
}

/// Every tensor of a model with `layers` blocks as (Hugging Face name, GGUF name), in file
/// order, the optional ones included (Qwen2's q/k/v biases, Qwen3's q/k norms, the untied
/// `lm_head`). Export and import both map through this one table.
pub fn tensor_names(layers: u64) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = vec![("model.embed_tokens.weight".into(), "token_embd.weight".into())];
    for i in 0..layers {
        for (hf, gg) in [
            ("input_layernorm.weight", "attn_norm.weight"),
            ("self_attn.q_proj.weight", "attn_q.weight"),
            ("self_attn.q_proj.bias", "attn_q.bias"),
            ("self_attn.k_proj.weight", "attn_k.weight"),
            ("self_attn.k_proj.bias", "attn_k.bias"),
            ("self_attn.v_proj.weight", "attn_v.weight"),
            ("self_attn.v_proj.bias", "attn_v.bias"),
            ("self_attn.q_norm.weight", "attn_q_norm.weight"),
            ("self_attn.k_norm.weight", "attn_k_norm.weight"),
            ("self_attn.o_proj.weight", "attn_output.weight"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"),
            ("mlp.gate_proj.weight", "ffn_gate.weight"),
            ("mlp.up_proj.weight", "ffn_up.weight"),
            ("mlp.down_proj.weight", "ffn_down.weight"),
        ] {
            names.push((format!("model.layers.{i}.{hf}"), format!("blk.{i}.{gg}")));
        }
    }
    names.push(("model.norm.weight".into(), "output_norm.weight".into()));
    names.push(("lm_head.weight".into(), "output.weight".into()));
    names
}

/// The heads whose rows a Llama q/k tensor (GGUF name) is permuted over, if it is one.
pub fn permuted_heads(h: &Hyper, gguf_name: &str) -> Option<u64> {
    if !h.arch.permutes_qk() {
        return None;
    }
    if gguf_name.ends_with(".attn_q.weight") || gguf_name.ends_with(".attn_q.bias") {
        Some(h.heads)
    } else if gguf_name.ends_with(".attn_k.weight") || gguf_name.ends_with(".attn_k.bias") {
        Some(h.kv_heads)
    } else {
        None
    }
}

/// `values` of tensor `gguf_name` (dims in ggml order) moved between the two q/k layouts when
/// it is a permuted one (`inverse`: llama.cpp's back to Hugging Face's), else unchanged.
pub fn permute_qk(h: &Hyper, gguf_name: &str, dims: &[u64], values: Vec<f32>, inverse: bool) -> Vec<f32> {
    match permuted_heads(h, gguf_name) {
        Some(heads) => {
            let rows = *dims.get(1).unwrap_or(&dims[0]) as usize;
            permute_rows(&values, rows, heads as usize, inverse)
        }
        None => values,
    }
}

/// Llama's q/k rows from Hugging Face's layout to llama.cpp's (`inverse`: back): within each of
/// `heads` heads, row `2i + j` of llama.cpp's is row `j·d/2 + i` of Hugging Face's.
pub fn permute_rows(values: &[f32], rows: usize, heads: usize, inverse: bool) -> Vec<f32> {
    let cols = values.len() / rows.max(1);
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (ggml, hf) = (h * hd + 2 * i + j, h * hd + j * half + i);
                let (dst, src) = if inverse { (hf, ggml) } else { (ggml, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_halves_and_inverts() {
        // 2 heads of dim 4, rows of 1: [a0 a1 a2 a3 | b0 b1 b2 b3] → [a0 a2 a1 a3 | b0 b2 b1 b3]
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let p = permute_rows(&x, 8, 2, false);
        assert_eq!(p, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(permute_rows(&p, 8, 2, true), x);
        let m: Vec<f32> = (0..8 * 3).map(|v| v as f32).collect();
        assert_eq!(permute_rows(&permute_rows(&m, 8, 2, false), 8, 2, true), m);
    }

    #[test]
    fn hyperparameters_round_trip_through_gguf_metadata() {
        let config = json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 30, "hidden_size": 576,
            "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "vocab_size": 49152,
            "tie_word_embeddings": true});
        let h = Hyper::from_hf(&config).unwrap();
        assert_eq!(h.head_dim, 64);
        let meta: std::collections::HashMap<String, MetaValue> = h.gguf_meta().into_iter().collect();
        let back = Hyper::from_gguf(Arch::Llama, |k| meta.get(k).cloned(), 49152, true).unwrap();
        assert_eq!(back.layers, 30);
        assert_eq!((back.kv_heads, back.head_dim, back.context), (3, 64, 8192));
        assert!((back.rms_eps - 1e-5).abs() < 1e-12 && back.rope_theta == 100000.0);
        let err = Hyper::from_hf(&json!({"architectures": ["GPT2LMHeadModel"]})).unwrap_err();
        assert!(err.contains("GPT2LMHeadModel"), "{err}");
        let scaled = json!({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3"}});
        assert!(Hyper::from_hf(&scaled).unwrap_err().contains("RoPE scaling"));
    }
}
