//! Quantizers for the non-linear 4-bit types IQ4_NL and IQ4_XS.
//!
//! Both store 4-bit indices into the 16 non-uniform levels `kvalues_iq4nl` (`tables.rs`), and
//! ggml reads element `j` of a 32-element block back as `d·kvalues_iq4nl[q_j]` (IQ4_NL: `d`
//! is the block's f16; IQ4_XS: `d = D·(ls − 32)` with an f16 super-scale `D` per 256 and a
//! 6-bit `ls` per 32). The quantizers minimise the importance-weighted squared error
//! `Σ w_j (x_j − x̂_j)²` of exactly that reconstruction (`w` = imatrix column, or ones).
//!
//! Our own search, not a port of ggml's `quantize_row_iq4_nl_impl`:
//!
//! * **Nearest level** for a value `v` in level units is a table lookup on `⌊v⌋` plus one
//!   comparison with the next midpoint (the levels are at least 10 apart, so at most one
//!   midpoint lies in any unit interval).
//! * **Continuous block scale** (both types, per 32): the signed extreme `max` is mapped to
//!   24 positions `t` (`1/d = t/max`), a geometric grid of `|t|` from 70 to 260 level units
//!   for both signs, i.e. from well inside either end of the table (−127, +113) to far
//!   beyond it, where the extreme is clipped (ggml tries only −134..−120 and +127). For
//!   each candidate the nearest levels are fitted by weighted least squares
//!   (`d = Σwqx / Σwq²`) and the one with the largest `(Σwqx)²/Σwq²` (least error) wins;
//!   two half-step refinements around the winner and one assign-and-refit step polish it.
//! * **IQ4_NL**: the winning `d` is rounded to f16, the levels are re-assigned for the stored
//!   scale, the scale is re-fitted once more, and the better of the two stored
//!   reconstructions (exact error) is kept.
//! * **IQ4_XS** (joint scales): from the eight continuous sub-block scales `s_i` and their
//!   curvatures `Σwq²`, candidate super-scales `D = s_max/t` (t near −32 and near +31, i.e.
//!   the largest scale at either end of the 6-bit range) are ranked by the predicted error
//!   `Σ_i Σwq²_i (D·l_i − s_i)²` with `l_i` = round(`s_i/D`). For the best two, `D` is
//!   rounded to f16 and every sub-block tries `l = ⌊s_i/D⌋` and `⌈s_i/D⌉`, re-assigning its
//!   levels for the exact stored sub-scale `D·l` and keeping the lowest exact error (an
//!   all-zero sub-block included). A final weighted least-squares refit of `D` for the
//!   chosen levels and integer scales is tried the same way. The lowest exact total error
//!   wins.
//!
//! Errors are evaluated on the stored reconstruction (f16 scale, products as ggml's
//! dequantizer forms them), deterministically, without threads.

use crate::block::QK_K;
use crate::float::{f16_to_f32, f32_to_f16};
use crate::tables::KVALUES_IQ4NL;

const QK: usize = 32;

/// `block_iq4_nl`: `d: f16`, `qs[16]`.
const NL_BYTES: usize = 18;
/// `block_iq4_xs`: `d: f16`, `scales_h: u16`, `scales_l[4]`, `qs[128]`.
mod xs {
    pub const D: usize = 0;
    pub const SCALES_H: usize = 2;
    pub const SCALES_L: usize = 4;
    pub const QS: usize = 8;
    pub const BYTES: usize = QS + 128;
}

const LEVELS: [f32; 16] = {
    let mut l = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        l[i] = KVALUES_IQ4NL[i] as f32;
        i += 1;
    }
    l
};

/// `MID[i]`: midpoint between levels `i` and `i + 1`; `MID[15]` is NaN, which no value
/// reaches (not even +∞, as an overflowing inverse scale can produce).
const MID: [f32; 16] = {
    let mut m = [f32::NAN; 16];
    let mut i = 0;
    while i < 15 {
        m[i] = (KVALUES_IQ4NL[i] as f32 + KVALUES_IQ4NL[i + 1] as f32) * 0.5;
        i += 1;
    }
    m
};

/// `LUT[k]`: how many midpoints are `<= k − 128`.
const LUT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut k = 0;
    while k < 256 {
        let v2 = 2 * (k as i32 - 128);
        let mut n = 0;
        let mut i = 0;
        while i < 15 {
            if KVALUES_IQ4NL[i] as i32 + KVALUES_IQ4NL[i + 1] as i32 <= v2 {
                n += 1;
            }
            i += 1;
        }
        t[k] = n;
        k += 1;
    }
    t
};

/// Index of the level nearest to `v` (in level units). NaN maps to 0.
#[inline(always)]
fn nearest(v: f32) -> usize {
    let k = (v + 128.0).clamp(0.0, 255.0) as usize;
    let i = usize::from(LUT[k]);
    i + usize::from(v >= MID[i])
}

/// Stored value of a scale: what ggml will read back.
fn stored(d: f32) -> f32 {
    f16_to_f32(f32_to_f16(d))
}

/// Weighted least-squares sums `(Σ w·q·x, Σ w·q²)` of the nearest levels for inverse scale `id`.
#[inline(always)]
fn fit_sums(x: &[f32; QK], w: &[f32; QK], id: f32) -> (f32, f32) {
    // Four partial sums each: independent dependency chains.
    let (mut sqx, mut sq2) = ([0f32; 4], [0f32; 4]);
    for (xc, wc) in x.chunks_exact(4).zip(w.chunks_exact(4)) {
        for k in 0..4 {
            let q = LEVELS[nearest(xc[k] * id)];
            let wq = wc[k] * q;
            sqx[k] += wq * xc[k];
            sq2[k] += wq * q;
        }
    }
    (
        (sqx[0] + sqx[1]) + (sqx[2] + sqx[3]),
        (sq2[0] + sq2[1]) + (sq2[2] + sq2[3]),
    )
}

/// Assigns the nearest levels for the stored scale `d` (not 0) into `q`; returns the exact
/// weighted error of `d·level` and the refit sums `(Σwqx, Σwq²)`.
#[inline(always)]
fn assign(x: &[f32; QK], w: &[f32; QK], d: f32, q: &mut [u8; QK]) -> (f32, f32, f32) {
    let id = 1.0 / d;
    let (mut err, mut sqx, mut sq2) = ([0f32; 4], [0f32; 4], [0f32; 4]);
    for ((xc, wc), qc) in x
        .chunks_exact(4)
        .zip(w.chunks_exact(4))
        .zip(q.chunks_exact_mut(4))
    {
        for k in 0..4 {
            let i = nearest(xc[k] * id);
            qc[k] = i as u8;
            let l = LEVELS[i];
            let e = xc[k] - d * l;
            err[k] += wc[k] * e * e;
            let wq = wc[k] * l;
            sqx[k] += wq * xc[k];
            sq2[k] += wq * l;
        }
    }
    let sum = |a: [f32; 4]| (a[0] + a[1]) + (a[2] + a[3]);
    (sum(err), sum(sqx), sum(sq2))
}

/// Weighted `Σ w x²`: the error of an all-zero reconstruction.
fn zero_err(x: &[f32; QK], w: &[f32; QK]) -> f32 {
    x.iter().zip(w).map(|(&a, &b)| b * a * a).sum()
}

/// Where the block's signed extreme `max` is mapped to, in level units (`1/d = t/max`), for
/// both signs of `t`: a geometric grid (ratio 1.1267) from well inside the table ends
/// (−127, +113) to far beyond them. Mapping the extreme beyond the end clips it, which wins
/// whenever its importance is small next to the rest of the block (common with imatrix
/// weights: on smollm2-768 the grid reaches within 1% of a 400-point search, where
/// ggml's ±7 around −127 is 25% worse).
const GRID: [f32; 12] = [
    70.0, 78.87, 88.86, 100.12, 112.8, 127.1, 143.2, 161.34, 181.78, 204.81, 230.76, 260.0,
];
/// Square root of the ratio between neighbouring `GRID` entries (the refinement step).
const GRID_HALF_STEP: f32 = 1.061_459_5;

/// Best continuous scale of one 32-block: `(d, Σwq²)`; `(0, 0)` for an all-zero block.
fn continuous_scale(x: &[f32; QK], w: &[f32; QK]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return (0.0, 0.0);
    }
    let (mut best, mut d, mut curv, mut best_t) = (-1f32, 0f32, 0f32, 0f32);
    let mut consider = |t: f32, best_t: &mut f32| {
        let (sqx, sq2) = fit_sums(x, w, t / max);
        if sq2 > 0.0 && sqx * sqx > best * sq2 {
            best = sqx * sqx / sq2;
            d = sqx / sq2;
            curv = sq2;
            *best_t = t;
        }
    };
    for &t in &GRID {
        consider(-t, &mut best_t);
        consider(t, &mut best_t);
    }
    // Refine half a grid step either side of the winner.
    let t0 = best_t;
    consider(t0 * GRID_HALF_STEP, &mut best_t);
    consider(t0 / GRID_HALF_STEP, &mut best_t);
    if d == 0.0 || !d.is_finite() {
        // Every weight is zero (or the block underflows): fall back to the extreme.
        return (max / LEVELS[0], 0.0);
    }
    // One assign-and-refit step for the winning scale.
    let (sqx, sq2) = fit_sums(x, w, 1.0 / d);
    if sq2 > 0.0 && sqx * sqx > best * sq2 {
        d = sqx / sq2;
        curv = sq2;
    }
    (d, curv)
}

fn put_nibbles(out: &mut [u8], q: &[u8; QK]) {
    for j in 0..16 {
        out[j] = q[j] | (q[j + 16] << 4);
    }
}

/// Weights for one block: `w`, or ones where the block's weights are all zero.
fn block_weights<'a>(w: &'a [f32], ones: &'a [f32]) -> &'a [f32] {
    if w.iter().all(|&v| v == 0.0) {
        &ones[..w.len()]
    } else {
        w
    }
}

/// IQ4_NL: one row.
pub(super) fn quantize_iq4_nl(x: &[f32], w: &[f32], dst: &mut [u8]) {
    let ones = [1f32; QK];
    for ((xb, wb), out) in x
        .chunks_exact(QK)
        .zip(w.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(NL_BYTES))
    {
        let xb: &[f32; QK] = xb.try_into().expect("block");
        let wb: &[f32; QK] = block_weights(wb, &ones).try_into().expect("block");
        let (d, q) = nl_block(xb, wb);
        out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        put_nibbles(&mut out[2..], &q);
    }
}

fn nl_block(x: &[f32; QK], w: &[f32; QK]) -> (f32, [u8; QK]) {
    let mut q = [8u8; QK];
    let (d, _) = continuous_scale(x, w);
    let d16 = stored(d);
    if d16 == 0.0 || !d16.is_finite() {
        return (d, q);
    }
    let (err, sqx, sq2) = assign(x, w, d16, &mut q);
    if sq2 > 0.0 {
        let d2 = stored(sqx / sq2);
        if d2 != d16 && d2 != 0.0 && d2.is_finite() {
            let mut q2 = [0u8; QK];
            let (err2, _, _) = assign(x, w, d2, &mut q2);
            if err2 < err {
                return (d2, q2);
            }
        }
    }
    (d16, q)
}

/// IQ4_XS: one row.
pub(super) fn quantize_iq4_xs(x: &[f32], w: &[f32], dst: &mut [u8]) {
    let ones = [1f32; QK_K];
    for ((xb, wb), out) in x
        .chunks_exact(QK_K)
        .zip(w.chunks_exact(QK_K))
        .zip(dst.chunks_exact_mut(xs::BYTES))
    {
        xs_block(xb, block_weights(wb, &ones), out);
    }
}

/// Sub-blocks of a super-block, as fixed-size arrays.
fn sub<const N: usize>(v: &[f32], i: usize) -> &[f32; N] {
    v[N * i..N * (i + 1)].try_into().expect("sub-block")
}

const NSUB: usize = QK_K / QK;

/// Per-sub-block choice for one stored super-scale: integer scales, levels, total error.
struct XsChoice {
    d: f32,
    ls: [i32; NSUB],
    q: [[u8; QK]; NSUB],
    err: f32,
}

/// For the stored super-scale `d16`, each sub-block picks the better of the integer scales
/// around `s_i/d16` (exact error after re-assigning its levels). Returns also the refit sums
/// `(Σ l·Σwqx, Σ l²·Σwq²)` for a least-squares super-scale.
fn xs_eval(
    x: &[f32],
    w: &[f32],
    s: &[f32; NSUB],
    zero: &[f32; NSUB],
    d16: f32,
) -> (XsChoice, f32, f32) {
    let mut c = XsChoice {
        d: d16,
        ls: [0; NSUB],
        q: [[8u8; QK]; NSUB],
        err: 0.0,
    };
    let (mut num, mut den) = (0f32, 0f32);
    let id = 1.0 / d16;
    let mut q = [0u8; QK];
    for i in 0..NSUB {
        let (xb, wb) = (sub::<QK>(x, i), sub::<QK>(w, i));
        let r = s[i] * id;
        let lo = (r.floor() as i32).clamp(-32, 31);
        let hi = (r.ceil() as i32).clamp(-32, 31);
        let (mut best, mut bl, mut bsums) = (zero[i], 0i32, (0f32, 0f32));
        let cands = [lo, hi];
        for k in 0..2 {
            let l = cands[k];
            if l == 0 || !(-32..=31).contains(&l) || cands[..k].contains(&l) {
                continue;
            }
            let (e, sqx, sq2) = assign(xb, wb, d16 * l as f32, &mut q);
            if e < best {
                best = e;
                bl = l;
                bsums = (sqx, sq2);
                c.q[i] = q;
            }
        }
        c.ls[i] = bl;
        c.err += best;
        let lf = bl as f32;
        num += lf * bsums.0;
        den += lf * lf * bsums.1;
    }
    (c, num, den)
}

fn xs_block(x: &[f32], w: &[f32], out: &mut [u8]) {
    let mut s = [0f32; NSUB];
    let mut curv = [0f32; NSUB];
    let mut zero = [0f32; NSUB];
    let (mut smax, mut samax) = (0f32, 0f32);
    for i in 0..NSUB {
        let (xb, wb) = (sub::<QK>(x, i), sub::<QK>(w, i));
        (s[i], curv[i]) = continuous_scale(xb, wb);
        zero[i] = zero_err(xb, wb);
        if s[i].abs() > samax {
            samax = s[i].abs();
            smax = s[i];
        }
    }
    let mut best = XsChoice {
        d: 0.0,
        ls: [0; NSUB],
        q: [[8u8; QK]; NSUB],
        err: f32::INFINITY,
    };
    if samax > 0.0 {
        // Rank candidate super-scales by the predicted error of rounding the sub-scales.
        let mut ranked: [(f32, f32); XS_EXACT] = [(f32::INFINITY, 0.0); XS_EXACT];
        for &t in &XS_TARGETS {
            let d = smax / t;
            let id = 1.0 / d;
            let mut cost = 0f32;
            for i in 0..NSUB {
                let l = (s[i] * id).round().clamp(-32.0, 31.0);
                let e = d * l - s[i];
                cost += curv[i] * e * e;
            }
            if cost < ranked[XS_EXACT - 1].0 {
                ranked[XS_EXACT - 1] = (cost, d);
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        for &(cost, d) in &ranked {
            if !cost.is_finite() {
                continue;
            }
            let d16 = stored(d);
            if d16 == 0.0 || !d16.is_finite() {
                continue;
            }
            let (c, num, den) = xs_eval(x, w, &s, &zero, d16);
            if den > 0.0 {
                let d2 = stored(num / den);
                if d2 != d16 && d2 != 0.0 && d2.is_finite() {
                    let (c2, _, _) = xs_eval(x, w, &s, &zero, d2);
                    if c2.err < best.err {
                        best = c2;
                    }
                }
            }
            if c.err < best.err {
                best = c;
            }
        }
    }
    if !best.err.is_finite() {
        // All-zero super-block, or every scale overflows f16: store the ggml-style scale
        // (invalid if it overflows, which the caller reports).
        best.d = -smax / 32.0;
        best.ls = [0; NSUB];
    }
    out[xs::D..xs::D + 2].copy_from_slice(&f32_to_f16(best.d).to_le_bytes());
    let mut scales_h = 0u16;
    let mut scales_l = [0u8; 4];
    for i in 0..NSUB {
        let ls = (best.ls[i] + 32) as u8;
        scales_l[i / 2] |= (ls & 0x0f) << (4 * (i % 2));
        scales_h |= u16::from(ls >> 4) << (2 * i);
        put_nibbles(&mut out[xs::QS + 16 * i..xs::QS + 16 * (i + 1)], &best.q[i]);
    }
    out[xs::SCALES_H..xs::SCALES_H + 2].copy_from_slice(&scales_h.to_le_bytes());
    out[xs::SCALES_L..xs::SCALES_L + 4].copy_from_slice(&scales_l);
}

/// How many of the best-ranked super-scales get the exact evaluation.
const XS_EXACT: usize = 2;

/// Where the largest sub-block scale lands on the 6-bit integer scale grid (negative: at the
/// −32 end, positive: at the +31 end).
const XS_TARGETS: [f32; 16] = [
    -32.0, -31.5, -31.0, -30.5, -30.0, -29.0, -28.0, -26.0, 31.0, 30.5, 30.0, 29.5, 29.0, 28.0,
    27.0, 25.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::types::GgmlType;

    #[test]
    fn nearest_matches_brute_force() {
        for k in -2600..2600 {
            let v = k as f32 * 0.0537;
            let i = nearest(v);
            let brute = (0..16)
                .min_by(|&a, &b| (LEVELS[a] - v).abs().total_cmp(&(LEVELS[b] - v).abs()))
                .unwrap();
            assert!(
                (LEVELS[i] - v).abs() <= (LEVELS[brute] - v).abs(),
                "{v}: {i} vs {brute}"
            );
        }
        assert_eq!(nearest(f32::NAN), 0);
        assert_eq!(nearest(f32::INFINITY), 15);
        assert_eq!(nearest(f32::NEG_INFINITY), 0);
    }

    fn roundtrip(xs_type: bool) -> f64 {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i as f32 * 0.731).sin() * 1.3).powi(3))
            .collect();
        let w = vec![1f32; 512];
        let mut y = vec![0f32; 512];
        if xs_type {
            let mut out = vec![0u8; 2 * xs::BYTES];
            quantize_iq4_xs(&x, &w, &mut out);
            super::super::dequant::dequantize_iq4_xs(&out, &mut y);
        } else {
            let mut out = vec![0u8; 16 * NL_BYTES];
            quantize_iq4_nl(&x, &w, &mut out);
            super::super::dequant::dequantize_iq4_nl(&out, &mut y);
        }
        let e: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let n: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
        e / n
    }

    #[test]
    fn extreme_blocks_do_not_panic() {
        // Subnormal values make `t/max` overflow to +∞; zero weights fall back to ones.
        for scale in [1e-40f32, 1e-30, 0.0, 1e4] {
            let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * scale).collect();
            for w in [vec![1f32; 256], vec![0f32; 256]] {
                let mut nl = vec![0u8; 8 * NL_BYTES];
                quantize_iq4_nl(&x, &w, &mut nl);
                let mut xs = vec![0u8; xs::BYTES];
                quantize_iq4_xs(&x, &w, &mut xs);
                // ggml accepts the blocks, and they decode to finite values.
                let mut y = vec![0f32; 256];
                for (ty, bytes) in [(GgmlType::IQ4_NL, &nl), (GgmlType::IQ4_XS, &xs)] {
                    assert!(crate::blocks_are_valid(ty, bytes), "{ty} at scale {scale}");
                    crate::dequantize(ty, bytes, &mut y).unwrap();
                    assert!(y.iter().all(|v| v.is_finite()), "{ty} at scale {scale}");
                }
            }
        }
    }

    #[test]
    fn relative_error_is_small() {
        let (nl, xs) = (roundtrip(false), roundtrip(true));
        assert!(nl < 0.01, "{nl}");
        assert!(xs < 0.012, "{xs}");
    }
}
