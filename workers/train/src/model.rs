//! A decoder-only transformer of the Qwen2 / Llama family in tch: RMSNorm, rotary position
//! embeddings (Hugging Face's rotate-half layout), SwiGLU, grouped-query attention through
//! `scaled_dot_product_attention`, optional QKV bias (Qwen2), optional QK-norm (Qwen3) and tied
//! embeddings, plus the µP-style knobs YuLan-Mini and MiniCPM train with (embedding scale,
//! residual scaling by depth, logit scale; z-loss in the trainer). Parameter names are Hugging
//! Face's (`model.layers.0.self_attn.q_proj.weight`, ...) so a safetensors file and a
//! `config.json` are a checkpoint `transformers` loads, and the reverse: [`save_hf`] folds the
//! knobs into the weights (exactly: each is a constant factor on a linear map), writing a
//! Qwen2 checkpoint, or a Qwen3 one when QK-norm is on.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Device, Kind, Tensor};

use crate::TrainError;

/// The model's shape, in Hugging Face `config.json` terms (unknown keys there are ignored on
/// import; these are the ones that change the computation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Biases on q/k/v projections (Qwen2: true; Llama: false).
    #[serde(default, alias = "attention_bias")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// Standard deviation of the initial weights (`initializer_range`).
    #[serde(default = "default_init", alias = "initializer_range")]
    pub init_std: f64,
    /// Token embeddings are multiplied by this (µP; YuLan-Mini's `scale_emb` = 10).
    #[serde(default = "one")]
    pub embedding_scale: f64,
    /// When set, each residual branch (attention and MLP output) is multiplied by
    /// `depth_scale / sqrt(num_hidden_layers)` (YuLan-Mini / MiniCPM `scale_depth` = 1.4).
    #[serde(default)]
    pub depth_scale: Option<f64>,
    /// The final hidden state is multiplied by this before the output projection (µP width
    /// scaling: base width / hidden size).
    #[serde(default = "one")]
    pub logit_scale: f64,
    /// RMSNorm over each head's queries and keys before RoPE (Qwen3's `q_norm`/`k_norm`).
    #[serde(default)]
    pub qk_norm: bool,
    /// z-loss coefficient: the trainer adds `z_loss · logsumexp(logits)²` per token (PaLM: 1e-4).
    #[serde(default)]
    pub z_loss: f64,
}

fn one() -> f64 {
    1.0
}

fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> i64 {
    4096
}
fn default_init() -> f64 {
    0.02
}

/// `(name, description)` of the model presets.
pub const MODEL_PRESETS: &[(&str, &str)] = &[
    ("tiny", "2 layers, hidden 64, 4 heads / 2 KV heads: CPU tests and demos"),
    ("small", "4 layers, hidden 256, FFN 704, 4 heads / 2 KV heads: CPU benchmarks"),
    ("tiny-mup", "tiny with YuLan-Mini's knobs: embedding scale 10, depth scale 1.4, z-loss 1e-4, init std 5e-3"),
    (
        "yulan-mini",
        "YuLan-Mini's shape and knobs: 56 layers, hidden 1920, FFN 4800, 30 heads / 6 KV, tied, QKV bias, \
         init std 5e-5, embedding scale 10, depth scale 1.4, z-loss 1e-4 (pretraining_anchors §1.1, §1.4)",
    ),
    (
        "qwen2.5-0.5b",
        "Qwen2.5-0.5B's shape: 24 layers, hidden 896, FFN 4864, 14 heads / 2 KV, RoPE 1e6, tied, QKV bias",
    ),
    (
        "qwen2.5-1.5b",
        "Qwen2.5-1.5B's shape: 28 layers, hidden 1536, FFN 8960, 12 heads / 2 KV, RoPE 1e6, tied, QKV bias",
    ),
];

impl ModelConfig {
    /// A preset's shape with the data's vocabulary size (Qwen2.5's numbers from its
    /// config.json on the Hugging Face hub).
    pub fn preset(name: &str, vocab_size: i64) -> Result<Self, TrainError> {
        let (hidden, inter, layers, heads, kv, theta, tied) = match name {
            "tiny" | "tiny-mup" => (64, 160, 2, 4, 2, 10_000.0, true),
            "yulan-mini" => (1920, 4800, 56, 30, 6, 10_000.0, true),
            "small" => (256, 704, 4, 4, 2, 10_000.0, true),
            "qwen2.5-0.5b" => (896, 4864, 24, 14, 2, 1_000_000.0, true),
            "qwen2.5-1.5b" => (1536, 8960, 28, 12, 2, 1_000_000.0, true),
            other => {
                let names: Vec<&str> = MODEL_PRESETS.iter().map(|p| p.0).collect();
                return Err(TrainError::Config(format!(
                    "unknown model preset `{other}`; presets: {}",
                    names.join(", ")
                )));
            }
        };
        let mut c = ModelConfig {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            rope_theta: theta,
            rms_norm_eps: 1e-6,
            qkv_bias: true,
            tie_word_embeddings: tied,
            max_position_embeddings: 32_768,
            init_std: 0.02,
            embedding_scale: 1.0,
            depth_scale: None,
            logit_scale: 1.0,
            qk_norm: false,
            z_loss: 0.0,
        };
        match name {
            "tiny-mup" => (c.init_std, c.embedding_scale, c.depth_scale, c.z_loss) = (5e-3, 10.0, Some(1.4), 1e-4),
            "yulan-mini" => (c.init_std, c.embedding_scale, c.depth_scale, c.z_loss) = (5e-5, 10.0, Some(1.4), 1e-4),
            _ => {}
        }
        Ok(c)
    }

    /// The factor on each residual branch.
    pub fn residual_multiplier(&self) -> f64 {
        self.depth_scale.map(|d| d / (self.num_hidden_layers as f64).sqrt()).unwrap_or(1.0)
    }

    /// Whether the weights need folding for Hugging Face (a µP knob is not 1).
    pub fn has_scales(&self) -> bool {
        self.embedding_scale != 1.0 || self.logit_scale != 1.0 || self.residual_multiplier() != 1.0
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!("head dimension {} must be even for rotary embeddings", self.head_dim()));
        }
        for (name, v) in [("embedding_scale", self.embedding_scale), ("logit_scale", self.logit_scale)] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be a positive number, not {v}"));
            }
        }
        if self.depth_scale.is_some_and(|d| !(d.is_finite() && d > 0.0)) || self.z_loss.is_nan() || self.z_loss < 0.0 {
            return bad("depth_scale must be positive and z_loss at least 0".into());
        }
        Ok(())
    }

    /// The `config.json` `transformers` reads: a `Qwen2ForCausalLM`, or a `Qwen3ForCausalLM`
    /// with QK-norm. `tied` is the exported tying (folding the scales unties a tied model).
    pub fn hf_config_json(&self, tied: bool) -> serde_json::Value {
        let (arch, ty) = if self.qk_norm { ("Qwen3ForCausalLM", "qwen3") } else { ("Qwen2ForCausalLM", "qwen2") };
        serde_json::json!({
            "architectures": [arch],
            "model_type": ty,
            "attention_bias": self.qkv_bias,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": tied,
            "attention_dropout": 0.0,
            "use_sliding_window": false,
            "initializer_range": self.init_std,
            "torch_dtype": "float32",
            "use_cache": false,
        })
    }
}

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        RmsNorm { weight: p.var("weight", &[dim], nn::Init::Const(1.0)), eps }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = (xf * (var + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }
}

struct Layer {
    input_norm: RmsNorm,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    post_norm: RmsNorm,
    gate: nn::Linear,
    up: nn::Linear,
    down: nn::Linear,
}

pub struct Model {
    pub config: ModelConfig,
    /// The kind matrix products run in: `Float`, or `BFloat16` for mixed precision (the
    /// parameters stay fp32 masters; each product casts its input and weight, as autocast
    /// does; norms, softmax statistics and the residual stream stay fp32).
    pub compute: Kind,
    embed: nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Option<nn::Linear>,
}

fn linear(p: nn::Path, i: i64, o: i64, bias: bool, std: f64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: std },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(p, i, o, cfg)
}

/// Keys and values of earlier positions per block (`[B, kv_heads, L, head_dim]`, after RoPE),
/// for generation.
#[derive(Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Positions cached.
    pub fn len(&self) -> i64 {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.size()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Layer {
    /// Block parameters under `l` (`model.layers.N`), initialized like [`Model::new`]'s.
    fn new(l: nn::Path, c: &ModelConfig) -> Self {
        let (hd, std) = (c.head_dim(), c.init_std);
        let a = &l / "self_attn";
        let f = &l / "mlp";
        Layer {
            input_norm: RmsNorm::new(&l / "input_layernorm", c.hidden_size, c.rms_norm_eps),
            q_norm: c.qk_norm.then(|| RmsNorm::new(&a / "q_norm", hd, c.rms_norm_eps)),
            k_norm: c.qk_norm.then(|| RmsNorm::new(&a / "k_norm", hd, c.rms_norm_eps)),
            q: linear(&a / "q_proj", c.hidden_size, c.num_attention_heads * hd, c.qkv_bias, std),
            k: linear(&a / "k_proj", c.hidden_size, c.num_key_value_heads * hd, c.qkv_bias, std),
            v: linear(&a / "v_proj", c.hidden_size, c.num_key_value_heads * hd, c.qkv_bias, std),
            o: linear(&a / "o_proj", c.num_attention_heads * hd, c.hidden_size, false, std),
            post_norm: RmsNorm::new(&l / "post_attention_layernorm", c.hidden_size, c.rms_norm_eps),
            gate: linear(&f / "gate_proj", c.hidden_size, c.intermediate_size, false, std),
            up: linear(&f / "up_proj", c.hidden_size, c.intermediate_size, false, std),
            down: linear(&f / "down_proj", c.intermediate_size, c.hidden_size, false, std),
        }
    }
}

/// Initializing draws from libtorch's one global CPU generator, so every draw lehr makes holds
/// this lock: a seeded initialization in one thread is never interleaved with another's draws.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn generator() -> std::sync::MutexGuard<'static, ()> {
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

impl Model {
    /// Appends `n` blocks (new variables in `vs`, freshly initialized; the caller gives them
    /// their values) and returns their variable names. Refused for a model with a depth scale,
    /// whose residual factor depends on the block count (growing would change every block).
    pub fn add_layers(&mut self, vs: &nn::VarStore, n: usize) -> Result<Vec<String>, TrainError> {
        if self.config.depth_scale.is_some() {
            return Err(TrainError::Config(
                "growing a model with depth_scale (its residual factor is depth_scale / sqrt(layers), so new \
                 blocks would change every block) is not supported; train it at its final depth"
                    .into(),
            ));
        }
        let before: std::collections::BTreeSet<String> = vs.variables().into_keys().collect();
        let m = vs.root() / "model";
        let _draws = generator();
        for _ in 0..n {
            let i = self.layers.len() as i64;
            self.layers.push(Layer::new(&m / "layers" / i, &self.config));
            self.config.num_hidden_layers = i + 1;
        }
        let mut added: Vec<String> = vs.variables().into_keys().filter(|k| !before.contains(k)).collect();
        added.sort();
        Ok(added)
    }

    /// Builds the parameters under `vs`'s root with Hugging Face names, initialized with
    /// N(0, init_std) (norms at 1, biases at 0) from libtorch's global generator as it stands
    /// (a loader that overwrites them next needs no seed).
    pub fn new(vs: &nn::VarStore, config: &ModelConfig) -> Result<Self, TrainError> {
        let _draws = generator();
        Self::build(vs, config)
    }

    /// [`Model::new`] with the global generator seeded first, as one step: no other thread's
    /// draws (another model's initialization or loading, a growth) land between the seed and
    /// this model's, so the same seed gives the same weights in a busy process.
    pub fn seeded(vs: &nn::VarStore, config: &ModelConfig, seed: i64) -> Result<Self, TrainError> {
        let _draws = generator();
        tch::manual_seed(seed);
        Self::build(vs, config)
    }

    fn build(vs: &nn::VarStore, config: &ModelConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let c = config;
        let root = vs.root();
        let m = &root / "model";
        let std = c.init_std;
        let embed = nn::embedding(
            &m / "embed_tokens",
            c.vocab_size,
            c.hidden_size,
            nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, ..Default::default() },
        );
        let layers = (0..c.num_hidden_layers).map(|i| Layer::new(&m / "layers" / i, c)).collect();
        let norm = RmsNorm::new(&m / "norm", c.hidden_size, c.rms_norm_eps);
        let lm_head =
            (!c.tie_word_embeddings).then(|| linear(&root / "lm_head", c.hidden_size, c.vocab_size, false, std));
        Ok(Model { config: c.clone(), compute: Kind::Float, embed, layers, norm, lm_head })
    }

    /// `(cos, sin)` of shape `[T, head_dim]` for positions `0..t` (HF's layout: the frequencies
    /// twice, for rotate-half).
    fn rope(&self, t: i64, device: Device) -> (Tensor, Tensor) {
        let hd = self.config.head_dim();
        let inv: Vec<f32> =
            (0..hd / 2).map(|i| (1.0 / self.config.rope_theta.powf((2 * i) as f64 / hd as f64)) as f32).collect();
        let inv_freq = Tensor::from_slice(&inv).to_device(device);
        let pos = Tensor::arange(t, (Kind::Float, device));
        let freqs = pos.outer(&inv_freq);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos(), emb.sin())
    }

    /// cos/sin `[B, 1, T, head_dim]` at explicit positions `[B, T]` (the same products as
    /// [`Model::rope`]'s, so a packed row's values equal an unpacked one's).
    fn rope_at(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let hd = self.config.head_dim();
        let inv: Vec<f32> =
            (0..hd / 2).map(|i| (1.0 / self.config.rope_theta.powf((2 * i) as f64 / hd as f64)) as f32).collect();
        let inv_freq = Tensor::from_slice(&inv).to_device(positions.device());
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos(), emb.sin())
    }

    /// `x · Wᵀ + b` in the compute kind.
    fn lin(&self, l: &nn::Linear, x: &Tensor) -> Tensor {
        if self.compute == Kind::Float {
            return l.forward(x);
        }
        let k = self.compute;
        x.to_kind(k).linear(&l.ws.to_kind(k), l.bs.as_ref().map(|b| b.to_kind(k)))
    }

    /// Logits `[B, T, vocab]` of token ids `[B, T]` (in the compute kind).
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        self.head(&self.hidden(ids, None))
    }

    /// The last layer's output `[B, T, hidden]` (before the final norm). `packed` gives each
    /// token's position `[B, T]` (i64) and which tokens each may attend to `[B, 1, T, T]`
    /// (bool), for rows that hold several sequences sharing a prefix; without it, positions
    /// count from 0 and attention is causal.
    pub fn hidden(&self, ids: &Tensor, packed: Option<(&Tensor, &Tensor)>) -> Tensor {
        self.hidden_inner(ids, packed.map(|p| p.0), packed.map(|p| p.1), None)
    }

    /// [`Model::hidden`] for generation: `ids` `[B, T]` at `positions` `[B, T]` attend, through
    /// `mask` `[B, 1, T, cached + T]` (bool), to the keys and values `cache` holds from earlier
    /// calls and to their own, which are appended to it. Without a mask (rows without padding):
    /// causal over the new tokens when the cache is empty, everything cached otherwise.
    pub fn hidden_cached(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Tensor {
        self.hidden_inner(ids, Some(positions), mask, Some(cache))
    }

    fn hidden_inner(
        &self,
        ids: &Tensor,
        positions: Option<&Tensor>,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let c = &self.config;
        let (b, t) = ids.size2().expect("ids must be [batch, time]");
        let hd = c.head_dim();
        let (cos, sin) = match positions {
            None => self.rope(t, ids.device()),
            Some(positions) => self.rope_at(positions),
        };
        // decoding from a cache attends to all of it; a fresh sequence is causal
        let causal = t > 1 || cache.as_ref().is_none_or(|c| c.is_empty());
        // As HF does: cos/sin in the activations' kind.
        let (cos, sin) = (cos.to_kind(self.compute), sin.to_kind(self.compute));
        let rotate = |x: &Tensor| -> Tensor {
            let half = hd / 2;
            let x1 = x.narrow(-1, 0, half);
            let x2 = x.narrow(-1, half, half);
            let rotated = Tensor::cat(&[&x2.neg(), &x1], -1);
            x * &cos + rotated * &sin
        };
        let n_rep = c.num_attention_heads / c.num_key_value_heads;
        let mut h = self.embed.forward(ids);
        if c.embedding_scale != 1.0 {
            h *= c.embedding_scale;
        }
        let r = c.residual_multiplier();
        let branch = |x: Tensor| if r != 1.0 { x * r } else { x };
        let head_norm = |n: &Option<RmsNorm>, x: Tensor| match n {
            Some(n) => n.forward(&x),
            None => x,
        };
        if let Some(cache) = cache.as_deref_mut() {
            cache.layers.resize_with(self.layers.len(), || None);
        }
        for (li, l) in self.layers.iter().enumerate() {
            let x = l.input_norm.forward(&h);
            let q = head_norm(&l.q_norm, self.lin(&l.q, &x).view([b, t, c.num_attention_heads, hd])).transpose(1, 2);
            let k = head_norm(&l.k_norm, self.lin(&l.k, &x).view([b, t, c.num_key_value_heads, hd])).transpose(1, 2);
            let v = self.lin(&l.v, &x).view([b, t, c.num_key_value_heads, hd]).transpose(1, 2);
            let (q, k) = (rotate(&q).to_kind(self.compute), rotate(&k).to_kind(self.compute));
            let v = v.to_kind(self.compute);
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => {
                    let slot = &mut cache.layers[li];
                    let (k, v) = match slot.take() {
                        Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2), Tensor::cat(&[&pv, &v], 2)),
                        None => (k, v),
                    };
                    *slot = Some((k.shallow_clone(), v.shallow_clone()));
                    (k, v)
                }
                None => (k, v),
            };
            // generation lets attention share the key/value heads (no copy of the whole cache per
            // step); training repeats them
            let gqa = cache.is_some() && n_rep > 1;
            let (k, v) = if n_rep > 1 && !gqa {
                (k.repeat_interleave_self_int(n_rep, 1, None), v.repeat_interleave_self_int(n_rep, 1, None))
            } else {
                (k, v)
            };
            let att = match mask {
                None => Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, causal, None, gqa),
                Some(mask) => {
                    Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask.shallow_clone()), 0.0, false, None, gqa)
                }
            };
            let att = att.transpose(1, 2).contiguous().view([b, t, c.num_attention_heads * hd]);
            // Not `+=`: an in-place add would overwrite a tensor autograd saved for backward.
            h = &h + branch(self.lin(&l.o, &att));
            let x = l.post_norm.forward(&h);
            let act = self.lin(&l.gate, &x).silu() * self.lin(&l.up, &x);
            h = &h + branch(self.lin(&l.down, &act));
        }
        h
    }

    /// Logits of [`Model::hidden`]'s output (any leading shape): final norm, logit scale, head.
    pub fn head(&self, h: &Tensor) -> Tensor {
        let c = &self.config;
        let mut h = self.norm.forward(h);
        if c.logit_scale != 1.0 {
            h *= c.logit_scale;
        }
        match &self.lm_head {
            Some(head) => self.lin(head, &h),
            None => h.to_kind(self.compute).matmul(&self.embed.ws.to_kind(self.compute).tr()),
        }
    }
}

/// Training FLOPs per token (PaLM's count): 6 × (non-embedding parameters + the output
/// projection) + 12 × layers × hidden × sequence length (attention scores).
pub fn flops_per_token(vs: &nn::VarStore, c: &ModelConfig, seq: i64) -> f64 {
    let total: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let embed = c.vocab_size * c.hidden_size;
    // Input embeddings are a lookup; the output projection is a matmul, tied or not.
    let n = (total - embed - if c.tie_word_embeddings { 0 } else { embed }) + embed;
    6.0 * n as f64 + 12.0 * (c.num_hidden_layers * c.hidden_size * seq) as f64
}

/// lehr's own copy of a checkpoint whose Hugging Face weights had knobs folded in: the
/// unfolded weights and the full config, which resuming and [`load_hf`] prefer.
pub const RAW_WEIGHTS: &str = "lehr-model.safetensors";
pub const RAW_CONFIG: &str = "lehr-config.json";

/// The weights as Hugging Face computes them: the scales folded into the linear maps
/// (embedding scale into `embed_tokens`, the residual factor into `o_proj` and `down_proj`,
/// the logit scale into `lm_head`, untying a tied model when the two differ), and zero
/// `o_proj` biases for a Qwen3 export with `attention_bias`. Returns the tensors (name order)
/// and whether the export is tied.
pub fn hf_weights(vs: &nn::VarStore, c: &ModelConfig) -> (Vec<(String, Tensor)>, bool) {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach())).collect();
    let r = c.residual_multiplier();
    let untie = c.tie_word_embeddings && (c.embedding_scale != 1.0 || c.logit_scale != 1.0);
    let mut extra = Vec::new();
    for (name, t) in named.iter_mut() {
        if r != 1.0 && (name.ends_with("self_attn.o_proj.weight") || name.ends_with("mlp.down_proj.weight")) {
            *t = &*t * r;
        } else if name == "model.embed_tokens.weight" {
            if untie {
                extra.push(("lm_head.weight".to_string(), &*t * c.logit_scale));
            }
            if c.embedding_scale != 1.0 {
                *t = &*t * c.embedding_scale;
            }
        } else if name == "lm_head.weight" && c.logit_scale != 1.0 {
            *t = &*t * c.logit_scale;
        }
    }
    if c.qk_norm && c.qkv_bias {
        for i in 0..c.num_hidden_layers {
            let zeros = Tensor::zeros([c.hidden_size], (Kind::Float, Device::Cpu));
            extra.push((format!("model.layers.{i}.self_attn.o_proj.bias"), zeros));
        }
    }
    named.extend(extra);
    named.sort_by(|a, b| a.0.cmp(&b.0));
    (named, c.tie_word_embeddings && !untie)
}

/// Writes `model.safetensors` (Hugging Face names, knobs folded) and `config.json` into `dir`;
/// with knobs, also lehr's unfolded [`RAW_WEIGHTS`] and [`RAW_CONFIG`].
pub fn save_hf(vs: &nn::VarStore, config: &ModelConfig, dir: &Path) -> Result<(), TrainError> {
    let io = |e| TrainError::Io(dir.display().to_string(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let (named, tied) = hf_weights(vs, config);
    write_safetensors(&named, &dir.join("model.safetensors"))?;
    let json = serde_json::to_vec_pretty(&config.hf_config_json(tied)).expect("json");
    std::fs::write(dir.join("config.json"), json).map_err(io)?;
    if needs_raw(config) {
        let mut raw: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        raw.sort_by(|a, b| a.0.cmp(&b.0));
        write_safetensors(&raw, &dir.join(RAW_WEIGHTS))?;
        std::fs::write(dir.join(RAW_CONFIG), serde_json::to_vec_pretty(config).expect("json")).map_err(io)?;
    }
    Ok(())
}

/// Whether a checkpoint of this model carries lehr's unfolded copy too.
pub fn needs_raw(config: &ModelConfig) -> bool {
    config.has_scales() || (config.qk_norm && config.qkv_bias) || config.z_loss != 0.0
}

/// The weights file a lehr model of `config` resumes from in checkpoint `dir`.
pub fn resume_weights(dir: &Path, config: &ModelConfig) -> std::path::PathBuf {
    dir.join(if needs_raw(config) { RAW_WEIGHTS } else { "model.safetensors" })
}

/// Reads a Hugging Face Qwen2/Llama checkpoint directory (`config.json` + `model.safetensors`)
/// into a new model on `device`.
pub fn load_hf(dir: &Path, device: Device) -> Result<(nn::VarStore, Model), TrainError> {
    let (config, weights) = hf_config(dir)?;
    let mut vs = nn::VarStore::new(device);
    let model = Model::new(&vs, &config)?;
    load_weights(&mut vs, &weights)?;
    Ok((vs, model))
}

/// Loads `vs`'s variables from a safetensors file, or from transformers' sharded layout (the
/// `model.safetensors.index.json` that names each tensor's shard). Every variable must be
/// there with its shape; other tensors are ignored; values convert to the variable's dtype.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<(), TrainError> {
    if !path.to_string_lossy().ends_with(".index.json") {
        return Ok(vs.load(path)?);
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io(path.display().to_string(), e))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let map = index["weight_map"]
        .as_object()
        .ok_or_else(|| TrainError::Config(format!("{}: no weight_map", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards.sort();
    shards.dedup();
    let mut tensors = std::collections::HashMap::new();
    for shard in shards {
        if shard.contains('/') || shard.contains("..") {
            return Err(TrainError::Config(format!("{}: shard name {shard:?} leaves the directory", path.display())));
        }
        tensors.extend(Tensor::read_safetensors(dir.join(shard))?);
    }
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| TrainError::Config(format!("{}: no tensor `{name}` in its shards", path.display())))?;
            if t.size() != var.size() {
                return Err(TrainError::Config(format!(
                    "{}: `{name}` is {:?}, the model's {:?}",
                    path.display(),
                    t.size(),
                    var.size()
                )));
            }
            var.copy_(t);
        }
        Ok(())
    })
}

/// A checkpoint directory's model config and the weights file that holds exactly it: lehr's
/// unfolded weights when the checkpoint has knobs, else `model.safetensors`.
pub fn hf_config(dir: &Path) -> Result<(ModelConfig, std::path::PathBuf), TrainError> {
    if dir.join(RAW_CONFIG).is_file() && dir.join(RAW_WEIGHTS).is_file() {
        // lehr's own checkpoint with knobs: the unfolded weights, exactly as trained.
        let path = dir.join(RAW_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Io(path.display().to_string(), e))?;
        let config: ModelConfig =
            serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        return Ok((config, dir.join(RAW_WEIGHTS)));
    }
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| TrainError::Io(dir.join("config.json").display().to_string(), e))?;
    let mut config: ModelConfig = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", dir.join("config.json").display())))?;
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    // Qwen2 always has q/k/v biases; Llama says so with `attention_bias`.
    if raw["model_type"] == "qwen2" {
        config.qkv_bias = true;
    }
    let unsupported = |what: String| Err(TrainError::Config(format!("{}: {what}", dir.display())));
    match raw["model_type"].as_str() {
        Some("qwen2" | "llama") | None => {}
        Some("qwen3") => {
            // Qwen3's attention_bias also puts a bias on o_proj, which lehr's model lacks.
            if config.qkv_bias {
                return unsupported("a Qwen3 with attention_bias (o_proj biases) is not supported".into());
            }
            config.qk_norm = true;
        }
        Some(other) => return unsupported(format!("model_type `{other}` (lehr reads qwen2, qwen3 and llama)")),
    }
    let scaling = raw.get("rope_scaling").filter(|v| !v.is_null());
    let rope_type = raw["rope_parameters"]["rope_type"].as_str().unwrap_or("default");
    if scaling.is_some() || rope_type != "default" {
        return unsupported("RoPE scaling (Llama 3 / YaRN) is not supported yet".into());
    }
    if let Some(theta) = raw["rope_parameters"]["rope_theta"].as_f64() {
        config.rope_theta = theta;
    }
    if let Some(hd) = raw["head_dim"].as_i64() {
        if hd != config.head_dim() {
            return unsupported(format!("head_dim {hd} differs from hidden_size / heads = {}", config.head_dim()));
        }
    }
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    Ok((config, if !single.exists() && index.exists() { index } else { single }))
}

/// safetensors with `{"format": "pt"}` metadata, which `transformers` requires (tch's writer
/// leaves the metadata out). Float tensors are written as F32 or BF16 as they are.
pub fn write_safetensors(named: &[(String, Tensor)], path: &Path) -> Result<(), TrainError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in named {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let (dtype, bytes) = match t.kind() {
            Kind::BFloat16 => {
                let v: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1))?;
                ("BF16", v.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect::<Vec<u8>>())
            }
            _ => {
                let v: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1))?;
                ("F32", v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
        };
        let start = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.size(), "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    // The data must start 8-byte aligned.
    while !(h.len() + 8).is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).map_err(|e| TrainError::Io(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;

    #[test]
    fn tiny_qwen2_learns_a_sequence_on_cpu() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(1);
        let cfg = ModelConfig {
            vocab_size: 32,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 1,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            qkv_bias: true,
            tie_word_embeddings: true,
            max_position_embeddings: 64,
            init_std: 0.02,
            embedding_scale: 1.0,
            depth_scale: None,
            logit_scale: 1.0,
            qk_norm: false,
            z_loss: 0.0,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Model::new(&vs, &cfg).unwrap();
        let mut opt = nn::AdamW::default().build(&vs, 3e-3).unwrap();
        let seq = Tensor::arange(33, (Kind::Int64, Device::Cpu)).remainder(7).view([1, 33]);
        let (x, y) = (seq.narrow(1, 0, 32), seq.narrow(1, 1, 32));
        let mut losses = Vec::new();
        for _ in 0..60 {
            let loss = model.forward(&x).view([-1, 32]).cross_entropy_for_logits(&y.view([-1]));
            opt.backward_step(&loss);
            losses.push(loss.double_value(&[]));
        }
        assert!((losses[0] - (32f64).ln()).abs() < 0.5, "{losses:?}");
        assert!(losses[59] < 0.2 * losses[0], "{losses:?}");
        let bad = ModelConfig { num_key_value_heads: 3, ..cfg };
        assert!(Model::new(&nn::VarStore::new(Device::Cpu), &bad).is_err());
    }

    #[test]
    fn bf16_compute_tracks_fp32_and_trains_fp32_masters() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        let cfg = ModelConfig { qk_norm: true, depth_scale: Some(1.4), ..ModelConfig::preset("tiny", 96).unwrap() };
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = Model::new(&vs, &cfg).unwrap();
        let ids = Tensor::arange(64, (Kind::Int64, Device::Cpu)).remainder(96).view([2, 32]);
        let full = tch::no_grad(|| model.forward(&ids));
        model.compute = Kind::BFloat16;
        let half = model.forward(&ids);
        assert_eq!(half.kind(), Kind::BFloat16);
        let diff = (half.to_kind(Kind::Float) - &full).abs().max().double_value(&[]);
        let scale = full.abs().max().double_value(&[]);
        assert!(diff < 0.02 * scale.max(1.0), "bf16 logits off by {diff} (scale {scale})");
        assert!(diff > 0.0, "the products really ran in bf16");
        // Gradients reach the fp32 parameters.
        let loss = half.to_kind(Kind::Float).view([-1, 96]).cross_entropy_for_logits(&ids.view([-1]));
        loss.backward();
        for (name, p) in vs.variables() {
            assert_eq!(p.kind(), Kind::Float, "{name}");
            assert!(p.grad().defined() && p.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}");
        }
    }
}
