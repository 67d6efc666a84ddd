//! Legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Block layouts (`ggml/src/ggml-common.h`): Q4_0 `{d: f16, qs[16]}`, Q4_1 `{d, m: f16, qs[16]}`,
//! Q5_0 `{d, qh: u32, qs[16]}`, Q5_1 `{d, m, qh, qs[16]}`, Q8_0 `{d, qs: i8[32]}`. Nibble byte
//! `j` holds element `j` (low) and `j + 16` (high); bit `j` of `qh` is element `j`'s fifth bit.
//! Dequantization is `q * d` (`+ m` for the `_1` types), unfused, as in ggml's scalar code.

use super::float::f16_to_f32;

const QK: usize = 32;

fn half_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub(super) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        for j in 0..16 {
            let q = b[2 + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let m = half_at(b, 2);
        for j in 0..16 {
            let q = b[4 + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

fn fifth_bits(qh: u32, j: usize) -> (u8, u8) {
    let lo = ((qh >> j) << 4) as u8 & 0x10;
    let hi = (qh >> (j + 12)) as u8 & 0x10;
    (lo, hi)
}

pub(super) fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let q = b[6 + j];
            let (lo, hi) = fifth_bits(qh, j);
            y[j] = (((q & 0x0f) | lo) as i32 - 16) as f32 * d;
            y[j + 16] = (((q >> 4) | hi) as i32 - 16) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let m = half_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..16 {
            let q = b[8 + j];
            let (lo, hi) = fifth_bits(qh, j);
            y[j] = ((q & 0x0f) | lo) as f32 * d + m;
            y[j + 16] = ((q >> 4) | hi) as f32 * d + m;
        }
    }
}

pub(super) fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        for j in 0..QK {
            y[j] = b[2 + j] as i8 as f32 * d;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantization.
//
// Our own search, not ggml's: for every block we evaluate a set of candidate scales (and
// offsets), re-fit each candidate by weighted least squares for the integer levels it chose,
// and keep the one whose *stored* reconstruction (scales rounded to f16, exactly as ggml
// dequantizes) has the lowest weighted squared error. ggml's reference choice (`d = max/-8`
// etc.) is always among the candidates, so a block is never worse than ggml's reference path.

use super::float::f32_to_f16;

/// Round to nearest (ties to even) by the 1.5·2²³ trick, as ggml's `nearest_int`: valid for
/// |x| <= 2²², and unlike `f32::round` it compiles to two adds the compiler can vectorize.
#[inline]
fn fast_round(x: f32) -> f32 {
    (x + 12_582_912.0) - 12_582_912.0
}

/// Weighted squared error of a reconstruction.
fn weighted_err(x: &[f32], w: &[f32], recon: impl Fn(usize) -> f32) -> f64 {
    x.iter()
        .zip(w)
        .enumerate()
        .map(|(j, (&xj, &wj))| {
            let e = f64::from(xj - recon(j));
            f64::from(wj) * e * e
        })
        .sum()
}

/// Stored value of a scale: what ggml will read back.
fn stored(d: f32) -> f32 {
    f16_to_f32(f32_to_f16(d))
}

/// Symmetric block (Q4_0: levels -8..7, Q5_0: -16..15). Returns (d, levels + nmax).
///
/// Each candidate scale costs one pass: levels are assigned and the weighted least-squares
/// sums gathered together, which gives the candidate's refitted error in closed form
/// (`Σwx² − (Σwxq)²/Σwq²`). Only the best refitted candidate and ggml's reference scale are
/// then evaluated exactly, on the f16-stored scale.
fn search_symmetric(x: &[f32], w: &[f32], nmax: i32) -> (f32, [u8; QK]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut best_q = [nmax as u8; QK];
    if amax == 0.0 {
        return (0.0, best_q);
    }
    let quantize = |d: f32, q: &mut [u8; QK]| {
        let id = 1.0 / d;
        for (qj, &v) in q.iter_mut().zip(x) {
            let l = fast_round((v * id).clamp(-(nmax as f32), (nmax - 1) as f32));
            *qj = (l as i32 + nmax) as u8;
        }
    };
    let err_of = |d: f32, q: &[u8; QK]| {
        let ds = stored(d);
        weighted_err(x, w, |j| (q[j] as i32 - nmax) as f32 * ds)
    };
    // ggml's reference scale: it seeds the best, so a block is never worse than ggml's ref.
    let mut best_d = max / -(nmax as f32);
    quantize(best_d, &mut best_q);
    let mut best_err = err_of(best_d, &best_q);
    // Candidates: the extreme value mapped to fractional levels near the ends, and (for the
    // 5-bit type) to whole levels down to nmax/2, which finds blocks already on a coarser
    // grid; both signs.
    let fractional = (0..=8).map(|step| nmax as f32 - 2.0 + step as f32 * 0.375);
    let whole = (if nmax > 8 { nmax / 2 } else { nmax }..(nmax - 2)).map(|k| k as f32);
    // The three best refits by closed-form gain (the refitted error is Σwx² − sxq²/sqq).
    let mut top = [(f32::NEG_INFINITY, 0f32); 3];
    for t in fractional.chain(whole) {
        for sign in [-1f32, 1.0] {
            let id = sign * t / amax;
            let (mut sxq, mut sqq) = (0f32, 0f32);
            for (&v, &wj) in x.iter().zip(w) {
                let l = fast_round((v * id).clamp(-(nmax as f32), (nmax - 1) as f32));
                sxq += wj * v * l;
                sqq += wj * l * l;
            }
            if sqq > 0.0 {
                let c = (sxq * sxq / sqq, sxq / sqq);
                if let Some(pos) = top.iter().position(|t| c.0 > t.0) {
                    top[pos..].rotate_right(1);
                    top[pos] = c;
                }
            }
        }
    }
    let mut q = [0u8; QK];
    for (_, d) in top {
        if d == 0.0 || !d.is_finite() {
            continue;
        }
        quantize(d, &mut q);
        let e = err_of(d, &q);
        if e < best_err {
            best_err = e;
            best_d = d;
            best_q = q;
        }
    }
    (best_d, best_q)
}

/// Affine block (Q4_1: levels 0..15, Q5_1: 0..31): x ≈ d·q + m. Returns (d, m, levels).
///
/// Candidate ranges: (a) the full range shrunk from either end; (b) the range split into
/// k < nmax steps anchored at the minimum or the maximum, which finds blocks already on a
/// coarser grid (weights once quantized with fewer bits). Each candidate costs one pass
/// (levels and least-squares sums together; refitted error in closed form); the six best are
/// refined once more, and ggml's reference range is always evaluated, exactly, on the
/// f16-stored scale and offset.
fn search_affine(x: &[f32], w: &[f32], nmax: i32) -> (f32, f32, [u8; QK]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut best_q = [0u8; QK];
    if max == min {
        return (0.0, min, best_q);
    }
    let quantize = |d: f32, m: f32, q: &mut [u8; QK]| {
        let id = 1.0 / d;
        for (qj, &v) in q.iter_mut().zip(x) {
            *qj = fast_round(((v - m) * id).clamp(0.0, nmax as f32)) as u8;
        }
    };
    let err_of = |d: f32, m: f32, q: &[u8; QK]| {
        let (ds, ms) = (stored(d), stored(m));
        weighted_err(x, w, |j| q[j] as f32 * ds + ms)
    };
    // One pass: levels for (d, m), then the weighted least-squares (d', m') and the gain
    // d'·Σwxq + m'·Σwx (the refitted error is Σwx² minus it).
    // f64 sums: the ranking compares gains that differ far below f32 precision when a block
    // already lies on a grid.
    let fit = |d: f32, m: f32| -> Option<(f64, f32, f32)> {
        let id = 1.0 / d;
        let (mut sw, mut sq, mut sqq, mut sx, mut sxq) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for (&v, &wj) in x.iter().zip(w) {
            let l = f64::from(fast_round(((v - m) * id).clamp(0.0, nmax as f32)));
            let (wj, v) = (f64::from(wj), f64::from(v));
            sw += wj;
            sq += wj * l;
            sqq += wj * l * l;
            sx += wj * v;
            sxq += wj * v * l;
        }
        let det = sw * sqq - sq * sq;
        if det <= 0.0 {
            return None;
        }
        let d2 = (sw * sxq - sq * sx) / det;
        let m2 = (sqq * sx - sq * sxq) / det;
        let gain = d2 * sxq + m2 * sx;
        (d2 > 0.0 && d2.is_finite() && m2.is_finite()).then_some((gain, d2 as f32, m2 as f32))
    };
    // ggml's reference: the full range.
    let mut best = ((max - min) / nmax as f32, min);
    quantize(best.0, best.1, &mut best_q);
    let mut best_err = err_of(best.0, best.1, &best_q);
    let span = max - min;
    let mut starts: Vec<(f32, f32)> = Vec::with_capacity(48);
    for lo in 0..3 {
        for hi in 0..3 {
            let m0 = min + span * lo as f32 * 0.05;
            let top = max - span * hi as f32 * 0.05;
            starts.push(((top - m0) / nmax as f32, m0));
        }
    }
    for k in (nmax / 2).max(1)..nmax {
        let d = span / k as f32;
        starts.push((d, min));
        starts.push((d, max - nmax as f32 * d));
    }
    // Keep the two best refits, refine each once, then evaluate exactly.
    let mut top: [(f64, f32, f32); 6] = [(f64::NEG_INFINITY, 0.0, 0.0); 6];
    for (d0, m0) in starts {
        if let Some(c) = fit(d0, m0) {
            if let Some(pos) = top.iter().position(|t| c.0 > t.0) {
                top[pos..].rotate_right(1);
                top[pos] = c;
            }
        }
    }
    let mut q = [0u8; QK];
    for (_, d1, m1) in top.into_iter().filter(|c| c.0.is_finite()) {
        let refined = fit(d1, m1).map(|(_, d2, m2)| (d2, m2));
        for (d, m) in std::iter::once((d1, m1)).chain(refined) {
            quantize(d, m, &mut q);
            let e = err_of(d, m, &q);
            if e < best_err {
                best_err = e;
                best = (d, m);
                best_q = q;
            }
        }
    }
    (best.0, best.1, best_q)
}

fn put_nibbles(out: &mut [u8], q: &[u8; QK]) {
    for j in 0..16 {
        out[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
}

fn fifth_bit_word(q: &[u8; QK]) -> u32 {
    (0..QK).fold(0u32, |acc, j| acc | (u32::from(q[j] >> 4 & 1) << j))
}

/// Quantizes one row to Q4_0 (`nmax = 8`) or Q5_0 (`nmax = 16`).
pub(super) fn quantize_symmetric(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    let size = if nmax == 8 { 18 } else { 22 };
    for ((xb, wb), out) in x
        .chunks_exact(QK)
        .zip(w.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(size))
    {
        let (d, q) = search_symmetric(xb, wb, nmax);
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        if nmax == 8 {
            put_nibbles(&mut out[2..18], &q);
        } else {
            out[2..6].copy_from_slice(&fifth_bit_word(&q).to_le_bytes());
            put_nibbles(&mut out[6..22], &q);
        }
    }
}

/// Quantizes one row to Q4_1 (`nmax = 15`) or Q5_1 (`nmax = 31`).
pub(super) fn quantize_affine(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    let size = if nmax == 15 { 20 } else { 24 };
    for ((xb, wb), out) in x
        .chunks_exact(QK)
        .zip(w.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(size))
    {
        let (d, m, q) = search_affine(xb, wb, nmax);
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        out[2..4].copy_from_slice(&f32_to_f16(m).to_le_bytes());
        if nmax == 15 {
            put_nibbles(&mut out[4..20], &q);
        } else {
            out[4..8].copy_from_slice(&fifth_bit_word(&q).to_le_bytes());
            put_nibbles(&mut out[8..24], &q);
        }
    }
}

/// Q8_0 exactly as ggml's reference: `d = amax/127`, `q = roundf(x/d)` (half away from zero).
/// Importance cannot improve a 255-level block noticeably; bytes match ggml's.
pub(super) fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    for (xb, out) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(34)) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for (o, &v) in out[2..].iter_mut().zip(xb) {
            *o = (v * id).round() as i8 as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_err(nmax: i32, affine: bool) -> f64 {
        // Smooth pseudo-random values (a fixed-step grid would alias with the levels).
        let x: Vec<f32> = (0..64)
            .map(|i| ((i as f32 * 0.731).sin() * 1.3).powi(3))
            .collect();
        let w = vec![1f32; 64];
        let size = match (affine, nmax) {
            (false, 8) => 18,
            (false, _) => 22,
            (true, 15) => 20,
            _ => 24,
        };
        let mut out = vec![0u8; 2 * size];
        let mut y = vec![0f32; 64];
        if affine {
            quantize_affine(&x, &w, &mut out, nmax);
            if nmax == 15 {
                dequantize_q4_1(&out, &mut y)
            } else {
                dequantize_q5_1(&out, &mut y)
            }
        } else {
            quantize_symmetric(&x, &w, &mut out, nmax);
            if nmax == 8 {
                dequantize_q4_0(&out, &mut y)
            } else {
                dequantize_q5_0(&out, &mut y)
            }
        }
        x.iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / 64.0
    }

    #[test]
    fn more_bits_give_less_error() {
        let (q4_0, q5_0) = (roundtrip_err(8, false), roundtrip_err(16, false));
        let (q4_1, q5_1) = (roundtrip_err(15, true), roundtrip_err(31, true));
        assert!(q5_0 < q4_0, "{q5_0} {q4_0}");
        assert!(q5_1 < q4_1, "{q5_1} {q4_1}");
        // One more bit halves the step: about a quarter of the squared error.
        assert!(q5_0 < 0.4 * q4_0 && q5_1 < 0.4 * q4_1);
    }
}
