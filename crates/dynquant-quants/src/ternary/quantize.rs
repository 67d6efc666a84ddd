//! Quantizers for the ternary types TQ1_0 and TQ2_0.
//!
//! Each minimises the importance-weighted squared error `Σ w_j (x_j − x̂_j)²` (`w` = imatrix
//! column, or ones) of exactly the reconstruction ggml's dequantizer produces. ggml's own
//! quantizers for these types ignore the imatrix.
//!
//! **TQ1_0 / TQ2_0** (256 elements, `x̂ = t·d`, `t ∈ {−1, 0, 1}`, f16 `d`). For a fixed `d`
//! the best `t_j` is `sign(x_j)` when `|x_j| > d/2` and 0 otherwise, so the optimal
//! reconstruction makes the `k` largest magnitudes non-zero for some `k`, with the weighted
//! least-squares scale `d = Σ_nz w|x| / Σ_nz w` and error `Σwx² − (Σ_nz w|x|)²/Σ_nz w`.
//! Instead of sorting, `d` comes from three Lloyd steps (non-zero set `{|x| > d/2}`, then
//! `d = Σ_nz w|x| / Σ_nz w`) from `1.7·Σw|x|/Σw` (between the optimum's ratio for Gaussian
//! and Laplacian rows), keeping the visited set with the best closed-form error; each step
//! is one branch-free pass of masks and sums. On smollm2-768 this is within 1.2% of the
//! error of the best boundary of a 33-bin histogram of `|x|/amax`, at a fraction of the
//! cost (the histogram is a scatter). The scale is then rounded to f16 and the trits
//! re-assigned for the stored scale (threshold `d/2`). ggml's reference choice (`d = amax`,
//! `t = round(x/amax)`) is evaluated in the same error pass and kept if its exact error is
//! lower, so a block is never worse than ggml's. The passes are SSE2 or AVX2 intrinsics on
//! x86_64 (AVX2 picked at run time) and portable code elsewhere; all three do the same IEEE
//! operations in the same order, so the bytes do not depend on the CPU (tested).
//!
//! Deterministic, single-threaded.

use crate::block::QK_K;
use crate::float::{f16_to_f32, f32_to_f16};

/// `block_tq1_0`: `qs[48]`, `qh[4]`, `d: f16` at 52.
const TQ1_BYTES: usize = 54;
/// `block_tq2_0`: `qs[64]`, `d: f16` at 64.
const TQ2_BYTES: usize = 66;

fn stored(d: f32) -> f32 {
    f16_to_f32(f32_to_f16(d))
}

// ---------------------------------------------------------------------------------------------
// Ternary.

/// Independent accumulators per pass: one AVX2 vector of f32.
const LANES: usize = 8;
type Lanes = [f32; LANES];
/// Lloyd steps after the start.
const LLOYD_STEPS: usize = 3;
/// Start scale as a multiple of the weighted mean magnitude (between the optimum's ratio
/// for Gaussian rows, about 1.53, and for Laplacian rows, 2).
const START: f32 = 1.7;

/// `v` if `on`, else 0, without a branch (the conditions here are data-dependent coin flips
/// that a branch predictor cannot learn).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn keep(v: f32, on: bool) -> f32 {
    f32::from_bits(v.to_bits() & 0u32.wrapping_sub(u32::from(on)))
}

/// Lanes summed in a fixed order.
#[inline(always)]
fn hsum(a: Lanes) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// The three passes of the ternary search, each returning per-lane partial results (lane
/// `k` takes elements `8c + k` in order of `c`). [`Scalar`] and the AVX2 implementation
/// perform the same IEEE operations in the same order, so they agree bit for bit.
trait TernaryPasses: Copy {
    /// Per lane: max |x|, Σw, Σw|x|.
    fn stats(self, x: &[f32; QK_K], w: &[f32; QK_K]) -> [Lanes; 3];
    /// Per lane: Σw and Σw|x| over the elements with `|x| > tau`.
    fn above(self, x: &[f32; QK_K], w: &[f32; QK_K], tau: f32) -> [Lanes; 2];
    /// Per lane: the weighted squared errors of `|x| ≈ d` where `|x| > half` (else 0), and
    /// of `|x| ≈ g` where `|x| >= ghalf` (else 0).
    fn errors(self, x: &[f32; QK_K], w: &[f32; QK_K], dh: (f32, f32), gh: (f32, f32))
        -> [Lanes; 2];
}

/// Portable passes (the compiler vectorizes what it can): used off x86_64, and in the tests
/// as the reference the SIMD passes must reproduce bit for bit.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[derive(Clone, Copy)]
struct Scalar;

impl TernaryPasses for Scalar {
    #[inline(always)]
    fn stats(self, x: &[f32; QK_K], w: &[f32; QK_K]) -> [Lanes; 3] {
        let (mut m, mut sw, mut sa) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
            for k in 0..LANES {
                let a = xc[k].abs();
                m[k] = if a > m[k] { a } else { m[k] };
                sw[k] += wc[k];
                sa[k] += wc[k] * a;
            }
        }
        [m, sw, sa]
    }

    #[inline(always)]
    fn above(self, x: &[f32; QK_K], w: &[f32; QK_K], tau: f32) -> [Lanes; 2] {
        let (mut sw, mut sa) = ([0f32; LANES], [0f32; LANES]);
        for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
            for k in 0..LANES {
                let a = xc[k].abs();
                let on = a > tau;
                sw[k] += keep(wc[k], on);
                sa[k] += keep(wc[k] * a, on);
            }
        }
        [sw, sa]
    }

    #[inline(always)]
    fn errors(
        self,
        x: &[f32; QK_K],
        w: &[f32; QK_K],
        (d, half): (f32, f32),
        (g, ghalf): (f32, f32),
    ) -> [Lanes; 2] {
        let (mut err, mut gerr) = ([0f32; LANES], [0f32; LANES]);
        for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
            for k in 0..LANES {
                let a = xc[k].abs();
                let e = a - keep(d, a > half);
                err[k] += wc[k] * e * e;
                let ge = a - keep(g, a >= ghalf);
                gerr[k] += wc[k] * ge * ge;
            }
        }
        [err, gerr]
    }
}

/// AVX2 passes. Only constructed after `is_x86_feature_detected!("avx2")`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2(());

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Lanes, LANES, QK_K};
    use std::arch::x86_64::*;

    #[inline(always)]
    fn load(v: &[f32; QK_K], c: usize) -> __m256 {
        let s = &v[c * LANES..c * LANES + LANES];
        // SAFETY: `s` holds 8 floats; the load is unaligned.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    #[inline(always)]
    fn lanes(v: __m256) -> Lanes {
        let mut out = [0f32; LANES];
        // SAFETY: `out` holds 8 floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn stats(x: &[f32; QK_K], w: &[f32; QK_K]) -> [Lanes; 3] {
        let sign = _mm256_set1_ps(-0.0);
        let (mut m, mut sw, mut sa) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        for c in 0..QK_K / LANES {
            let (xv, wv) = (load(x, c), load(w, c));
            let a = _mm256_andnot_ps(sign, xv);
            // maxps(a, m) = a > m ? a : m.
            m = _mm256_max_ps(a, m);
            sw = _mm256_add_ps(sw, wv);
            sa = _mm256_add_ps(sa, _mm256_mul_ps(wv, a));
        }
        [lanes(m), lanes(sw), lanes(sa)]
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn above(x: &[f32; QK_K], w: &[f32; QK_K], tau: f32) -> [Lanes; 2] {
        let sign = _mm256_set1_ps(-0.0);
        let t = _mm256_set1_ps(tau);
        let (mut sw, mut sa) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in 0..QK_K / LANES {
            let (xv, wv) = (load(x, c), load(w, c));
            let a = _mm256_andnot_ps(sign, xv);
            let on = _mm256_cmp_ps::<_CMP_GT_OQ>(a, t);
            sw = _mm256_add_ps(sw, _mm256_and_ps(wv, on));
            sa = _mm256_add_ps(sa, _mm256_and_ps(_mm256_mul_ps(wv, a), on));
        }
        [lanes(sw), lanes(sa)]
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn errors(
        x: &[f32; QK_K],
        w: &[f32; QK_K],
        (d, half): (f32, f32),
        (g, ghalf): (f32, f32),
    ) -> [Lanes; 2] {
        let sign = _mm256_set1_ps(-0.0);
        let (d, half, g, ghalf) = (
            _mm256_set1_ps(d),
            _mm256_set1_ps(half),
            _mm256_set1_ps(g),
            _mm256_set1_ps(ghalf),
        );
        let (mut err, mut gerr) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in 0..QK_K / LANES {
            let (xv, wv) = (load(x, c), load(w, c));
            let a = _mm256_andnot_ps(sign, xv);
            let e = _mm256_sub_ps(a, _mm256_and_ps(d, _mm256_cmp_ps::<_CMP_GT_OQ>(a, half)));
            err = _mm256_add_ps(err, _mm256_mul_ps(_mm256_mul_ps(wv, e), e));
            let ge = _mm256_sub_ps(a, _mm256_and_ps(g, _mm256_cmp_ps::<_CMP_GE_OQ>(a, ghalf)));
            gerr = _mm256_add_ps(gerr, _mm256_mul_ps(_mm256_mul_ps(wv, ge), ge));
        }
        [lanes(err), lanes(gerr)]
    }
}

#[cfg(target_arch = "x86_64")]
impl TernaryPasses for Avx2 {
    #[inline(always)]
    fn stats(self, x: &[f32; QK_K], w: &[f32; QK_K]) -> [Lanes; 3] {
        // SAFETY: an `Avx2` exists only where the CPU supports AVX2.
        unsafe { avx2::stats(x, w) }
    }

    #[inline(always)]
    fn above(self, x: &[f32; QK_K], w: &[f32; QK_K], tau: f32) -> [Lanes; 2] {
        // SAFETY: as above.
        unsafe { avx2::above(x, w, tau) }
    }

    #[inline(always)]
    fn errors(
        self,
        x: &[f32; QK_K],
        w: &[f32; QK_K],
        dh: (f32, f32),
        gh: (f32, f32),
    ) -> [Lanes; 2] {
        // SAFETY: as above.
        unsafe { avx2::errors(x, w, dh, gh) }
    }
}

/// SSE2 passes (always available on x86_64): each 8-lane vector as two halves.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Sse2;

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::{Lanes, LANES, QK_K};
    use std::arch::x86_64::*;

    type V = [__m128; 2];

    #[inline(always)]
    fn load(v: &[f32; QK_K], c: usize) -> V {
        let s = &v[c * LANES..c * LANES + LANES];
        // SAFETY: `s` holds 8 floats; the loads are unaligned.
        unsafe { [_mm_loadu_ps(s.as_ptr()), _mm_loadu_ps(s[4..].as_ptr())] }
    }

    #[inline(always)]
    fn lanes(v: V) -> Lanes {
        let mut out = [0f32; LANES];
        // SAFETY: `out` holds 8 floats; the stores are unaligned.
        unsafe {
            _mm_storeu_ps(out.as_mut_ptr(), v[0]);
            _mm_storeu_ps(out[4..].as_mut_ptr(), v[1]);
        }
        out
    }

    /// One SSE intrinsic on both halves. SSE2 is part of the x86_64 baseline, so the
    /// intrinsics are always available.
    macro_rules! both {
        ($name:ident, $op:ident) => {
            #[inline(always)]
            fn $name(a: V, b: V) -> V {
                // SAFETY: SSE2 is part of the x86_64 baseline.
                unsafe { [$op(a[0], b[0]), $op(a[1], b[1])] }
            }
        };
    }
    both!(add, _mm_add_ps);
    both!(sub, _mm_sub_ps);
    both!(mul, _mm_mul_ps);
    both!(and, _mm_and_ps);
    both!(andnot, _mm_andnot_ps);
    // maxps(a, m) = a > m ? a : m.
    both!(max, _mm_max_ps);
    both!(gt, _mm_cmpgt_ps);
    both!(ge, _mm_cmpge_ps);

    #[inline(always)]
    fn splat(v: f32) -> V {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { [_mm_set1_ps(v); 2] }
    }

    #[inline(always)]
    fn abs(x: V) -> V {
        andnot(splat(-0.0), x)
    }

    #[inline(always)]
    pub(super) fn stats(x: &[f32; QK_K], w: &[f32; QK_K]) -> [Lanes; 3] {
        let (mut m, mut sw, mut sa) = (splat(0.0), splat(0.0), splat(0.0));
        for c in 0..QK_K / LANES {
            let (xv, wv) = (load(x, c), load(w, c));
            let a = abs(xv);
            m = max(a, m);
            sw = add(sw, wv);
            sa = add(sa, mul(wv, a));
        }
        [lanes(m), lanes(sw), lanes(sa)]
    }

    #[inline(always)]
    pub(super) fn above(x: &[f32; QK_K], w: &[f32; QK_K], tau: f32) -> [Lanes; 2] {
        let t = splat(tau);
        let (mut sw, mut sa) = (splat(0.0), splat(0.0));
        for c in 0..QK_K / LANES {
            let (xv, wv) = (load(x, c), load(w, c));
            let a = abs(xv);
            let on = gt(a, t);
            sw = add(sw, and(wv, on));
            sa = add(sa, and(mul(wv, a), on));
        }
        [lanes(sw), lanes(sa)]
    }

    #[inline(always)]
    pub(super) fn errors(
        x: &[f32; QK_K],
        w: &[f32; QK_K],
        (d, half): (f32, f32),
        (g, ghalf): (f32, f32),
    ) -> [Lanes; 2] {
        let (d, half, g, ghalf) = (splat(d), splat(half), splat(g), splat(ghalf));
        let (mut err, mut gerr) = (splat(0.0), splat(0.0));
        for c in 0..QK_K / LANES {
            let (xv, wv) = (load(x, c), load(w, c));
            let a = abs(xv);
            let e = sub(a, and(d, gt(a, half)));
            err = add(err, mul(mul(wv, e), e));
            let ge = sub(a, and(g, ge(a, ghalf)));
            gerr = add(gerr, mul(mul(wv, ge), ge));
        }
        [lanes(err), lanes(gerr)]
    }
}

#[cfg(target_arch = "x86_64")]
impl TernaryPasses for Sse2 {
    #[inline(always)]
    fn stats(self, x: &[f32; QK_K], w: &[f32; QK_K]) -> [Lanes; 3] {
        sse2::stats(x, w)
    }

    #[inline(always)]
    fn above(self, x: &[f32; QK_K], w: &[f32; QK_K], tau: f32) -> [Lanes; 2] {
        sse2::above(x, w, tau)
    }

    #[inline(always)]
    fn errors(
        self,
        x: &[f32; QK_K],
        w: &[f32; QK_K],
        dh: (f32, f32),
        gh: (f32, f32),
    ) -> [Lanes; 2] {
        sse2::errors(x, w, dh, gh)
    }
}

/// Best ternary block: `(d, trits + 1)` with trits in {0, 1, 2}.
#[inline(always)]
fn ternary_block<P: TernaryPasses>(p: P, x: &[f32; QK_K], w: &[f32; QK_K]) -> (f32, [u8; QK_K]) {
    let [lane_max, lw, la] = p.stats(x, w);
    let amax = lane_max
        .iter()
        .fold(0f32, |m, &a| if a > m { a } else { m });
    let mut t = [1u8; QK_K];
    if amax == 0.0 {
        return (0.0, t);
    }
    // Lloyd iteration on the scale: the non-zero set is {|x| > d/2}, and the best scale for
    // a set is its weighted mean magnitude S/W. Every set visited is scored by its closed-form
    // gain S²/W (the error is Σwx² minus it), compared by cross-multiplication.
    let (sw, sa) = (hsum(lw), hsum(la));
    let mut d = if sw > 0.0 { START * sa / sw } else { amax };
    if d.is_nan() || d >= amax {
        d = amax;
    }
    let (mut bw, mut bs) = (0f32, 0f32);
    for _ in 0..LLOYD_STEPS {
        let [cw, cs] = p.above(x, w, 0.5 * d).map(hsum);
        if cw.is_nan() || cw <= 0.0 {
            break;
        }
        if bw == 0.0 || cs * cs * bw >= bs * bs * cw {
            (bw, bs) = (cw, cs);
        }
        d = cs / cw;
    }
    let d = if bw > 0.0 { bs / bw } else { amax };
    // Ours with the stored scale, and ggml's reference (`lroundf(x/amax)` is ±1 from
    // |x| >= amax/2 on), by exact error.
    let d16 = stored(d);
    let g16 = stored(amax);
    let [err, gerr] = p
        .errors(x, w, (d16, 0.5 * d16), (g16, 0.5 * amax))
        .map(hsum);
    if gerr < err || err.is_nan() {
        let id = 1.0 / amax;
        for (&xj, tj) in x.iter().zip(t.iter_mut()) {
            *tj = ((xj * id).round() as i32 + 1) as u8;
        }
        return (amax, t);
    }
    let half = 0.5 * d16;
    for (&xj, tj) in x.iter().zip(t.iter_mut()) {
        let on = xj.abs() > half;
        let neg = xj < 0.0;
        *tj = 1 + u8::from(on & !neg) - u8::from(on & neg);
    }
    (d16, t)
}

#[inline(always)]
fn ternary_rows<const BYTES: usize, P: TernaryPasses>(
    p: P,
    x: &[f32],
    w: &[f32],
    dst: &mut [u8],
    pack: impl Fn(&[u8; QK_K], &mut [u8]),
) {
    let ones = [1f32; QK_K];
    for ((xb, wb), out) in x
        .chunks_exact(QK_K)
        .zip(w.chunks_exact(QK_K))
        .zip(dst.chunks_exact_mut(BYTES))
    {
        let (Ok(xb), Ok(wb)) = (<&[f32; QK_K]>::try_from(xb), <&[f32; QK_K]>::try_from(wb)) else {
            continue;
        };
        let wb = if wb.iter().all(|&v| v == 0.0) {
            &ones
        } else {
            wb
        };
        let (d, t) = ternary_block(p, xb, wb);
        pack(&t, out);
        out[BYTES - 2..].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    }
}

/// Base-3 fixed point byte of ggml's TQ1_0 for the 5-trit value `v` (trits most significant
/// first): `⌈v·256/243⌉`.
#[inline(always)]
fn trit_byte(v: u16) -> u8 {
    ((u32::from(v) * 256).div_ceil(243)) as u8
}

/// TQ1_0 trits of one block into `out[..52]`. Layout: elements `m + 32n` (n < 5) in byte `m`
/// of `qs[0..32]`, elements `160 + m + 16n` in `qs[32 + m]`, elements `240 + j + 4m` (m < 4)
/// in `qh[j]` (fifth trit 0).
#[inline(always)]
fn pack_tq1(t: &[u8; QK_K], out: &mut [u8]) {
    let five =
        |e: usize, stride: usize| (0..5).fold(0u16, |v, n| v * 3 + u16::from(t[e + stride * n]));
    for (m, o) in out[..32].iter_mut().enumerate() {
        *o = trit_byte(five(m, 32));
    }
    for (m, o) in out[32..48].iter_mut().enumerate() {
        *o = trit_byte(five(160 + m, 16));
    }
    for j in 0..4 {
        let v = (0..4).fold(0u16, |v, m| v * 3 + u16::from(t[240 + j + 4 * m]));
        out[48 + j] = trit_byte(v * 3);
    }
}

/// TQ2_0 trits of one block into `out[..64]`: element `128c + 32l + m` is bits `2l` of byte
/// `32c + m`.
#[inline(always)]
fn pack_tq2(t: &[u8; QK_K], out: &mut [u8]) {
    for c in 0..2 {
        for m in 0..32 {
            let e = 128 * c + m;
            out[32 * c + m] = t[e] | (t[e + 32] << 2) | (t[e + 64] << 4) | (t[e + 96] << 6);
        }
    }
}

/// TQ1_0: one row, with the AVX2 passes where the CPU has them (same bytes either way).
pub(super) fn quantize_tq1_0(x: &[f32], w: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return ternary_rows::<TQ1_BYTES, _>(Avx2(()), x, w, dst, pack_tq1);
    }
    #[cfg(target_arch = "x86_64")]
    return ternary_rows::<TQ1_BYTES, _>(Sse2, x, w, dst, pack_tq1);
    #[cfg(not(target_arch = "x86_64"))]
    ternary_rows::<TQ1_BYTES, _>(Scalar, x, w, dst, pack_tq1)
}

/// TQ2_0: one row, with the AVX2 passes where the CPU has them (same bytes either way).
pub(super) fn quantize_tq2_0(x: &[f32], w: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return ternary_rows::<TQ2_BYTES, _>(Avx2(()), x, w, dst, pack_tq2);
    }
    #[cfg(target_arch = "x86_64")]
    return ternary_rows::<TQ2_BYTES, _>(Sse2, x, w, dst, pack_tq2);
    #[cfg(not(target_arch = "x86_64"))]
    ternary_rows::<TQ2_BYTES, _>(Scalar, x, w, dst, pack_tq2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rows::signal;

    /// The scalar passes against their stored fingerprint, the SSE2 passes (every x86_64 CPU)
    /// and, where the CPU has it, the AVX2 passes against the scalar ones, bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_passes_give_the_same_bytes_as_portable_ones() {
        let avx2 = crate::test_rows::has_avx2("TQ1_0/TQ2_0 AVX2 passes");
        let (x, ws) = crate::test_rows::varied_rows();
        let n = x.len() / QK_K;
        let mut portable = Vec::new();
        for w in &ws {
            let w: Vec<f32> = w.iter().copied().cycle().take(x.len()).collect();
            let (mut a1, mut b1) = (vec![0u8; n * TQ1_BYTES], vec![0u8; n * TQ1_BYTES]);
            ternary_rows::<TQ1_BYTES, _>(Scalar, &x, &w, &mut a1, pack_tq1);
            ternary_rows::<TQ1_BYTES, _>(Sse2, &x, &w, &mut b1, pack_tq1);
            assert_eq!(a1, b1);
            if avx2 {
                ternary_rows::<TQ1_BYTES, _>(Avx2(()), &x, &w, &mut b1, pack_tq1);
                assert_eq!(a1, b1);
            }
            let (mut a2, mut b2) = (vec![0u8; n * TQ2_BYTES], vec![0u8; n * TQ2_BYTES]);
            ternary_rows::<TQ2_BYTES, _>(Scalar, &x, &w, &mut a2, pack_tq2);
            ternary_rows::<TQ2_BYTES, _>(Sse2, &x, &w, &mut b2, pack_tq2);
            assert_eq!(a2, b2);
            if avx2 {
                ternary_rows::<TQ2_BYTES, _>(Avx2(()), &x, &w, &mut b2, pack_tq2);
                assert_eq!(a2, b2);
            }
            portable.extend_from_slice(&a1);
            portable.extend_from_slice(&a2);
            // And every pass's lanes, bit for bit, on thresholds that split the blocks.
            for (xb, wb) in x.chunks_exact(QK_K).zip(w.chunks_exact(QK_K)) {
                let (xb, wb): (&[f32; QK_K], &[f32; QK_K]) =
                    (xb.try_into().unwrap(), wb.try_into().unwrap());
                let bits =
                    |l: &[Lanes]| l.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&Scalar.stats(xb, wb)), bits(&Sse2.stats(xb, wb)));
                if avx2 {
                    assert_eq!(bits(&Scalar.stats(xb, wb)), bits(&Avx2(()).stats(xb, wb)));
                }
                for tau in [0.0, 0.1, 0.3, 1e-31] {
                    assert_eq!(
                        bits(&Scalar.above(xb, wb, tau)),
                        bits(&Sse2.above(xb, wb, tau))
                    );
                    let dh = (2.0 * tau + 0.01, tau);
                    assert_eq!(
                        bits(&Scalar.errors(xb, wb, dh, (0.7, 0.35))),
                        bits(&Sse2.errors(xb, wb, dh, (0.7, 0.35)))
                    );
                    if avx2 {
                        assert_eq!(
                            bits(&Scalar.above(xb, wb, tau)),
                            bits(&Avx2(()).above(xb, wb, tau))
                        );
                        assert_eq!(
                            bits(&Scalar.errors(xb, wb, dh, (0.7, 0.35))),
                            bits(&Avx2(()).errors(xb, wb, dh, (0.7, 0.35)))
                        );
                    }
                }
            }
        }
        assert_eq!(
            crate::test_rows::fingerprint(&portable),
            PORTABLE_FINGERPRINT,
            "the scalar TQ1_0/TQ2_0 bytes changed"
        );
    }

    /// [`crate::test_rows::fingerprint`] of the scalar passes' bytes above (recorded where the
    /// AVX2 and SSE2 passes gave the same bytes).
    #[cfg(target_arch = "x86_64")]
    const PORTABLE_FINGERPRINT: u64 = 6857854234814236153;

    #[test]
    fn extreme_blocks_do_not_panic() {
        for scale in [1e-44f32, 1e-40, 1e-30, 0.0, 1e4, 1e37] {
            let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * scale).collect();
            for w in [vec![1f32; 256], vec![0f32; 256]] {
                let mut out = vec![0u8; TQ1_BYTES];
                quantize_tq1_0(&x, &w, &mut out);
                let mut out = vec![0u8; TQ2_BYTES];
                quantize_tq2_0(&x, &w, &mut out);
            }
        }
    }

    #[test]
    fn ternary_roundtrip_beats_amax_scale() {
        let x = signal(512);
        let w = vec![1f32; 512];
        for tq1 in [true, false] {
            let mut y = vec![0f32; 512];
            if tq1 {
                let mut out = vec![0u8; 2 * TQ1_BYTES];
                quantize_tq1_0(&x, &w, &mut out);
                super::super::dequant::dequantize_tq1_0(&out, &mut y);
            } else {
                let mut out = vec![0u8; 2 * TQ2_BYTES];
                quantize_tq2_0(&x, &w, &mut out);
                super::super::dequant::dequantize_tq2_0(&out, &mut y);
            }
            let e: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
            let n: f32 = x.iter().map(|a| a * a).sum();
            assert!(e / n < 0.35, "{tq1}: {}", e / n);
        }
    }
}
