//! ggml's tensor types: ids, block sizes and bytes per block (gguf-py `GGML_QUANT_SIZES`), and
//! the block quantizers, bit-exact with ggml's reference code (`quantize_row_*_ref` in
//! `ggml-quants.c`; tests/ggml_ref.rs runs ggml's own and compares): Q8_0 rounds half away from
//! zero; Q4_0 and Q5_0 scale by the element of largest magnitude and truncate `x·(1/d) + offset`
//! in f32. The K-quants live in `kquants.rs`.

use crate::half::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use crate::kquants;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

impl GgmlType {
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            BF16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, BF16]
            .into_iter()
            .find(|t| t.id() == id)
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 | BF16 => (1, 2),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
        }
    }

    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            BF16 => "BF16",
        }
    }

    /// Bytes of `elements` values (`None` when not a whole number of blocks).
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let (b, s) = self.block();
        elements.is_multiple_of(b).then_some(elements / b * s)
    }

    /// Bits per weight.
    pub fn bits_per_weight(self) -> f64 {
        let (b, s) = self.block();
        s as f64 * 8.0 / b as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{ty} needs rows of a multiple of {block} values, got {len}")]
    RowLength { ty: &'static str, block: usize, len: usize },
    #[error("quantizing to {0} is not implemented yet")]
    Unsupported(&'static str),
}

/// Quantizes `values` (a whole number of blocks) to `ty`.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, QuantError> {
    let (block, size) = ty.block();
    if !values.len().is_multiple_of(block) {
        return Err(QuantError::RowLength { ty: ty.name(), block, len: values.len() });
    }
    let mut out = Vec::with_capacity(values.len() / block * size);
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend_from_slice(&f32_to_f16(*v).to_le_bytes())),
        GgmlType::BF16 => values.iter().for_each(|v| out.extend_from_slice(&f32_to_bf16(*v).to_le_bytes())),
        GgmlType::Q8_0 => values.chunks_exact(32).for_each(|b| q8_0(b, &mut out)),
        GgmlType::Q4_0 => values.chunks_exact(32).for_each(|b| q4_0(b, &mut out)),
        GgmlType::Q5_0 => values.chunks_exact(32).for_each(|b| q5_0(b, &mut out)),
        GgmlType::Q4_1 => values.chunks_exact(32).for_each(|b| q4_1(b, &mut out)),
        GgmlType::Q5_1 => values.chunks_exact(32).for_each(|b| q5_1(b, &mut out)),
        GgmlType::Q4_K => values.chunks_exact(256).for_each(|b| kquants::q4_k(b, &mut out)),
        GgmlType::Q5_K => values.chunks_exact(256).for_each(|b| kquants::q5_k(b, &mut out)),
        GgmlType::Q6_K => values.chunks_exact(256).for_each(|b| kquants::q6_k(b, &mut out)),
        other => return Err(QuantError::Unsupported(other.name())),
    }
    Ok(out)
}

/// [`quantize`] of a tensor with rows of `row` values, on every core: the rows are split into
/// one run per thread and the runs' bytes joined in order (equal to quantizing in one go).
pub fn quantize_rows(ty: GgmlType, values: &[f32], row: usize) -> Result<Vec<u8>, QuantError> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rows = values.len() / row.max(1);
    if threads == 1 || values.len() < 1 << 16 || rows < 2 {
        return quantize(ty, values);
    }
    let per = rows.div_ceil(threads) * row;
    let parts: Vec<Result<Vec<u8>, QuantError>> = std::thread::scope(|s| {
        let handles: Vec<_> = values.chunks(per).map(|c| s.spawn(move || quantize(ty, c))).collect();
        handles.into_iter().map(|h| h.join().expect("a quantizer thread panicked")).collect()
    });
    let mut out = Vec::with_capacity(ty.bytes_for(values.len()).unwrap_or(0));
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

/// Dequantizes `bytes` of `ty` to `elements` values.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let (block, size) = ty.block();
    let mut out = Vec::with_capacity(bytes.len() / size * block);
    let d16 = |b: &[u8]| f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    match ty {
        GgmlType::F32 => bytes.chunks_exact(4).for_each(|b| out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => bytes.chunks_exact(2).for_each(|b| out.push(d16(b))),
        GgmlType::BF16 => bytes.chunks_exact(2).for_each(|b| out.push(bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        GgmlType::Q8_0 => bytes.chunks_exact(34).for_each(|b| {
            let d = d16(b);
            out.extend(b[2..].iter().map(|&q| q as i8 as f32 * d));
        }),
        GgmlType::Q4_0 => bytes.chunks_exact(18).for_each(|b| {
            let d = d16(b);
            let qs = &b[2..];
            out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
            out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
        }),
        GgmlType::Q5_0 => bytes.chunks_exact(22).for_each(|b| {
            let d = d16(b);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..];
            for half in 0..2 {
                for (j, &q) in qs.iter().enumerate() {
                    let i = half * 16 + j;
                    let lo = if half == 0 { q & 0x0f } else { q >> 4 };
                    let hi = ((qh >> i) & 1) as u8;
                    out.push(((lo | (hi << 4)) as i32 - 16) as f32 * d);
                }
            }
        }),
        GgmlType::Q4_1 => bytes.chunks_exact(20).for_each(|b| {
            let (d, m) = (d16(b), d16(&b[2..]));
            let qs = &b[4..];
            out.extend(qs.iter().map(|&q| d * (q & 0x0f) as f32 + m));
            out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
        }),
        GgmlType::Q5_1 => bytes.chunks_exact(24).for_each(|b| {
            let (d, m) = (d16(b), d16(&b[2..]));
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let qs = &b[8..];
            for half in 0..2 {
                for (j, &q) in qs.iter().enumerate() {
                    let i = half * 16 + j;
                    let lo = if half == 0 { q & 0x0f } else { q >> 4 };
                    out.push(d * (lo | ((((qh >> i) & 1) as u8) << 4)) as f32 + m);
                }
            }
        }),
        GgmlType::Q2_K => bytes.chunks_exact(84).for_each(|b| kquants::dequant_q2_k(b, &mut out)),
        GgmlType::Q3_K => bytes.chunks_exact(110).for_each(|b| kquants::dequant_q3_k(b, &mut out)),
        GgmlType::Q4_K => bytes.chunks_exact(144).for_each(|b| kquants::dequant_q4_k(b, &mut out)),
        GgmlType::Q5_K => bytes.chunks_exact(176).for_each(|b| kquants::dequant_q5_k(b, &mut out)),
        GgmlType::Q6_K => bytes.chunks_exact(210).for_each(|b| kquants::dequant_q6_k(b, &mut out)),
        other => return Err(QuantError::Unsupported(other.name())),
    }
    Ok(out)
}

fn q4_1(x: &[f32], out: &mut Vec<u8>) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let d = (max - min) / 15.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let q: Vec<u8> = x.iter().map(|&v| (((v - min) * id + 0.5).trunc() as u8).min(15)).collect();
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend_from_slice(&f32_to_f16(min).to_le_bytes());
    out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
}

fn q5_1(x: &[f32], out: &mut Vec<u8>) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let d = (max - min) / 31.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let q: Vec<u8> = x.iter().map(|&v| (((v - min) * id + 0.5).trunc() as u8).min(31)).collect();
    let qh: u32 = q.iter().enumerate().fold(0, |h, (i, &v)| h | (((v >> 4) as u32 & 1) << i));
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend_from_slice(&f32_to_f16(min).to_le_bytes());
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0x0f) | (q[j + 16] << 4)));
}

fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    // f32::round rounds half away from zero, as ggml's roundf
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// The element of largest magnitude (the first of equals), with its sign.
fn signed_max(x: &[f32]) -> f32 {
    let mut best = 0.0f32;
    for &v in x {
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_max(x) / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let q: Vec<u8> = x.iter().map(|&v| ((v * id + 8.5) as i8 as u8).min(15)).collect();
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
}

fn q5_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_max(x) / -16.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let q: Vec<u8> = x.iter().map(|&v| ((v * id + 16.5) as i8 as u8).min(31)).collect();
    let qh: u32 = q.iter().enumerate().fold(0, |h, (i, &v)| h | (((v >> 4) as u32 & 1) << i));
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0x0f) | (q[j + 16] << 4)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_their_step() {
        // (the value opposite the block's extreme may lose one step: ggml clips it to 15/31)
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0).collect();
        for (ty, tol) in [(GgmlType::Q8_0, 0.02), (GgmlType::Q5_0, 0.3), (GgmlType::Q4_0, 0.6), (GgmlType::F16, 0.005)]
        {
            let q = quantize(ty, &x).unwrap();
            assert_eq!(q.len(), ty.bytes_for(64).unwrap());
            let back = dequantize(ty, &q).unwrap();
            let worst = x.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= tol, "{}: worst error {worst}", ty.name());
        }
        assert!(matches!(quantize(GgmlType::Q8_0, &x[..40]), Err(QuantError::RowLength { .. })));
        assert!(matches!(quantize(GgmlType::Q3_K, &[0.0; 256]), Err(QuantError::Unsupported("Q3_K"))));
        assert_eq!(dequantize(GgmlType::Q8_0, &quantize(GgmlType::Q8_0, &[0.0; 32]).unwrap()).unwrap(), vec![0.0; 32]);
    }
}
