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
//
// Speed: every pass over a block accumulates in `LANES` independent partial sums, combined in
// a fixed order at the end, with branch-free min/max selects, so that the compiler turns each
// pass into a few vector instructions. The row functions are compiled twice from the same
// source: plain (SSE2) and, picked at run time, with AVX2 enabled. Both perform the same IEEE
// operations in the same order (Rust never contracts to FMA), so they give identical bytes;
// a unit test checks it.

use super::float::f32_to_f16;

/// Independent partial sums per pass (one AVX2 vector of f32).
const LANES: usize = 8;
type Lanes = [f32; LANES];

/// Sum of the lanes in a fixed order.
#[inline(always)]
fn hsum(a: Lanes) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// `a > b ? a : b`: one `maxps`, unlike `f32::max` (whose NaN rule costs a blend).
#[inline(always)]
fn max_f(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `a < b ? a : b`: one `minps`.
#[inline(always)]
fn min_f(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// Round to nearest (ties to even) by the 1.5·2²³ trick, as ggml's `nearest_int`: valid for
/// |x| <= 2²², and unlike `f32::round` it compiles to two adds the compiler can vectorize.
#[inline(always)]
fn fast_round(x: f32) -> f32 {
    (x + 12_582_912.0) - 12_582_912.0
}

/// Stored value of a scale: what ggml will read back.
fn stored(d: f32) -> f32 {
    f16_to_f32(f32_to_f16(d))
}

/// Keeps `top` sorted by descending score, inserting `c` if it ranks.
#[inline(always)]
fn insert_top<T: Copy, const N: usize>(top: &mut [(f64, T); N], c: (f64, T)) {
    if let Some(pos) = top.iter().position(|t| c.0 > t.0) {
        top[pos..].rotate_right(1);
        top[pos] = c;
    }
}

/// Symmetric block (Q4_0: levels -8..7, Q5_0: -16..15). Returns (d, levels + nmax).
///
/// Each candidate scale costs one pass: levels are assigned and the weighted least-squares
/// sums gathered together, which gives the candidate's refitted error in closed form
/// (`Σwx² − (Σwxq)²/Σwq²`). Only the best refitted candidates and ggml's reference scale are
/// then evaluated exactly, on the f16-stored scale.
#[inline(always)]
fn search_symmetric(x: &[f32; QK], w: &[f32; QK], nmax: i32) -> (f32, [u8; QK]) {
    // The largest magnitude and its signed value, per lane, then across lanes.
    let (mut la, mut lm) = ([0f32; LANES], [0f32; LANES]);
    let mut wx = [0f32; QK];
    for c in 0..QK / LANES {
        for k in 0..LANES {
            let j = c * LANES + k;
            let a = x[j].abs();
            let gt = a > la[k];
            la[k] = if gt { a } else { la[k] };
            lm[k] = if gt { x[j] } else { lm[k] };
            wx[j] = w[j] * x[j];
        }
    }
    let (mut amax, mut max) = (0f32, 0f32);
    for k in 0..LANES {
        if la[k] > amax {
            amax = la[k];
            max = lm[k];
        }
    }
    if amax == 0.0 {
        return (0.0, [nmax as u8; QK]);
    }
    let (lo, hi) = (-(nmax as f32), (nmax - 1) as f32);
    let level = |v: f32, id: f32| fast_round(min_f(max_f(v * id, lo), hi));
    // Exact weighted error of scale d with the levels it gives, on the f16-stored scale.
    let exact = |d: f32| {
        let (id, ds) = (1.0 / d, stored(d));
        let mut acc = [0f32; LANES];
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                let e = x[j] - level(x[j], id) * ds;
                acc[k] += w[j] * e * e;
            }
        }
        hsum(acc)
    };
    // Candidates: the extreme value mapped to fractional levels near the ends, and (for the
    // 5-bit type) to whole levels down to nmax/2, which finds blocks already on a coarser
    // grid; both signs. The three best refits by closed-form gain (sxq²/sqq) are kept.
    let fractional = (0..=8).map(|step| nmax as f32 - 2.0 + step as f32 * 0.375);
    let whole = (if nmax > 8 { nmax / 2 } else { nmax }..(nmax - 2)).map(|k| k as f32);
    let mut top = [(f64::NEG_INFINITY, 0f32); 3];
    for t in fractional.chain(whole) {
        for sign in [-1f32, 1.0] {
            let id = sign * t / amax;
            let (mut sxq, mut sqq) = ([0f32; LANES], [0f32; LANES]);
            for c in 0..QK / LANES {
                for k in 0..LANES {
                    let j = c * LANES + k;
                    let l = level(x[j], id);
                    sxq[k] += wx[j] * l;
                    sqq[k] += w[j] * l * l;
                }
            }
            let (sxq, sqq) = (hsum(sxq), hsum(sqq));
            if sqq > 0.0 {
                insert_top(&mut top, (f64::from(sxq * sxq / sqq), sxq / sqq));
            }
        }
    }
    // ggml's reference scale seeds the best, so a block is never worse than ggml's ref.
    let mut best_d = max / -(nmax as f32);
    let mut best_err = exact(best_d);
    for (_, d) in top {
        if d == 0.0 || !d.is_finite() {
            continue;
        }
        let e = exact(d);
        if e < best_err {
            best_err = e;
            best_d = d;
        }
    }
    let id = 1.0 / best_d;
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(x) {
        *qj = (level(v, id) as i32 + nmax) as u8;
    }
    (best_d, q)
}

/// Affine block (Q4_1: levels 0..15, Q5_1: 0..31): x ≈ d·q + m. Returns (d, m, levels).
///
/// Candidate ranges: (a) the full range shrunk from either end; (b) the range split into
/// k < nmax steps anchored at the minimum or the maximum, which finds blocks already on a
/// coarser grid (weights once quantized with fewer bits). Each candidate costs one pass
/// (levels and least-squares sums together; refitted error in closed form); the six best are
/// refined once more, and ggml's reference range is always evaluated, exactly, on the
/// f16-stored scale and offset.
#[inline(always)]
fn search_affine(x: &[f32; QK], w: &[f32; QK], nmax: i32) -> (f32, f32, [u8; QK]) {
    let (mut lmin, mut lmax) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let (mut lw, mut lwx) = ([0f32; LANES], [0f32; LANES]);
    let mut wx = [0f32; QK];
    for c in 0..QK / LANES {
        for k in 0..LANES {
            let j = c * LANES + k;
            lmin[k] = min_f(x[j], lmin[k]);
            lmax[k] = max_f(x[j], lmax[k]);
            wx[j] = w[j] * x[j];
            lw[k] += w[j];
            lwx[k] += wx[j];
        }
    }
    let min = lmin.iter().fold(f32::INFINITY, |a, &b| min_f(b, a));
    let max = lmax.iter().fold(f32::NEG_INFINITY, |a, &b| max_f(b, a));
    if max == min {
        return (0.0, min, [0u8; QK]);
    }
    let (sw, sx) = (f64::from(hsum(lw)), f64::from(hsum(lwx)));
    let top_level = nmax as f32;
    let level = |v: f32, m: f32, id: f32| fast_round(min_f(max_f((v - m) * id, 0.0), top_level));
    // One pass: levels for (d, m), then the weighted least-squares (d', m') and the gain
    // d'·Σwxq + m'·Σwx (the refitted error is Σwx² minus it), solved in f64.
    let fit = |d: f32, m: f32| -> Option<(f64, (f32, f32))> {
        let id = 1.0 / d;
        let (mut lq, mut lqq, mut lxq) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                let l = level(x[j], m, id);
                let wl = w[j] * l;
                lq[k] += wl;
                lqq[k] += wl * l;
                lxq[k] += wx[j] * l;
            }
        }
        let (sq, sqq, sxq) = (
            f64::from(hsum(lq)),
            f64::from(hsum(lqq)),
            f64::from(hsum(lxq)),
        );
        let det = sw * sqq - sq * sq;
        if det <= 0.0 {
            return None;
        }
        let d2 = (sw * sxq - sq * sx) / det;
        let m2 = (sqq * sx - sq * sxq) / det;
        let gain = d2 * sxq + m2 * sx;
        (d2 > 0.0 && d2.is_finite() && m2.is_finite()).then_some((gain, (d2 as f32, m2 as f32)))
    };
    let exact = |d: f32, m: f32| {
        let (id, ds, ms) = (1.0 / d, stored(d), stored(m));
        let mut acc = [0f32; LANES];
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                let e = x[j] - (level(x[j], m, id) * ds + ms);
                acc[k] += w[j] * e * e;
            }
        }
        hsum(acc)
    };
    let span = max - min;
    let mut top = [(f64::NEG_INFINITY, (0f32, 0f32)); 6];
    for lo in 0..3 {
        for hi in 0..3 {
            let m0 = min + span * lo as f32 * 0.05;
            let top_v = max - span * hi as f32 * 0.05;
            if let Some(c) = fit((top_v - m0) / nmax as f32, m0) {
                insert_top(&mut top, c);
            }
        }
    }
    for k in (nmax / 2).max(1)..nmax {
        let d = span / k as f32;
        for m0 in [min, max - nmax as f32 * d] {
            if let Some(c) = fit(d, m0) {
                insert_top(&mut top, c);
            }
        }
    }
    // ggml's reference: the full range. Then the best refits, each refined once.
    let mut best = ((max - min) / nmax as f32, min);
    let mut best_err = exact(best.0, best.1);
    for (_, (d1, m1)) in top.into_iter().filter(|c| c.0.is_finite()) {
        let refined = fit(d1, m1).map(|(_, dm)| dm);
        for (d, m) in std::iter::once((d1, m1)).chain(refined) {
            let e = exact(d, m);
            if e < best_err {
                best_err = e;
                best = (d, m);
            }
        }
    }
    let id = 1.0 / best.0;
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(x) {
        *qj = level(v, best.1, id) as u8;
    }
    (best.0, best.1, q)
}

fn put_nibbles(out: &mut [u8], q: &[u8; QK]) {
    for j in 0..16 {
        out[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
}

fn fifth_bit_word(q: &[u8; QK]) -> u32 {
    (0..QK).fold(0u32, |acc, j| acc | (u32::from(q[j] >> 4 & 1) << j))
}

/// Blocks of a row as fixed-size arrays (the row lengths are multiples of 32).
fn blocks<'a>(
    x: &'a [f32],
    w: &'a [f32],
) -> impl Iterator<Item = (&'a [f32; QK], &'a [f32; QK])> + 'a {
    x.chunks_exact(QK)
        .zip(w.chunks_exact(QK))
        .filter_map(|(xb, wb)| Some((xb.try_into().ok()?, wb.try_into().ok()?)))
}

#[inline(always)]
fn symmetric_rows(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    let size = if nmax == 8 { 18 } else { 22 };
    for ((xb, wb), out) in blocks(x, w).zip(dst.chunks_exact_mut(size)) {
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

#[inline(always)]
fn affine_rows(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    let size = if nmax == 15 { 20 } else { 24 };
    for ((xb, wb), out) in blocks(x, w).zip(dst.chunks_exact_mut(size)) {
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn symmetric_rows_avx2(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    symmetric_rows(x, w, dst, nmax)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn affine_rows_avx2(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    affine_rows(x, w, dst, nmax)
}

/// Quantizes one row to Q4_0 (`nmax = 8`) or Q5_0 (`nmax = 16`).
pub(super) fn quantize_symmetric(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { symmetric_rows_avx2(x, w, dst, nmax) };
    }
    symmetric_rows(x, w, dst, nmax)
}

/// Quantizes one row to Q4_1 (`nmax = 15`) or Q5_1 (`nmax = 31`).
pub(super) fn quantize_affine(x: &[f32], w: &[f32], dst: &mut [u8], nmax: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { affine_rows_avx2(x, w, dst, nmax) };
    }
    affine_rows(x, w, dst, nmax)
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
