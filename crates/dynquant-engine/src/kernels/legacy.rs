//! Q4_0, Q5_0, Q8_0 (times Q8_0 activations) and Q4_1 (times Q8_1) as ggml-cpu's x86 kernels
//! (`ggml_vec_dot_q*_q8_*`, and llamafile's tinyBLAS for batches, which accumulates the same way)
//! compute them: per block an exact integer dot product in eight 4-element lanes,
//! `acc[l] = fma(d_w * d_a, lane[l], acc[l])` over the blocks, for Q4_1 the minimum term
//! `m_w * s_a` summed separately, and `hsum_float_8(acc) (+ summs)`. Bit-identical results keep
//! llama.cpp's later 8-bit roundings from flipping.

use dynquant_gguf::GgmlType;
use half::f16;

use super::layout::{q4_0, q4_1, q5_0, q8_0, QK};
use crate::reduce::hsum_float_8;
use crate::weight::Weight;

/// The weight types of this kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegacyType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
}

impl LegacyType {
    /// The family member of a weight type, `None` for types of other families.
    pub(crate) fn of(ty: GgmlType) -> Option<LegacyType> {
        match ty {
            GgmlType::Q4_0 => Some(LegacyType::Q4_0),
            GgmlType::Q4_1 => Some(LegacyType::Q4_1),
            GgmlType::Q5_0 => Some(LegacyType::Q5_0),
            GgmlType::Q8_0 => Some(LegacyType::Q8_0),
            _ => None,
        }
    }

    fn ggml(self) -> GgmlType {
        match self {
            LegacyType::Q4_0 => GgmlType::Q4_0,
            LegacyType::Q4_1 => GgmlType::Q4_1,
            LegacyType::Q5_0 => GgmlType::Q5_0,
            LegacyType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// One block of Q8_0 (Q8_1) activations: scale, `d * sum(q)` rounded to f16, values.
pub(crate) struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub q: [i8; QK],
}

fma_variant!(quantize, quantize_impl, (x: &[f32]) -> Vec<ActBlock>);

/// Q8_0 activations of one row (for the other kernels whose `vec_dot_type` is Q8_0).
pub(crate) fn quantize_q8_0(x: &[f32]) -> Vec<ActBlock> {
    quantize(x)
}

#[inline(always)]
fn quantize_impl(x: &[f32]) -> Vec<ActBlock> {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd512() {
        // SAFETY: `cpu::simd512` detected AVX-512F at runtime.
        return unsafe { quantize_avx512(x) };
    }
    x.chunks_exact(QK)
        .map(|xb| {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut q = [0i8; QK];
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

/// [`quantize_impl`]'s blocks with AVX-512F: the same maximum (`vmaxps` with the running
/// maximum second skips NaNs as `f32::max` does), the same `v * id` products, rounded to the
/// nearest integer, ties to even, by `vcvtps2dq` under the default rounding mode as
/// [`crate::dot::nearest_int`] rounds them (|v * id| <= 127), and the same exact integer sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn quantize_avx512(x: &[f32]) -> Vec<ActBlock> {
    use std::arch::x86_64::*;
    x.chunks_exact(QK)
        .map(|xb| {
            // SAFETY: a block's 32 values; unaligned loads.
            let v0 = _mm512_loadu_ps(xb.as_ptr());
            let v1 = _mm512_loadu_ps(xb.as_ptr().add(16));
            let m = _mm512_max_ps(
                _mm512_abs_ps(v1),
                _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps()),
            );
            let amax = _mm512_reduce_max_ps(m);
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let vid = _mm512_set1_ps(id);
            let i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
            let i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
            let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
            let mut q = [0i8; QK];
            _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(i0));
            _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(i1));
            ActBlock {
                d: f16::from_f32(d).to_f32(),
                s: f16::from_f32(d * sum as f32).to_f32(),
                q,
            }
        })
        .collect()
}

/// One weight block in integer form.
struct WeightBlock {
    d: f32,
    /// Block minimum (Q4_1), 0 otherwise.
    m: f32,
    q: [i8; QK],
}

/// A block's 16 bytes of nibbles (minus 8 with `minus_eight`): low nibbles are elements 0..16, high
/// ones 16..32. Eight bytes at a time in a u64; `n - 8` as an i8 is `n ^ 8` with the top four
/// bits set where bit 3 of `n` is clear.
#[inline(always)]
fn nibbles(src: &[u8], q: &mut [i8; QK], minus_eight: bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let minus = |n: u64| {
        if minus_eight {
            (n ^ (8 * ONES)) | ((((n >> 3) & ONES) ^ ONES) * 0xf0)
        } else {
            n
        }
    };
    for i in 0..2 {
        let v = u64::from_le_bytes(src[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        let low = minus(v & (15 * ONES)).to_le_bytes();
        let high = minus((v >> 4) & (15 * ONES)).to_le_bytes();
        for j in 0..8 {
            q[8 * i + j] = low[j] as i8;
            q[QK / 2 + 8 * i + j] = high[j] as i8;
        }
    }
}

/// Integer values of one row's blocks (field offsets in [`super::layout`]).
fn decode(ty: LegacyType, row: &[u8]) -> Vec<WeightBlock> {
    let h = |b: &[u8], o: usize| f16::from_le_bytes([b[o], b[o + 1]]).to_f32();
    let bs = ty.ggml().type_size() as usize;
    row.chunks_exact(bs)
        .map(|b| {
            let mut q = [0i8; QK];
            let mut m = 0.0;
            let half = QK / 2;
            let d = match ty {
                LegacyType::Q8_0 => {
                    for (o, &v) in q.iter_mut().zip(&b[q8_0::QS..q8_0::QS + QK]) {
                        *o = v as i8;
                    }
                    h(b, q8_0::D)
                }
                LegacyType::Q4_0 => {
                    nibbles(&b[q4_0::QS..q4_0::QS + half], &mut q, true);
                    h(b, q4_0::D)
                }
                LegacyType::Q4_1 => {
                    m = h(b, q4_1::M);
                    nibbles(&b[q4_1::QS..q4_1::QS + half], &mut q, false);
                    h(b, q4_1::D)
                }
                LegacyType::Q5_0 => {
                    // the fifth bit of element j is bit j of qh
                    let qh =
                        u32::from_le_bytes(b[q5_0::QH..q5_0::QH + 4].try_into().expect("4 bytes"));
                    for j in 0..half {
                        let h0 = (((qh >> j) << 4) & 0x10) as u8;
                        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                        q[j] = ((b[q5_0::QS + j] & 0x0F) | h0) as i8 - 16;
                        q[j + half] = ((b[q5_0::QS + j] >> 4) | h1) as i8 - 16;
                    }
                    h(b, q5_0::D)
                }
            };
            WeightBlock { d, m, q }
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
        let mut p = [0i16; QK];
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
    hsum_float_8(&acc) + summs
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
    hsum_float_8(&l) + summs
}

/// Rows and tokens of one call of [`dot_rows4_tok8_vnni`].
const VNNI_ROWS: usize = 4;
const VNNI_TOKENS: usize = 8;

/// Whether the 512-bit VNNI form may run: AVX-512F ([`crate::cpu::simd512`]) and VNNI
/// ([`crate::cpu::vnni256`]). It keeps every lane's integers and float steps, so it changes
/// speed, never results.
#[cfg(target_arch = "x86_64")]
fn vnni512() -> bool {
    crate::cpu::simd512() && crate::cpu::vnni256()
}

/// [`dot_avx2`] for 4 rows times 8 tokens at once, leaving each output's eight lanes in
/// `lanes[row][token]` (the caller sums them as [`dot`] does). Two tokens share a 512-bit
/// register (low half the even token); each weight block is loaded once for the 8 tokens and
/// each activation block once for the 4 rows, and the 16 accumulators hide the latency that a
/// single output's chain of `fma`s has. The lane sums are `vpdpbusd` of the activations offset
/// to unsigned (`q + 128`, within [1, 255]) with the weights, started from `-128` times the
/// weights' 4-element sums: exactly the integers of [`dot`]. Per output the float steps are
/// [`dot`]'s, in its order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
unsafe fn dot_rows4_tok8_vnni(
    w: [&[WeightBlock]; VNNI_ROWS],
    a: [&[ActBlock]; VNNI_TOKENS],
    lanes: &mut [[[f32; 8]; VNNI_TOKENS]; VNNI_ROWS],
) {
    use std::arch::x86_64::*;
    const PAIRS: usize = VNNI_TOKENS / 2;
    let zero = _mm512_setzero_si512();
    let offset = _mm512_set1_epi8(-128); // 0x80: +128 as an unsigned byte
    let mut acc = [[_mm512_setzero_ps(); PAIRS]; VNNI_ROWS];
    for b in 0..w[0].len() {
        let mut wq = [zero; VNNI_ROWS];
        let mut start = [zero; VNNI_ROWS];
        for r in 0..VNNI_ROWS {
            // SAFETY: a block's 32 values; unaligned load.
            let q = _mm256_loadu_si256(w[r][b].q.as_ptr().cast());
            wq[r] = _mm512_inserti64x4(_mm512_castsi256_si512(q), q, 1);
            start[r] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, wq[r]));
        }
        for p in 0..PAIRS {
            let (a0, a1) = (&a[2 * p][b], &a[2 * p + 1][b]);
            // SAFETY: as above.
            let lo = _mm256_loadu_si256(a0.q.as_ptr().cast());
            let hi = _mm256_loadu_si256(a1.q.as_ptr().cast());
            let au = _mm512_xor_si512(
                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                offset,
            );
            let da = _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(a0.d))),
                _mm256_castps_pd(_mm256_set1_ps(a1.d)),
                1,
            ));
            for r in 0..VNNI_ROWS {
                let lane = _mm512_dpbusd_epi32(start[r], au, wq[r]);
                // d_w * d_a, rounded to f32 as in [`dot`]
                let dd = _mm512_mul_ps(_mm512_set1_ps(w[r][b].d), da);
                acc[r][p] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(lane), acc[r][p]);
            }
        }
    }
    for r in 0..VNNI_ROWS {
        for p in 0..PAIRS {
            let mut v = [0f32; 16];
            _mm512_storeu_ps(v.as_mut_ptr(), acc[r][p]);
            lanes[r][2 * p].copy_from_slice(&v[..8]);
            lanes[r][2 * p + 1].copy_from_slice(&v[8..]);
        }
    }
}

/// The 512-bit VNNI tile: 4-row x 8-token groups through [`dot_rows4_tok8_vnni`] (tokens outer,
/// so 8 tokens' activations stay in cache for all the tile's rows), the rest through
/// [`dot_avx2`]. Q4_1's minimum term is summed per output as in [`dot`]; for the other types it
/// is `+0`.
#[cfg(target_arch = "x86_64")]
fn tile_vnni(
    ty: LegacyType,
    rows: &[Vec<WeightBlock>],
    acts: &[Vec<ActBlock>],
    n_tok: usize,
    out: &mut [f32],
) {
    let full_rows = rows.len() / VNNI_ROWS * VNNI_ROWS;
    let full_tok = n_tok / VNNI_TOKENS * VNNI_TOKENS;
    let mut lanes = [[[0f32; 8]; VNNI_TOKENS]; VNNI_ROWS];
    for t0 in (0..full_tok).step_by(VNNI_TOKENS) {
        let a: [&[ActBlock]; VNNI_TOKENS] = std::array::from_fn(|t| acts[t0 + t].as_slice());
        for r0 in (0..full_rows).step_by(VNNI_ROWS) {
            let w: [&[WeightBlock]; VNNI_ROWS] = std::array::from_fn(|r| rows[r0 + r].as_slice());
            // SAFETY: the caller checked `vnni512`.
            unsafe { dot_rows4_tok8_vnni(w, a, &mut lanes) };
            for (r, (wr, lr)) in w.iter().zip(&lanes).enumerate() {
                for (t, (at, l)) in a.iter().zip(lr).enumerate() {
                    let mut summs = 0f32;
                    if ty == LegacyType::Q4_1 {
                        for (wb, ab) in wr.iter().zip(*at) {
                            summs += wb.m * ab.s;
                        }
                    }
                    out[(r0 + r) * n_tok + t0 + t] = hsum_float_8(l) + summs;
                }
            }
        }
    }
    for (t, a) in acts.iter().enumerate() {
        for (i, wb) in rows.iter().enumerate() {
            if t < full_tok && i < full_rows {
                continue;
            }
            // SAFETY: `vnni512` implies AVX2 and FMA.
            out[i * n_tok + t] = unsafe { dot_avx2(wb, a) };
        }
    }
}

fn tile(
    ty: LegacyType,
    rows: &[Vec<WeightBlock>],
    acts: &[Vec<ActBlock>],
    n_tok: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if vnni512() {
        tile_vnni(ty, rows, acts, n_tok, out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        for (t, a) in acts.iter().enumerate() {
            for (i, wb) in rows.iter().enumerate() {
                // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                out[i * n_tok + t] = unsafe { dot_avx2(wb, a) };
            }
        }
        return;
    }
    for (t, a) in acts.iter().enumerate() {
        for (i, wb) in rows.iter().enumerate() {
            out[i * n_tok + t] = dot(wb, a);
        }
    }
}

/// Products of a weight of this family with `n_tok` rows of activations (tokens x rows).
pub(crate) fn matmul(ty: LegacyType, w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize,
        |r| decode(ty, r),
        |rows, acts, n, out| tile(ty, rows, acts, n, out),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digest of the portable form's results below, computed when the kernel was verified
    /// bit-exact against ggml (tests/ggml_ops.rs): the portable form is checked on every
    /// machine, the AVX2 form against it where the CPU has AVX2 and FMA.
    const PORTABLE_DIGEST: u64 = 0x072d_d012_18c5_0078;

    /// The AVX-512 activation quantization against the portable one, on values with exact
    /// rounding ties (`k / 2` after scaling), zeros and all-zero blocks.
    #[test]
    fn avx512_quantize_matches_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::cpu::simd512() {
                eprintln!("skipped: this CPU or flavour has no AVX-512F");
                return;
            }
            let mut x: Vec<f32> = (0..QK * 40)
                .map(|i| ((i * 7919) % 509) as f32 * 0.37 - 94.0)
                .collect();
            // block 1: ties (amax 127 makes id 1, values k + 0.5)
            for (j, v) in x[QK..2 * QK].iter_mut().enumerate() {
                *v = j as f32 - 15.5;
            }
            x[QK] = 127.0;
            x[2 * QK..3 * QK].fill(0.0);
            x[3 * QK + 5] = -0.0;
            let portable: Vec<ActBlock> = x
                .chunks_exact(QK)
                .map(|xb| {
                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    let q: [i8; QK] =
                        std::array::from_fn(|k| crate::dot::nearest_int(xb[k] * id) as i8);
                    let sum: i32 = q.iter().map(|&v| v as i32).sum();
                    ActBlock {
                        d: f16::from_f32(d).to_f32(),
                        s: f16::from_f32(d * sum as f32).to_f32(),
                        q,
                    }
                })
                .collect();
            // SAFETY: AVX-512F detected above.
            let fast = unsafe { quantize_avx512(&x) };
            for (i, (p, f)) in portable.iter().zip(&fast).enumerate() {
                assert_eq!(
                    (p.d.to_bits(), p.s.to_bits(), p.q),
                    (f.d.to_bits(), f.s.to_bits(), f.q),
                    "block {i}"
                );
            }
        }
    }

    #[test]
    fn avx2_and_portable_forms_give_the_same_bits() {
        let avx2 = crate::cpu::avx2_fma_hardware();
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut portable = Vec::new();
        for ty in [
            LegacyType::Q4_0,
            LegacyType::Q4_1,
            LegacyType::Q5_0,
            LegacyType::Q8_0,
        ] {
            for nb in [1usize, 3, 18] {
                let bs = ty.ggml().type_size() as usize;
                let mut row: Vec<u8> = (0..bs * nb).map(|_| next() as u8).collect();
                for b in row.chunks_exact_mut(bs) {
                    b[..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
                    if ty == LegacyType::Q4_1 {
                        b[q4_1::M..q4_1::M + 2]
                            .copy_from_slice(&f16::from_f32(-0.05).to_le_bytes());
                    }
                }
                let x: Vec<f32> = (0..QK * nb)
                    .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
                    .collect();
                let (w, a) = (decode(ty, &row), quantize(&x));
                let p = dot(&w, &a);
                portable.push(p);
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: AVX2 and FMA detected above.
                    let v = unsafe { dot_avx2(&w, &a) };
                    assert_eq!(p.to_bits(), v.to_bits(), "{ty:?} {nb} blocks");
                }
            }
        }
        if !avx2 {
            eprintln!(
                "skipped: AVX2 form of the Q4_0/Q4_1/Q5_0/Q8_0 dot not compared (this CPU lacks \
                 AVX2+FMA); the portable form is checked against its stored digest"
            );
        }
        assert_eq!(super::super::bits_digest(&portable), PORTABLE_DIGEST);
    }
}
