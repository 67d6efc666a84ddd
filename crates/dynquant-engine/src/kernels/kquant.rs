//! K-quant weights times Q8_K activations as ggml-cpu's x86 kernels compute them: an exact
//! integer dot product per super-block, split into eight 32-bit lanes the way the AVX2 code
//! splits it (lane `l` holds elements `4l..4l+3` of every 32-element group), then
//! `acc[l] = fma(d_w * d_a, lane[l], acc[l])` over the super-blocks and `hsum_float_8`.
//! Bit-identical results keep llama.cpp's later 8-bit roundings from flipping.

use dynquant_gguf::GgmlType;
use half::f16;

use super::layout::{q4k, q6k, QK_K};
use crate::reduce::hsum_float_8;
use crate::weight::Weight;

/// Q8_K activations of one row: per 256 values an f32 scale and i8 values.
pub(crate) struct Q8K {
    pub d: f32,
    pub q: [i8; QK_K],
    /// Sums of the 16 values of each 16-element group (Q8_K's `bsums`).
    pub bsums: [i32; 16],
}

/// `quantize_row_q8_K` (the reference form ggml's x86 build uses): the value of largest
/// magnitude keeps its sign, `iscale = -127/max`, `q = min(127, nearest_int(iscale * x))`,
/// `d = 1/iscale`.
#[inline(always)]
pub(crate) fn quantize_q8k_impl(x: &[f32]) -> Vec<Q8K> {
    x.chunks_exact(QK_K)
        .map(|xb| {
            let mut q = [0i8; QK_K];
            let Some(iscale) = crate::dot::q8k_iscale(xb) else {
                return Q8K {
                    d: 0.0,
                    q,
                    bsums: [0; 16],
                };
            };
            for (o, &v) in q.iter_mut().zip(xb) {
                *o = crate::dot::nearest_int(iscale * v).min(127) as i8;
            }
            let bsums =
                std::array::from_fn(|g| q[16 * g..16 * g + 16].iter().map(|&v| v as i32).sum());
            Q8K {
                d: 1.0 / iscale,
                q,
                bsums,
            }
        })
        .collect()
}

fma_variant!(quantize_q8k, quantize_q8k_impl, (x: &[f32]) -> Vec<Q8K>);

/// One Q6_K super-block in integer form.
pub(crate) struct Q6Block {
    d: f32,
    sc: [i8; 16],
    /// Unsigned 6-bit values (0..64), in element order.
    q: [u8; QK_K],
}

/// Integer values of a Q6_K row (block layout in [`q6k`]).
pub(crate) fn decode_q6k(row: &[u8]) -> Vec<Q6Block> {
    row.chunks_exact(GgmlType::Q6_K.type_size() as usize)
        .map(|b| {
            let mut q = [0u8; QK_K];
            for c in 0..2 {
                let ql = &b[q6k::QL + 64 * c..][..64];
                let qh = &b[q6k::QH + 32 * c..][..32];
                for e in 0..128 {
                    let (k, l) = (e / 32, e % 32);
                    let low = (ql[32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0f;
                    let high = (qh[l] >> (2 * k)) & 3;
                    q[128 * c + e] = low | (high << 4);
                }
            }
            let mut sc = [0i8; 16];
            for (o, &v) in sc.iter_mut().zip(&b[q6k::SCALES..q6k::D]) {
                *o = v as i8;
            }
            Q6Block {
                d: f16::from_le_bytes([b[q6k::D], b[q6k::D + 1]]).to_f32(),
                sc,
                q,
            }
        })
        .collect()
}

/// `ggml_vec_dot_q6_K_q8_K` as the x86 build computes it: lane `l` takes the unsigned 6-bit
/// values times the activations of elements `4l..4l+3` of every 32-element group, minus 32
/// times the scaled activation sums of group `l` (the offset goes through Q8_K's 16-element
/// sums, so it lands in a different lane than the products it corrects).
#[inline(always)]
pub(crate) fn dot_q6k(w: &[Q6Block], a: &[Q8K]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, ab) in w.iter().zip(a) {
        let mut lanes = [0i32; 8];
        for (s, (wq, aq)) in wb.q.chunks_exact(16).zip(ab.q.chunks_exact(16)).enumerate() {
            let sc = wb.sc[s] as i32;
            let l0 = (s % 2) * 4;
            for g in 0..4 {
                let mut p = 0i32;
                for e in 4 * g..4 * g + 4 {
                    p += wq[e] as i32 * aq[e] as i32;
                }
                lanes[l0 + g] += sc * p;
            }
            lanes[s / 2] -= 32 * sc * ab.bsums[s];
        }
        let d = ab.d * wb.d;
        for (acc, &l) in acc.iter_mut().zip(&lanes) {
            *acc = d.mul_add(l as f32, *acc);
        }
    }
    hsum_float_8(&acc)
}

/// Products of a Q6_K weight with `n_tok` rows of activations (tokens x rows result).
pub(crate) fn matmul_q6k(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_q8k,
        decode_q6k,
        |rows, acts, n_tok, out| {
            for (t, a) in acts.iter().enumerate() {
                for (i, wb) in rows.iter().enumerate() {
                    out[i * n_tok + t] = dot_q6k_best(wb, a);
                }
            }
        },
    )
}

/// One Q4_K super-block in integer form.
pub(crate) struct Q4Block {
    d: f32,
    dmin: f32,
    sc: [u8; 8],
    m: [u8; 8],
    /// 4-bit values in element order.
    q: [u8; QK_K],
}

/// Integer values of a Q4_K row (block layout in [`q4k`]; 6-bit scales and mins packed as
/// `get_scale_min_k4`).
pub(crate) fn decode_q4k(row: &[u8]) -> Vec<Q4Block> {
    row.chunks_exact(GgmlType::Q4_K.type_size() as usize)
        .map(|b| {
            let s = &b[q4k::SCALES..q4k::QS];
            let mut sc = [0u8; 8];
            let mut m = [0u8; 8];
            for j in 0..8 {
                if j < 4 {
                    sc[j] = s[j] & 63;
                    m[j] = s[j + 4] & 63;
                } else {
                    sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
                    m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
                }
            }
            let mut q = [0u8; QK_K];
            for c in 0..4 {
                for l in 0..32 {
                    let v = b[q4k::QS + 32 * c + l];
                    q[64 * c + l] = v & 0x0f;
                    q[64 * c + 32 + l] = v >> 4;
                }
            }
            Q4Block {
                d: f16::from_le_bytes([b[q4k::D], b[q4k::D + 1]]).to_f32(),
                dmin: f16::from_le_bytes([b[q4k::DMIN], b[q4k::DMIN + 1]]).to_f32(),
                sc,
                m,
                q,
            }
        })
        .collect()
}

/// Q4_K times Q8_K as ggml's repacked x86 kernels (`gemv/gemm_q4_K_8x8_q8_K`, the
/// CPU_REPACK buffer llama.cpp puts Q4_K weights in) compute it: SIMD lanes are output rows,
/// so every output is one chain of `acc = fma(sum, d_w * d_a, acc)` and
/// `accm = fma(min_sum, dmin_w * d_a, accm)` over exact integer sums, then `acc - accm`.
/// The gemv (single tokens) takes whole super-blocks (`group` 256); the gemm (groups of four
/// tokens) takes pairs of sub-blocks (`group` 64).
#[inline(always)]
pub(crate) fn dot_q4k(w: &[Q4Block], a: &[Q8K], group: usize) -> f32 {
    let mut acc = 0f32;
    let mut accm = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let dd = wb.d * ab.d;
        let dm = wb.dmin * ab.d;
        let per = group / 32;
        for c in 0..8 / per {
            let mut isum = 0i32;
            let mut imin = 0i32;
            for j in c * per..(c + 1) * per {
                let mut p = 0i32;
                for e in 32 * j..32 * j + 32 {
                    p += wb.q[e] as i32 * ab.q[e] as i32;
                }
                isum += wb.sc[j] as i32 * p;
                imin += wb.m[j] as i32 * (ab.bsums[2 * j] + ab.bsums[2 * j + 1]);
            }
            acc = (isum as f32).mul_add(dd, acc);
            accm = (imin as f32).mul_add(dm, accm);
        }
    }
    acc - accm
}

/// Products of a Q4_K weight with `n_tok` rows of activations (tokens x rows result).
pub(crate) fn matmul_q4k(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_q8k,
        decode_q4k,
        |rows, acts, n_tok, out| {
            for (t, a) in acts.iter().enumerate() {
                // ggml's repacked mul_mat: gemm for whole groups of 4 tokens, gemv after
                let group = if t < n_tok / 4 * 4 { 64 } else { QK_K };
                for (i, wb) in rows.iter().enumerate() {
                    out[i * n_tok + t] = dot_q4k_best(wb, a, group);
                }
            }
        },
    )
}

/// AVX2 forms of the dot products above: the integer sums are computed with `maddubs`/`madd`
/// (exact, so their order is free) and every float step is the scalar form's.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Q4Block, Q6Block, Q8K};

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }

    /// Sum of the eight i32 lanes.
    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_q4k(w: &[Q4Block], a: &[Q8K], group: usize) -> f32 {
        let mut acc = 0f32;
        let mut accm = 0f32;
        let per = group / 32;
        for (wb, ab) in w.iter().zip(a) {
            let dd = wb.d * ab.d;
            let dm = wb.dmin * ab.d;
            for c in 0..8 / per {
                let mut iv = _mm256_setzero_si256();
                let mut imin = 0i32;
                for j in c * per..(c + 1) * per {
                    let x = load(wb.q.as_ptr().add(32 * j));
                    let y = load(ab.q.as_ptr().add(32 * j).cast());
                    let p16 = _mm256_maddubs_epi16(x, y);
                    iv = _mm256_add_epi32(
                        iv,
                        _mm256_madd_epi16(p16, _mm256_set1_epi16(wb.sc[j] as i16)),
                    );
                    imin += wb.m[j] as i32 * (ab.bsums[2 * j] + ab.bsums[2 * j + 1]);
                }
                let isum = hsum_i32(iv);
                acc = (isum as f32).mul_add(dd, acc);
                accm = (imin as f32).mul_add(dm, accm);
            }
        }
        acc - accm
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_q6k(w: &[Q6Block], a: &[Q8K]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (wb, ab) in w.iter().zip(a) {
            let mut lanes = _mm256_setzero_si256();
            let mut off = [0i32; 8];
            for (g, off_g) in off.iter_mut().enumerate() {
                let x = load(wb.q.as_ptr().add(32 * g));
                let y = load(ab.q.as_ptr().add(32 * g).cast());
                let p16 = _mm256_maddubs_epi16(x, y);
                let (s0, s1) = (wb.sc[2 * g] as i16, wb.sc[2 * g + 1] as i16);
                let scale = _mm256_setr_epi16(
                    s0, s0, s0, s0, s0, s0, s0, s0, s1, s1, s1, s1, s1, s1, s1, s1,
                );
                lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(p16, scale));
                *off_g = 32 * (s0 as i32 * ab.bsums[2 * g] + s1 as i32 * ab.bsums[2 * g + 1]);
            }
            lanes = _mm256_sub_epi32(lanes, _mm256_loadu_si256(off.as_ptr().cast()));
            let d = _mm256_set1_ps(ab.d * wb.d);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc);
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), acc);
        super::hsum_float_8(&l)
    }
}

/// [`dot_q4k`] with the fastest instructions this CPU has (same bits).
#[inline(always)]
fn dot_q4k_best(w: &[Q4Block], a: &[Q8K], group: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
        return unsafe { avx2::dot_q4k(w, a, group) };
    }
    dot_q4k(w, a, group)
}

/// [`dot_q6k`] with the fastest instructions this CPU has (same bits).
#[inline(always)]
fn dot_q6k_best(w: &[Q6Block], a: &[Q8K]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
        return unsafe { avx2::dot_q6k(w, a) };
    }
    dot_q6k(w, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    fn acts(n: usize, seed: u64) -> Vec<f32> {
        bytes(n, seed)
            .iter()
            .map(|&b| (b as f32 - 127.5) / 31.0)
            .collect()
    }

    /// Blocks with finite f16 scales (random bytes elsewhere).
    fn blocks(size: usize, n: usize, scale_at: &[usize], seed: u64) -> Vec<u8> {
        let mut b = bytes(size * n, seed);
        for blk in b.chunks_exact_mut(size) {
            for &at in scale_at {
                let v = f16::from_f32(0.001 + blk[at] as f32 * 1e-4).to_le_bytes();
                blk[at..at + 2].copy_from_slice(&v);
            }
        }
        b
    }

    /// Digest of the portable forms' results below, computed when the kernels were verified
    /// bit-exact against ggml (tests/ggml_ops.rs): the portable forms are checked on every
    /// machine, the AVX2 forms against them where the CPU has AVX2 and FMA.
    const PORTABLE_DIGEST: u64 = 0xe075_b587_65b2_21c8;

    #[test]
    fn avx2_and_portable_forms_give_the_same_bits() {
        let avx2 = crate::cpu::avx2_fma_hardware();
        let (q4, q6) = (GgmlType::Q4_K, GgmlType::Q6_K);
        let mut portable = Vec::new();
        for seed in 1..20u64 {
            let nb = 1 + seed as usize % 6;
            let a = quantize_q8k(&acts(QK_K * nb, seed * 7));
            let size = |ty: GgmlType| ty.type_size() as usize;
            let w4 = decode_q4k(&blocks(size(q4), nb, &[q4k::D, q4k::DMIN], seed));
            let w6 = decode_q6k(&blocks(size(q6), nb, &[q6k::D], seed + 100));
            for group in [64, QK_K] {
                let p = dot_q4k(&w4, &a, group);
                portable.push(p);
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: AVX2 and FMA detected above.
                    let v = unsafe { avx2::dot_q4k(&w4, &a, group) };
                    assert_eq!(p.to_bits(), v.to_bits(), "q4_K seed {seed} group {group}");
                }
            }
            let p = dot_q6k(&w6, &a);
            portable.push(p);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: as above.
                let v = unsafe { avx2::dot_q6k(&w6, &a) };
                assert_eq!(p.to_bits(), v.to_bits(), "q6_K seed {seed}");
            }
        }
        if !avx2 {
            eprintln!(
                "skipped: AVX2 forms of the Q4_K/Q6_K dots not compared (this CPU lacks \
                 AVX2+FMA); the portable forms are checked against their stored digest"
            );
        }
        assert_eq!(crate::kernels::bits_digest(&portable), PORTABLE_DIGEST);
    }
}
