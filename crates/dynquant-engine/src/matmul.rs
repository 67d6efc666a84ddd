//! Matrix products between stored (mmap'd) weights of any ggml type and f32 activations, with
//! llama.cpp's CPU numerics (activations rounded to the weight's `vec_dot_type`, see
//! [`crate::dot`]) or exact f32 numerics.
//!
//! Layout: a weight has `rows` output rows of `cols` values each (ggml `ne0 = cols`,
//! `ne1 = rows`); activations are `n_tok` rows of `cols` values; the result is `n_tok` rows of
//! `rows` values. Work is split over tiles of weight rows with rayon: each tile's rows are
//! decoded once and multiplied with every token of the batch, and each output value is computed
//! by exactly one task in a fixed order, so results do not depend on the thread count.

use std::borrow::Cow;

use dynquant_gguf::GgmlType;
use rayon::prelude::*;

use crate::dot::{round_row, vec_dot_type, DotType};
use crate::error::{EngineError, Result};
use crate::simd_exp::madd;

/// A 2-D weight matrix in its stored type (borrowed from the memory-mapped file when possible).
#[derive(Debug)]
pub struct Weight<'a> {
    /// Tensor name in the GGUF file.
    pub name: String,
    /// Stored type.
    pub ty: GgmlType,
    /// Values per row (ggml `ne0`): the input dimension.
    pub cols: usize,
    /// Number of rows (ggml `ne1`): the output dimension.
    pub rows: usize,
    /// Stored bytes, rows consecutive.
    pub data: Cow<'a, [u8]>,
    row_bytes: usize,
    dot: DotType,
}

impl<'a> Weight<'a> {
    /// Wraps stored bytes as a `rows` x `cols` matrix of type `ty`.
    pub fn new(
        name: impl Into<String>,
        ty: GgmlType,
        cols: usize,
        rows: usize,
        data: Cow<'a, [u8]>,
    ) -> Result<Self> {
        let name = name.into();
        let unsupported = || EngineError::UnsupportedType {
            name: name.clone(),
            ty,
        };
        let dot = vec_dot_type(ty).ok_or_else(unsupported)?;
        if !dynquant_quants::can_dequantize(ty) {
            return Err(unsupported());
        }
        let bad = || EngineError::BadShape {
            name: name.clone(),
            shape: vec![cols as u64, rows as u64],
            expected: vec![],
        };
        let row_bytes = ty
            .row_bytes(cols as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad)?;
        if cols % dot.block() != 0 || row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(bad());
        }
        Ok(Weight {
            name,
            ty,
            cols,
            rows,
            data,
            row_bytes,
            dot,
        })
    }

    /// The activation type of this weight's dot products.
    pub fn dot_type(&self) -> DotType {
        self.dot
    }

    /// Stored bytes of row `r`.
    pub fn row_data(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as f32 (as `ggml_get_rows` gives it).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<()> {
        dynquant_quants::dequantize(self.ty, self.row_data(r), out)?;
        Ok(())
    }
}

/// How matrix products round their activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numerics {
    /// As llama.cpp's CPU backend: activations converted to the weight's `vec_dot_type`.
    #[default]
    Llama,
    /// Activations kept in f32 (dequantized weight times exact activation).
    Exact,
}

/// Output rows decoded together: about 128 KiB of f32 per tile.
fn tile_rows(cols: usize) -> usize {
    ((32 * 1024 / cols.max(1)).max(4) / 4) * 4
}

/// `x` (`n_tok` x `w.cols`) times `w` transposed: returns `n_tok` x `w.rows`.
pub fn matmul(w: &Weight<'_>, x: &[f32], n_tok: usize, numerics: Numerics) -> Result<Vec<f32>> {
    let k = w.cols;
    if x.len() != n_tok * k {
        return Err(EngineError::Invalid(format!(
            "matmul {}: {} activations for {n_tok} tokens of {k}",
            w.name,
            x.len()
        )));
    }
    if n_tok == 0 || w.rows == 0 {
        return Ok(Vec::new());
    }
    let dt = match numerics {
        Numerics::Llama => w.dot,
        Numerics::Exact => DotType::F32,
    };
    if matches!(
        w.ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0
    ) && numerics == Numerics::Llama
    {
        return Ok(q0::matmul(w, x, n_tok));
    }
    if w.ty == GgmlType::Q6_K && numerics == Numerics::Llama {
        return Ok(crate::kquant::matmul_q6k(w, x, n_tok));
    }
    if w.ty == GgmlType::Q4_K && numerics == Numerics::Llama && w.rows % 8 == 0 {
        return Ok(crate::kquant::matmul_q4k(w, x, n_tok));
    }
    // Activations as the dot product sees them (+ Q8_1 block-sum corrections).
    let nb32 = k / 32;
    let mut xr = vec![0f32; x.len()];
    let mut corr = vec![0f32; if dt == DotType::Q8_1 { n_tok * nb32 } else { 0 }];
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
    let mut yt = vec![0f32; n * n_tok]; // rows x tokens
    let kernel = select_kernel(w.ty, k, n_tok);
    yt.par_chunks_mut(tr * n_tok)
        .enumerate()
        .try_for_each(|(ti, out)| -> Result<()> {
            let r0 = ti * tr;
            let nr = out.len() / n_tok;
            let mut wf = vec![0f32; nr * k];
            dynquant_quants::dequantize(
                w.ty,
                &w.data[r0 * w.row_bytes..(r0 + nr) * w.row_bytes],
                &mut wf,
            )?;
            kernel(&wf, &xr, k, nr, n_tok, out);
            if dt == DotType::Q8_1 {
                // + m_b * (s_b - f16(d_b) * sum q_b): the weight's block minimum (f16 at
                // bytes 2..4 of each Q4_1/Q5_1 block) times ggml's stored block sum.
                let bsz = w.ty.type_size() as usize;
                for r in 0..nr {
                    let row = w.row_data(r0 + r);
                    let mins: Vec<f32> = row
                        .chunks_exact(bsz)
                        .map(|b| half::f16::from_le_bytes([b[2], b[3]]).to_f32())
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
    // transpose to tokens x rows
    let mut y = vec![0f32; n_tok * n];
    y.par_chunks_mut(n).enumerate().for_each(|(t, yrow)| {
        for (r, v) in yrow.iter_mut().enumerate() {
            *v = yt[r * n_tok + t];
        }
    });
    Ok(y)
}

/// Q4_0, Q5_0, Q8_0 (times Q8_0 activations) and Q4_1 (times Q8_1) as ggml-cpu's x86 kernels
/// (`ggml_vec_dot_q*_q8_*`, and llamafile's tinyBLAS for batches, which accumulates the same way)
/// compute them: per block an exact integer dot product in eight 4-element lanes,
/// `acc[l] = fma(d_w * d_a, lane[l], acc[l])` over the blocks, for Q4_1 the minimum term
/// `m_w * s_a` summed separately, and `hsum_float_8(acc) (+ summs)`. Bit-identical results keep
/// llama.cpp's later 8-bit roundings from flipping.
/// The shared skeleton of the integer-dot products: every token's activations quantized once
/// (`quantize`), weight rows decoded (`decode`) in tiles of 16 so each activation block is
/// reused from cache for 16 rows, `tile` filling a tile's rows x tokens results, then the
/// rows-major result transposed to tokens x rows. Each output value is computed by one task in a
/// fixed order, so results do not depend on the thread count.
pub(crate) fn tiled_product<A: Send + Sync, R: Send>(
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
    quantize: impl Fn(&[f32]) -> A + Sync,
    decode: impl Fn(&[u8]) -> R + Sync,
    tile: impl Fn(&[R], &[A], usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    const TILE: usize = 16;
    let acts: Vec<A> = x.par_chunks(w.cols).map(&quantize).collect();
    let mut yt = vec![0f32; w.rows * n_tok];
    yt.par_chunks_mut(TILE * n_tok)
        .enumerate()
        .for_each(|(ti, out)| {
            let r0 = ti * TILE;
            let nr = out.len() / n_tok;
            let rows: Vec<R> = (r0..r0 + nr).map(|r| decode(w.row_data(r))).collect();
            tile(&rows, &acts, n_tok, out);
        });
    let mut y = vec![0f32; n_tok * w.rows];
    y.par_chunks_mut(w.rows).enumerate().for_each(|(t, yrow)| {
        for (r, v) in yrow.iter_mut().enumerate() {
            *v = yt[r * n_tok + t];
        }
    });
    y
}

mod q0 {
    use dynquant_gguf::GgmlType;
    use half::f16;

    use super::Weight;

    struct ActBlock {
        d: f32,
        s: f32,
        q: [i8; 32],
    }

    fma_variant!(quantize, quantize_impl, (x: &[f32]) -> Vec<ActBlock>);

    #[inline(always)]
    fn quantize_impl(x: &[f32]) -> Vec<ActBlock> {
        x.chunks_exact(32)
            .map(|xb| {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let mut q = [0i8; 32];
                let mut sum = 0i32;
                for (o, &v) in q.iter_mut().zip(xb) {
                    let r = crate::dot::nearest_int(v * id);
                    sum += r;
                    *o = r as i8;
                }
                ActBlock {
                    d: f16::from_f32(d).to_f32(),
                    s: f16::from_f32(d * sum as f32).to_f32(),
                    q,
                }
            })
            .collect()
    }

    struct WeightBlock {
        d: f32,
        /// Block minimum (Q4_1), 0 otherwise.
        m: f32,
        q: [i8; 32],
    }

    /// Integer values of one row's blocks (ggml's block layouts, see dynquant-core's quants).
    fn decode(ty: GgmlType, row: &[u8]) -> Vec<WeightBlock> {
        let h = |b: &[u8], o: usize| f16::from_le_bytes([b[o], b[o + 1]]).to_f32();
        let bs = ty.type_size() as usize;
        row.chunks_exact(bs)
            .map(|b| {
                let mut q = [0i8; 32];
                let mut m = 0.0;
                match ty {
                    GgmlType::Q8_0 => {
                        for (o, &v) in q.iter_mut().zip(&b[2..34]) {
                            *o = v as i8;
                        }
                    }
                    GgmlType::Q4_0 => {
                        for j in 0..16 {
                            q[j] = (b[2 + j] & 0x0F) as i8 - 8;
                            q[j + 16] = (b[2 + j] >> 4) as i8 - 8;
                        }
                    }
                    GgmlType::Q4_1 => {
                        m = h(b, 2);
                        for j in 0..16 {
                            q[j] = (b[4 + j] & 0x0F) as i8;
                            q[j + 16] = (b[4 + j] >> 4) as i8;
                        }
                    }
                    _ => {
                        // Q5_0: d, qh (u32), qs[16]; the fifth bit of element j is bit j of qh
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        for j in 0..16 {
                            let h0 = (((qh >> j) << 4) & 0x10) as u8;
                            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                            q[j] = ((b[6 + j] & 0x0F) | h0) as i8 - 16;
                            q[j + 16] = ((b[6 + j] >> 4) | h1) as i8 - 16;
                        }
                    }
                }
                WeightBlock { d: h(b, 0), m, q }
            })
            .collect()
    }

    #[inline(always)]
    fn dot(w: &[WeightBlock], a: &[ActBlock]) -> f32 {
        let mut acc = [0f32; 8];
        let mut summs = 0f32;
        for (wb, ab) in w.iter().zip(a) {
            summs += wb.m * ab.s; // 0 except for Q4_1
            let dd = wb.d * ab.d;
            let mut p = [0i16; 32];
            for ((p, &x), &y) in p.iter_mut().zip(&wb.q).zip(&ab.q) {
                *p = x as i16 * y as i16;
            }
            for (l, acc_l) in acc.iter_mut().enumerate() {
                let q = &p[4 * l..4 * l + 4];
                let lane = (q[0] as i32 + q[1] as i32) + (q[2] as i32 + q[3] as i32);
                // fused, as _mm256_fmadd_ps
                *acc_l = dd.mul_add(lane as f32, *acc_l);
            }
        }
        let r: [f32; 4] = std::array::from_fn(|i| acc[i + 4] + acc[i]);
        ((r[0] + r[2]) + (r[1] + r[3])) + summs
    }

    #[inline(always)]
    fn tile_generic(
        rows: &[Vec<WeightBlock>],
        acts: &[Vec<ActBlock>],
        n_tok: usize,
        out: &mut [f32],
    ) {
        for (t, a) in acts.iter().enumerate() {
            for (i, wb) in rows.iter().enumerate() {
                out[i * n_tok + t] = dot(wb, a);
            }
        }
    }

    /// The same dot product with AVX2 integer instructions: `maddubs` (|w| times sign-moved
    /// activations, pairs) and `madd` (pairs of pairs) give exactly the eight 4-element lane
    /// sums of [`dot`]; the float steps are the same operations in the same order.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(w: &[WeightBlock], a: &[ActBlock]) -> f32 {
        use std::arch::x86_64::*;
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for (wb, ab) in w.iter().zip(a) {
            summs += wb.m * ab.s;
            // SAFETY: both arrays hold 32 bytes; unaligned loads.
            let x = _mm256_loadu_si256(wb.q.as_ptr().cast());
            let y = _mm256_loadu_si256(ab.q.as_ptr().cast());
            // activations are within [-127, 127], so the pair sums cannot saturate
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            let p32 = _mm256_madd_epi16(p16, ones);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(wb.d * ab.d), _mm256_cvtepi32_ps(p32), acc);
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), acc);
        let r: [f32; 4] = std::array::from_fn(|i| l[i + 4] + l[i]);
        ((r[0] + r[2]) + (r[1] + r[3])) + summs
    }

    fn tile(rows: &[Vec<WeightBlock>], acts: &[Vec<ActBlock>], n_tok: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::has_fma() {
            for (t, a) in acts.iter().enumerate() {
                for (i, wb) in rows.iter().enumerate() {
                    // SAFETY: AVX2 and FMA were detected at runtime.
                    out[i * n_tok + t] = unsafe { dot_avx2(wb, a) };
                }
            }
            return;
        }
        tile_generic(rows, acts, n_tok, out)
    }

    pub(super) fn matmul(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
        super::tiled_product(w, x, n_tok, quantize, |r| decode(w.ty, r), tile)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn avx2_and_portable_forms_give_the_same_bits() {
            if !super::super::has_fma() {
                return;
            }
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            };
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q8_0,
            ] {
                for nb in [1usize, 3, 18] {
                    let bs = ty.type_size() as usize;
                    let mut row: Vec<u8> = (0..bs * nb).map(|_| next() as u8).collect();
                    for b in row.chunks_exact_mut(bs) {
                        b[..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
                        if ty == GgmlType::Q4_1 {
                            b[2..4].copy_from_slice(&f16::from_f32(-0.05).to_le_bytes());
                        }
                    }
                    let x: Vec<f32> = (0..32 * nb)
                        .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
                        .collect();
                    let (w, a) = (decode(ty, &row), quantize(&x));
                    // SAFETY: AVX2 and FMA detected above.
                    let v = unsafe { dot_avx2(&w, &a) };
                    assert_eq!(dot(&w, &a).to_bits(), v.to_bits(), "{ty} {nb} blocks");
                }
            }
        }
    }
}

type Kernel = fn(&[f32], &[f32], usize, usize, usize, &mut [f32]);

/// Whether the CPU has AVX2 and FMA (the fast kernels' requirement).
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn select_kernel(ty: GgmlType, k: usize, n_tok: usize) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // F16 weights: llamafile's tinyBLAS (ggml's path for them) keeps one vector
        // accumulator per output over k and reduces it at the end
        if ty == GgmlType::F16 && n_tok == 1 {
            // one token: ggml_vec_dot_f16 (four vector accumulators)
            return kernel_vec_dot_f16;
        }
        if ty == GgmlType::F16 {
            match crate::ops::flavor() {
                crate::simd_exp::Flavor::Avx512 if k % 16 == 0 => return kernel_lanes::<16>,
                crate::simd_exp::Flavor::Avx2 if k % 8 == 0 => return kernel_lanes::<8>,
                _ => {}
            }
        }
        return kernel_avx2;
    }
    kernel_plain
}

/// `ggml_vec_dot_f16` per output (values already widened from f16).
#[cfg(target_arch = "x86_64")]
fn kernel_vec_dot_f16(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn inner(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
        let flavor = crate::ops::flavor();
        for r in 0..nr {
            for t in 0..nt {
                out[r * nt + t] =
                    crate::fa::dot_f16(flavor, &w[r * k..(r + 1) * k], &x[t * k..(t + 1) * k]);
            }
        }
    }
    // SAFETY: only selected after runtime detection of AVX2 and FMA.
    unsafe { inner(w, x, k, nr, nt, out) }
}

/// `out[r * nt + t]` = dot(w row r, x row t) as tinyBLAS computes it: `L` lanes, lane `l`
/// accumulating elements `l, l + L, ...` with fused multiply-adds, then the horizontal sum of
/// the vector (GCC's `_mm512_reduce_add_ps` for 16 lanes, `hsum_float_8`'s order for 8).
/// Needs `k % L == 0`.
#[cfg(target_arch = "x86_64")]
fn kernel_lanes<const L: usize>(
    w: &[f32],
    x: &[f32],
    k: usize,
    nr: usize,
    nt: usize,
    out: &mut [f32],
) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn inner<const L: usize>(
        w: &[f32],
        x: &[f32],
        k: usize,
        nr: usize,
        nt: usize,
        out: &mut [f32],
    ) {
        let reduce = |a: &[f32; L]| -> f32 {
            if L == 16 {
                let t3: [f32; 8] = std::array::from_fn(|i| a[8 + i] + a[i]);
                let t6: [f32; 4] = std::array::from_fn(|i| t3[4 + i] + t3[i]);
                (t6[0] + t6[2]) + (t6[1] + t6[3])
            } else {
                let r: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
                (r[0] + r[2]) + (r[1] + r[3])
            }
        };
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
    // SAFETY: only selected after runtime detection of AVX2 and FMA.
    unsafe { inner::<L>(w, x, k, nr, nt, out) }
}

fn kernel_plain(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    gemm_tile::<false>(w, x, k, nr, nt, out)
}

#[cfg(target_arch = "x86_64")]
fn kernel_avx2(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn inner(w: &[f32], x: &[f32], k: usize, nr: usize, nt: usize, out: &mut [f32]) {
        gemm_tile::<true>(w, x, k, nr, nt, out)
    }
    // SAFETY: only selected after runtime detection of AVX2 and FMA.
    unsafe { inner(w, x, k, nr, nt, out) }
}

#[inline(always)]
fn lanes8(v: &[f32], off: usize) -> &[f32; 8] {
    v[off..off + 8].try_into().expect("8 lanes")
}

#[inline(always)]
fn hsum(a: &[f32; 8]) -> f32 {
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
        let mut s = hsum(&acc);
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
                let mut s0 = hsum(&acc[2 * i]);
                let mut s1 = hsum(&acc[2 * i + 1]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_shapes_match_a_plain_product() {
        let (k, n, t) = (40, 7, 5);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let x: Vec<f32> = (0..k * t).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let wt = Weight::new("w", GgmlType::F32, k, n, Cow::Owned(bytes)).unwrap();
        let y = matmul(&wt, &x, t, Numerics::Llama).unwrap();
        for ti in 0..t {
            for r in 0..n {
                let e: f32 = (0..k).map(|j| w[r * k + j] * x[ti * k + j]).sum();
                assert_eq!(y[ti * n + r], e, "token {ti} row {r}");
            }
        }
    }
}
