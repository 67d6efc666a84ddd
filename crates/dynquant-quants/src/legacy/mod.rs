//! Legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Block layouts (`ggml/src/ggml-common.h`): Q4_0 `{d: f16, qs[16]}`, Q4_1 `{d, m: f16, qs[16]}`,
//! Q5_0 `{d, qh: u32, qs[16]}`, Q5_1 `{d, m, qh, qs[16]}`, Q8_0 `{d, qs: i8[32]}`. Nibble byte
//! `j` holds element `j` (low) and `j + 16` (high); bit `j` of `qh` is element `j`'s fifth bit.
//! Dequantization is `q * d` (`+ m` for the `_1` types), unfused, as in ggml's scalar code.

use crate::float::f16_to_f32;

/// Byte offsets of the legacy blocks' fields (`ggml/src/ggml-common.h`, the `block_q*_0/1`
/// structs), shared with the evaluation engine's kernels.
pub mod layout {
    /// `block_q4_0`: f16 scale, 16 bytes of 4-bit values (element `j` low nibble, `j + 16` high).
    pub mod q4_0 {
        /// f16 scale.
        pub const D: usize = 0;
        /// Packed 4-bit values.
        pub const QS: usize = 2;
        /// Bytes per block.
        pub const BYTES: usize = QS + 16;
    }
    /// `block_q4_1`: f16 scale, f16 minimum, 16 bytes of 4-bit values.
    pub mod q4_1 {
        /// f16 scale.
        pub const D: usize = 0;
        /// f16 block minimum.
        pub const M: usize = 2;
        /// Packed 4-bit values.
        pub const QS: usize = 4;
        /// Bytes per block.
        pub const BYTES: usize = QS + 16;
    }
    /// `block_q5_0`: f16 scale, the 32 fifth bits (little-endian u32), 16 bytes of low nibbles.
    pub mod q5_0 {
        /// f16 scale.
        pub const D: usize = 0;
        /// Fifth bits, bit `j` for element `j`.
        pub const QH: usize = 2;
        /// Packed low 4 bits.
        pub const QS: usize = 6;
        /// Bytes per block.
        pub const BYTES: usize = QS + 16;
    }
    /// `block_q5_1`: f16 scale, f16 minimum, the fifth bits, 16 bytes of low nibbles.
    pub mod q5_1 {
        /// f16 scale.
        pub const D: usize = 0;
        /// f16 block minimum.
        pub const M: usize = 2;
        /// Fifth bits, bit `j` for element `j`.
        pub const QH: usize = 4;
        /// Packed low 4 bits.
        pub const QS: usize = 8;
        /// Bytes per block.
        pub const BYTES: usize = QS + 16;
    }
    /// `block_q8_0`: f16 scale, 32 i8 values.
    pub mod q8_0 {
        /// f16 scale.
        pub const D: usize = 0;
        /// i8 values.
        pub const QS: usize = 2;
        /// Bytes per block.
        pub const BYTES: usize = QS + 32;
    }
}

// Block sizes as in ggml's static_asserts (and the type table, checked by the codec tests).
const _: () = assert!(layout::q4_0::BYTES == 18 && layout::q4_1::BYTES == 20);
const _: () = assert!(layout::q5_0::BYTES == 22 && layout::q5_1::BYTES == 24);
const _: () = assert!(layout::q8_0::BYTES == 34);

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
//
// Without importance (plain squared error, `w = None`) the search is replaced by two
// candidates per block, ggml's reference and its least-squares refit (`plain_symmetric`,
// `plain_affine`), written with AVX2 intrinsics beside a portable version (`PlainPass`).

use crate::float::f32_to_f16;

/// Independent partial sums per pass (one AVX2 vector of f32).
const LANES: usize = 8;
type Lanes = [f32; LANES];

/// Sum of the lanes in a fixed order.
#[inline(always)]
fn hsum(a: Lanes) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Minimum of the lanes by the tree `(k, k+4)`, `(k, k+2)`, `(0, 1)`, as the AVX2 reduction
/// does (the order decides which of ±0 is kept).
#[inline(always)]
fn min_tree(a: Lanes) -> f32 {
    let t: [f32; 4] = core::array::from_fn(|k| min_f(a[k], a[k + 4]));
    min_f(min_f(t[0], t[2]), min_f(t[1], t[3]))
}

/// Maximum of the lanes, by the tree of [`min_tree`].
#[inline(always)]
fn max_tree(a: Lanes) -> f32 {
    let t: [f32; 4] = core::array::from_fn(|k| max_f(a[k], a[k + 4]));
    max_f(max_f(t[0], t[2]), max_f(t[1], t[3]))
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
#[inline(always)]
fn stored(d: f32) -> f32 {
    let b = d.to_bits();
    // f16 normal range below 2^15 (f32 exponents 113..=141): round the mantissa to 10 bits,
    // to nearest even, in place (a carry into the exponent is the correct rounding up).
    if (113..=141).contains(&((b >> 23) & 0xff)) {
        return f32::from_bits((b + 0x0fff + ((b >> 13) & 1)) & !0x1fff);
    }
    f16_to_f32(f32_to_f16(d))
}

/// `f32_to_f16(d)`, with the rounding of [`stored`] done in place for the f16 normal range.
#[inline(always)]
fn f16_bits(d: f32) -> u16 {
    let b = d.to_bits();
    if (113..=141).contains(&((b >> 23) & 0xff)) {
        let r = (b + 0x0fff + ((b >> 13) & 1)) & !0x1fff;
        // Rebias the exponent (127 -> 15) and keep the top 10 mantissa bits.
        return ((r >> 16 & 0x8000) | ((r >> 13) - (112 << 10)) & 0x7fff) as u16;
    }
    f32_to_f16(d)
}

/// Symmetric candidate sums, candidate-major: for the scales `1/id[k]`, the levels'
/// `(Σw·x·q, Σw·q²)`. The lanes are the candidates, so each step over the elements is a few
/// vector operations with no horizontal sum.
#[inline(always)]
fn symmetric_sums<const N: usize>(
    x: &[f32; QK],
    w: &[f32; QK],
    wx: &[f32; QK],
    id: &[f32; N],
    (lo, hi): (f32, f32),
) -> ([f32; N], [f32; N]) {
    let (mut sxq, mut sqq) = ([0f32; N], [0f32; N]);
    for j in 0..QK {
        let (xj, wj, wxj) = (x[j], w[j], wx[j]);
        for k in 0..N {
            let l = fast_round(min_f(max_f(xj * id[k], lo), hi));
            sxq[k] += wxj * l;
            sqq[k] += wj * l * l;
        }
    }
    (sxq, sqq)
}

/// Exact weighted errors of symmetric candidates: levels from `id[k]`, reconstruction with
/// the stored scale `ds[k]`.
#[inline(always)]
fn symmetric_errors<const N: usize>(
    x: &[f32; QK],
    w: &[f32; QK],
    id: &[f32; N],
    ds: &[f32; N],
    (lo, hi): (f32, f32),
) -> [f32; N] {
    let mut err = [0f32; N];
    for j in 0..QK {
        let (xj, wj) = (x[j], w[j]);
        for k in 0..N {
            let l = fast_round(min_f(max_f(xj * id[k], lo), hi));
            let e = xj - l * ds[k];
            err[k] += wj * e * e;
        }
    }
    err
}

/// Symmetric block (Q4_0: levels -8..7, Q5_0: -16..15) with `N` candidate scales. Returns
/// (d, levels + nmax).
///
/// Each candidate scale costs one pass: levels are assigned and the weighted least-squares
/// sums gathered together, which gives the candidate's refitted error in closed form
/// (`Σwx² − (Σwxq)²/Σwq²`). Only the three best refitted candidates and ggml's reference
/// scale are then evaluated exactly, on the f16-stored scale.
#[inline(always)]
fn search_symmetric<const N: usize>(x: &[f32; QK], w: &[f32; QK], nmax: i32) -> (f32, [u8; QK]) {
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
    let range = (-(nmax as f32), (nmax - 1) as f32);
    // Candidates: the extreme value mapped to fractional levels near the ends (steps of 3/7
    // from nmax − 2 up), and for the 5-bit type to whole levels from nmax/2 − 2 up, which
    // finds blocks already on a coarser grid; negative signs in the first half of the lanes.
    let half = N / 2;
    let n_frac = if nmax > 8 { 8 } else { half };
    let mut id = [0f32; N];
    for (i, t) in (0..n_frac)
        .map(|s| nmax as f32 - 2.0 + s as f32 * (3.0 / 7.0))
        .chain((nmax / 2 - 2..).map(|k| k as f32))
        .take(half)
        .enumerate()
    {
        id[i] = -t / amax;
        id[half + i] = t / amax;
    }
    let (sxq, sqq) = symmetric_sums(x, w, &wx, &id, range);
    // The three best refits by closed-form gain (sxq²/sqq).
    let mut top = [(f32::NEG_INFINITY, 0f32); 3];
    for k in 0..N {
        if sqq[k] > 0.0 {
            let c = (sxq[k] * sxq[k] / sqq[k], sxq[k] / sqq[k]);
            if let Some(pos) = top.iter().position(|t| c.0 > t.0) {
                top[pos..].rotate_right(1);
                top[pos] = c;
            }
        }
    }
    // ggml's reference scale first: it wins ties, so a block is never worse than ggml's ref.
    let mut d = [max / -(nmax as f32); 4];
    for (dk, &(_, dt)) in d[1..].iter_mut().zip(&top) {
        if dt != 0.0 && dt.is_finite() {
            *dk = dt;
        }
    }
    let (mut idd, mut ds) = ([0f32; 4], [0f32; 4]);
    for k in 0..4 {
        idd[k] = 1.0 / d[k];
        ds[k] = stored(d[k]);
    }
    let err = symmetric_errors(x, w, &idd, &ds, range);
    let mut best = 0;
    for k in 1..4 {
        if err[k] < err[best] {
            best = k;
        }
    }
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(x) {
        let l = fast_round(min_f(max_f(v * idd[best], range.0), range.1));
        *qj = (l as i32 + nmax) as u8;
    }
    (d[best], q)
}

/// Affine candidate sums, candidate-major: levels for `(1/id[k], m[k])`, then
/// `(Σw·q, Σw·q², Σw·x·q)`.
#[inline(always)]
fn affine_sums<const N: usize>(
    x: &[f32; QK],
    w: &[f32; QK],
    wx: &[f32; QK],
    id: &[f32; N],
    m: &[f32; N],
    top_level: f32,
) -> [[f32; N]; 3] {
    let (mut sq, mut sqq, mut sxq) = ([0f32; N], [0f32; N], [0f32; N]);
    for j in 0..QK {
        let (xj, wj, wxj) = (x[j], w[j], wx[j]);
        for k in 0..N {
            let l = fast_round(min_f(max_f((xj - m[k]) * id[k], 0.0), top_level));
            let wl = wj * l;
            sq[k] += wl;
            sqq[k] += wl * l;
            sxq[k] += wxj * l;
        }
    }
    [sq, sqq, sxq]
}

/// Exact weighted errors of affine candidates: levels from `(id[k], m[k])`, reconstruction
/// `q·ds[k] + ms[k]` with the stored scale and offset.
#[inline(always)]
fn affine_errors<const N: usize>(
    x: &[f32; QK],
    w: &[f32; QK],
    (id, m): (&[f32; N], &[f32; N]),
    (ds, ms): (&[f32; N], &[f32; N]),
    top_level: f32,
) -> [f32; N] {
    let mut err = [0f32; N];
    for j in 0..QK {
        let (xj, wj) = (x[j], w[j]);
        for k in 0..N {
            let l = fast_round(min_f(max_f((xj - m[k]) * id[k], 0.0), top_level));
            let e = xj - (l * ds[k] + ms[k]);
            err[k] += wj * e * e;
        }
    }
    err
}

/// Weighted least-squares refit of one affine candidate from its sums: `(gain, (d', m'))`,
/// where the refitted error is `Σwx²` minus the gain `d'·Σwxq + m'·Σwx`. Solved in f64.
fn affine_refit(sw: f64, sx: f64, sq: f32, sqq: f32, sxq: f32) -> Option<(f64, (f32, f32))> {
    let (sq, sqq, sxq) = (f64::from(sq), f64::from(sqq), f64::from(sxq));
    let det = sw * sqq - sq * sq;
    if det <= 0.0 {
        return None;
    }
    let d2 = (sw * sxq - sq * sx) / det;
    let m2 = (sqq * sx - sq * sxq) / det;
    let gain = d2 * sxq + m2 * sx;
    (d2 > 0.0 && d2.is_finite() && m2.is_finite()).then_some((gain, (d2 as f32, m2 as f32)))
}

/// Affine block (Q4_1: levels 0..15, Q5_1: 0..31), x ≈ d·q + m, with `N = 8 + 2·⌈nmax/2⌉`
/// candidate ranges. Returns (d, m, levels).
///
/// Candidate ranges: (a) the full range shrunk from either end (8 ways); (b) the range split
/// into k < nmax steps anchored at the minimum or the maximum, which finds blocks already on
/// a coarser grid (weights once quantized with fewer bits). Each candidate costs one pass
/// (levels and least-squares sums together; refitted error in closed form); the six best are
/// refined once more, and those twelve and ggml's reference range are evaluated exactly, on
/// the f16-stored scale and offset.
#[inline(always)]
fn search_affine<const N: usize>(x: &[f32; QK], w: &[f32; QK], nmax: i32) -> (f32, f32, [u8; QK]) {
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
    let span = max - min;
    let (mut id, mut m) = ([0f32; N], [0f32; N]);
    let mut n = 0;
    for (lo, hi) in (0..9).filter(|&i| i != 8).map(|i| (i / 3, i % 3)) {
        let m0 = min + span * lo as f32 * 0.05;
        let top_v = max - span * hi as f32 * 0.05;
        id[n] = 1.0 / ((top_v - m0) / top_level);
        m[n] = m0;
        n += 1;
    }
    for k in (nmax / 2).max(1)..nmax {
        let d = span / k as f32;
        for m0 in [min, max - top_level * d] {
            if n < N {
                id[n] = 1.0 / d;
                m[n] = m0;
                n += 1;
            }
        }
    }
    let [sq, sqq, sxq] = affine_sums(x, w, &wx, &id, &m, top_level);
    // Closed-form refit gains of all candidates (a loop the compiler vectorizes), then the
    // six best, refitted.
    let mut gains = [f64::NEG_INFINITY; N];
    for k in 0..N {
        let (q, qq, xq) = (f64::from(sq[k]), f64::from(sqq[k]), f64::from(sxq[k]));
        let det = sw * qq - q * q;
        let num_d = sw * xq - q * sx;
        let num_m = qq * sx - q * xq;
        let g = (num_d * xq + num_m * sx) / det;
        let ok = det > 0.0 && num_d > 0.0 && g.is_finite();
        gains[k] = if ok { g } else { f64::NEG_INFINITY };
    }
    let mut best6 = [(f64::NEG_INFINITY, 0usize); 6];
    for (k, &g) in gains.iter().enumerate().take(n) {
        if g > best6[5].0 {
            let mut pos = 5;
            while pos > 0 && g > best6[pos - 1].0 {
                best6[pos] = best6[pos - 1];
                pos -= 1;
            }
            best6[pos] = (g, k);
        }
    }
    let mut top = [(f64::NEG_INFINITY, (0f32, 0f32)); 6];
    for (t, &(g, k)) in top.iter_mut().zip(&best6) {
        if g.is_finite() {
            if let Some(c) = affine_refit(sw, sx, sq[k], sqq[k], sxq[k]) {
                *t = c;
            }
        }
    }
    // Exact candidates: ggml's reference (the full range; first, so it wins ties), the six
    // best refits, and each of those refined once more (one more candidate-major pass).
    let reference = (span / top_level, min);
    let mut cand = [reference; 16];
    let (mut rid, mut rm) = ([0f32; LANES], [0f32; LANES]);
    for (i, &(gain, dm)) in top.iter().enumerate() {
        let dm = if gain.is_finite() { dm } else { reference };
        cand[1 + i] = dm;
        rid[i] = 1.0 / dm.0;
        rm[i] = dm.1;
    }
    let [rq, rqq, rxq] = affine_sums(x, w, &wx, &rid, &rm, top_level);
    for i in 0..6 {
        if let Some((_, dm)) = affine_refit(sw, sx, rq[i], rqq[i], rxq[i]) {
            cand[7 + i] = dm;
        }
    }
    let (mut cid, mut cm, mut cds, mut cms) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
    for (k, &(d, mk)) in cand.iter().enumerate() {
        cid[k] = 1.0 / d;
        cm[k] = mk;
        cds[k] = stored(d);
        cms[k] = stored(mk);
    }
    let err = affine_errors(x, w, (&cid, &cm), (&cds, &cms), top_level);
    let mut best = 0;
    for k in 1..16 {
        if err[k] < err[best] {
            best = k;
        }
    }
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(x) {
        *qj = fast_round(min_f(max_f((v - cm[best]) * cid[best], 0.0), top_level)) as u8;
    }
    (cand[best].0, cand[best].1, q)
}

/// One element-major pass of the no-importance paths over a block, for the lanes of one
/// AVX2 vector: the portable reference and the AVX2 intrinsics version perform the same IEEE
/// operations in the same order per lane (no FMA), so they give identical results.
trait PlainPass {
    /// Largest magnitude per lane and its signed value.
    fn amax(x: &[f32; QK]) -> (Lanes, Lanes);
    /// Minimum, maximum (reduced over the lanes by [`min_tree`]/[`max_tree`]) and sum (by
    /// [`hsum`]).
    fn min_max_sum(x: &[f32; QK]) -> (f32, f32, f32);
    /// Symmetric levels `round(clamp(x·id, lo, hi))` into `l`; `(Σxq, Σq², Σ(x − q·ds)²)`, each
    /// summed per lane and then over the lanes as [`hsum`] does.
    fn symmetric(x: &[f32; QK], id: f32, ds: f32, lo: f32, hi: f32, l: &mut [f32; QK]) -> [f32; 3];
    /// Affine levels `round(clamp((x − m)·id, 0, top))` into `l`;
    /// `(Σq, Σq², Σxq, Σ(x − (q·ds + ms))²)`, summed as by `symmetric`.
    fn affine(
        x: &[f32; QK],
        id_m: (f32, f32),
        stored: (f32, f32),
        top: f32,
        l: &mut [f32; QK],
    ) -> [f32; 4];
    /// Packs levels `l + off` (integers in 0..32): nibble byte `j` holds elements `j` and
    /// `j + 16`; returns the fifth bits (bit `j`: element `j` >= 16).
    fn pack(l: &[f32; QK], off: f32, nib: &mut [u8; 16]) -> u32;
}

/// The portable passes (lane arrays).
struct Portable;

impl PlainPass for Portable {
    #[inline(always)]
    fn amax(x: &[f32; QK]) -> (Lanes, Lanes) {
        let (mut la, mut lm) = ([0f32; LANES], [0f32; LANES]);
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                let a = x[j].abs();
                let gt = a > la[k];
                la[k] = if gt { a } else { la[k] };
                lm[k] = if gt { x[j] } else { lm[k] };
            }
        }
        (la, lm)
    }

    #[inline(always)]
    fn min_max_sum(x: &[f32; QK]) -> (f32, f32, f32) {
        let (mut lmin, mut lmax) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
        let mut lx = [0f32; LANES];
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                lmin[k] = min_f(x[j], lmin[k]);
                lmax[k] = max_f(x[j], lmax[k]);
                lx[k] += x[j];
            }
        }
        (min_tree(lmin), max_tree(lmax), hsum(lx))
    }

    #[inline(always)]
    fn symmetric(x: &[f32; QK], id: f32, ds: f32, lo: f32, hi: f32, l: &mut [f32; QK]) -> [f32; 3] {
        let (mut sxq, mut sqq, mut err) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                let v = fast_round(min_f(max_f(x[j] * id, lo), hi));
                l[j] = v;
                sxq[k] += x[j] * v;
                sqq[k] += v * v;
                let e = x[j] - v * ds;
                err[k] += e * e;
            }
        }
        [hsum(sxq), hsum(sqq), hsum(err)]
    }

    #[inline(always)]
    fn affine(
        x: &[f32; QK],
        (id, m): (f32, f32),
        (ds, ms): (f32, f32),
        top: f32,
        l: &mut [f32; QK],
    ) -> [f32; 4] {
        let (mut sq, mut sqq, mut sxq) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let mut err = [0f32; LANES];
        for c in 0..QK / LANES {
            for k in 0..LANES {
                let j = c * LANES + k;
                let v = fast_round(min_f(max_f((x[j] - m) * id, 0.0), top));
                l[j] = v;
                sq[k] += v;
                sqq[k] += v * v;
                sxq[k] += x[j] * v;
                let e = x[j] - (v * ds + ms);
                err[k] += e * e;
            }
        }
        [hsum(sq), hsum(sqq), hsum(sxq), hsum(err)]
    }

    #[inline(always)]
    fn pack(l: &[f32; QK], off: f32, nib: &mut [u8; 16]) -> u32 {
        let mut qh = 0u32;
        for j in 0..16 {
            let (a, b) = ((l[j] + off) as u32, (l[j + 16] + off) as u32);
            nib[j] = ((a & 15) | (b & 15) << 4) as u8;
            qh |= (a >> 4 & 1) << j | (b >> 4 & 1) << (j + 16);
        }
        qh
    }
}

/// The AVX2 passes (one `__m256` per lane array). Only used from functions compiled with
/// AVX2 enabled, after the run-time check.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Lanes, QK};
    use std::arch::x86_64::*;

    #[inline(always)]
    pub(super) fn load(x: &[f32; QK], c: usize) -> __m256 {
        let v: &[f32; 8] = x[c * 8..c * 8 + 8].try_into().expect("8 lanes");
        // SAFETY: reads 8 f32 from a reference to 8 f32.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    #[inline(always)]
    pub(super) fn store(l: &mut [f32; QK], c: usize, v: __m256) {
        let o: &mut [f32; 8] = (&mut l[c * 8..c * 8 + 8]).try_into().expect("8 lanes");
        // SAFETY: writes 8 f32 through a reference to 8 f32.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
    }

    /// [`super::hsum`] of the lanes, in the same order: `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
    #[inline(always)]
    pub(super) fn hsum(v: __m256) -> f32 {
        // SAFETY: AVX is enabled in every caller.
        unsafe {
            let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
            _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)))
        }
    }

    #[inline(always)]
    pub(super) fn lanes(v: __m256) -> Lanes {
        let mut a = [0f32; 8];
        // SAFETY: writes 8 f32 into an array of 8 f32.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
        a
    }
}

#[cfg(target_arch = "x86_64")]
impl PlainPass for Avx2 {
    #[inline(always)]
    fn amax(x: &[f32; QK]) -> (Lanes, Lanes) {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled in every caller (checked at run time before entry).
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let (mut la, mut lm) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for c in 0..QK / LANES {
                let v = avx2::load(x, c);
                let a = _mm256_andnot_ps(sign, v);
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(a, la);
                la = _mm256_blendv_ps(la, a, gt);
                lm = _mm256_blendv_ps(lm, v, gt);
            }
            (avx2::lanes(la), avx2::lanes(lm))
        }
    }

    #[inline(always)]
    fn min_max_sum(x: &[f32; QK]) -> (f32, f32, f32) {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled in every caller.
        unsafe {
            let mut lmin = _mm256_set1_ps(f32::INFINITY);
            let mut lmax = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut lx = _mm256_setzero_ps();
            for c in 0..QK / LANES {
                let v = avx2::load(x, c);
                lmin = _mm256_min_ps(v, lmin);
                lmax = _mm256_max_ps(v, lmax);
                lx = _mm256_add_ps(lx, v);
            }
            // The same reduction trees as `min_tree`/`max_tree` (they decide ±0 ties).
            let t = _mm_min_ps(
                _mm256_castps256_ps128(lmin),
                _mm256_extractf128_ps::<1>(lmin),
            );
            let u = _mm_min_ps(t, _mm_movehl_ps(t, t));
            let min = _mm_cvtss_f32(_mm_min_ss(u, _mm_movehdup_ps(u)));
            let t = _mm_max_ps(
                _mm256_castps256_ps128(lmax),
                _mm256_extractf128_ps::<1>(lmax),
            );
            let u = _mm_max_ps(t, _mm_movehl_ps(t, t));
            let max = _mm_cvtss_f32(_mm_max_ss(u, _mm_movehdup_ps(u)));
            (min, max, avx2::hsum(lx))
        }
    }

    #[inline(always)]
    fn symmetric(x: &[f32; QK], id: f32, ds: f32, lo: f32, hi: f32, l: &mut [f32; QK]) -> [f32; 3] {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled in every caller.
        unsafe {
            let (vid, vds) = (_mm256_set1_ps(id), _mm256_set1_ps(ds));
            let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
            let magic = _mm256_set1_ps(12_582_912.0);
            let (mut sxq, mut sqq, mut err) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            for c in 0..QK / LANES {
                let xv = avx2::load(x, c);
                let t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, vid), vlo), vhi);
                let v = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
                avx2::store(l, c, v);
                sxq = _mm256_add_ps(sxq, _mm256_mul_ps(xv, v));
                sqq = _mm256_add_ps(sqq, _mm256_mul_ps(v, v));
                let e = _mm256_sub_ps(xv, _mm256_mul_ps(v, vds));
                err = _mm256_add_ps(err, _mm256_mul_ps(e, e));
            }
            [avx2::hsum(sxq), avx2::hsum(sqq), avx2::hsum(err)]
        }
    }

    #[inline(always)]
    fn affine(
        x: &[f32; QK],
        (id, m): (f32, f32),
        (ds, ms): (f32, f32),
        top: f32,
        l: &mut [f32; QK],
    ) -> [f32; 4] {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled in every caller.
        unsafe {
            let (vid, vm) = (_mm256_set1_ps(id), _mm256_set1_ps(m));
            let (vds, vms) = (_mm256_set1_ps(ds), _mm256_set1_ps(ms));
            let (zero, vtop) = (_mm256_setzero_ps(), _mm256_set1_ps(top));
            let magic = _mm256_set1_ps(12_582_912.0);
            let (mut sq, mut sqq, mut sxq, mut err) = (zero, zero, zero, zero);
            for c in 0..QK / LANES {
                let xv = avx2::load(x, c);
                let t = _mm256_mul_ps(_mm256_sub_ps(xv, vm), vid);
                let t = _mm256_min_ps(_mm256_max_ps(t, zero), vtop);
                let v = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
                avx2::store(l, c, v);
                sq = _mm256_add_ps(sq, v);
                sqq = _mm256_add_ps(sqq, _mm256_mul_ps(v, v));
                sxq = _mm256_add_ps(sxq, _mm256_mul_ps(xv, v));
                let e = _mm256_sub_ps(xv, _mm256_add_ps(_mm256_mul_ps(v, vds), vms));
                err = _mm256_add_ps(err, _mm256_mul_ps(e, e));
            }
            [
                avx2::hsum(sq),
                avx2::hsum(sqq),
                avx2::hsum(sxq),
                avx2::hsum(err),
            ]
        }
    }

    #[inline(always)]
    fn pack(l: &[f32; QK], off: f32, nib: &mut [u8; 16]) -> u32 {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled in every caller; the store writes 16 bytes into `nib`.
        unsafe {
            let (voff, sixteen) = (_mm256_set1_ps(off), _mm256_set1_ps(16.0));
            let v = [
                _mm256_add_ps(avx2::load(l, 0), voff),
                _mm256_add_ps(avx2::load(l, 1), voff),
                _mm256_add_ps(avx2::load(l, 2), voff),
                _mm256_add_ps(avx2::load(l, 3), voff),
            ];
            let mut qh = 0u32;
            for (c, &vc) in v.iter().enumerate() {
                let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(vc, sixteen);
                qh |= (_mm256_movemask_ps(ge) as u32) << (8 * c);
            }
            let m15 = _mm256_set1_epi32(15);
            let i = [
                _mm256_and_si256(_mm256_cvttps_epi32(v[0]), m15),
                _mm256_and_si256(_mm256_cvttps_epi32(v[1]), m15),
                _mm256_and_si256(_mm256_cvttps_epi32(v[2]), m15),
                _mm256_and_si256(_mm256_cvttps_epi32(v[3]), m15),
            ];
            let b0 = _mm256_or_si256(i[0], _mm256_slli_epi32::<4>(i[2]));
            let b1 = _mm256_or_si256(i[1], _mm256_slli_epi32::<4>(i[3]));
            let p = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(b0, b1));
            let bytes =
                _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
            _mm_storeu_si128(nib.as_mut_ptr().cast(), bytes);
            qh
        }
    }
}

/// Symmetric block without importance (plain squared error), written to `out` (Q4_0: 18
/// bytes, Q5_0: 22). Two candidates: ggml's reference scale `max/−nmax`, and the closed-form
/// least-squares refit of the scale for the levels the reference chose, re-rounded. Both are
/// evaluated exactly on the f16-stored scale (one element-major pass each, which also yields
/// the refit sums); the reference wins ties, so a block is never worse than ggml's reference.
#[inline(always)]
fn plain_symmetric<P: PlainPass>(x: &[f32; QK], nmax: i32, out: &mut [u8]) -> bool {
    let (la, lm) = P::amax(x);
    let (mut amax, mut max) = (0f32, 0f32);
    for k in 0..LANES {
        if la[k] > amax {
            amax = la[k];
            max = lm[k];
        }
    }
    if amax == 0.0 {
        put_symmetric::<P>(out, nmax, 0.0, &[0.0; QK]);
        // (A NaN is invisible to the maximum.)
        return x.iter().all(|v| v.is_finite());
    }
    let (lo, hi) = (-(nmax as f32), (nmax - 1) as f32);
    let d0 = max / -(nmax as f32);
    let mut l0 = [0f32; QK];
    let [sxq, sqq, e0] = P::symmetric(x, 1.0 / d0, stored(d0), lo, hi, &mut l0);
    // (The inverse step as Σq²/Σxq, not 1/d: one division less on the critical path.)
    let (d1, id1) = (sxq / sqq, sqq / sxq);
    if !near_grid(e0, d0) && d1.is_finite() && id1.is_finite() && d1 != 0.0 && d1 != d0 {
        let mut l1 = [0f32; QK];
        let [_, _, e1] = P::symmetric(x, id1, stored(d1), lo, hi, &mut l1);
        if e1 < e0 {
            put_symmetric::<P>(out, nmax, d1, &l1);
            return true;
        }
    }
    put_symmetric::<P>(out, nmax, d0, &l0);
    e0.is_finite()
}

/// Affine block without importance, written to `out` (Q4_1: 20 bytes, Q5_1: 24). Two
/// candidates: ggml's reference range (`d = (max − min)/nmax`, `m = min`) and the closed-form
/// least-squares refit of `(d, m)` for the levels the reference chose, re-rounded; both
/// evaluated exactly on the f16-stored scale and offset, the reference winning ties.
#[inline(always)]
fn plain_affine<P: PlainPass>(x: &[f32; QK], nmax: i32, out: &mut [u8]) -> bool {
    let (min, max, sx) = P::min_max_sum(x);
    if max == min {
        put_affine::<P>(out, nmax, (0.0, min), &[0.0; QK]);
        // (A NaN is invisible to the minimum and maximum, not to the sum.)
        return sx.is_finite();
    }
    let sw = QK as f32;
    let top = nmax as f32;
    let (d0, m0) = ((max - min) / top, min);
    let mut l0 = [0f32; QK];
    let [sq, sqq, sxq, e0] = P::affine(x, (1.0 / d0, m0), (stored(d0), stored(m0)), top, &mut l0);
    // Least-squares refit in f32: Σq and Σq² are sums of small integers, so the determinant
    // is exact; the refit is only a candidate, evaluated exactly.
    // (The inverse step comes straight from the determinant, not as 1/d: one division less
    // on the block's critical path.)
    let det = sw * sqq - sq * sq;
    let (num_d, inv) = (sw * sxq - sq * sx, 1.0 / det);
    let (d1, m1, id1) = (num_d * inv, (sqq * sx - sq * sxq) * inv, det / num_d);
    let useful = det > 0.0 && d1 > 0.0 && d1.is_finite() && m1.is_finite() && id1.is_finite();
    if !near_grid(e0, d0) && useful && (d1, m1) != (d0, m0) {
        let mut l1 = [0f32; QK];
        let [_, _, _, e1] = P::affine(x, (id1, m1), (stored(d1), stored(m1)), top, &mut l1);
        if e1 < e0 {
            put_affine::<P>(out, nmax, (d1, m1), &l1);
            return true;
        }
    }
    put_affine::<P>(out, nmax, (d0, m0), &l0);
    e0.is_finite()
}

/// Whether a block's reference error `e` at step `d` is far below the rounding noise of
/// values spread evenly between levels (`d²/12` per element): the block lies on (or very
/// near) a grid of that step, and a refit has next to nothing to gain. The refit pass is
/// skipped for such blocks, common in weights that were quantized before.
#[inline(always)]
fn near_grid(e: f32, d: f32) -> bool {
    e <= NEAR_GRID * (QK as f32 / 12.0) * d * d
}

/// Fraction of the rounding noise below which a block counts as on the grid.
const NEAR_GRID: f32 = 0.25;

/// Writes a Q4_0/Q5_0 block from its scale and signed levels. (A function, not a closure: a
/// closure is not inlined into the AVX2 build reliably, and the intrinsics need that.)
#[inline(always)]
fn put_symmetric<P: PlainPass>(out: &mut [u8], nmax: i32, d: f32, l: &[f32; QK]) {
    out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
    let mut nib = [0u8; 16];
    let qh = P::pack(l, nmax as f32, &mut nib);
    if nmax == 8 {
        out[2..18].copy_from_slice(&nib);
    } else {
        out[2..6].copy_from_slice(&qh.to_le_bytes());
        out[6..22].copy_from_slice(&nib);
    }
}

/// Writes a Q4_1/Q5_1 block from its scale, offset and levels.
#[inline(always)]
fn put_affine<P: PlainPass>(out: &mut [u8], nmax: i32, (d, m): (f32, f32), l: &[f32; QK]) {
    out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
    out[2..4].copy_from_slice(&f16_bits(m).to_le_bytes());
    let mut nib = [0u8; 16];
    let qh = P::pack(l, 0.0, &mut nib);
    if nmax == 15 {
        out[4..20].copy_from_slice(&nib);
    } else {
        out[4..8].copy_from_slice(&qh.to_le_bytes());
        out[8..24].copy_from_slice(&nib);
    }
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
fn symmetric_rows<P: PlainPass>(x: &[f32], w: Option<&[f32]>, dst: &mut [u8], nmax: i32) -> bool {
    let size = if nmax == 8 { 18 } else { 22 };
    let put = |out: &mut [u8], (d, q): (f32, [u8; QK])| {
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        if nmax == 8 {
            put_nibbles(&mut out[2..18], &q);
        } else {
            out[2..6].copy_from_slice(&fifth_bit_word(&q).to_le_bytes());
            put_nibbles(&mut out[6..22], &q);
        }
    };
    let Some(w) = w else {
        let mut finite = true;
        for (xb, out) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(size)) {
            if let Ok(xb) = xb.try_into() {
                finite &= plain_symmetric::<P>(xb, nmax, out);
            }
        }
        return finite;
    };
    for ((xb, wb), out) in blocks(x, w).zip(dst.chunks_exact_mut(size)) {
        let dq = if nmax == 8 {
            search_symmetric::<16>(xb, wb, nmax)
        } else {
            search_symmetric::<32>(xb, wb, nmax)
        };
        put(out, dq);
    }
    true
}

#[inline(always)]
fn affine_rows<P: PlainPass>(x: &[f32], w: Option<&[f32]>, dst: &mut [u8], nmax: i32) -> bool {
    let size = if nmax == 15 { 20 } else { 24 };
    let put = |out: &mut [u8], (d, m, q): (f32, f32, [u8; QK])| {
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        out[2..4].copy_from_slice(&f32_to_f16(m).to_le_bytes());
        if nmax == 15 {
            put_nibbles(&mut out[4..20], &q);
        } else {
            out[4..8].copy_from_slice(&fifth_bit_word(&q).to_le_bytes());
            put_nibbles(&mut out[8..24], &q);
        }
    };
    let Some(w) = w else {
        let mut finite = true;
        for (xb, out) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(size)) {
            if let Ok(xb) = xb.try_into() {
                finite &= plain_affine::<P>(xb, nmax, out);
            }
        }
        return finite;
    };
    for ((xb, wb), out) in blocks(x, w).zip(dst.chunks_exact_mut(size)) {
        let dmq = if nmax == 15 {
            search_affine::<24>(xb, wb, nmax)
        } else {
            search_affine::<40>(xb, wb, nmax)
        };
        put(out, dmq);
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn symmetric_rows_avx2(x: &[f32], w: Option<&[f32]>, dst: &mut [u8], nmax: i32) -> bool {
    symmetric_rows::<Avx2>(x, w, dst, nmax)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn affine_rows_avx2(x: &[f32], w: Option<&[f32]>, dst: &mut [u8], nmax: i32) -> bool {
    affine_rows::<Avx2>(x, w, dst, nmax)
}

/// Quantizes one row to Q4_0 (`nmax = 8`) or Q5_0 (`nmax = 16`); `w`: importance, `None` for
/// the plain squared error. Without importance, returns false if the row may hold a
/// non-finite value (the caller checks it then); with importance the caller checks first.
pub(super) fn quantize_symmetric(x: &[f32], w: Option<&[f32]>, dst: &mut [u8], nmax: i32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { symmetric_rows_avx2(x, w, dst, nmax) };
    }
    symmetric_rows::<Portable>(x, w, dst, nmax)
}

/// Quantizes one row to Q4_1 (`nmax = 15`) or Q5_1 (`nmax = 31`); `w`: importance, `None` for
/// the plain squared error. Returns as [`quantize_symmetric`].
pub(super) fn quantize_affine(x: &[f32], w: Option<&[f32]>, dst: &mut [u8], nmax: i32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { affine_rows_avx2(x, w, dst, nmax) };
    }
    affine_rows::<Portable>(x, w, dst, nmax)
}

/// Q8_0 exactly as ggml's reference: `d = amax/127`, `q = roundf(x/d)` (half away from zero).
/// Importance cannot improve a 255-level block noticeably; bytes match ggml's. Written so
/// that both loops vectorize: lane maxima, and `roundf` as truncation plus a carry.
pub(super) fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    for (xb, out) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(34)) {
        let mut lm = [0f32; LANES];
        for c in xb.chunks_exact(LANES) {
            for k in 0..LANES {
                lm[k] = max_f(c[k].abs(), lm[k]);
            }
        }
        let amax = lm.iter().fold(0f32, |a, &b| max_f(b, a));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for (o, &v) in out[2..].iter_mut().zip(xb) {
            // |v·id| <= 127 (plus rounding), so the truncating conversion is exact and
            // `roundf` is the truncation plus one away from zero from a fraction of 1/2 on.
            // The clamp only matters where 1/d overflows (tiny subnormal blocks): ±inf
            // saturates as before, NaN stays NaN and gives 0.
            let y = v * id;
            let y = if 127.0 < y { 127.0 } else { y };
            let y = if y < -128.0 { -128.0 } else { y };
            let t = y as i32;
            let f = y - t as f32;
            let q = t + i32::from(f >= 0.5) - i32::from(f <= -0.5);
            *o = q as i8 as u8;
        }
    }
}

use crate::codec::{BlockCheck, Codec};
use dynquant_gguf::types::GgmlType;

/// A legacy row: without importance the searches report non-finite input on the way.
const fn legacy_codec(
    ty: GgmlType,
    dequantize: crate::codec::DequantizeFn,
    quantize: crate::codec::QuantizeRowFn,
    scales: &'static [usize],
) -> Codec {
    Codec {
        checks_input_on_the_way: true,
        ..Codec::new(ty, dequantize, quantize, BlockCheck::HalfScalesAt(scales))
    }
}

/// Codec rows of the legacy types; the checked scales are `d` (and `m`) at the block start.
pub(crate) const CODECS: &[Codec] = &[
    legacy_codec(
        GgmlType::Q4_0,
        dequantize_q4_0,
        |x, given, w, out| quantize_symmetric(x, given.map(|_| w), out, 8),
        &[layout::q4_0::D],
    ),
    legacy_codec(
        GgmlType::Q5_0,
        dequantize_q5_0,
        |x, given, w, out| quantize_symmetric(x, given.map(|_| w), out, 16),
        &[layout::q5_0::D],
    ),
    legacy_codec(
        GgmlType::Q4_1,
        dequantize_q4_1,
        |x, given, w, out| quantize_affine(x, given.map(|_| w), out, 15),
        &[layout::q4_1::D, layout::q4_1::M],
    ),
    legacy_codec(
        GgmlType::Q5_1,
        dequantize_q5_1,
        |x, given, w, out| quantize_affine(x, given.map(|_| w), out, 31),
        &[layout::q5_1::D, layout::q5_1::M],
    ),
    Codec::new(
        GgmlType::Q8_0,
        dequantize_q8_0,
        |x, _, _, out| {
            quantize_q8_0(x, out);
            true
        },
        BlockCheck::HalfScalesAt(&[layout::q8_0::D]),
    ),
];

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
            quantize_affine(&x, Some(&w), &mut out, nmax);
            if nmax == 15 {
                dequantize_q4_1(&out, &mut y)
            } else {
                dequantize_q5_1(&out, &mut y)
            }
        } else {
            quantize_symmetric(&x, Some(&w), &mut out, nmax);
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

    /// The portable searches against their stored fingerprint and, where the CPU has AVX2,
    /// the dispatched (AVX2) build against the portable one.
    #[test]
    fn avx2_build_gives_the_same_bytes_as_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        let avx2 = crate::test_rows::has_avx2("legacy searches, AVX2 build");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        let mut all_portable = Vec::new();
        let (x, ws) = crate::test_rows::varied_rows();
        // Also blocks already on a 4-bit grid (the grid-finding candidates).
        let grid: Vec<f32> = (0..256)
            .map(|j| ((j * 7 + j / 32) % 16) as f32 * 0.0625 - 0.4 + (j / 32) as f32 * 0.01)
            .collect();
        let x: Vec<f32> = x.into_iter().chain(grid).collect();
        let n_blocks = x.len() / QK;
        let ws: Vec<Option<Vec<f32>>> = ws
            .iter()
            .map(|w| Some(w.iter().copied().cycle().take(x.len()).collect()))
            .chain([None])
            .collect();
        for w in &ws {
            let w = w.as_deref();
            for (nmax, size) in [(8, 18), (16, 22)] {
                let (mut a, mut b) = (vec![0u8; n_blocks * size], vec![0u8; n_blocks * size]);
                symmetric_rows::<Portable>(&x, w, &mut a, nmax);
                if avx2 {
                    quantize_symmetric(&x, w, &mut b, nmax);
                    assert_eq!(a, b, "nmax {nmax}");
                }
                all_portable.extend_from_slice(&a);
            }
            for (nmax, size) in [(15, 20), (31, 24)] {
                let (mut a, mut b) = (vec![0u8; n_blocks * size], vec![0u8; n_blocks * size]);
                affine_rows::<Portable>(&x, w, &mut a, nmax);
                if avx2 {
                    quantize_affine(&x, w, &mut b, nmax);
                    assert_eq!(a, b, "nmax {nmax}");
                }
                all_portable.extend_from_slice(&a);
            }
        }
        assert_eq!(
            crate::test_rows::fingerprint(&all_portable),
            PORTABLE_FINGERPRINT,
            "the portable legacy bytes changed"
        );
    }

    /// [`crate::test_rows::fingerprint`] of the portable bytes above (recorded where the AVX2
    /// build gave the same bytes).
    const PORTABLE_FINGERPRINT: u64 = 13587795816567919227;

    #[test]
    fn q8_0_rounds_as_roundf_and_survives_tiny_blocks() {
        // The scalar reference: roundf, saturating casts.
        let reference = |x: &[f32]| {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut out = f32_to_f16(d).to_le_bytes().to_vec();
            out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
            out
        };
        let blocks: Vec<Vec<f32>> = vec![
            (0..32).map(|j| (j as f32 - 15.5) * 0.37).collect(),
            (0..32).map(|j| (j as f32 - 16.0) * 127.0 / 16.0).collect(),
            (0..32)
                .map(|j| {
                    if j == 3 {
                        2.5
                    } else {
                        (j % 5) as f32 * 0.5 - 1.0
                    }
                })
                .collect(),
            (0..32).map(|j| (j as f32 - 7.0) * 1e-45).collect(),
            (0..32).map(|j| (j as f32 - 7.0) * 1e-41).collect(),
            vec![0.0; 32],
        ];
        for x in blocks {
            let mut out = vec![0u8; 34];
            quantize_q8_0(&x, &mut out);
            assert_eq!(out, reference(&x), "{x:?}");
        }
    }

    #[test]
    fn fast_f16_rounding_is_halfs() {
        let mut s = 0x9e37_79b9u32;
        let check = |b: u32| {
            let d = f32::from_bits(b);
            if d.is_finite() {
                let want = f16_to_f32(f32_to_f16(d));
                assert_eq!(stored(d).to_bits(), want.to_bits(), "{d:e}");
                assert_eq!(f16_bits(d), f32_to_f16(d), "{d:e}");
            }
        };
        for e in 110u32..=145 {
            for m in [
                0, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7f_f000, 0x7f_ffff,
            ] {
                check(e << 23 | m);
                check(1 << 31 | e << 23 | m);
            }
        }
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            check(s);
        }
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
