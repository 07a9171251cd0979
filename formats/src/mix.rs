//! Which ggml type each tensor gets under a file type (`--type`): llama.cpp's
//! `llama_tensor_get_type` for the types lehr writes, as decisions on data (a tensor's name,
//! row length and layer), so that our Q4_K_M is the Q4_K_M that `llama-quantize` makes.
//!
//! - Vectors (norms, biases) stay F32.
//! - `output.weight` — or `token_embd.weight` when the embeddings are tied — gets Q6_K under
//!   every quantized file type but Q8_0 (which keeps Q8_0), and Q8_0 when its rows are not
//!   whole blocks of the file's base type.
//! - Q4_K_M and Q5_K_M give Q6_K to the `attn_v` and `ffn_down` tensors [`use_more_bits`]
//!   picks: the first and last eighth and every third one between. llama.cpp counts them in
//!   the order of its input file — for our files, which hold the blocks in order, that is the
//!   layer; for files converted from Hugging Face's alphabetically sorted tensors it is not
//!   (blk.0, blk.1, blk.10, …), which the published Qwen2.5 Q4_K_M files show.
//! - A tensor whose rows are not whole blocks of its type falls back as llama.cpp does: Q4_K →
//!   Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and to F16 when that does not fit either (Qwen2.5-0.5B's
//!   896-wide rows are such a case).

use crate::quants::GgmlType;

/// A file type: the base type of its matrices and the mix rules around it (llama.cpp's
/// `llama_ftype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6_K,
    Q5_K_M,
    Q5_1,
    Q5_0,
    Q4_K_M,
    Q4_1,
    Q4_0,
}

impl FileType {
    pub const ALL: [FileType; 11] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q6_K,
        FileType::Q5_K_M,
        FileType::Q5_1,
        FileType::Q5_0,
        FileType::Q4_K_M,
        FileType::Q4_1,
        FileType::Q4_0,
    ];

    /// What `--type all` writes: the ladder model collections ship.
    pub const LADDER: [FileType; 7] = [
        FileType::F16,
        FileType::Q8_0,
        FileType::Q6_K,
        FileType::Q5_K_M,
        FileType::Q5_0,
        FileType::Q4_K_M,
        FileType::Q4_0,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        use FileType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q8_0 => "Q8_0",
            Q6_K => "Q6_K",
            Q5_K_M => "Q5_K_M",
            Q5_1 => "Q5_1",
            Q5_0 => "Q5_0",
            Q4_K_M => "Q4_K_M",
            Q4_1 => "Q4_1",
            Q4_0 => "Q4_0",
        }
    }

    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_*`).
    pub fn id(self) -> u32 {
        use FileType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q4_K_M => 15,
            Q5_K_M => 17,
            Q6_K => 18,
            BF16 => 32,
        }
    }

    /// The type of matrices no rule singles out.
    pub fn base(self) -> GgmlType {
        use FileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q8_0 => GgmlType::Q8_0,
            Q6_K => GgmlType::Q6_K,
            Q5_K_M => GgmlType::Q5_K,
            Q5_1 => GgmlType::Q5_1,
            Q5_0 => GgmlType::Q5_0,
            Q4_K_M => GgmlType::Q4_K,
            Q4_1 => GgmlType::Q4_1,
            Q4_0 => GgmlType::Q4_0,
        }
    }

    fn quantized(self) -> bool {
        !matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third one
/// between.
pub fn use_more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// One tensor as the mix sees it.
#[derive(Debug, Clone)]
pub struct TensorSpec<'a> {
    /// The GGUF name (`blk.3.attn_v.weight`).
    pub name: &'a str,
    /// Dimensions in ggml order (`dims[0]` is the row length).
    pub dims: &'a [u64],
    /// For `attn_v` and `ffn_down`: the tensor's place among those of its kind in file order,
    /// and how many there are (llama.cpp's `i_attention_wv`/`n_attention_wv`).
    pub rank: (usize, usize),
    /// Whether `token_embd` doubles as the output projection.
    pub tied: bool,
}

/// The type chosen for one tensor, and the type the rules wanted when rows forced a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub ty: GgmlType,
    pub wanted: Option<GgmlType>,
}

/// For each of `names` (GGUF names in file order), its place among the tensors of its kind
/// (`blk.N.KIND.weight` → `KIND`) and how many of that kind there are: the [`TensorSpec::rank`]
/// llama.cpp's counters give.
pub fn ranks(names: &[&str]) -> Vec<(usize, usize)> {
    let kind = |name: &str| name.rsplit('.').nth(1).unwrap_or_default().to_string();
    let mut count = std::collections::HashMap::<String, usize>::new();
    for n in names {
        *count.entry(kind(n)).or_default() += 1;
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    names
        .iter()
        .map(|n| {
            let k = kind(n);
            let rank = *seen.entry(k.clone()).and_modify(|r| *r += 1).or_insert(0);
            (rank, count[&k])
        })
        .collect()
}

/// The type of `t` in a file of type `ft`.
pub fn tensor_type(ft: FileType, t: &TensorSpec) -> Choice {
    if t.dims.len() < 2 {
        return Choice { ty: GgmlType::F32, wanted: None };
    }
    let base = ft.base();
    let row = t.dims[0] as usize;
    let mut ty = base;
    if ft.quantized() {
        let output = t.name == "output.weight" || (t.tied && t.name == "token_embd.weight");
        let more_bits = || matches!(ft, FileType::Q4_K_M | FileType::Q5_K_M) && use_more_bits(t.rank.0, t.rank.1);
        if output {
            let (block, _) = base.block();
            ty = if !row.is_multiple_of(block) || base == GgmlType::Q8_0 { GgmlType::Q8_0 } else { GgmlType::Q6_K };
        } else if (t.name.ends_with(".attn_v.weight") || t.name.ends_with(".ffn_down.weight")) && more_bits() {
            ty = GgmlType::Q6_K;
        }
    }
    let fits = |ty: GgmlType| row.is_multiple_of(ty.block().0);
    if fits(ty) {
        return Choice { ty, wanted: None };
    }
    let fallback = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    Choice { ty: if fits(fallback) { fallback } else { GgmlType::F16 }, wanted: Some(ty) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(ft: FileType, name: &str, dims: &[u64], tied: bool) -> GgmlType {
        let layer = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|l| l.parse().ok());
        tensor_type(ft, &TensorSpec { name, dims, rank: (layer.unwrap_or(0), 24), tied }).ty
    }

    #[test]
    fn more_bits_layers_match_llama_cpp() {
        // 24 layers: 0–2 and 21–23, and 3 + 2, 3 + 5, …
        let picked: Vec<usize> = (0..24).filter(|&l| use_more_bits(l, 24)).collect();
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        assert_eq!((0..8).filter(|&l| use_more_bits(l, 8)).collect::<Vec<_>>(), vec![0, 3, 6, 7]);
    }

    #[test]
    fn q4_k_m_mix_as_llama_quantize_makes_it() {
        let ft = FileType::Q4_K_M;
        assert_eq!(choose(ft, "blk.0.attn_v.weight", &[1024, 256], false), GgmlType::Q6_K);
        assert_eq!(choose(ft, "blk.3.attn_v.weight", &[1024, 256], false), GgmlType::Q4_K);
        assert_eq!(choose(ft, "blk.5.ffn_down.weight", &[2816, 1024], false), GgmlType::Q6_K);
        assert_eq!(choose(ft, "blk.5.ffn_up.weight", &[1024, 2816], false), GgmlType::Q4_K);
        assert_eq!(choose(ft, "output.weight", &[1024, 5000], false), GgmlType::Q6_K);
        assert_eq!(choose(ft, "token_embd.weight", &[1024, 5000], false), GgmlType::Q4_K);
        assert_eq!(choose(ft, "token_embd.weight", &[1024, 5000], true), GgmlType::Q6_K);
        assert_eq!(choose(ft, "blk.0.attn_norm.weight", &[1024], false), GgmlType::F32);
        // Qwen2.5-0.5B: 896-wide rows are not whole 256-blocks
        assert_eq!(choose(ft, "token_embd.weight", &[896, 151936], true), GgmlType::Q8_0);
        let c =
            tensor_type(ft, &TensorSpec { name: "blk.3.attn_q.weight", dims: &[896, 896], rank: (3, 24), tied: true });
        assert_eq!(c, Choice { ty: GgmlType::Q5_0, wanted: Some(GgmlType::Q4_K) });
        assert_eq!(choose(ft, "blk.0.attn_v.weight", &[896, 128], true), GgmlType::Q8_0);
        assert_eq!(choose(FileType::Q5_K_M, "blk.4.ffn_gate.weight", &[896, 4864], true), GgmlType::Q5_1);
        // ffn_down's rows are 4864 = 19·256 long
        assert_eq!(choose(ft, "blk.4.ffn_down.weight", &[4864, 896], true), GgmlType::Q4_K);
        // rows of 40 are not whole blocks of anything quantized
        assert_eq!(choose(ft, "blk.4.ffn_up.weight", &[40, 64], true), GgmlType::F16);
    }

    #[test]
    fn plain_types_and_their_outputs() {
        assert_eq!(choose(FileType::Q8_0, "output.weight", &[1024, 5000], false), GgmlType::Q8_0);
        assert_eq!(choose(FileType::Q4_0, "output.weight", &[1024, 5000], false), GgmlType::Q6_K);
        assert_eq!(choose(FileType::Q4_0, "blk.0.attn_v.weight", &[1024, 256], false), GgmlType::Q4_0);
        assert_eq!(choose(FileType::F16, "output.weight", &[1024, 5000], false), GgmlType::F16);
        assert_eq!(choose(FileType::Q6_K, "blk.0.attn_q.weight", &[1024, 1024], false), GgmlType::Q6_K);
        for ft in FileType::ALL {
            assert_eq!(FileType::parse(&ft.name().to_lowercase()), Some(ft));
        }
        assert_eq!(FileType::parse("q4_k"), None);
    }
}
