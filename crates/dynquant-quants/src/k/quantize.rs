//! Quantizers for the K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
//!
//! # Objective
//!
//! For every 256-element super-block we minimise `Σ w_j (x_j − x̂_j)²`, where `w` is the
//! importance (imatrix column weights, or ones) and `x̂` is *exactly* what ggml's
//! `dequantize_row_q*_K` computes from our bytes: f16 super-scales `d` (and `dmin`), integer
//! sub-block scales (and mins) as stored, and the element levels. ggml's own imatrix path
//! minimises a different, heuristic weighting (`w·sqrt(σ² + x²)`) and picks its super-scales
//! before rounding them to f16; we optimise the stored reconstruction under the true weights.
//!
//! # Search
//!
//! Our own search (not a port of ggml's `make_qkx*`/`make_qp_quants`). The affine types
//! (Q2_K, Q4_K, Q5_K: `x̂ = (d·Ls)·q − dmin·Lm`, `q ∈ [0, nmax]`) and the symmetric types
//! (Q3_K, Q6_K: `x̂ = (d·Ls)·q`, `q ∈ [−nh, nh − 1]`, `Ls` signed) share four phases:
//!
//! 1. **Sub-block fit** (16 or 32 elements; real-valued step `s` and min `m`). Each candidate
//!    step fixes a level assignment (nearest level), which is refitted by weighted least
//!    squares; the refit's error comes in closed form from sums of the *residuals* of the
//!    candidate (`Σwr²`, `Σwrq`, …), so it is free of cancellation and needs no second pass,
//!    and candidates are compared as fractions without dividing. Candidates map the
//!    sub-block range onto a spread of level counts (for Q4_K `0.8·nmax … 1.18·nmax`: fewer
//!    levels than available often wins once the refit moves the offset, and more levels than
//!    available clip a low-importance extreme). The symmetric types map the value of largest
//!    magnitude onto a few signed levels (both orientations of the asymmetric level range for
//!    Q6_K; far beyond the top level for Q3_K, whose 8 levels gain most from clipping), then
//!    try offsets around the best. The winner is polished by Lloyd steps (re-round at the
//!    fitted step, refit) while they help. We keep the sensitivities `Σwq²`, `Σwq`, `Σw`.
//! 2. **Super-block grid.** The sub-block steps are put on the grid `d·Ls` by a weighted 1-D
//!    grid fit: seeds map the extreme step onto levels near the top (ggml's `max/63` is one
//!    of them), each seed is refitted by least squares, *rounded to f16*, and scored. For the
//!    affine types a step error is weighted by `Σwq² − (Σwq)²/Σw`, since the min absorbs part
//!    of it; each target min is then moved by that compensation and `dmin` is fitted the same
//!    way with weights `Σw`. The symmetric types weight by `Σwq²`.
//! 3. **Exact local search.** With the stored `d`/`dmin`, each sub-block tries the integer
//!    scales next to its own (affine types: each with the three integer mins around the one
//!    that compensates the scale change), re-rounds its elements and keeps the exact best.
//! 4. **Super-scale refit.** Given all integers, `d` (and `dmin`) are refitted by least
//!    squares over the whole super-block, rounded to f16, and kept if the exact error drops;
//!    phase 3 then runs again on the new grid.
//!
//! The candidate counts (the tables at the end) were tuned on `smollm2-768` with its imatrix
//! and on synthetic heavy-tailed rows against `ggml_quantize_chunk` (error and single-thread
//! speed; see `tests/quantize_oracle.rs`). Without importance (`quantize_q*_k_plain`, plain
//! squared error) shorter lists (`Q*K_PLAIN`) keep us at least as fast as ggml's no-imatrix
//! paths, and those rows run in a second build of the same code with AVX2 enabled, picked at
//! run time (same operations in the same order, no FMA: identical bytes, tested).
//!
//! Everything is deterministic (fixed candidate lists, no threads, no randomness) and depends
//! only on the row and its weights. Inner loops keep four independent accumulators so that
//! they vectorise without reassociating floating-point sums.

// The inner loops index several arrays in lockstep by lane on purpose (that is what lets
// them vectorise); iterator chains would hide it.
#![allow(clippy::needless_range_loop)]

use crate::block::QK_K;
use crate::float::{f16_to_f32, f32_to_f16};

/// Adding and subtracting 1.5·2²³ rounds an f32 of magnitude below 2²² to the nearest
/// integer, ties to even, in two vectorisable operations.
const MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn round_ne(v: f32) -> f32 {
    (v + MAGIC) - MAGIC
}

/// `v` limited to `[lo, hi]` (compiles to min/max; NaN is not expected here).
#[inline(always)]
fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// The value ggml reads back for `v` stored as f16, with its bits.
fn stored(v: f32) -> (u16, f32) {
    let bits = f32_to_f16(v);
    (bits, f16_to_f32(bits))
}

/// A reciprocal that is 0 instead of infinite or NaN (an all-zero step maps everything to 0).
#[inline(always)]
fn recip(s: f32) -> f32 {
    let r = 1.0 / s;
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

/// Independent accumulators per sum (one SSE register), so that loops vectorise.
const LANES: usize = 4;

#[inline(always)]
fn hsum(a: [f32; LANES]) -> f32 {
    (a[0] + a[2]) + (a[1] + a[3])
}

/// Sums for a candidate `(s0, m0)` of an affine sub-block: with `q` the nearest level in
/// `[0, nmax]` and the residual `r = x − (s0·q − m0)`, returns `(Σwq, Σwq², Σwr, Σwrq, Σwr²)`.
/// Working with residuals keeps the least-squares error free of cancellation.
#[inline(always)]
fn affine_sums<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    s0: f32,
    m0: f32,
    nmax: f32,
) -> [f32; 5] {
    let inv = recip(s0);
    let mut a = [[0f32; LANES]; 5];
    for c in 0..N / LANES {
        for k in 0..LANES {
            let i = LANES * c + k;
            let q = round_ne(clamp((x[i] + m0) * inv, 0.0, nmax));
            let r = x[i] - (s0 * q - m0);
            let (wq, wr) = (w[i] * q, w[i] * r);
            a[0][k] += wq;
            a[1][k] += wq * q;
            a[2][k] += wr;
            a[3][k] += wr * q;
            a[4][k] += wr * r;
        }
    }
    a.map(hsum)
}

/// Sums for a candidate step `s0` of a symmetric sub-block: with `q` the nearest level in
/// `[lo, hi]` and `r = x − s0·q`, returns `(Σwq², Σwrq, Σwr²)`.
#[inline(always)]
fn sym_sums<const N: usize>(x: &[f32; N], w: &[f32; N], s0: f32, lo: f32, hi: f32) -> [f32; 3] {
    let inv = recip(s0);
    let mut a = [[0f32; LANES]; 3];
    for c in 0..N / LANES {
        for k in 0..LANES {
            let i = LANES * c + k;
            let q = round_ne(clamp(x[i] * inv, lo, hi));
            let r = x[i] - s0 * q;
            let wr = w[i] * r;
            a[0][k] += w[i] * q * q;
            a[1][k] += wr * q;
            a[2][k] += wr * r;
        }
    }
    a.map(hsum)
}

/// Exact weighted error of `x̂ = s·q − m` with `q` the nearest level in `[lo, hi]`, storing
/// the levels in `q`. `s·q − m` is formed as ggml's dequantizers do (unfused).
#[inline(always)]
fn eval_levels<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    s: f32,
    m: f32,
    lo: f32,
    hi: f32,
    q: &mut [f32; N],
) -> f32 {
    let inv = recip(s);
    let mut a = [0f32; LANES];
    for c in 0..N / LANES {
        for k in 0..LANES {
            let i = LANES * c + k;
            let l = round_ne(clamp((x[i] + m) * inv, lo, hi));
            let r = x[i] - (s * l - m);
            a[k] += w[i] * r * r;
            q[i] = l;
        }
    }
    hsum(a)
}

// ---------------------------------------------------------------------------------------------
// Phase 1: real-valued sub-block fits.

/// Result of a sub-block fit: `x ≈ s·q − m` and the sensitivities `Σw·q²`, `Σw·q`, `Σw`.
#[derive(Clone, Copy, Default)]
struct SubFit {
    s: f32,
    m: f32,
    a: f32,
    b: f32,
    c: f32,
}

/// A least-squares refit of one candidate: the refitted step and min, and its error as the
/// fraction `num / den` (`den > 0`), compared without dividing.
#[derive(Clone, Copy)]
struct Refit {
    s: f32,
    m: f32,
    num: f64,
    den: f64,
    /// `Σwq²` and `Σwq` of the candidate's levels.
    sqq: f32,
    sq: f32,
}

impl Refit {
    fn beats(&self, other: &Option<Refit>) -> bool {
        other.is_none_or(|o| self.num * o.den < o.num * self.den)
    }
}

/// Affine sub-block (`x ≈ s·q − m`, `q ∈ [0, nmax]`, `s > 0`, `m ≥ 0`: ggml stores offsets
/// `≤ 0`). `steps` are the level counts the sub-block range is mapped onto.
#[inline(always)]
fn fit_affine<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    nmax: f32,
    steps: &[f32],
    polish: usize,
) -> SubFit {
    let sw = w.iter().sum::<f32>();
    let xmin = x.iter().copied().fold(f32::INFINITY, f32::min);
    let xmax = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lo = xmin.min(0.0);
    let range = xmax - lo;
    let fallback = SubFit {
        s: if range > 0.0 { range / nmax } else { 0.0 },
        m: -lo,
        c: sw,
        ..SubFit::default()
    };
    if range <= 0.0 || !range.is_finite() || sw <= 0.0 {
        return fallback;
    }
    let swf = f64::from(sw);
    // Weighted least squares for x ≈ (s0 + Δs)·q − (m0 − Δb), the offset kept ≤ 0.
    let refit = |s0: f32, m0: f32| -> Option<Refit> {
        let [sq, sqq, sr, srq, srr] = affine_sums(x, w, s0, m0, nmax);
        let (sqf, sqqf, sr, srq, srr) = (
            f64::from(sq),
            f64::from(sqq),
            f64::from(sr),
            f64::from(srq),
            f64::from(srr),
        );
        let det = sqqf * swf - sqf * sqf;
        if det > 0.0 {
            let ds = (swf * srq - sqf * sr) / det;
            let db = (sqqf * sr - sqf * srq) / det;
            let (s, m) = (f64::from(s0) + ds, f64::from(m0) - db);
            if m >= 0.0 && s > 0.0 {
                let gain = swf * srq * srq - 2.0 * sqf * sr * srq + sqqf * sr * sr;
                return Some(Refit {
                    s: s as f32,
                    m: m as f32,
                    num: srr * det - gain,
                    den: det,
                    sqq,
                    sq,
                });
            }
        }
        // The offset at its bound (m = 0): x ≈ s·q, with u = r − m0 = x − s0·q.
        if sqqf <= 0.0 {
            return None;
        }
        let m0 = f64::from(m0);
        let suq = srq - m0 * sqf;
        let suu = srr - 2.0 * m0 * sr + m0 * m0 * swf;
        let s = f64::from(s0) + suq / sqqf;
        (s > 0.0).then_some(Refit {
            s: s as f32,
            m: 0.0,
            num: suu * sqqf - suq * suq,
            den: sqqf,
            sqq,
            sq,
        })
    };
    let mut best: Option<Refit> = None;
    for &k in steps {
        if let Some(r) = refit(range / k, -lo) {
            if r.beats(&best) {
                best = Some(r);
            }
        }
    }
    let Some(mut best) = best else {
        return fallback;
    };
    for _ in 0..polish {
        match refit(best.s, best.m) {
            Some(r) if r.beats(&Some(best)) => best = r,
            _ => break,
        }
    }
    SubFit {
        s: best.s,
        m: best.m,
        a: best.sqq,
        b: best.sq,
        c: sw,
    }
}

/// Symmetric sub-block (`x ≈ s·q`, `q ∈ [-nh, nh − 1]`, either sign of `s`). `steps` are the
/// signed levels the extreme value is mapped onto (negative: the long side of the range);
/// `refine` offsets are then tried around the best of them.
#[inline(always)]
fn fit_symmetric<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    nh: f32,
    steps: &[f32],
    refine: &[f32],
    polish: usize,
) -> SubFit {
    let sw = w.iter().sum::<f32>();
    // The value of largest magnitude (signed).
    let mut xm = 0f32;
    for &v in x {
        if v.abs() > xm.abs() {
            xm = v;
        }
    }
    let fallback = SubFit {
        s: xm / -nh,
        c: sw,
        ..SubFit::default()
    };
    if xm == 0.0 || sw <= 0.0 {
        return fallback;
    }
    let (lo, hi) = (-nh, nh - 1.0);
    // Least squares s = s0 + Σwrq/Σwq²; error Σwr² − (Σwrq)²/Σwq².
    let refit = |s0: f32| -> Option<Refit> {
        let [sqq, srq, srr] = sym_sums(x, w, s0, lo, hi);
        let (sqqf, srq, srr) = (f64::from(sqq), f64::from(srq), f64::from(srr));
        let s = f64::from(s0) + srq / sqqf;
        (sqqf > 0.0 && s != 0.0).then_some(Refit {
            s: s as f32,
            m: 0.0,
            num: srr * sqqf - srq * srq,
            den: sqqf,
            sqq,
            sq: 0.0,
        })
    };
    let mut best: Option<Refit> = None;
    let mut best_k = steps[0];
    for &k in steps {
        if let Some(r) = refit(xm / k) {
            if r.beats(&best) {
                (best, best_k) = (Some(r), k);
            }
        }
    }
    for &off in refine {
        if let Some(r) = refit(xm / (best_k + off)) {
            if r.beats(&best) {
                best = Some(r);
            }
        }
    }
    let Some(mut best) = best else {
        return fallback;
    };
    for _ in 0..polish {
        match refit(best.s) {
            Some(r) if r.beats(&Some(best)) => best = r,
            _ => break,
        }
    }
    SubFit {
        s: best.s,
        m: 0.0,
        a: best.sqq,
        b: 0.0,
        c: sw,
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 2: the super-block grid.

/// Fits `t_j ≈ d·L_j` with integers `L_j ∈ [lmin, lmax]` and `d` stored as f16, minimising
/// `Σ v_j (t_j − d·L_j)²`. `ks` are the levels the extreme target is mapped onto to seed
/// the search (each seed is refitted by least squares). Returns the f16 bits of `d`.
#[inline(always)]
fn fit_grid<const M: usize>(
    t: &[f32; M],
    v: &[f32; M],
    lmin: f32,
    lmax: f32,
    ks: &[f32],
    levels: &mut [f32; M],
) -> u16 {
    let mut ext = 0f32;
    for &x in t {
        if x.abs() > ext.abs() {
            ext = x;
        }
    }
    *levels = [0.0; M];
    if ext == 0.0 || !ext.is_finite() {
        return 0;
    }
    let all_zero = v.iter().all(|&x| x <= 0.0);
    let ones = [1f32; M];
    let v = if all_zero { &ones } else { v };
    let quant = |d: f32, l: &mut [f32; M]| {
        let inv = recip(d);
        for j in 0..M {
            l[j] = round_ne(clamp(t[j] * inv, lmin, lmax));
        }
    };
    let score = |d: f32, l: &[f32; M]| -> f32 {
        let mut e = 0f32;
        for j in 0..M {
            let r = t[j] - d * l[j];
            e += v[j] * r * r;
        }
        e
    };
    let mut best = (0u16, f32::INFINITY);
    let mut overflow = 0u16;
    let mut l = [0f32; M];
    for &k in ks {
        let d0 = ext / k;
        quant(d0, &mut l);
        let (mut stl, mut sll) = (0f32, 0f32);
        for j in 0..M {
            stl += v[j] * t[j] * l[j];
            sll += v[j] * l[j] * l[j];
        }
        if sll <= 0.0 {
            continue;
        }
        let (bits, ds) = stored(stl / sll);
        if !ds.is_finite() {
            // Beyond f16: kept only if nothing finite fits, so that the block is
            // reported invalid instead of silently flushed to zero.
            overflow = bits;
            continue;
        }
        quant(ds, &mut l);
        let e = score(ds, &l);
        if e < best.1 {
            best = (bits, e);
            *levels = l;
        }
    }
    if best.1 == f32::INFINITY {
        return overflow;
    }
    best.0
}

// ---------------------------------------------------------------------------------------------
// Affine super-blocks (Q2_K, Q4_K, Q5_K).

/// Tuning of one affine type.
struct AffineSpec {
    /// Top element level (3, 15, 31).
    nmax: f32,
    /// Top sub-block scale/min level (15 or 63).
    lmax: f32,
    /// Phase 1 level counts the sub-block range is mapped onto.
    steps: &'static [f32],
    /// Phase 1 Lloyd polishing steps.
    polish: usize,
    /// Phase 2 seeds: levels the largest scale/min is mapped onto.
    grid: &'static [f32],
    /// Phase 3 neighbourhood radius for the integer scales.
    radius: i32,
    /// Phase 3/4 rounds.
    rounds: usize,
}

/// A quantized affine super-block of `NB` sub-blocks of `N` elements.
struct AffineBlock<const NB: usize> {
    d: u16,
    dmin: u16,
    ls: [u8; NB],
    lm: [u8; NB],
    q: [u8; QK_K],
}

fn sub<const N: usize>(x: &[f32; QK_K], j: usize) -> &[f32; N] {
    x[N * j..N * (j + 1)].try_into().expect("sub-block")
}

fn sub_mut<const N: usize>(x: &mut [f32; QK_K], j: usize) -> &mut [f32; N] {
    (&mut x[N * j..N * (j + 1)]).try_into().expect("sub-block")
}

#[inline(always)]
fn quantize_affine_block<const N: usize, const NB: usize>(
    x: &[f32; QK_K],
    w: &[f32; QK_K],
    spec: &AffineSpec,
) -> AffineBlock<NB> {
    let nmax = spec.nmax;
    // Phase 1.
    let mut fits = [SubFit::default(); NB];
    for (j, f) in fits.iter_mut().enumerate() {
        *f = fit_affine::<N>(sub(x, j), sub(w, j), nmax, spec.steps, spec.polish);
    }
    // Phase 2: scales, weighted by their sensitivity once the min compensates.
    let scales: [f32; NB] = core::array::from_fn(|j| fits[j].s);
    let sens: [f32; NB] = core::array::from_fn(|j| {
        let f = &fits[j];
        if f.c > 0.0 {
            (f.a - f.b * f.b / f.c).max(0.0)
        } else {
            0.0
        }
    });
    let mut ls = [0f32; NB];
    let d_bits = fit_grid(&scales, &sens, 0.0, spec.lmax, spec.grid, &mut ls);
    let mut d = f16_to_f32(d_bits);
    let mins: [f32; NB] = core::array::from_fn(|j| {
        let f = &fits[j];
        let shift = if f.c > 0.0 { f.b / f.c } else { 0.0 };
        (f.m + shift * (d * ls[j] - f.s)).max(0.0)
    });
    let cw: [f32; NB] = core::array::from_fn(|j| fits[j].c);
    let mut lm = [0f32; NB];
    let dmin_bits = fit_grid(&mins, &cw, 0.0, spec.lmax, spec.grid, &mut lm);
    let mut dmin = f16_to_f32(dmin_bits);
    let (mut d_bits, mut dmin_bits) = (d_bits, dmin_bits);

    // Exact errors and levels at the current grid.
    let mut q = [0f32; QK_K];
    let mut errs = [0f32; NB];
    for j in 0..NB {
        errs[j] = eval_levels::<N>(
            sub(x, j),
            sub(w, j),
            d * ls[j],
            dmin * lm[j],
            0.0,
            nmax,
            sub_mut(&mut q, j),
        );
    }
    let mut qt = [0f32; N];
    for round in 0..spec.rounds {
        // Phase 3: integer scales next to the current one, each with the two integer mins
        // around the min that compensates the scale change, exactly.
        let idmin = recip(dmin);
        for j in 0..NB {
            let (xs, ws) = (sub::<N>(x, j), sub::<N>(w, j));
            let f = &fits[j];
            let shift = if f.c > 0.0 { f.b / f.c } else { 0.0 };
            let l0 = ls[j];
            let (cl, cm) = (ls[j], lm[j]);
            for dl in -spec.radius..=spec.radius {
                let l = l0 + dl as f32;
                if !(0.0..=spec.lmax).contains(&l) {
                    continue;
                }
                let mt = clamp((f.m + shift * (d * l - f.s)) * idmin, 0.0, spec.lmax);
                let mr = round_ne(mt);
                for m in [mr - 1.0, mr, mr + 1.0] {
                    if (l == cl && m == cm) || !(0.0..=spec.lmax).contains(&m) {
                        continue;
                    }
                    let e = eval_levels(xs, ws, d * l, dmin * m, 0.0, nmax, &mut qt);
                    if e < errs[j] {
                        errs[j] = e;
                        ls[j] = l;
                        lm[j] = m;
                        sub_mut::<N>(&mut q, j).copy_from_slice(&qt);
                    }
                }
            }
        }
        if round + 1 == spec.rounds {
            break;
        }
        // Phase 4: refit d and dmin over the super-block: x ≈ d·(Ls·q) − dmin·Lm.
        let (mut saa, mut sac, mut scc, mut sxa, mut sxc) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for j in 0..NB {
            let mut acc = [[0f32; LANES]; 4];
            let (xs, ws, qs) = (sub::<N>(x, j), sub::<N>(w, j), sub::<N>(&q, j));
            for c in 0..N / LANES {
                for k in 0..LANES {
                    let i = LANES * c + k;
                    let wq = ws[i] * qs[i];
                    acc[0][k] += wq * qs[i];
                    acc[1][k] += wq;
                    acc[2][k] += wq * xs[i];
                    acc[3][k] += ws[i] * xs[i];
                }
            }
            let (sqq, sq, sxq, sx) = (
                f64::from(hsum(acc[0])),
                f64::from(hsum(acc[1])),
                f64::from(hsum(acc[2])),
                f64::from(hsum(acc[3])),
            );
            let (l, m) = (f64::from(ls[j]), f64::from(lm[j]));
            saa += l * l * sqq;
            sac -= l * m * sq;
            scc += m * m * f64::from(cw[j]);
            sxa += l * sxq;
            sxc -= m * sx;
        }
        let det = saa * scc - sac * sac;
        let (nd, nm) = if det > 0.0 {
            ((scc * sxa - sac * sxc) / det, (saa * sxc - sac * sxa) / det)
        } else if saa > 0.0 {
            (sxa / saa, 0.0)
        } else {
            break;
        };
        let (nd, nm) = if nm < 0.0 { (nd, nm) } else { (sxa / saa, 0.0) };
        if nd.is_nan() || nd <= 0.0 {
            break;
        }
        let (nd_bits, nd_s) = stored(nd as f32);
        let (nm_bits, nm_s) = stored(-nm as f32);
        if nd_bits == d_bits && nm_bits == dmin_bits {
            break;
        }
        let mut nq = [0f32; QK_K];
        let mut nerrs = [0f32; NB];
        for j in 0..NB {
            nerrs[j] = eval_levels::<N>(
                sub(x, j),
                sub(w, j),
                nd_s * ls[j],
                nm_s * lm[j],
                0.0,
                nmax,
                sub_mut(&mut nq, j),
            );
        }
        if nerrs.iter().sum::<f32>() < errs.iter().sum::<f32>() {
            (d_bits, dmin_bits, d, dmin) = (nd_bits, nm_bits, nd_s, nm_s);
            errs = nerrs;
            q = nq;
        }
    }
    AffineBlock {
        d: d_bits,
        dmin: dmin_bits,
        ls: ls.map(|l| l as u8),
        lm: lm.map(|l| l as u8),
        q: q.map(|l| l as u8),
    }
}

// ---------------------------------------------------------------------------------------------
// Symmetric super-blocks (Q3_K, Q6_K): 16 sub-blocks of 16.

/// Tuning of one symmetric type.
struct SymSpec {
    /// Levels are `[-nh, nh − 1]` (4 or 32).
    nh: f32,
    /// Sub-block scales are `[lmin, lmax]`.
    lmin: f32,
    lmax: f32,
    /// Phase 1 candidates, see [`fit_symmetric`].
    steps: &'static [f32],
    refine: &'static [f32],
    polish: usize,
    /// Phase 2 seeds (signed levels the extreme scale is mapped onto).
    grid: &'static [f32],
    /// Phase 3 neighbourhood radius.
    radius: i32,
    rounds: usize,
}

struct SymBlock {
    d: u16,
    ls: [i8; 16],
    /// Levels offset by `nh` (unsigned, as packed).
    q: [u8; QK_K],
}

#[inline(always)]
fn quantize_symmetric_block(x: &[f32; QK_K], w: &[f32; QK_K], spec: &SymSpec) -> SymBlock {
    const N: usize = 16;
    const NB: usize = 16;
    let (lo, hi) = (-spec.nh, spec.nh - 1.0);
    let mut fits = [SubFit::default(); NB];
    for (j, f) in fits.iter_mut().enumerate() {
        *f = fit_symmetric::<N>(
            sub(x, j),
            sub(w, j),
            spec.nh,
            spec.steps,
            spec.refine,
            spec.polish,
        );
    }
    let scales: [f32; NB] = core::array::from_fn(|j| fits[j].s);
    let sens: [f32; NB] = core::array::from_fn(|j| fits[j].a);
    let mut ls = [0f32; NB];
    let mut d_bits = fit_grid(&scales, &sens, spec.lmin, spec.lmax, spec.grid, &mut ls);
    let mut d = f16_to_f32(d_bits);

    let mut q = [0f32; QK_K];
    let mut errs = [0f32; NB];
    for j in 0..NB {
        errs[j] = eval_levels::<N>(
            sub(x, j),
            sub(w, j),
            d * ls[j],
            0.0,
            lo,
            hi,
            sub_mut(&mut q, j),
        );
    }
    let mut qt = [0f32; N];
    for round in 0..spec.rounds {
        for j in 0..NB {
            let (xs, ws) = (sub::<N>(x, j), sub::<N>(w, j));
            // Walk up and down from the current scale while the exact error drops.
            let l0 = ls[j];
            for dir in [-1f32, 1.0] {
                for step in 1..=spec.radius {
                    let l = l0 + dir * step as f32;
                    if l < spec.lmin || l > spec.lmax {
                        break;
                    }
                    let e = eval_levels(xs, ws, d * l, 0.0, lo, hi, &mut qt);
                    if e >= errs[j] {
                        break;
                    }
                    errs[j] = e;
                    ls[j] = l;
                    sub_mut::<N>(&mut q, j).copy_from_slice(&qt);
                }
            }
        }
        if round + 1 == spec.rounds {
            break;
        }
        let (mut sxa, mut saa) = (0f64, 0f64);
        for j in 0..NB {
            let mut acc = [[0f32; LANES]; 2];
            let (xs, ws, qs) = (sub::<N>(x, j), sub::<N>(w, j), sub::<N>(&q, j));
            for c in 0..N / LANES {
                for k in 0..LANES {
                    let i = LANES * c + k;
                    let wq = ws[i] * qs[i];
                    acc[0][k] += wq * qs[i];
                    acc[1][k] += wq * xs[i];
                }
            }
            let l = f64::from(ls[j]);
            saa += l * l * f64::from(hsum(acc[0]));
            sxa += l * f64::from(hsum(acc[1]));
        }
        if saa.is_nan() || saa <= 0.0 {
            break;
        }
        let (nd_bits, nd) = stored((sxa / saa) as f32);
        if nd_bits == d_bits {
            break;
        }
        let mut nq = [0f32; QK_K];
        let mut nerrs = [0f32; NB];
        for j in 0..NB {
            nerrs[j] = eval_levels::<N>(
                sub(x, j),
                sub(w, j),
                nd * ls[j],
                0.0,
                lo,
                hi,
                sub_mut(&mut nq, j),
            );
        }
        if nerrs.iter().sum::<f32>() < errs.iter().sum::<f32>() {
            (d_bits, d) = (nd_bits, nd);
            errs = nerrs;
            q = nq;
        }
    }
    SymBlock {
        d: d_bits,
        ls: ls.map(|l| l as i8),
        q: q.map(|l| (l + spec.nh) as u8),
    }
}

// ---------------------------------------------------------------------------------------------
// Tuning: candidate lists per type (see the module documentation for what each phase does).

const Q2K: AffineSpec = AffineSpec {
    nmax: 3.0,
    lmax: 15.0,
    steps: &[2.4, 2.7, 3.0, 3.3, 3.6, 4.0, 4.5],
    polish: 2,
    grid: &[13.0, 13.5, 14.0, 14.5, 15.0, 15.5, 16.0],
    radius: 2,
    rounds: 3,
};

/// Q2_K without importance: fewer candidates (ggml's plain path is cheap; the error margin
/// against it is wide).
const Q2K_PLAIN: AffineSpec = AffineSpec {
    nmax: 3.0,
    lmax: 15.0,
    steps: &[2.7, 3.0, 3.3, 3.6],
    polish: 1,
    grid: &[14.0, 15.0, 15.5],
    radius: 1,
    rounds: 2,
};

const Q4K: AffineSpec = AffineSpec {
    nmax: 15.0,
    lmax: 63.0,
    steps: &[
        12.00, 12.38, 12.75, 13.12, 13.50, 13.88, 14.25, 14.63, 15.00, 15.38, 15.75, 16.13, 16.50,
        16.88, 17.25, 17.62,
    ],
    polish: 2,
    grid: &[61.0, 62.0, 62.5, 63.0, 63.5, 64.0],
    radius: 1,
    rounds: 2,
};

const Q5K: AffineSpec = AffineSpec {
    nmax: 31.0,
    lmax: 63.0,
    steps: &[
        25.4, 26.0, 26.7, 27.3, 27.9, 28.5, 29.1, 29.8, 30.4, 31.0, 31.6, 32.2, 32.9, 33.5, 34.1,
        34.7, 35.3, 36.0, 36.6, 37.2,
    ],
    polish: 2,
    grid: &[61.0, 62.0, 62.5, 63.0, 63.5, 64.0],
    radius: 1,
    rounds: 2,
};

/// Q4_K without importance: fewer candidates.
const Q4K_PLAIN: AffineSpec = AffineSpec {
    nmax: 15.0,
    lmax: 63.0,
    steps: &[12.75, 13.88, 15.00, 16.13, 17.25],
    polish: 1,
    grid: &[62.0, 63.0, 63.5],
    radius: 1,
    rounds: 2,
};

/// Q5_K without importance: fewer candidates.
const Q5K_PLAIN: AffineSpec = AffineSpec {
    nmax: 31.0,
    lmax: 63.0,
    steps: &[26.7, 28.5, 29.8, 31.0, 32.2, 33.5, 35.3],
    polish: 1,
    grid: &[62.0, 63.0, 63.5],
    radius: 1,
    rounds: 2,
};

const Q3K: SymSpec = SymSpec {
    nh: 4.0,
    lmin: -32.0,
    lmax: 31.0,
    steps: &[-3.4, -4.2, -5.2, -7.0, -10.0],
    refine: &[-0.25, 0.25],
    polish: 2,
    grid: &[-30.0, -31.0, -32.0, -32.5, 30.0, 31.0, 31.5],
    radius: 1,
    rounds: 3,
};

/// Q3_K without importance: fewer candidates.
const Q3K_PLAIN: SymSpec = SymSpec {
    nh: 4.0,
    lmin: -32.0,
    lmax: 31.0,
    steps: &[-4.6, -6.0],
    refine: &[],
    polish: 0,
    grid: &[-31.0, -32.0, 31.0],
    radius: 1,
    rounds: 1,
};

const Q6K: SymSpec = SymSpec {
    nh: 32.0,
    lmin: -128.0,
    lmax: 127.0,
    steps: &[-31.5, -32.0, -32.5, -33.5, -36.0, 30.5, 31.0],
    refine: &[],
    polish: 1,
    grid: &[-126.0, -127.0, -128.0, -128.5, 126.0, 127.0],
    radius: 2,
    rounds: 1,
};

// ---------------------------------------------------------------------------------------------
// Packing (layouts as in `k/dequant.rs`).

fn super_blocks<'a, const BYTES: usize>(
    x: &'a [f32],
    w: &'a [f32],
    dst: &'a mut [u8],
) -> impl Iterator<Item = (&'a [f32; QK_K], &'a [f32; QK_K], &'a mut [u8; BYTES])> {
    x.chunks_exact(QK_K)
        .zip(w.chunks_exact(QK_K))
        .zip(dst.chunks_exact_mut(BYTES))
        .map(|((x, w), b)| {
            (
                x.try_into().expect("super-block"),
                w.try_into().expect("super-block"),
                b.try_into().expect("block"),
            )
        })
}

/// 2-bit packing shared by Q2_K and Q3_K: per 128-element half, byte `l` of its 32 holds
/// elements `l`, `l + 32`, `l + 64`, `l + 96` at shifts 0, 2, 4, 6.
fn pack_2bit(q: &[u8; QK_K], out: &mut [u8]) {
    for h in 0..2 {
        for l in 0..32 {
            let e = 128 * h + l;
            out[32 * h + l] = (q[e] & 3)
                | ((q[e + 32] & 3) << 2)
                | ((q[e + 64] & 3) << 4)
                | ((q[e + 96] & 3) << 6);
        }
    }
}

/// The 12-byte Q4_K/Q5_K scale/min packing (inverse of `get_scale_min_k4`).
fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = ls[j] | ((ls[j + 4] >> 4) << 6);
        out[j + 4] = lm[j] | ((lm[j + 4] >> 4) << 6);
        out[j + 8] = (ls[j + 4] & 0x0f) | ((lm[j + 4] & 0x0f) << 4);
    }
}

/// Quantizes one row to Q2_K (84-byte blocks).
pub(super) fn quantize_q2_k(x: &[f32], w: &[f32], dst: &mut [u8]) {
    q2_k_rows(x, w, dst, &Q2K)
}

/// Quantizes one row to Q2_K without importance (`w` all ones): the lighter search.
pub(super) fn quantize_q2_k_plain(x: &[f32], w: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { q2_k_rows_avx2(x, w, dst, &Q2K_PLAIN) };
    }
    q2_k_rows(x, w, dst, &Q2K_PLAIN)
}

/// [`q2_k_rows`] compiled with AVX2 enabled (same bytes, see [`q3_k_rows_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q2_k_rows_avx2(x: &[f32], w: &[f32], dst: &mut [u8], spec: &AffineSpec) {
    q2_k_rows(x, w, dst, spec)
}

#[inline(always)]
fn q2_k_rows(x: &[f32], w: &[f32], dst: &mut [u8], spec: &AffineSpec) {
    for (xb, wb, out) in super_blocks::<84>(x, w, dst) {
        let b = quantize_affine_block::<16, 16>(xb, wb, spec);
        for ((o, &l), &m) in out[..16].iter_mut().zip(&b.ls).zip(&b.lm) {
            *o = l | (m << 4);
        }
        pack_2bit(&b.q, &mut out[16..80]);
        out[80..82].copy_from_slice(&b.d.to_le_bytes());
        out[82..84].copy_from_slice(&b.dmin.to_le_bytes());
    }
}

/// Quantizes one row to Q3_K (110-byte blocks).
pub(super) fn quantize_q3_k(x: &[f32], w: &[f32], dst: &mut [u8]) {
    q3_k_rows(x, w, dst, &Q3K)
}

/// Quantizes one row to Q3_K without importance (`w` all ones): the lighter search.
pub(super) fn quantize_q3_k_plain(x: &[f32], w: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { q3_k_rows_avx2(x, w, dst, &Q3K_PLAIN) };
    }
    q3_k_rows(x, w, dst, &Q3K_PLAIN)
}

/// [`q3_k_rows`] compiled with AVX2 enabled: the same IEEE operations in the same order (no
/// FMA), so the same bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q3_k_rows_avx2(x: &[f32], w: &[f32], dst: &mut [u8], spec: &SymSpec) {
    q3_k_rows(x, w, dst, spec)
}

#[inline(always)]
fn q3_k_rows(x: &[f32], w: &[f32], dst: &mut [u8], spec: &SymSpec) {
    for (xb, wb, out) in super_blocks::<110>(x, w, dst) {
        let b = quantize_symmetric_block(xb, wb, spec);
        // Levels 0..7: bit 2 of element e goes to hmask byte e % 32, bit e / 32.
        let hmask = &mut out[..32];
        hmask.fill(0);
        for k in 0..8 {
            for (h, &l) in hmask.iter_mut().zip(&b.q[32 * k..32 * k + 32]) {
                *h |= (l >> 2) << k;
            }
        }
        pack_2bit(&b.q, &mut out[32..96]);
        let sc = &mut out[96..108];
        sc.fill(0);
        for (j, &s) in b.ls.iter().enumerate() {
            let v = (s as i32 + 32) as u8;
            sc[j % 8] |= (v & 0x0f) << (4 * (j / 8));
            sc[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
        }
        out[108..110].copy_from_slice(&b.d.to_le_bytes());
    }
}

fn put_k4_common(out: &mut [u8], b: &AffineBlock<8>) {
    out[0..2].copy_from_slice(&b.d.to_le_bytes());
    out[2..4].copy_from_slice(&b.dmin.to_le_bytes());
    pack_k4_scales(&b.ls, &b.lm, &mut out[4..16]);
}

/// Low nibbles of Q4_K/Q5_K: per 64 elements, 32 bytes with element `l` low, `l + 32` high.
fn pack_nibbles(q: &[u8; QK_K], out: &mut [u8]) {
    for c in 0..4 {
        for l in 0..32 {
            out[32 * c + l] = (q[64 * c + l] & 0x0f) | ((q[64 * c + l + 32] & 0x0f) << 4);
        }
    }
}

/// Quantizes one row to Q4_K (144-byte blocks).
pub(super) fn quantize_q4_k(x: &[f32], w: &[f32], dst: &mut [u8]) {
    q4_k_rows(x, w, dst, &Q4K)
}

/// Quantizes one row to Q4_K without importance (`w` all ones): the lighter search.
pub(super) fn quantize_q4_k_plain(x: &[f32], w: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { q4_k_rows_avx2(x, w, dst, &Q4K_PLAIN) };
    }
    q4_k_rows(x, w, dst, &Q4K_PLAIN)
}

/// [`q4_k_rows`] compiled with AVX2 enabled (same bytes, see [`q3_k_rows_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q4_k_rows_avx2(x: &[f32], w: &[f32], dst: &mut [u8], spec: &AffineSpec) {
    q4_k_rows(x, w, dst, spec)
}

#[inline(always)]
fn q4_k_rows(x: &[f32], w: &[f32], dst: &mut [u8], spec: &AffineSpec) {
    for (xb, wb, out) in super_blocks::<144>(x, w, dst) {
        let b = quantize_affine_block::<32, 8>(xb, wb, spec);
        put_k4_common(out, &b);
        pack_nibbles(&b.q, &mut out[16..144]);
    }
}

/// Quantizes one row to Q5_K (176-byte blocks).
pub(super) fn quantize_q5_k(x: &[f32], w: &[f32], dst: &mut [u8]) {
    q5_k_rows(x, w, dst, &Q5K)
}

/// Quantizes one row to Q5_K without importance (`w` all ones): the lighter search.
pub(super) fn quantize_q5_k_plain(x: &[f32], w: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { q5_k_rows_avx2(x, w, dst, &Q5K_PLAIN) };
    }
    q5_k_rows(x, w, dst, &Q5K_PLAIN)
}

/// [`q5_k_rows`] compiled with AVX2 enabled (same bytes, see [`q3_k_rows_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q5_k_rows_avx2(x: &[f32], w: &[f32], dst: &mut [u8], spec: &AffineSpec) {
    q5_k_rows(x, w, dst, spec)
}

#[inline(always)]
fn q5_k_rows(x: &[f32], w: &[f32], dst: &mut [u8], spec: &AffineSpec) {
    for (xb, wb, out) in super_blocks::<176>(x, w, dst) {
        let b = quantize_affine_block::<32, 8>(xb, wb, spec);
        put_k4_common(out, &b);
        let qh = &mut out[16..48];
        qh.fill(0);
        for k in 0..8 {
            for (h, &l) in qh.iter_mut().zip(&b.q[32 * k..32 * k + 32]) {
                *h |= (l >> 4) << k;
            }
        }
        pack_nibbles(&b.q, &mut out[48..176]);
    }
}

/// Quantizes one row to Q6_K (210-byte blocks).
pub(super) fn quantize_q6_k(x: &[f32], w: &[f32], dst: &mut [u8]) {
    for (xb, wb, out) in super_blocks::<210>(x, w, dst) {
        let b = quantize_symmetric_block(xb, wb, &Q6K);
        // Element 128c + 32k + i: low nibble in ql[64c + 32(k % 2) + i] at shift 4(k / 2),
        // high 2 bits in qh[32c + i] at shift 2k.
        out[..192].fill(0);
        let (ql, qh) = out[..192].split_at_mut(128);
        for c in 0..2 {
            for k in 0..4 {
                let lv = &b.q[128 * c + 32 * k..][..32];
                let ql = &mut ql[64 * c + 32 * (k % 2)..][..32];
                let qh = &mut qh[32 * c..][..32];
                for ((o, h), &l) in ql.iter_mut().zip(qh.iter_mut()).zip(lv) {
                    *o |= (l & 0x0f) << (4 * (k / 2));
                    *h |= (l >> 4) << (2 * k);
                }
            }
        }
        for (o, &s) in out[192..208].iter_mut().zip(&b.ls) {
            *o = s as u8;
        }
        out[208..210].copy_from_slice(&b.d.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k::dequant as kquants;

    /// The portable plain searches against their stored fingerprint and, where the CPU has
    /// AVX2, the dispatched (AVX2) build against the portable one.
    #[test]
    fn avx2_plain_builds_give_the_same_bytes_as_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        let avx2 = crate::test_rows::has_avx2("K-quant plain searches, AVX2 build");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        // Varied rows plus a block already on a 4-bit grid and a constant one.
        let mut x: Vec<f32> = (0..4).flat_map(|s| row(QK_K, s)).collect();
        x.extend((0..QK_K).map(|j| ((j * 7 + j / 32) % 16) as f32 * 0.0625 - 0.4));
        x.extend(std::iter::repeat_n(0.25f32, QK_K));
        let w = vec![1f32; x.len()];
        let n = x.len() / QK_K;
        type Rows = (fn(&[f32], &[f32], &mut [u8]), usize);
        let cases: [(Rows, Rows); 4] = [
            (
                (quantize_q2_k_plain, 84),
                (|x, w, d| q2_k_rows(x, w, d, &Q2K_PLAIN), 84),
            ),
            (
                (quantize_q3_k_plain, 110),
                (|x, w, d| q3_k_rows(x, w, d, &Q3K_PLAIN), 110),
            ),
            (
                (quantize_q4_k_plain, 144),
                (|x, w, d| q4_k_rows(x, w, d, &Q4K_PLAIN), 144),
            ),
            (
                (quantize_q5_k_plain, 176),
                (|x, w, d| q5_k_rows(x, w, d, &Q5K_PLAIN), 176),
            ),
        ];
        let mut all_portable = Vec::new();
        for ((dispatched, size), (portable, _)) in cases {
            let (mut a, mut b) = (vec![0u8; n * size], vec![0u8; n * size]);
            portable(&x, &w, &mut b);
            if avx2 {
                dispatched(&x, &w, &mut a);
                assert_eq!(a, b, "block size {size}");
            }
            all_portable.extend_from_slice(&b);
        }
        assert_eq!(
            crate::test_rows::fingerprint(&all_portable),
            PORTABLE_FINGERPRINT,
            "the portable plain K-quant bytes changed"
        );
    }

    /// [`crate::test_rows::fingerprint`] of the portable bytes above (recorded where the AVX2
    /// build gave the same bytes).
    const PORTABLE_FINGERPRINT: u64 = 9978088092449268044;

    fn row(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let r = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                r * r * r
            })
            .collect()
    }

    type Quant = fn(&[f32], &[f32], &mut [u8]);
    type Dequant = fn(&[u8], &mut [f32]);

    fn mse(q: Quant, dq: Dequant, bytes: usize) -> f64 {
        let x = row(1024, 7);
        let w = vec![1f32; 1024];
        let mut out = vec![0u8; 4 * bytes];
        q(&x, &w, &mut out);
        let mut y = vec![0f32; 1024];
        dq(&out, &mut y);
        x.iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / 1024.0
    }

    #[test]
    fn more_bits_give_less_error() {
        let e = [
            mse(quantize_q2_k, kquants::dequantize_q2_k, 84),
            mse(quantize_q3_k, kquants::dequantize_q3_k, 110),
            mse(quantize_q4_k, kquants::dequantize_q4_k, 144),
            mse(quantize_q5_k, kquants::dequantize_q5_k, 176),
            mse(quantize_q6_k, kquants::dequantize_q6_k, 210),
        ];
        for p in e.windows(2) {
            assert!(p[1] < 0.6 * p[0], "{e:?}");
        }
        // Mean square of the input is about 1/7; 2 bits should already remove most of it.
        assert!(e[0] < 0.02, "{e:?}");
    }

    #[test]
    fn packed_levels_read_back() {
        // A super-block whose values are exactly representable: levels round-trip.
        let mut x = [0f32; QK_K];
        for (i, v) in x.iter_mut().enumerate() {
            *v = ((i * 7) % 8) as f32 - 4.0;
        }
        let w = [1f32; QK_K];
        let mut out = [0u8; 110];
        quantize_q3_k(&x, &w, &mut out);
        let mut y = [0f32; QK_K];
        kquants::dequantize_q3_k(&out, &mut y);
        assert_eq!(x, y);
        let mut out = [0u8; 210];
        // Every sub-block holds -32, so its scale is exactly 1.
        let x6: [f32; QK_K] = core::array::from_fn(|i| {
            if i % 16 == 0 {
                -32.0
            } else {
                ((i * 13) % 64) as f32 - 32.0
            }
        });
        quantize_q6_k(&x6, &w, &mut out);
        kquants::dequantize_q6_k(&out, &mut y);
        assert_eq!(x6, y);
        for (q, dq, bytes, top) in [
            (
                quantize_q4_k as Quant,
                kquants::dequantize_q4_k as Dequant,
                144,
                16,
            ),
            (quantize_q5_k, kquants::dequantize_q5_k, 176, 32),
            (quantize_q2_k, kquants::dequantize_q2_k, 84, 4),
        ] {
            let xa: [f32; QK_K] = core::array::from_fn(|i| ((i * 5) % top) as f32);
            let mut out = vec![0u8; bytes];
            q(&xa, &w, &mut out);
            dq(&out, &mut y);
            // d = 1/lmax is not exact in f16; the levels must still be right.
            for (a, b) in xa.iter().zip(&y) {
                assert!((a - b).abs() < 2e-3 * top as f32, "{bytes}: {a} {b}");
            }
        }
    }

    #[test]
    fn out_of_range_is_invalid_and_degenerate_rows_are_fine() {
        use crate::{dequantize, quantize_rows, QuantError};
        use dynquant_gguf::types::GgmlType;
        let x = row(512, 11);
        for ty in [
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let half = ty.row_bytes(256).unwrap() as usize;
            let mut out = vec![0u8; 2 * half];
            // Beyond f16 range: a typed error, never silently clipped.
            let r = quantize_rows(ty, &[1e9; 256], 256, None, &mut out[..half]);
            assert!(
                matches!(r, Err(QuantError::InvalidBlock { row: 0, .. })),
                "{ty}: {r:?}"
            );
            // All-zero importance, a zero row and a constant row still give valid blocks.
            quantize_rows(ty, &x, 256, Some(&[0.0; 256]), &mut out).unwrap();
            let mut y = vec![0f32; 512];
            let mut z = vec![0f32; 512];
            z[256..].fill(-0.75);
            quantize_rows(ty, &z, 256, None, &mut out).unwrap();
            dequantize(ty, &out, &mut y).unwrap();
            assert!(y[..256].iter().all(|&v| v == 0.0), "{ty}");
            assert!(y[256..].iter().all(|&v| (v + 0.75).abs() < 1e-3), "{ty}");
        }
    }
}
