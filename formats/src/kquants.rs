//! ggml's K-quants: super-blocks of 256 values with 6- or 8-bit sub-block scales. The
//! quantizers follow ggml's reference code (`quantize_row_q{4,5,6}_K_ref` in `ggml-quants.c`,
//! what `llama-quantize` runs when no importance matrix is given): the same search for each
//! sub-block's scale and minimum (`make_qkx2_quants`, `make_qx_quants`), the same float
//! operations in the same order, and ggml's `nearest_int` (round half to even through the
//! 1.5·2²³ trick), so the bytes equal the reference's. The dequantizers form the products in
//! ggml's order (`(d·scale)·q − dmin·min`) in f32 and are bit-exact with it.

use crate::half::{f16_to_f32, f32_to_f16};

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: rounds to nearest, ties to even, for |v| < 2²².
fn nearest_int(v: f32) -> i32 {
    let biased = v + 12_582_912.0;
    (biased.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// f32 → f16 → f32, as ggml stores a scale and reads it back.
fn through_f16(v: f32) -> (u16, f32) {
    let h = f32_to_f16(v);
    (h, f16_to_f32(h))
}

/// The scale and minimum of one sub-block for levels `0..=nmax` (ggml's `make_qkx2_quants`):
/// the min–max fit, then `nstep + 1` trial scales around it, each refined by weighted least
/// squares, keeping the one of least weighted error. Returns `(scale, -min)` and fills `l`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        l[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, lf) = (weights[i], q as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The signed scale of one sub-block for levels `-nmax..nmax` weighted by x² (ggml's
/// `make_qx_quants` with `rmse_type = 1` and no importance weights); fills `l` with `level + nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..x.len()].fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let (w, lf) = (v * v, level(iscale, v) as f32);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        (sumlx, suml2)
    };
    let iscale = -(nmax as f32) / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (level(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (level(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q4_K and Q5_K: eight sub-blocks of 32 with a 6-bit scale and a 6-bit minimum each, packed
/// into 12 bytes, under an f16 super-scale and super-minimum. Returns the header (d, dmin,
/// scales) and the levels.
fn scaled_mins(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> ([u8; 16], [u8; 256]) {
    let mut l = [0u8; 256];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    let mut weights = [0.0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], rmin, 0.1, nstep);
        (scales[j], mins[j]) = (s, m);
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut head = [0u8; 16];
    let sc = &mut head[4..16];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let (dh, d) = through_f16(max_scale / 63.0);
    let (mh, dmin) = through_f16(max_min / 63.0);
    head[..2].copy_from_slice(&dh.to_le_bytes());
    head[2..4].copy_from_slice(&mh.to_le_bytes());
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &head[4..16]);
        let dd = d * s as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
    (head, l)
}

pub(crate) fn q4_k(x: &[f32], out: &mut Vec<u8>) {
    let (head, l) = scaled_mins(x, 15, -1.0, 20);
    out.extend_from_slice(&head);
    for j in (0..256).step_by(64) {
        out.extend((0..32).map(|i| l[j + i] | (l[j + i + 32] << 4)));
    }
}

pub(crate) fn q5_k(x: &[f32], out: &mut Vec<u8>) {
    let (head, l) = scaled_mins(x, 31, -0.5, 15);
    out.extend_from_slice(&head);
    let (mut qh, mut ql) = ([0u8; 32], [0u8; 128]);
    for (k, n) in (0..256).step_by(64).enumerate() {
        let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
        for j in 0..32 {
            let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[n / 2 + j] = l1 | (l2 << 4);
        }
    }
    out.extend_from_slice(&qh);
    out.extend_from_slice(&ql);
}

/// Q6_K: sixteen sub-blocks of 16 with a signed 8-bit scale each under an f16 super-scale,
/// 6-bit levels split into 4 low bits (`ql`) and 2 high bits (`qh`).
pub(crate) fn q6_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = s;
        }
    }
    if max_abs < GROUP_MAX_EPS {
        out.extend_from_slice(&[0u8; 210]);
        return;
    }
    let iscale = -128.0 / max_scale;
    let (dh, d) = through_f16(1.0 / iscale);
    let sc: Vec<i8> = scales.iter().map(|&s| nearest_int(iscale * s).min(127) as i8).collect();
    for j in 0..16 {
        let dd = d * sc[j] as f32;
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dd).clamp(-32, 31) + 32) as u8;
        }
    }
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for j in (0..256).step_by(128) {
        for i in 0..32 {
            let q = |o: usize| l[j + i + o];
            ql[j / 2 + i] = (q(0) & 0x0f) | ((q(64) & 0x0f) << 4);
            ql[j / 2 + i + 32] = (q(32) & 0x0f) | ((q(96) & 0x0f) << 4);
            qh[j / 4 + i] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    out.extend_from_slice(&dh.to_le_bytes());
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

// K-quants: super-blocks of 256 values. The products are formed in ggml's order
// (`(d·scale)·q − dmin·min`) in f32, so results are bit-exact with its reference code.

pub(crate) fn dequant_q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for i in 0..256 {
        let (chunk, k, c) = (i / 128, (i % 128) / 32, i % 32);
        let q = (qs[chunk * 32 + c] >> (2 * k)) & 3;
        let sc = scales[i / 16];
        let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
        out.push(dl * q as f32 - ml);
    }
}

pub(crate) fn dequant_q3_k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, sc, d) = (&b[..32], &b[32..96], &b[96..108], f16_at(b, 108));
    let scale = |j: usize| -> f32 {
        let lo = if j < 8 { sc[j] & 0x0f } else { sc[j - 8] >> 4 };
        let hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        ((lo | (hi << 4)) as i8 - 32) as f32
    };
    for i in 0..256 {
        let (chunk, k, c) = (i / 128, (i % 128) / 32, i % 32);
        let ql = ((qs[chunk * 32 + c] >> (2 * k)) & 3) as i8;
        // the high bit subtracts 4 when it is clear
        let hb = ((hmask[c] >> (i / 32)) & 1) ^ 1;
        let q = ql - ((hb << 2) as i8);
        out.push((d * scale(i / 16)) * q as f32);
    }
}

/// Q4_K/Q5_K's eight 6-bit scales and mins from their 12 packed bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

pub(crate) fn dequant_q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin, scales, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..144]);
    for i in 0..256 {
        let (sub, c) = (i / 32, i % 32);
        let byte = qs[(sub / 2) * 32 + c];
        let q = if sub % 2 == 0 { byte & 0x0f } else { byte >> 4 };
        let (sc, m) = scale_min_k4(sub, scales);
        out.push((d * sc as f32) * q as f32 - dmin * m as f32);
    }
}

pub(crate) fn dequant_q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin, scales, qh, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..48], &b[48..176]);
    for i in 0..256 {
        let (sub, c) = (i / 32, i % 32);
        let byte = qs[(sub / 2) * 32 + c];
        let lo = if sub % 2 == 0 { byte & 0x0f } else { byte >> 4 };
        let q = lo | (((qh[c] >> sub) & 1) << 4);
        let (sc, m) = scale_min_k4(sub, scales);
        out.push((d * sc as f32) * q as f32 - dmin * m as f32);
    }
}

pub(crate) fn dequant_q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales, d) = (&b[..128], &b[128..192], &b[192..208], f16_at(b, 208));
    for i in 0..256 {
        let (h, v) = (i / 128, i % 128);
        let (part, l) = (v / 32, v % 32);
        let byte = ql[h * 64 + (part % 2) * 32 + l];
        let lo = if part < 2 { byte & 0x0f } else { byte >> 4 };
        let hi = (qh[h * 32 + l] >> (2 * part)) & 3;
        let q = (lo | (hi << 4)) as i8 - 32;
        out.push((d * scales[i / 16] as i8 as f32) * q as f32);
    }
}
