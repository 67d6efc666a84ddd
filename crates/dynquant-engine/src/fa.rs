//! ggml-cpu's flash attention over an f16 KV cache, operation for operation
//! (ggml-cpu/ops.cpp, `ggml_compute_forward_flash_attn_ext_f16` and its two paths), so that
//! the attention output carries the same bits as llama.cpp's:
//!
//! * **tiled** (a batch of at least [`Q_TILE`] queries): 64 queries x 64 keys per tile; scores
//!   are f32 fused multiply-add chains over the head dimension (simd_gemm), scaled, masked;
//!   each row keeps a running maximum per key tile (`expf` rescaling when it grows) and adds
//!   the tile's `ggml_v_expf` softmax sum (16-lane sums, accumulated in f64); values are
//!   accumulated with fused chains over the tile's keys.
//! * **one chunk** (fewer queries): the query rounded to f16, f16 x f16 dot products in
//!   ggml's SIMD order (`ggml_vec_dot_f16`), online softmax with the C library's `expf`, the
//!   value accumulator kept in f16.
//!
//! The vector width and reduction order follow [`Flavor`] (the libggml-cpu variant of this
//! CPU). Every output value is computed by one task in a fixed order, whatever the threads.

use half::f16;
use rayon::prelude::*;

use crate::reduce::{hsum_float_8, reduce_add_16};
use crate::simd_exp::{self, Flavor};

/// Query rows from which ggml-cpu takes its tiled path (`GGML_FA_TILE_Q`).
pub const Q_TILE: usize = 64;
/// Keys per tile of the tiled path (`GGML_FA_TILE_KV`).
pub const KV_TILE: usize = 64;

/// The shape of one attention call.
pub(crate) struct Shape<'a> {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub dk: usize,
    pub dv: usize,
    /// Row strides of the cache (values per position).
    pub k_stride: usize,
    pub v_stride: usize,
    pub scale: f32,
    pub window: Option<usize>,
    /// Per-head attention sinks (gpt-oss): a logit per head that joins the softmax with no
    /// value, applied after the keys as ggml does.
    pub sinks: Option<&'a [f32]>,
}

/// ggml's sink correction of one output row after its keys: the running maximum `m`, sum
/// `sum` and unnormalized accumulator `acc` as if the sink's logit `s` had been one more key
/// with a zero value.
#[inline(always)]
pub(crate) fn add_sink(s: f32, m: f32, sum: &mut f32, acc: &mut [f32]) {
    let (mut ms, mut vs) = (1f32, 1f32);
    if s > m {
        ms = (m - s).exp();
        acc.iter_mut().for_each(|a| *a *= ms);
    } else {
        vs = (s - m).exp();
    }
    *sum = *sum * ms + vs;
}

impl Shape<'_> {
    /// First visible key position for a query at `pos`.
    fn lo(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

#[inline]
fn h(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// `acc[i] = h(acc[i] * ms)`: the one-chunk path's f16 value accumulator rescaled.
#[inline(always)]
fn scale_round_f16(acc: &mut [f32], ms: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2, FMA and F16C at runtime.
        return unsafe { f16c::scale_round(acc, ms) };
    }
    for a in acc.iter_mut() {
        *a = h(*a * ms);
    }
}

/// `acc[i] = h(v[i] * vs + acc[i])` (fused): the one-chunk path's f16 value accumulator
/// advanced by one value row.
#[inline(always)]
fn fma_round_f16(acc: &mut [f32], v: &[f32], vs: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2, FMA and F16C at runtime.
        return unsafe { f16c::fma_round(acc, v, vs) };
    }
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = h(x.mul_add(vs, *a));
    }
}

/// The f16 roundings of the one-chunk path eight values at a time: `vcvtps2ph` rounds to
/// nearest even as `half::f16::from_f32` does, so the bits are the scalar forms'.
#[cfg(target_arch = "x86_64")]
mod f16c {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    fn round8(x: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scale_round(acc: &mut [f32], ms: f32) {
        let n8 = acc.len() / 8 * 8;
        let m = _mm256_set1_ps(ms);
        for c in acc[..n8].chunks_exact_mut(8) {
            // SAFETY: `c` holds 8 floats.
            unsafe {
                let a = _mm256_loadu_ps(c.as_ptr());
                _mm256_storeu_ps(c.as_mut_ptr(), round8(_mm256_mul_ps(a, m)));
            }
        }
        for a in &mut acc[n8..] {
            *a = super::h(*a * ms);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn fma_round(acc: &mut [f32], v: &[f32], vs: f32) {
        let n = acc.len().min(v.len());
        let n8 = n / 8 * 8;
        let s = _mm256_set1_ps(vs);
        for (c, x) in acc[..n8].chunks_exact_mut(8).zip(v[..n8].chunks_exact(8)) {
            // SAFETY: `c` and `x` hold 8 floats each.
            unsafe {
                let a = _mm256_loadu_ps(c.as_ptr());
                let xv = _mm256_loadu_ps(x.as_ptr());
                _mm256_storeu_ps(c.as_mut_ptr(), round8(_mm256_fmadd_ps(xv, s, a)));
            }
        }
        for (a, &x) in acc[n8..n].iter_mut().zip(&v[n8..n]) {
            *a = super::h(x.mul_add(vs, *a));
        }
    }
}

/// `ggml_vec_dot_f16` of two rows already widened from f16, in `flavor`'s order.
#[inline(always)]
pub(crate) fn dot_f16(flavor: Flavor, x: &[f32], y: &[f32]) -> f32 {
    match flavor {
        Flavor::Avx512 => dot_f16_lanes::<16>(x, y),
        Flavor::Avx2 => dot_f16_lanes::<8>(x, y),
        _ => x.iter().zip(y).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32,
    }
}

/// `dot_f16` with `EPR` lanes per register and four registers (ggml's GGML_F16_ARR), the lane
/// count a constant so that the loop compiles to whole-register FMAs without bounds checks.
#[inline(always)]
fn dot_f16_lanes<const EPR: usize>(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let step = EPR * 4;
    let np = n / step * step;
    let mut acc = [[0f32; EPR]; 4];
    for (xs, ys) in x[..np].chunks_exact(step).zip(y[..np].chunks_exact(step)) {
        for (j, a) in acc.iter_mut().enumerate() {
            let xo: &[f32; EPR] = xs[j * EPR..(j + 1) * EPR].try_into().expect("EPR lanes");
            let yo: &[f32; EPR] = ys[j * EPR..(j + 1) * EPR].try_into().expect("EPR lanes");
            for l in 0..EPR {
                a[l] = xo[l].mul_add(yo[l], a[l]);
            }
        }
    }
    // x0 += x2, x1 += x3, x0 += x1, then the horizontal sum
    let r: [f32; EPR] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let mut sumf = if EPR == 16 {
        reduce_add_16(r[..16].try_into().expect("16 lanes")) as f64
    } else {
        // _mm_hadd_ps twice on t0 = lo + hi
        let t: [f32; 4] = std::array::from_fn(|l| r[l] + r[l + 4]);
        ((t[0] + t[1]) + (t[2] + t[3])) as f64
    };
    for j in np..n {
        sumf += (x[j] * y[j]) as f64;
    }
    sumf as f32
}

/// ggml_v_expf of `x - max` over 16/8 lanes, values stored, the sum as ggml returns it
/// (`ggml_vec_soft_max_f32`).
#[inline(always)]
pub(crate) fn soft_max(flavor: Flavor, row: &mut [f32], max: f32) -> f64 {
    let lanes = match flavor {
        Flavor::Avx512 => 16,
        Flavor::Avx2 => 8,
        _ => 0,
    };
    let mut sum = 0f64;
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    let registers = lanes == 16 && crate::cpu::simd512();
    if lanes > 0 {
        while i + lanes <= row.len() {
            let c = &mut row[i..i + lanes];
            #[cfg(target_arch = "x86_64")]
            if registers {
                let c16: &mut [f32; 16] = c.try_into().expect("16 lanes");
                // SAFETY: `cpu::simd512` detected AVX-512F at runtime.
                unsafe { simd_exp::avx512::exp_minus_16(c16, max) };
            } else {
                for v in c.iter_mut() {
                    *v = simd_exp::exp(flavor, *v - max);
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            for v in c.iter_mut() {
                *v = simd_exp::exp(flavor, *v - max);
            }
            let c: &[f32] = c;
            sum += if lanes == 16 {
                reduce_add_16(c.try_into().expect("16 lanes"))
            } else {
                hsum_float_8(c.try_into().expect("8 lanes"))
            } as f64;
            i += lanes;
        }
    }
    for v in &mut row[i..] {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

/// Whether the tiled path applies (ggml also needs DV to be a multiple of the vector width).
pub(crate) fn tiled_applies(flavor: Flavor, n_tok: usize, dv: usize) -> bool {
    n_tok >= Q_TILE
        && matches!(flavor, Flavor::Avx512 | Flavor::Avx2)
        && dv.is_multiple_of(flavor.lanes())
}

/// Attention of `n_tok` queries at positions `p0..` (rows of `n_head * dk` in `q`) over the f16
/// cache rows `k`, `v` (already widened), into `out` (rows of `n_head * dv`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    s: &Shape,
    flavor: Flavor,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p0: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    if tiled_applies(flavor, n_tok, s.dv) {
        tiled(s, flavor, q, k, v, p0, n_tok, out)
    } else {
        one_chunk(s, flavor, q, k, v, p0, n_tok, out)
    }
}

#[allow(clippy::too_many_arguments)]
fn one_chunk(
    s: &Shape,
    flavor: Flavor,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p0: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let od = s.n_head * s.dv;
    out[..n_tok * od]
        .par_chunks_mut(s.dv)
        .enumerate()
        .for_each(|(r, o)| one_chunk_row(s, flavor, q, k, v, p0, r, o));
}

#[allow(clippy::too_many_arguments)]
fn tiled(
    s: &Shape,
    flavor: Flavor,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p0: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let dv = s.dv;
    let n_tiles = n_tok.div_ceil(Q_TILE);
    let kts = transposed_key_tiles(s, k, p0 + n_tok);
    // one job per (head, query tile); results land in per-job buffers, then are scattered
    let jobs: Vec<(usize, usize)> = (0..s.n_head)
        .flat_map(|hd| (0..n_tiles).map(move |ti| (hd, ti)))
        .collect();
    let results: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(head, ti)| tiled_job(s, flavor, q, &kts, v, p0, n_tok, head, ti))
        .collect();
    let od = s.n_head * dv;
    for (&(head, ti), r) in jobs.iter().zip(&results) {
        for (tq, row) in r.chunks_exact(dv).enumerate() {
            let t = ti * Q_TILE + tq;
            out[t * od + head * dv..][..dv].copy_from_slice(row);
        }
    }
}

/// Every key tile of every key/value head transposed (`[kvh][tile][d][tk]`, as ggml packs a
/// tile for its score products), once per call: every query head of the group and every query
/// tile reads the same packed tiles (positions past the cache are zero and never scored).
fn transposed_key_tiles(s: &Shape, k: &[f32], n_kv: usize) -> Vec<f32> {
    let dk = s.dk;
    let n_kt = n_kv.div_ceil(KV_TILE);
    let tile_len = dk * KV_TILE;
    let mut kts = vec![0f32; s.n_head_kv * n_kt * tile_len];
    kts.par_chunks_mut(tile_len)
        .enumerate()
        .for_each(|(i, kt)| {
            let (kvh, ic) = (i / n_kt, i % n_kt * KV_TILE);
            for tk in 0..KV_TILE.min(n_kv - ic) {
                let kr = &k[(ic + tk) * s.k_stride + kvh * dk..][..dk];
                for (d, &x) in kr.iter().enumerate() {
                    kt[d * KV_TILE + tk] = x;
                }
            }
        });
    kts
}

/// `acc[i] = fma(p[tk], v_tk[i], acc[i])` over the tile's keys `tk` in order (keys whose
/// probability is 0 leave `acc` as it is), the `D` accumulators held in registers across the
/// keys instead of stored and reloaded for each key.
#[inline(always)]
fn accumulate_values<const D: usize>(
    acc: &mut [f32],
    kq: &[f32],
    value_rows: impl Fn(usize) -> usize,
    v: &[f32],
) {
    let mut a: [f32; D] = acc[..D].try_into().expect("D accumulators");
    for (tk, &p) in kq.iter().enumerate() {
        if p == 0.0 {
            continue; // fma(0, v, acc) == acc
        }
        let vr: &[f32; D] = v[value_rows(tk)..][..D].try_into().expect("D values");
        for i in 0..D {
            a[i] = p.mul_add(vr[i], a[i]);
        }
    }
    acc[..D].copy_from_slice(&a);
}

/// One (token, head) output row of the one-chunk path.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn one_chunk_row_impl(
    s: &Shape,
    flavor: Flavor,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p0: usize,
    r: usize,
    o: &mut [f32],
) {
    let (dk, dv) = (s.dk, s.dv);
    let group = s.n_head / s.n_head_kv;
    let (t, head) = (r / s.n_head, r % s.n_head);
    let kvh = head / group;
    let pos = p0 + t;
    let qh: Vec<f32> = q[t * s.n_head * dk + head * dk..][..dk]
        .iter()
        .map(|&x| h(x))
        .collect();
    let mut acc = vec![0f32; dv];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for j in s.lo(pos)..=pos {
        let kr = &k[j * s.k_stride + kvh * dk..][..dk];
        // s*scale + mask (0 here), contracted by the compiler
        let sc = dot_f16(flavor, kr, &qh).mul_add(s.scale, 0.0);
        let (mut ms, mut vs) = (1f32, 1f32);
        if sc > m {
            let old = m;
            m = sc;
            ms = (old - m).exp();
            scale_round_f16(&mut acc, ms);
        } else {
            vs = (sc - m).exp();
        }
        let vr = &v[j * s.v_stride + kvh * dv..][..dv];
        fma_round_f16(&mut acc, vr, vs);
        // not contracted in ggml (measured: a fused form is 1 ulp off after a few hundred keys)
        sum = sum * ms + vs;
    }
    if let Some(sinks) = s.sinks {
        add_sink(sinks[head], m, &mut sum, &mut acc);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, a) in o.iter_mut().zip(&acc) {
        *o = a * inv;
    }
}

fma_variant!(
    one_chunk_row,
    one_chunk_row_impl,
    (s: &Shape, flavor: Flavor, q: &[f32], k: &[f32], v: &[f32], p0: usize, r: usize, o: &mut [f32]) -> ()
);

/// One (head, query tile) job of the tiled path: the tile's output rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tiled_job_impl(
    s: &Shape,
    flavor: Flavor,
    q: &[f32],
    kts: &[f32],
    v: &[f32],
    p0: usize,
    n_tok: usize,
    head: usize,
    ti: usize,
) -> Vec<f32> {
    let (dk, dv) = (s.dk, s.dv);
    let group = s.n_head / s.n_head_kv;
    let n_kv = p0 + n_tok;
    let kvh = head / group;
    let t0 = ti * Q_TILE;
    let rows = Q_TILE.min(n_tok - t0);
    let mut vkq = vec![0f32; rows * dv];
    let mut ssum = [0f32; Q_TILE];
    let mut mmax = [f32::NEG_INFINITY; Q_TILE];
    let mut kq = vec![0f32; KV_TILE];
    let mut chains = vec![0f32; KV_TILE];
    let n_kt = n_kv.div_ceil(KV_TILE);
    let tile_len = dk * KV_TILE;
    for ic in (0..n_kv).step_by(KV_TILE) {
        let kv_tile = KV_TILE.min(n_kv - ic);
        // the key tile transposed (kt[d][tk]): every score is the same chain over d, and 64
        // chains advance together in vector registers
        let kt = &kts[(kvh * n_kt + ic / KV_TILE) * tile_len..][..tile_len];
        for tq in 0..rows {
            let pos = p0 + t0 + tq;
            let (lo, hi) = (s.lo(pos), pos);
            if hi < ic || lo >= ic + kv_tile {
                continue; // nothing visible in this tile for this row
            }
            let qr = &q[(t0 + tq) * s.n_head * dk + head * dk..][..dk];
            chains.fill(0.0);
            for (d, &x) in qr.iter().enumerate() {
                let row = &kt[d * KV_TILE..(d + 1) * KV_TILE];
                for (c, &y) in chains.iter_mut().zip(row) {
                    *c = x.mul_add(y, *c);
                }
            }
            kq.fill(f32::NEG_INFINITY);
            let mut tile_max = f32::NEG_INFINITY;
            for (tk, slot) in kq.iter_mut().enumerate().take(kv_tile) {
                let j = ic + tk;
                if j < lo || j > hi {
                    continue;
                }
                let sc = chains[tk] * s.scale;
                *slot = sc;
                tile_max = tile_max.max(sc);
            }
            if tile_max == f32::NEG_INFINITY {
                continue;
            }
            let mold = mmax[tq];
            let mnew = mold.max(tile_max);
            let acc = &mut vkq[tq * dv..(tq + 1) * dv];
            if mnew > mold {
                let ms = (mold - mnew).exp();
                acc.iter_mut().for_each(|a| *a *= ms);
                ssum[tq] *= ms;
            }
            mmax[tq] = mnew;
            let sm = soft_max(flavor, &mut kq, mnew);
            ssum[tq] = (ssum[tq] as f64 + sm) as f32;
            let value_row = |tk: usize| (ic + tk) * s.v_stride + kvh * dv;
            let kq = &kq[..kv_tile];
            match dv {
                64 => accumulate_values::<64>(acc, kq, value_row, v),
                128 => accumulate_values::<128>(acc, kq, value_row, v),
                _ => {
                    for (tk, &p) in kq.iter().enumerate() {
                        if p == 0.0 {
                            continue; // fma(0, v, acc) == acc
                        }
                        let vr = &v[value_row(tk)..][..dv];
                        for (a, &x) in acc.iter_mut().zip(vr) {
                            *a = p.mul_add(x, *a);
                        }
                    }
                }
            }
        }
    }
    if let Some(sinks) = s.sinks {
        for tq in 0..rows {
            let acc = &mut vkq[tq * dv..(tq + 1) * dv];
            add_sink(sinks[head], mmax[tq], &mut ssum[tq], acc);
        }
    }
    for tq in 0..rows {
        let inv = if ssum[tq] == 0.0 { 0.0 } else { 1.0 / ssum[tq] };
        vkq[tq * dv..(tq + 1) * dv]
            .iter_mut()
            .for_each(|a| *a *= inv);
    }
    vkq
}

fma_variant!(
    tiled_job,
    tiled_job_impl,
    (s: &Shape, flavor: Flavor, q: &[f32], kts: &[f32], v: &[f32], p0: usize, n_tok: usize, head: usize, ti: usize) -> Vec<f32>
);
