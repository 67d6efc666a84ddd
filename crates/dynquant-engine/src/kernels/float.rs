//! Products of dequantized weights with activations rounded to the weight's dot type (or kept
//! in f32): any weight type with a dequantizer, and the exact numerics. Weight rows are decoded
//! to f32 in tiles of about 128 KiB and multiplied with every token of the batch by one of the
//! f32 tile kernels below. For F16 and F32 weights the kernels reproduce ggml's
//! (`ggml_vec_dot_f16`/`_f32` for one token, llamafile's tinyBLAS for batches); for the other
//! types the float sums are in the engine's own order.

use rayon::prelude::*;

use dynquant_gguf::GgmlType;

use super::layout::block_min;
use crate::cpu::{self, Flavor};
use crate::dot::{round_row, DotType};
use crate::error::{EngineError, Result};
use crate::reduce::{hsum_float_8, reduce_add_16};
use crate::simd_exp::madd;
use crate::weight::Weight;

/// Output rows decoded together: about 128 KiB of f32 per tile.
fn tile_rows(cols: usize) -> usize {
    ((32 * 1024 / cols.max(1)).max(4) / 4) * 4
}

/// `x` (`n_tok` x `w.cols`) times `w` transposed with the activations rounded to `dt`:
/// returns `n_tok` x `w.rows`.
pub(crate) fn matmul(w: &Weight<'_>, x: &[f32], n_tok: usize, dt: DotType) -> Result<Vec<f32>> {
    product(w, x, n_tok, dt, n_tok)
}

/// [`matmul`] as ggml-cpu's `mul_mat_id` computes one expert's product: the single-token
/// `vec_dot` for every routed row (no tinyBLAS for batches).
pub(crate) fn matmul_each_token(
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
    dt: DotType,
) -> Result<Vec<f32>> {
    product(w, x, n_tok, dt, 1)
}

/// The product with the tile kernel ggml picks for a batch of `kernel_batch` tokens.
fn product(
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
    dt: DotType,
    kernel_batch: usize,
) -> Result<Vec<f32>> {
    let k = w.cols;
    // Activations as the dot product sees them (+ Q8_1 block-sum corrections).
    let nb32 = k / 32;
    let mut xr = vec![0f32; x.len()];
    let mut corr = vec![0f32; if dt == DotType::Q8_1 { n_tok * nb32 } else { 0 }];
    // Q8_1 activations pair with a weight block minimum (f16 in each Q4_1/Q5_1 block).
    let min_at = match dt {
        DotType::Q8_1 => Some(block_min(w.ty).ok_or_else(|| EngineError::UnsupportedType {
            name: w.name.clone(),
            ty: w.ty,
        })?),
        _ => None,
    };
    if dt == DotType::Q8_1 {
        xr.par_chunks_mut(k)
            .zip(corr.par_chunks_mut(nb32))
            .zip(x.par_chunks(k))
            .for_each(|((o, c), xi)| {
                let mut v = Vec::with_capacity(nb32);
                round_row(dt, xi, o, &mut v);
                c.copy_from_slice(&v);
            });
    } else {
        xr.par_chunks_mut(k)
            .zip(x.par_chunks(k))
            .for_each(|(o, xi)| round_row(dt, xi, o, &mut Vec::new()));
    }
    let n = w.rows;
    let tr = tile_rows(k);
    let mut yt = super::tiled::zeroed(n * n_tok); // rows x tokens
    let kernel = select_kernel(w.ty, k, kernel_batch);
    yt.par_chunks_mut(tr * n_tok)
        .enumerate()
        .try_for_each(|(ti, out)| -> Result<()> {
            let r0 = ti * tr;
            let nr = out.len() / n_tok;
            let mut wf = vec![0f32; nr * k];
            dynquant_quants::dequantize(w.ty, w.rows_data(r0, r0 + nr), &mut wf)?;
            kernel(&wf, &xr, k, nr, n_tok, out);
            if let Some(at) = min_at {
                // + m_b * (s_b - f16(d_b) * sum q_b): the weight's block minimum times ggml's
                // stored block sum.
                let bsz = w.ty.type_size() as usize;
                for r in 0..nr {
                    let row = w.row_data(r0 + r);
                    let mins: Vec<f32> = row
                        .chunks_exact(bsz)
                        .map(|b| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32())
                        .collect();
                    for t in 0..n_tok {
                        let c = &corr[t * nb32..(t + 1) * nb32];
                        let s: f32 = mins.iter().zip(c).map(|(m, c)| m * c).sum();
                        out[r * n_tok + t] += s;
                    }
                }
            }
            Ok(())
        })?;
    Ok(super::tiled::tokens_major(yt, n, n_tok))
}

/// `out[r * nt + t]` = dot(w row r, x row t) for a tile of `nr` decoded rows of `k` values and
/// `nt` tokens.
type TileKernel = fn(&[f32], &[f32], usize, usize, usize, &mut [f32]);

/// The tile kernel of a product: unfused sums where the reproduced ggml build does not fuse;
/// otherwise ggml's own kernels for F16 weights and fused 8-lane sums for the rest.
fn select_kernel(ty: GgmlType, k: usize, n_tok: usize) -> TileKernel {
    if !cpu::fused() {
        return tile_unfused;
    }
    let lanes = match cpu::flavor() {
        Flavor::Avx512 => 16,
        _ => 8,
    };
    #[cfg(target_arch = "x86_64")]
    if ty == GgmlType::BF16 && cpu::bf16_dot() {
        // ggml's zen4 build: llamafile's tinyBLAS with 32 BF16 values per `vdpbf16ps` for
        // batches whose width it takes, `ggml_vec_dot_bf16` for the rest
        return if n_tok > 1 && k.is_multiple_of(32) {
            bf16::tinyblas_tile
        } else {
            bf16::vec_dot_tile
        };
    }
    if ty == GgmlType::BF16 {
        // builds without AVX-512 BF16 widen BF16 to f32: tinyBLAS as for F16 weights for the
        // batches it takes, else `ggml_vec_dot_bf16`'s f32 form
        if n_tok > 1 && k.is_multiple_of(lanes) {
            return tinyblas_f32_tile(lanes);
        }
        return vec_dot_bf16_widened_tile;
    }
    if ty == GgmlType::F16 {
        // one token: ggml_vec_dot_f16 (four vector accumulators)
        if n_tok == 1 {
            return vec_dot_f16_tile;
        }
        // llamafile's tinyBLAS (ggml's path for batches) keeps one vector accumulator per
        // output over k and reduces it at the end
        if k.is_multiple_of(lanes) {
            return tinyblas_f32_tile(lanes);
        }
    }
    if ty == GgmlType::F32 {
        // one token: ggml_vec_dot_f32, ggml_vec_dot_f16's four accumulators and reduction (its
        // leftovers, summed in f32 rather than f64, are left to the engine's own order)
        if n_tok == 1 && k.is_multiple_of(4 * lanes) {
            return vec_dot_f16_tile;
        }
        // batches: tinyBLAS with f32 activations, as for F16
        if n_tok > 1 && k.is_multiple_of(lanes) {
            return tinyblas_f32_tile(lanes);
        }
    }
    tile_fused
}

/// tinyBLAS over f32 (or widened F16/BF16) values with `lanes` vector lanes.
fn tinyblas_f32_tile(lanes: usize) -> TileKernel {
    if lanes == 16 {
        lanes16_tile
    } else {
        lanes8_tile
    }
}

/// BF16 weights on ggml's zen4 build, whose products multiply pairs of BF16 values with
/// `vdpbf16ps` (lane `i` of a 16-lane accumulator takes elements `2i + 1`, then `2i`, of each
/// 32-value step, each added with one rounding; the products of two BF16 values are exact).
/// The tiles come widened to f32 (exactly), and go back to BF16 bits here.
#[cfg(target_arch = "x86_64")]
mod bf16 {
    use std::arch::x86_64::*;

    use crate::reduce::reduce_add_16;

    fn bits(v: &[f32]) -> Vec<u16> {
        v.iter().map(|x| (x.to_bits() >> 16) as u16).collect()
    }

    /// One 32-value step: `acc` plus the products of `a[0..32]` and `b[0..32]`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn step(acc: __m512, a: &[u16], b: &[u16]) -> __m512 {
        assert!(a.len() >= 32 && b.len() >= 32);
        // SAFETY: 32 u16 (64 bytes) readable at both (asserted); `__m512bh` is 32 BF16 bits.
        unsafe {
            let va: __m512bh = std::mem::transmute(_mm512_loadu_si512(a.as_ptr().cast()));
            let vb: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.as_ptr().cast()));
            _mm512_dpbf16_ps(acc, va, vb)
        }
    }

    fn lanes(v: __m512) -> [f32; 16] {
        // SAFETY: `__m512` and `[f32; 16]` have the same size and any bits are valid f32.
        unsafe { std::mem::transmute(v) }
    }

    /// `ggml_vec_dot_bf16` (AVX512BF16): two accumulators over 64-value steps, their sums added
    /// in f64, then the leftover products one by one in f64.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn vec_dot(w: &[u16], x: &[u16], wf: &[f32], xf: &[f32]) -> f32 {
        let n = w.len();
        let (mut c1, mut c2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 64 <= n {
            // SAFETY: the CPU has AVX-512 BF16 (the caller's contract); slices in bounds.
            unsafe {
                c1 = step(c1, &w[i..], &x[i..]);
                c2 = step(c2, &w[i + 32..], &x[i + 32..]);
            }
            i += 64;
        }
        let mut sum = f64::from(reduce_add_16(&lanes(c1)));
        sum += f64::from(reduce_add_16(&lanes(c2)));
        for j in i..n {
            sum += f64::from(wf[j] * xf[j]);
        }
        sum as f32
    }

    /// A tile's products with `dot` (given each row's and token's BF16 bits and widened
    /// values), the tokens' bits computed once per tile.
    fn tile_with(
        w: &[f32],
        x: &[f32],
        k: usize,
        nr: usize,
        nt: usize,
        out: &mut [f32],
        dot: impl Fn(&[u16], &[f32], &[u16], &[f32]) -> f32,
    ) {
        let xb: Vec<Vec<u16>> = (0..nt).map(|t| bits(&x[t * k..(t + 1) * k])).collect();
        for r in 0..nr {
            let wf = &w[r * k..(r + 1) * k];
            let wb = bits(wf);
            for (t, xb) in xb.iter().enumerate() {
                out[r * nt + t] = dot(&wb, wf, xb, &x[t * k..(t + 1) * k]);
            }
        }
    }

    pub(super) fn vec_dot_tile(
        w: &[f32],
        x: &[f32],
        k: usize,
        nr: usize,
        nt: usize,
        out: &mut [f32],
    ) {
        tile_with(w, x, k, nr, nt, out, |wb, wf, xb, xf| {
            // SAFETY: `cpu::bf16_dot` (the only way here) detected AVX-512 BF16.
            unsafe { vec_dot(wb, xb, wf, xf) }
        })
    }

    /// tinyBLAS<32, __m512, __m512bh>: one accumulator per output over 32-value steps, reduced
    /// at the end. Needs `k % 32 == 0`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tinyblas(w: &[u16], x: &[u16]) -> f32 {
        let mut acc = _mm512_setzero_ps();
        for (a, b) in w.chunks_exact(32).zip(x.chunks_exact(32)) {
            // SAFETY: the CPU has AVX-512 BF16 (the caller's contract); 32 values each.
            acc = unsafe { step(acc, a, b) };
        }
        reduce_add_16(&lanes(acc))
    }

    pub(super) fn tinyblas_tile(
        w: &[f32],
        x: &[f32],
        k: usize,
        nr: usize,
        nt: usize,
        out: &mut [f32],
    ) {
        tile_with(w, x, k, nr, nt, out, |wb, _, xb, _| {
            // SAFETY: `cpu::bf16_dot` (the only way here) detected AVX-512 BF16.
            unsafe { tinyblas(wb, xb) }
        })
    }
}

fma_variant!(
    vec_dot_bf16_widened_tile,
    vec_dot_bf16_widened_tile_impl,
    (w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) -> ()
);

/// `ggml_vec_dot_bf16` on builds without AVX-512 BF16 (values widened to f32, fused
/// multiply-adds): AVX-512F keeps two 16-lane accumulators over 32-value steps, each reduced
/// as `_mm512_reduce_add_ps`; AVX2 four 8-lane ones, added `(c1 + c3) + (c2 + c4)` and reduced
/// by halves, then pairs; the sums and the leftover products are added in f64.
#[inline(always)]
fn vec_dot_bf16_widened_tile_impl(
    w: &[f32],
    x: &[f32],
    k: usize,
    nr: usize,
    nt: usize,
    out: &mut [f32],
) {
    let avx512 = cpu::flavor() == Flavor::Avx512;
    let dot = |a: &[f32], b: &[f32]| -> f32 {
        let mut i = 0;
        let mut sum = 0f64;
        if avx512 {
            let mut c = [[0f32; 16]; 2];
            while i + 32 <= k {
                for (j, c) in c.iter_mut().enumerate() {
                    for (l, c) in c.iter_mut().enumerate() {
                        *c = a[i + 16 * j + l].mul_add(b[i + 16 * j + l], *c);
                    }
                }
                i += 32;
            }
            sum += f64::from(reduce_add_16(&c[0]));
            sum += f64::from(reduce_add_16(&c[1]));
        } else {
            let mut c = [[0f32; 8]; 4];
            while i + 32 <= k {
                for (j, c) in c.iter_mut().enumerate() {
                    for (l, c) in c.iter_mut().enumerate() {
                        *c = a[i + 8 * j + l].mul_add(b[i + 8 * j + l], *c);
                    }
                }
                i += 32;
            }
            let s: [f32; 8] = std::array::from_fn(|l| (c[0][l] + c[2][l]) + (c[1][l] + c[3][l]));
            let g: [f32; 4] = std::array::from_fn(|l| s[4 + l] + s[l]);
            sum += f64::from((g[0] + g[2]) + (g[1] + g[3]));
        }
        for j in i..k {
            sum += f64::from(a[j] * b[j]);
        }
        sum as f32
    };
    for r in 0..nr {
        for t in 0..nt {
            out[r * nt + t] = dot(&w[r * k..(r + 1) * k], &x[t * k..(t + 1) * k]);
        }
    }
}

fma_variant!(
    vec_dot_f16_tile,
    vec_dot_f16_tile_impl,
    (w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) -> ()
);

/// `ggml_vec_dot_f16` per output (values already widened from f16).
#[inline(always)]
fn vec_dot_f16_tile_impl(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    let flavor = cpu::flavor();
    #[cfg(target_arch = "x86_64")]
    if flavor == crate::cpu::Flavor::Avx512 && cpu::simd512() {
        // SAFETY: `cpu::simd512` detected AVX-512F at runtime.
        return unsafe { avx512::vec_dot_f16_tile(w, x, k, nr, nt, out) };
    }
    for r in 0..nr {
        for t in 0..nt {
            out[r * nt + t] =
                crate::fa::dot_f16(flavor, &w[r * k..(r + 1) * k], &x[t * k..(t + 1) * k]);
        }
    }
}

fma_variant!(
    lanes16_tile,
    lanes16_tile_impl,
    (w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) -> ()
);

#[inline(always)]
fn lanes16_tile_impl(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu::simd512() {
        // SAFETY: `cpu::simd512` detected AVX-512F at runtime.
        return unsafe { avx512::lanes16_tile(w, x, k, nr, nt, out) };
    }
    lanes_tile::<16>(w, x, k, nr, nt, out, reduce_add_16)
}

/// [`lanes_tile`] with 16 lanes in AVX-512 registers: each output's accumulator is one zmm
/// register (lane `l` sums elements `l, l + 16, ...` with fused multiply-adds, as in
/// `lanes_tile`), reduced by [`reduce_add_16`]; the same bits. Tiles of 4 rows x 6 tokens keep
/// 24 accumulators in registers and read each loaded weight vector six times.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::reduce::reduce_add_16;

    const ROWS: usize = 4;
    const TOKENS: usize = 6;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lanes16_tile(
        w: &[f32],
        x: &[f32],
        k: usize,
        nr: usize,
        nt: usize,
        out: &mut [f32],
    ) {
        assert!(
            k.is_multiple_of(16) && w.len() >= nr * k && x.len() >= nt * k && out.len() >= nr * nt
        );
        let mut r = 0;
        while r < nr {
            let rn = (nr - r).min(ROWS);
            let mut t = 0;
            while t < nt {
                let tn = (nt - t).min(TOKENS);
                // SAFETY: every load reads 16 floats at `row * k + off` with `off + 16 <= k`
                // and rows below `nr`/`nt`, inside `w` and `x` (asserted above).
                unsafe { tile(w, x, k, r, rn, t, tn, out, nt) };
                t += tn;
            }
            r += rn;
        }
    }

    /// `ggml_vec_dot_f16` on the AVX-512 build (four 16-lane accumulators over 64-value steps,
    /// `(a0 + a2) + (a1 + a3)`, [`reduce_add_16`], the leftover values added in f64: as
    /// `fa::dot_f16`) for every output of `nr` rows x `nt` tokens, in tiles of 2 rows x 3
    /// tokens whose 24 accumulators stay in registers, so each loaded weight vector serves three
    /// tokens and each activation vector two rows. Every output keeps its own order: the same
    /// bits as one output at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn vec_dot_f16_tile(
        w: &[f32],
        x: &[f32],
        k: usize,
        nr: usize,
        nt: usize,
        out: &mut [f32],
    ) {
        assert!(w.len() >= nr * k && x.len() >= nt * k && out.len() >= nr * nt);
        let mut r = 0;
        while r < nr {
            let rn = (nr - r).min(2);
            let mut t = 0;
            while t < nt {
                let tn = (nt - t).min(3);
                // SAFETY: rows below `nr`, tokens below `nt`, values below `k` (asserted).
                unsafe {
                    match (rn, tn) {
                        (2, 3) => f16_dot_block::<2, 3>(w, x, k, r, t, out, nt),
                        (2, 2) => f16_dot_block::<2, 2>(w, x, k, r, t, out, nt),
                        (2, _) => f16_dot_block::<2, 1>(w, x, k, r, t, out, nt),
                        (_, 3) => f16_dot_block::<1, 3>(w, x, k, r, t, out, nt),
                        (_, 2) => f16_dot_block::<1, 2>(w, x, k, r, t, out, nt),
                        _ => f16_dot_block::<1, 1>(w, x, k, r, t, out, nt),
                    }
                }
                t += tn;
            }
            r += rn;
        }
    }

    // indices: the accumulators are a (row, token, register) grid
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn f16_dot_block<const RN: usize, const TN: usize>(
        w: &[f32],
        x: &[f32],
        k: usize,
        r: usize,
        t: usize,
        out: &mut [f32],
        nt: usize,
    ) {
        let np = k / 64 * 64;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [[[_mm512_setzero_ps(); 4]; TN]; RN];
        let mut off = 0;
        while off < np {
            for j in 0..4 {
                // SAFETY: off + 16 j + 16 <= np <= k, rows and tokens in range (caller).
                let b: [__m512; TN] = std::array::from_fn(|tj| unsafe {
                    _mm512_loadu_ps(xp.add((t + tj) * k + off + 16 * j))
                });
                for i in 0..RN {
                    // SAFETY: as above.
                    let a = unsafe { _mm512_loadu_ps(wp.add((r + i) * k + off + 16 * j)) };
                    for tj in 0..TN {
                        acc[i][tj][j] = _mm512_fmadd_ps(a, b[tj], acc[i][tj][j]);
                    }
                }
            }
            off += 64;
        }
        for i in 0..RN {
            for tj in 0..TN {
                let a = &acc[i][tj];
                let sum = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
                let mut lanes = [0f32; 16];
                // SAFETY: `lanes` holds 16 floats.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
                let mut sumf = reduce_add_16(&lanes) as f64;
                let (wr, xr) = (&w[(r + i) * k..][..k], &x[(t + tj) * k..][..k]);
                for e in np..k {
                    sumf += (wr[e] * xr[e]) as f64;
                }
                out[(r + i) * nt + t + tj] = sumf as f32;
            }
        }
    }

    // indices: the accumulators are a (row, token) grid of registers
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile(
        w: &[f32],
        x: &[f32],
        k: usize,
        r: usize,
        rn: usize,
        t: usize,
        tn: usize,
        out: &mut [f32],
        nt: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); TOKENS]; ROWS];
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let mut off = 0;
        while off < k {
            let mut a = [_mm512_setzero_ps(); ROWS];
            for (i, ai) in a.iter_mut().enumerate().take(rn) {
                // SAFETY: row r + i < nr, off + 16 <= k (see `lanes16_tile`).
                *ai = unsafe { _mm512_loadu_ps(wp.add((r + i) * k + off)) };
            }
            for j in 0..tn {
                // SAFETY: token t + j < nt, off + 16 <= k.
                let b = unsafe { _mm512_loadu_ps(xp.add((t + j) * k + off)) };
                for i in 0..rn {
                    acc[i][j] = _mm512_fmadd_ps(a[i], b, acc[i][j]);
                }
            }
            off += 16;
        }
        for i in 0..rn {
            for j in 0..tn {
                let mut lanes = [0f32; 16];
                // SAFETY: `lanes` holds 16 floats.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[i][j]) };
                out[(r + i) * nt + t + j] = reduce_add_16(&lanes);
            }
        }
    }
}

fma_variant!(
    lanes8_tile,
    lanes8_tile_impl,
    (w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) -> ()
);

#[inline(always)]
fn lanes8_tile_impl(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    lanes_tile::<8>(w, x, k, nr, nt, out, hsum_float_8)
}

/// `out[r * nt + t]` = dot(w row r, x row t) as tinyBLAS computes it: `L` lanes, lane `l`
/// accumulating elements `l, l + L, ...` with fused multiply-adds, then the horizontal sum of
/// the vector (`reduce`). Needs `k % L == 0`.
#[inline(always)]
fn lanes_tile<const L: usize>(
    w: &[f32],
    x: &[f32],
    k: usize,
    nr: usize,
    nt: usize,
    out: &mut [f32],
    reduce: fn(&[f32; L]) -> f32,
) {
    // 4 rows x 2 tokens at a time (each output keeps its own accumulator)
    let mut r = 0;
    while r < nr {
        let rn = (nr - r).min(4);
        let mut t = 0;
        while t < nt {
            let tn = (nt - t).min(2);
            let mut acc = [[[0f32; L]; 2]; 4];
            let mut off = 0;
            while off < k {
                for i in 0..rn {
                    let a: &[f32; L] = w[(r + i) * k + off..][..L].try_into().expect("L");
                    for j in 0..tn {
                        let b: &[f32; L] = x[(t + j) * k + off..][..L].try_into().expect("L");
                        for l in 0..L {
                            acc[i][j][l] = a[l].mul_add(b[l], acc[i][j][l]);
                        }
                    }
                }
                off += L;
            }
            for i in 0..rn {
                for j in 0..tn {
                    out[(r + i) * nt + t + j] = reduce(&acc[i][j]);
                }
            }
            t += tn;
        }
        r += rn;
    }
}

fn tile_unfused(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    gemm_tile::<false>(w, x, k, nr, nt, out)
}

fma_variant!(
    tile_fused,
    tile_fused_impl,
    (w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) -> ()
);

#[inline(always)]
fn tile_fused_impl(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    gemm_tile::<true>(w, x, k, nr, nt, out)
}

#[inline(always)]
fn lanes8(v: &[f32], off: usize) -> &[f32; 8] {
    v[off..off + 8].try_into().expect("8 lanes")
}

/// The sum of eight lanes in this kernel's own order (adjacent pairs of the halves' sums; not
/// ggml's [`hsum_float_8`], which no kernel of this family has to match).
#[inline(always)]
fn sum_lanes(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// out[r * nt + t] = dot(w row r, x row t), 4 rows x 2 tokens at a time with 8-lane sums.
#[inline(always)]
fn gemm_tile<const FMA: bool>(
    w: &[f32],
    x: &[f32],
    k: usize,
    nr: usize,
    nt: usize,
    out: &mut [f32],
) {
    let k8 = k / 8 * 8;
    let dot1 = |r: usize, t: usize| -> f32 {
        let wr = &w[r * k..(r + 1) * k];
        let xt = &x[t * k..(t + 1) * k];
        let mut acc = [0f32; 8];
        let mut off = 0;
        while off < k8 {
            let a = lanes8(wr, off);
            let b = lanes8(xt, off);
            for l in 0..8 {
                acc[l] = madd::<FMA>(a[l], b[l], acc[l]);
            }
            off += 8;
        }
        let mut s = sum_lanes(&acc);
        for i in k8..k {
            s = madd::<FMA>(wr[i], xt[i], s);
        }
        s
    };
    let mut r = 0;
    while r + 4 <= nr {
        let w0 = &w[r * k..(r + 1) * k];
        let w1 = &w[(r + 1) * k..(r + 2) * k];
        let w2 = &w[(r + 2) * k..(r + 3) * k];
        let w3 = &w[(r + 3) * k..(r + 4) * k];
        let mut t = 0;
        while t + 2 <= nt {
            let x0 = &x[t * k..(t + 1) * k];
            let x1 = &x[(t + 1) * k..(t + 2) * k];
            let mut acc = [[0f32; 8]; 8];
            let mut off = 0;
            while off < k8 {
                let a = [
                    lanes8(w0, off),
                    lanes8(w1, off),
                    lanes8(w2, off),
                    lanes8(w3, off),
                ];
                let b0 = lanes8(x0, off);
                let b1 = lanes8(x1, off);
                for i in 0..4 {
                    for l in 0..8 {
                        acc[2 * i][l] = madd::<FMA>(a[i][l], b0[l], acc[2 * i][l]);
                        acc[2 * i + 1][l] = madd::<FMA>(a[i][l], b1[l], acc[2 * i + 1][l]);
                    }
                }
                off += 8;
            }
            let ws = [w0, w1, w2, w3];
            for i in 0..4 {
                let mut s0 = sum_lanes(&acc[2 * i]);
                let mut s1 = sum_lanes(&acc[2 * i + 1]);
                for j in k8..k {
                    s0 = madd::<FMA>(ws[i][j], x0[j], s0);
                    s1 = madd::<FMA>(ws[i][j], x1[j], s1);
                }
                out[(r + i) * nt + t] = s0;
                out[(r + i) * nt + t + 1] = s1;
            }
            t += 2;
        }
        while t < nt {
            for i in 0..4 {
                out[(r + i) * nt + t] = dot1(r + i, t);
            }
            t += 1;
        }
        r += 4;
    }
    while r < nr {
        for t in 0..nt {
            out[r * nt + t] = dot1(r, t);
        }
        r += 1;
    }
}
