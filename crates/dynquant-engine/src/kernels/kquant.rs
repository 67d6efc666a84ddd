//! K-quant weights times Q8_K activations as ggml-cpu's x86 kernels compute them: an exact
//! integer dot product per super-block, split into eight 32-bit lanes the way the AVX2 code
//! splits it (lane `l` holds elements `4l..4l+3` of every 32-element group), then
//! `acc[l] = fma(d_w * d_a, lane[l], acc[l])` over the super-blocks and `hsum_float_8`.
//! Bit-identical results keep llama.cpp's later 8-bit roundings from flipping.

use dynquant_gguf::GgmlType;
use half::f16;

use super::layout::{q2k, q3k, q4k, q5k, q6k, QK_K};
#[cfg(target_arch = "x86_64")]
use super::panel::{interleave_group, PANEL_ROWS};
use crate::reduce::hsum_float_8;
use crate::weight::Weight;

/// Q8_K activations of one row: per 256 values an f32 scale and i8 values.
#[derive(Clone)]
pub(crate) struct Q8K {
    pub d: f32,
    pub q: [i8; QK_K],
    /// Sums of the 16 values of each 16-element group (Q8_K's `bsums`).
    pub bsums: [i32; 16],
    /// The same sums as i16 (what ggml stores), for `madd`.
    pub bsums16: [i16; 16],
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
                    bsums16: [0; 16],
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
                bsums16: bsums.map(|v| v as i16),
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

/// The 32 bytes at `at` of a block.
#[inline(always)]
fn bytes32(b: &[u8], at: usize) -> &[u8; 32] {
    b[at..at + 32]
        .try_into()
        .expect("a block holds 32 bytes from `at`")
}

/// The 32-element group at element `at` of a super-block.
#[inline(always)]
fn group32<T>(q: &mut [T; QK_K], at: usize) -> &mut [T; 32] {
    (&mut q[at..at + 32])
        .try_into()
        .expect("a super-block holds 32 elements from `at`")
}

// The unpacking steps below work on eight bytes at a time in a u64 (SWAR): every field sits
// within its byte, so a shift of the whole word followed by a per-byte mask gives each byte's
// field, as the byte-wise form would (LLVM does not vectorize the byte-wise form for SSE2).

/// A one in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The eight bytes at `8i` of `src` as a little-endian word.
#[inline(always)]
fn word(src: &[u8; 32], i: usize) -> u64 {
    u64::from_le_bytes(src[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

/// Stores `v`'s bytes at `8i` of `out`.
#[inline(always)]
fn put(out: &mut [u8; 32], i: usize, v: u64) {
    out[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
}

/// The bytes of a group of i8 values.
#[inline(always)]
fn as_bytes(out: &mut [i8; 32]) -> &mut [u8; 32] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid for
    // both, so the array can be viewed as either.
    unsafe { &mut *(out as *mut [i8; 32]).cast::<[u8; 32]>() }
}

/// Bits `shift..shift + 2` of each byte (the 2-bit values of Q2_K).
#[inline(always)]
fn crumbs(src: &[u8; 32], shift: u32, out: &mut [i8; 32]) {
    let out = as_bytes(out);
    for i in 0..4 {
        put(out, i, (word(src, i) >> shift) & (3 * ONES));
    }
}

/// Q3_K's values: bits `shift..shift + 2` of `src`, minus 4 where bit `bit` of `hmask` is clear.
#[inline(always)]
fn crumbs_hmask(src: &[u8; 32], hmask: &[u8; 32], shift: u32, bit: u32, out: &mut [i8; 32]) {
    let out = as_bytes(out);
    for i in 0..4 {
        let low = (word(src, i) >> shift) & (3 * ONES);
        let clear = ((word(hmask, i) >> bit) & ONES) ^ ONES;
        // low | 0xfc is low - 4 as an i8; the product stays within each byte
        put(out, i, low | (clear * 0xfc));
    }
}

/// Low nibbles into `low`, high nibbles into `high` (Q4_K).
#[inline(always)]
fn nibbles(src: &[u8; 32], low: &mut [u8; 32], high: &mut [u8; 32]) {
    for i in 0..4 {
        let v = word(src, i);
        put(low, i, v & (15 * ONES));
        put(high, i, (v >> 4) & (15 * ONES));
    }
}

/// Q5_K's values: the nibble at `shift` of `src` plus bit `bit` of `qh` as the fifth bit.
#[inline(always)]
fn nibbles_qh(src: &[u8; 32], qh: &[u8; 32], shift: u32, bit: u32, out: &mut [i8; 32]) {
    let out = as_bytes(out);
    for i in 0..4 {
        let nib = (word(src, i) >> shift) & (15 * ONES);
        let high = (word(qh, i) >> bit) & ONES;
        put(out, i, nib | (high << 4));
    }
}

/// Q6_K's values: the nibble at `shift_low` of `ql` plus bits `shift_high..shift_high + 2` of
/// `qh` as the two high bits.
#[inline(always)]
fn six_bits(ql: &[u8; 32], qh: &[u8; 32], shift_low: u32, shift_high: u32, out: &mut [u8; 32]) {
    for i in 0..4 {
        let low = (word(ql, i) >> shift_low) & (15 * ONES);
        let high = (word(qh, i) >> shift_high) & (3 * ONES);
        put(out, i, low | (high << 4));
    }
}

/// Integer values of a Q6_K row (block layout in [`q6k`]).
pub(crate) fn decode_q6k(row: &[u8]) -> Vec<Q6Block> {
    row.chunks_exact(GgmlType::Q6_K.type_size() as usize)
        .map(|b| {
            let mut q = [0u8; QK_K];
            // half c, quarter k: element 128c + 32k + l
            for c in 0..2 {
                let qh = bytes32(b, q6k::QH + 32 * c);
                for k in 0..4 {
                    let ql = bytes32(b, q6k::QL + 64 * c + 32 * (k % 2));
                    let shifts = (4 * (k / 2) as u32, 2 * k as u32);
                    six_bits(
                        ql,
                        qh,
                        shifts.0,
                        shifts.1,
                        group32(&mut q, 128 * c + 32 * k),
                    );
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

/// One Q4_K super-block of sixteen rows for `vpdpbusd` against broadcast activations: in
/// `q[j]` (32-element group `j`), bytes `64k + 4r .. 64k + 4r + 4` hold row `r`'s elements
/// `4k .. 4k + 4` (unsigned 0..15, as `vpdpbusd` takes them), so dword lane `r` of eight
/// `vpdpbusd` is row `r`'s exact group sum with no horizontal reduction; `sc`, `m`, `d`, `dmin`
/// hold the rows' group scales and minima and super-block scales, lane `r` = row `r`.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct Q4kPanelBlock {
    q: [[u8; 8 * 64]; 8],
    sc: [[i32; PANEL_ROWS]; 8],
    m: [[i32; PANEL_ROWS]; 8],
    d: [f32; PANEL_ROWS],
    dmin: [f32; PANEL_ROWS],
}

/// Sixteen decoded Q4_K rows as [`Q4kPanelBlock`]s, one per super-block.
#[cfg(target_arch = "x86_64")]
fn q4k_panel16(rows: &[Vec<Q4Block>]) -> Vec<Q4kPanelBlock> {
    debug_assert_eq!(rows.len(), PANEL_ROWS);
    (0..rows[0].len())
        .map(|b| {
            let mut p = Q4kPanelBlock {
                q: [[0; 8 * 64]; 8],
                sc: [[0; PANEL_ROWS]; 8],
                m: [[0; PANEL_ROWS]; 8],
                d: [0.0; PANEL_ROWS],
                dmin: [0.0; PANEL_ROWS],
            };
            for (r, row) in rows.iter().enumerate() {
                let wb = &row[b];
                p.d[r] = wb.d;
                p.dmin[r] = wb.dmin;
                for j in 0..8 {
                    p.sc[j][r] = i32::from(wb.sc[j]);
                    p.m[j][r] = i32::from(wb.m[j]);
                    interleave_group(wb.q[32 * j..32 * j + 32].iter().copied(), r, &mut p.q[j]);
                }
            }
            p
        })
        .collect()
}

/// [`dot_q4k`] of sixteen rows (as [`Q4kPanelBlock`]s) and `T` tokens with AVX-512 VNNI, in
/// chunks of `PER` groups (`group / 32`): lane `r` of each token's integer vectors is row `r`'s
/// exact chunk sums, and of its float vectors row `r`'s chains `acc = fma(isum, d_w * d_a, acc)`
/// and `accm = fma(imin, dmin_w * d_a, accm)`, then `acc - accm`, in the same order as alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
unsafe fn dot_q4k_panel16_vnni<const T: usize, const PER: usize>(
    panel: &[Q4kPanelBlock],
    acts: [&[Q8K]; T],
    out: &mut [[f32; PANEL_ROWS]; T],
) {
    use super::panel::avx512::{group_sums, load_group};
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm512_setzero_ps(); T];
    for (b, pb) in panel.iter().enumerate() {
        let dw = _mm512_load_ps(pb.d.as_ptr());
        let dminw = _mm512_load_ps(pb.dmin.as_ptr());
        for c in 0..8 / PER {
            let mut isum = [_mm512_setzero_si512(); T];
            let mut imin = [_mm512_setzero_si512(); T];
            for j in c * PER..(c + 1) * PER {
                let wk = load_group(&pb.q[j]);
                let sc = _mm512_load_si512(pb.sc[j].as_ptr().cast());
                let m = _mm512_load_si512(pb.m[j].as_ptr().cast());
                for t in 0..T {
                    let ab = &acts[t][b];
                    let y = ab.q.as_ptr().add(32 * j).cast();
                    let sums = group_sums(&wk, y, _mm512_setzero_si512());
                    let group = _mm512_mullo_epi32(sums, sc);
                    isum[t] = _mm512_add_epi32(isum[t], group);
                    let bsum = _mm512_set1_epi32(ab.bsums[2 * j] + ab.bsums[2 * j + 1]);
                    imin[t] = _mm512_add_epi32(imin[t], _mm512_mullo_epi32(m, bsum));
                }
            }
            for t in 0..T {
                let da = _mm512_set1_ps(acts[t][b].d);
                let dd = _mm512_mul_ps(dw, da);
                let dm = _mm512_mul_ps(dminw, da);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), dd, acc[t]);
                accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[t]), dm, accm[t]);
            }
        }
    }
    for ((o, a), m) in out.iter_mut().zip(acc).zip(accm) {
        _mm512_storeu_ps(o.as_mut_ptr(), _mm512_sub_ps(a, m));
    }
}

/// The products of sixteen Q4_K rows (as [`Q4kPanelBlock`]s) with every token, into the tile's
/// rows-major `out`: whole groups of four tokens in ggml's gemm order (`group` 64), the rest one
/// at a time in its gemv order (`group` 256), as [`matmul_q4k`]'s row-at-a-time form.
/// The caller checks AVX-512F and VNNI.
#[cfg(target_arch = "x86_64")]
fn q4k_panel16_products(panel: &[Q4kPanelBlock], acts: &[Vec<Q8K>], n_tok: usize, out: &mut [f32]) {
    super::panel::panel_tokens(
        n_tok,
        out,
        |t0, y| {
            let a = std::array::from_fn(|i| acts[t0 + i].as_slice());
            // SAFETY: the caller checked `cpu::simd512` and `cpu::vnni256`.
            unsafe { dot_q4k_panel16_vnni::<4, 2>(panel, a, y) }
        },
        // SAFETY: as above.
        |t0, y| unsafe { dot_q4k_panel16_vnni::<1, 8>(panel, [acts[t0].as_slice()], y) },
    );
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
                let (low, high) = q[64 * c..64 * c + 64].split_at_mut(32);
                nibbles(
                    bytes32(b, q4k::QS + 32 * c),
                    low.try_into().expect("32 elements"),
                    high.try_into().expect("32 elements"),
                );
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
            #[cfg(target_arch = "x86_64")]
            if rows.len() == PANEL_ROWS
                && n_tok >= 4
                && crate::cpu::simd512()
                && crate::cpu::vnni256()
            {
                q4k_panel16_products(&q4k_panel16(rows), acts, n_tok, out);
                return;
            }
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

/// A super-block of Q2_K, Q3_K, Q5_K or IQ4_XS in integer form: signed 8-bit values in element
/// order, one scale and one minimum per 16 elements (a 32-element type repeats its own), and the
/// f16 super-block scales.
pub(crate) struct LaneBlock {
    pub d: f32,
    /// Scale of the minima (Q2_K, Q5_K), 0 for the others.
    pub dmin: f32,
    pub sc: [i16; 16],
    pub m: [i16; 16],
    pub q: [i8; QK_K],
    /// Per 32-element group `g`, the scales of its 16-bit products: `sc[2g]` eight times, then
    /// `sc[2g + 1]` (what `madd` multiplies `maddubs`'s pairs with).
    pub scv: [[i16; 16]; 8],
    /// Each value times its scale as an unsigned byte (wrapping): exact for Q2_K (0..3 times
    /// 0..15) and the ternary digits (scale 1), which the VNNI kernels multiply in one
    /// `vpdpbusd` (lane `l` of its 32-byte step: elements `4l..4l+3`, the lanes' own split).
    pub scaled: [u8; QK_K],
}

impl LaneBlock {
    pub(crate) fn new(d: f32, dmin: f32, sc: [i16; 16], m: [i16; 16], q: [i8; QK_K]) -> Self {
        let scv = std::array::from_fn(|g| std::array::from_fn(|k| sc[2 * g + k / 8]));
        let scaled = std::array::from_fn(|e| (sc[e / 16] as u8).wrapping_mul(q[e] as u8));
        LaneBlock {
            d,
            dmin,
            sc,
            m,
            q,
            scv,
            scaled,
        }
    }
}

/// The types whose x86 `vec_dot` keeps eight 32-bit lanes per super-block: lane `l` sums the
/// scaled products of elements `4l..4l+3` of every 32-element group (scale of the 16-element
/// sub-block they sit in), and the float steps differ per type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneType {
    /// `acc = fma(-d_a*dmin_w, minimum lanes, acc)` then `acc = fma(d_a*d_w, lanes, acc)`.
    Q2K,
    /// `acc = fma(d_a*d_w, lanes, acc)`.
    Q3K,
    /// As Q3_K, plus the minimum term summed in a scalar beside the lanes.
    Q5K,
    /// As Q3_K, with the scale product `d_w*d_a`.
    IQ4XS,
    /// TQ1_0 and TQ2_0: the digits' lanes minus the activations' sums of elements
    /// `32l..32l+31` (exact integers), then `acc = fma(d_a*d_w, lanes, acc)`.
    TQ1,
    /// See [`LaneType::TQ1`].
    TQ2,
}

impl LaneType {
    /// The type's member of this family, `None` for other types.
    pub(crate) fn of(ty: GgmlType) -> Option<LaneType> {
        Some(match ty {
            GgmlType::Q2_K => LaneType::Q2K,
            GgmlType::Q3_K => LaneType::Q3K,
            GgmlType::Q5_K => LaneType::Q5K,
            GgmlType::IQ4_XS => LaneType::IQ4XS,
            GgmlType::TQ1_0 => LaneType::TQ1,
            GgmlType::TQ2_0 => LaneType::TQ2,
            _ => return None,
        })
    }

    fn decode(self, row: &[u8]) -> Vec<LaneBlock> {
        match self {
            LaneType::Q2K => decode_q2k(row),
            LaneType::Q3K => decode_q3k(row),
            LaneType::Q5K => decode_q5k(row),
            LaneType::IQ4XS => super::iq4::decode_iq4xs(row),
            LaneType::TQ1 => super::ternary::decode_tq1(row),
            LaneType::TQ2 => super::ternary::decode_tq2(row),
        }
    }

    /// Whether the digits carry an offset of one (the ternary types).
    fn ternary(self) -> bool {
        matches!(self, LaneType::TQ1 | LaneType::TQ2)
    }

    /// Whether [`LaneBlock::scaled`] holds the exact scaled values (never negative, below 256).
    fn scaled_fits(self) -> bool {
        matches!(self, LaneType::Q2K | LaneType::TQ1 | LaneType::TQ2)
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Integer values of a Q2_K row: 2-bit values (the byte at `32h + l` of a 128-element half holds
/// elements `128h + 32s + l` at bits `2s`), 4-bit scales and minima per 16 elements.
pub(crate) fn decode_q2k(row: &[u8]) -> Vec<LaneBlock> {
    row.chunks_exact(GgmlType::Q2_K.type_size() as usize)
        .map(|b| {
            let mut q = [0i8; QK_K];
            for h in 0..2 {
                for s in 0..4 {
                    let src = bytes32(b, q2k::QS + 32 * h);
                    crumbs(src, 2 * s as u32, group32(&mut q, 128 * h + 32 * s));
                }
            }
            let sc = std::array::from_fn(|j| (b[q2k::SCALES + j] & 0x0f) as i16);
            let m = std::array::from_fn(|j| (b[q2k::SCALES + j] >> 4) as i16);
            LaneBlock::new(f16_at(b, q2k::D), f16_at(b, q2k::DMIN), sc, m, q)
        })
        .collect()
}

/// Integer values of a Q3_K row: the Q2_K packing of the low bits, a third bit in `hmask`
/// (byte `l`, bit `4h + s`; a clear bit subtracts 4), 6-bit scales offset by 32.
pub(crate) fn decode_q3k(row: &[u8]) -> Vec<LaneBlock> {
    row.chunks_exact(GgmlType::Q3_K.type_size() as usize)
        .map(|b| {
            let mut q = [0i8; QK_K];
            let hmask = bytes32(b, q3k::HMASK);
            for h in 0..2 {
                for s in 0..4 {
                    let src = bytes32(b, q3k::QS + 32 * h);
                    let (shift, bit) = (2 * s as u32, (4 * h + s) as u32);
                    crumbs_hmask(src, hmask, shift, bit, group32(&mut q, 128 * h + 32 * s));
                }
            }
            let p = &b[q3k::SCALES..q3k::D];
            // scale j: low nibble of byte j % 8 (high nibble from j = 8 on), two high bits from
            // byte 8 + j % 4 at bit 2 * (j / 4)
            let sc = std::array::from_fn(|j| {
                let low = (p[j % 8] >> (4 * (j / 8))) & 0x0f;
                let high = (p[8 + j % 4] >> (2 * (j / 4))) & 3;
                (low | (high << 4)) as i16 - 32
            });
            LaneBlock::new(f16_at(b, q3k::D), 0.0, sc, [0; 16], q)
        })
        .collect()
}

/// 6-bit scale and minimum of 32-element sub-block `j` (`get_scale_min_k4`).
fn scale_min_k4(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Integer values of a Q5_K row: nibbles as Q4_K's (byte `32c + l` holds elements `64c + l` and
/// `64c + 32 + l`), the fifth bit of element `32k + l` at bit `k` of `qh[l]`.
pub(crate) fn decode_q5k(row: &[u8]) -> Vec<LaneBlock> {
    row.chunks_exact(GgmlType::Q5_K.type_size() as usize)
        .map(|b| {
            let mut q = [0i8; QK_K];
            let qh = bytes32(b, q5k::QH);
            for k in 0..8 {
                let src = bytes32(b, q5k::QS + 32 * (k / 2));
                let shift = 4 * (k % 2) as u32;
                nibbles_qh(src, qh, shift, k as u32, group32(&mut q, 32 * k));
            }
            let s = &b[q5k::SCALES..q5k::QH];
            let sc = std::array::from_fn(|j| scale_min_k4(s, j / 2).0 as i16);
            let m = std::array::from_fn(|j| scale_min_k4(s, j / 2).1 as i16);
            LaneBlock::new(f16_at(b, q5k::D), f16_at(b, q5k::DMIN), sc, m, q)
        })
        .collect()
}

/// The eight lanes of one super-block (see [`LaneType`]): exact integers.
#[inline(always)]
fn block_lanes(wb: &LaneBlock, ab: &Q8K) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (g, (wq, aq)) in wb.q.chunks_exact(32).zip(ab.q.chunks_exact(32)).enumerate() {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let p: i32 = (4 * l..4 * l + 4)
                .map(|e| wq[e] as i32 * aq[e] as i32)
                .sum();
            *lane += wb.sc[2 * g + l / 4] as i32 * p;
        }
    }
    lanes
}

/// Sum of the minima times the activations' 16-element sums over sub-blocks `s`.
#[inline(always)]
fn min_sum(wb: &LaneBlock, ab: &Q8K, s: std::ops::Range<usize>) -> i32 {
    s.map(|j| wb.m[j] as i32 * ab.bsums[j]).sum()
}

/// `ggml_vec_dot_{q2_K,q3_K,q5_K,iq4_xs}_q8_K` as ggml's AVX2 code computes them (portable form).
#[inline(always)]
pub(crate) fn dot_lanes(ty: LaneType, w: &[LaneBlock], a: &[Q8K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut lanes = block_lanes(wb, ab);
        if ty.ternary() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane -= ab.bsums[2 * l] + ab.bsums[2 * l + 1];
            }
        }
        let d = match ty {
            LaneType::IQ4XS => wb.d * ab.d,
            _ => ab.d * wb.d,
        };
        match ty {
            LaneType::Q2K => {
                let dmin = -ab.d * wb.dmin;
                for (l, acc) in acc.iter_mut().enumerate() {
                    let mins = wb.m[2 * l] as i32 * ab.bsums[2 * l]
                        + wb.m[2 * l + 1] as i32 * ab.bsums[2 * l + 1];
                    *acc = dmin.mul_add(mins as f32, *acc);
                }
            }
            LaneType::Q5K => {
                let dmin = -ab.d * wb.dmin;
                summs = dmin.mul_add(min_sum(wb, ab, 0..16) as f32, summs);
            }
            _ => {}
        }
        for (acc, &l) in acc.iter_mut().zip(&lanes) {
            *acc = d.mul_add(l as f32, *acc);
        }
    }
    hsum_float_8(&acc) + summs
}

/// Q2_K times Q8_K as ggml's repacked kernels (`gemv/gemm_q2_K_8x8_q8_K`, AVX-512 builds only)
/// compute it (and IQ4_XS as its panel gemm, whose minima are 0): per output one chain `acc = fma(sum, d_w * d_a, acc)` and `accm = fma(min_sum,
/// dmin_w * d_a, accm)` over the exact integer sums of `group` elements (the gemv takes whole
/// super-blocks, the gemm halves), then `acc - accm`.
#[inline(always)]
pub(crate) fn dot_q2k_repacked(w: &[LaneBlock], a: &[Q8K], group: usize) -> f32 {
    let mut acc = 0f32;
    let mut accm = 0f32;
    let per = group / 32;
    for (wb, ab) in w.iter().zip(a) {
        let dd = wb.d * ab.d;
        let dm = wb.dmin * ab.d;
        for c in 0..8 / per {
            let mut isum = 0i32;
            for g in c * per..(c + 1) * per {
                for e in 0..32 {
                    let e = 32 * g + e;
                    isum += wb.sc[e / 16] as i32 * wb.q[e] as i32 * ab.q[e] as i32;
                }
            }
            let imin = min_sum(wb, ab, 2 * c * per..2 * (c + 1) * per);
            acc = (isum as f32).mul_add(dd, acc);
            accm = (imin as f32).mul_add(dm, accm);
        }
    }
    acc - accm
}

/// Which of ggml's kernels a [`LaneType`] weight goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LanePath {
    /// The `vec_dot` of every token.
    VecDot,
    /// Q2_K in ggml's repacked layout (AVX-512 builds, rows in groups of eight): the gemm takes
    /// whole groups of four tokens (sums of 128 elements), the gemv the rest (super-blocks).
    Q2KRepacked,
    /// ggml's "IQ panel" gemm of IQ4_XS (AVX2 builds, rows in groups of eight), taken for
    /// batches of at least 8 tokens: one chain per output over super-block sums, as the Q2_K
    /// gemv without minima; smaller batches take the `vec_dot`.
    Panel,
}

/// Smallest batch ggml's IQ panel gemm takes (`GGML_IQP_MIN_BATCH`).
const PANEL_MIN_BATCH: usize = 8;

/// Products of a Q2_K, Q3_K, Q5_K or IQ4_XS weight with `n_tok` rows of activations (tokens x
/// rows), through ggml's kernel `path`.
pub(crate) fn matmul_lanes(
    ty: LaneType,
    path: LanePath,
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
) -> Vec<f32> {
    let path = match path {
        LanePath::Panel if n_tok < PANEL_MIN_BATCH => LanePath::VecDot,
        p => p,
    };
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_q8k,
        |r| ty.decode(r),
        |rows, acts, n_tok, out| {
            // the gemm's groups of four tokens are even, so pairs of tokens share a group size
            let group_of = |t: usize| {
                if path == LanePath::Q2KRepacked && t < n_tok / 4 * 4 {
                    128
                } else {
                    QK_K
                }
            };
            let mut t0 = 0;
            #[cfg(target_arch = "x86_64")]
            if path == LanePath::VecDot && ty.scaled_fits() && crate::cpu::vnni256() {
                let mut y = [0f32; 4];
                while t0 + 4 <= n_tok {
                    let a = [&acts[t0][..], &acts[t0 + 1], &acts[t0 + 2], &acts[t0 + 3]];
                    for (i, wb) in rows.iter().enumerate() {
                        // SAFETY: `cpu::vnni256` detected AVX2, FMA and AVX-512 VNNI/VL.
                        unsafe { avx2::dot_lanes_vnni4(ty, wb, a, &mut y) };
                        out[i * n_tok + t0..i * n_tok + t0 + 4].copy_from_slice(&y);
                    }
                    t0 += 4;
                }
            }
            #[cfg(target_arch = "x86_64")]
            if path != LanePath::VecDot && crate::cpu::simd() && rows.len() % 8 == 0 {
                let (mut y0, mut y1) = ([0f32; 8], [0f32; 8]);
                // VNNI only where the scaled values fit a byte (Q2_K); IQ4_XS's panel takes the
                // same lanes without it
                let vnni = ty.scaled_fits() && crate::cpu::vnni256();
                while t0 + 2 <= n_tok && group_of(t0) == group_of(t0 + 1) {
                    let (a0, a1) = (&acts[t0], &acts[t0 + 1]);
                    for i0 in (0..rows.len()).step_by(8) {
                        let rows8 = &rows[i0..i0 + 8];
                        if vnni {
                            // SAFETY: `cpu::vnni256` detected AVX2, FMA and AVX-512 VNNI/VL.
                            unsafe {
                                avx2::dot_q2k_repacked_x8x2_vnni(
                                    rows8,
                                    a0,
                                    a1,
                                    group_of(t0),
                                    &mut y0,
                                    &mut y1,
                                )
                            };
                        } else {
                            // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                            unsafe {
                                avx2::dot_q2k_repacked_x8x2(
                                    rows8,
                                    a0,
                                    a1,
                                    group_of(t0),
                                    &mut y0,
                                    &mut y1,
                                )
                            };
                        }
                        for r in 0..8 {
                            out[(i0 + r) * n_tok + t0] = y0[r];
                            out[(i0 + r) * n_tok + t0 + 1] = y1[r];
                        }
                    }
                    t0 += 2;
                }
            }
            for (t, a) in acts.iter().enumerate().skip(t0) {
                let group = group_of(t);
                let mut i0 = 0;
                #[cfg(target_arch = "x86_64")]
                if path != LanePath::VecDot && crate::cpu::simd() {
                    let mut y = [0f32; 8];
                    while i0 + 8 <= rows.len() {
                        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                        unsafe { avx2::dot_q2k_repacked_x8(&rows[i0..i0 + 8], a, group, &mut y) };
                        for (r, &v) in y.iter().enumerate() {
                            out[(i0 + r) * n_tok + t] = v;
                        }
                        i0 += 8;
                    }
                }
                for (i, wb) in rows.iter().enumerate().skip(i0) {
                    out[i * n_tok + t] = match path {
                        LanePath::VecDot => dot_lanes_best(ty, wb, a),
                        _ => dot_q2k_repacked_best(wb, a, group),
                    };
                }
            }
        },
    )
}

/// AVX2 forms of the dot products above: the integer sums are computed with `maddubs`/`madd`
/// (exact, so their order is free) and every float step is the scalar form's.
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::hsum8_i32;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LaneBlock, LaneType, Q4Block, Q6Block, Q8K};

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

    /// The eight lanes of groups `g0..g1` of a [`LaneBlock`]: `maddubs` of |w| with the
    /// activations carrying w's sign (pairs, no saturation: both are within [-127, 127]; the
    /// sign moves are skipped where w is never negative), then `madd` with the sub-blocks'
    /// scales (pairs of pairs).
    #[inline(always)]
    unsafe fn lanes(wb: &LaneBlock, ab: &Q8K, g0: usize, g1: usize) -> __m256i {
        // Q2_K and Q5_K values are never negative, Q3_K and IQ4_XS ones are
        let unsigned = wb.dmin != 0.0;
        let mut acc = _mm256_setzero_si256();
        for g in g0..g1 {
            let x = load(wb.q.as_ptr().add(32 * g).cast());
            let y = load(ab.q.as_ptr().add(32 * g).cast());
            let p16 = if unsigned {
                _mm256_maddubs_epi16(x, y)
            } else {
                _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
            };
            let scale = load(wb.scv[g].as_ptr().cast());
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, scale));
        }
        acc
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_lanes(ty: LaneType, w: &[LaneBlock], a: &[Q8K]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for (wb, ab) in w.iter().zip(a) {
            let mut lanes = lanes(wb, ab, 0, 8);
            if ty.ternary() {
                let offsets =
                    _mm256_madd_epi16(load(ab.bsums16.as_ptr().cast()), _mm256_set1_epi16(1));
                lanes = _mm256_sub_epi32(lanes, offsets);
            }
            let d = match ty {
                LaneType::IQ4XS => wb.d * ab.d,
                _ => ab.d * wb.d,
            };
            match ty {
                LaneType::Q2K => {
                    let mins = _mm256_madd_epi16(
                        load(wb.m.as_ptr().cast()),
                        load(ab.bsums16.as_ptr().cast()),
                    );
                    let dmin = _mm256_set1_ps(-ab.d * wb.dmin);
                    acc = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(mins), acc);
                }
                LaneType::Q5K => {
                    let dmin = -ab.d * wb.dmin;
                    summs = dmin.mul_add(super::min_sum(wb, ab, 0..16) as f32, summs);
                }
                _ => {}
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), acc);
        super::hsum_float_8(&l) + summs
    }

    /// Sums of the eight i32 lanes of each of eight vectors, as one vector (exact).
    #[inline(always)]
    pub(crate) unsafe fn hsum8_i32(v: &[__m256i; 8]) -> __m256i {
        let t0 = _mm256_hadd_epi32(v[0], v[1]);
        let t1 = _mm256_hadd_epi32(v[2], v[3]);
        let t2 = _mm256_hadd_epi32(v[4], v[5]);
        let t3 = _mm256_hadd_epi32(v[6], v[7]);
        let u0 = _mm256_hadd_epi32(t0, t1);
        let u1 = _mm256_hadd_epi32(t2, t3);
        _mm256_add_epi32(
            _mm256_permute2x128_si256(u0, u1, 0x20),
            _mm256_permute2x128_si256(u0, u1, 0x31),
        )
    }

    /// [`super::dot_lanes`] of row `w` with four tokens, for the types whose scaled values fit
    /// a byte: each 32-value step one `vpdpbusd` per token (lane `l`: elements `4l..4l+3`,
    /// as [`lanes`]), every float step as [`dot_lanes`] per token.
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(crate) unsafe fn dot_lanes_vnni4(
        ty: LaneType,
        w: &[LaneBlock],
        a: [&[Q8K]; 4],
        out: &mut [f32; 4],
    ) {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, wb) in w.iter().enumerate() {
            let mut lanes = [_mm256_setzero_si256(); 4];
            for g in 0..8 {
                let x = load(wb.scaled.as_ptr().add(32 * g));
                for (l, a) in lanes.iter_mut().zip(a) {
                    let y = load(a[b].q.as_ptr().add(32 * g).cast());
                    *l = _mm256_dpbusd_epi32(*l, x, y);
                }
            }
            for k in 0..4 {
                let ab = &a[k][b];
                let mut lanes = lanes[k];
                if ty.ternary() {
                    let offsets =
                        _mm256_madd_epi16(load(ab.bsums16.as_ptr().cast()), _mm256_set1_epi16(1));
                    lanes = _mm256_sub_epi32(lanes, offsets);
                }
                if ty == LaneType::Q2K {
                    let mins = _mm256_madd_epi16(
                        load(wb.m.as_ptr().cast()),
                        load(ab.bsums16.as_ptr().cast()),
                    );
                    let dmin = _mm256_set1_ps(-ab.d * wb.dmin);
                    acc[k] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(mins), acc[k]);
                }
                let d = _mm256_set1_ps(ab.d * wb.d);
                acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[k]);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), acc);
            *o = super::hsum_float_8(&l);
        }
    }

    /// The lanes of groups `g0..g1` of eight Q2_K blocks against two tokens with VNNI: one
    /// `vpdpbusd` of the scaled values per row, token and group, each token's activations
    /// loaded once per group for the eight rows.
    #[inline(always)]
    unsafe fn lanes8x2_vnni(
        blocks: [&LaneBlock; 8],
        a0: &Q8K,
        a1: &Q8K,
        g0: usize,
        g1: usize,
    ) -> ([__m256i; 8], [__m256i; 8]) {
        let mut v0 = [_mm256_setzero_si256(); 8];
        let mut v1 = [_mm256_setzero_si256(); 8];
        for g in g0..g1 {
            let y0 = load(a0.q.as_ptr().add(32 * g).cast());
            let y1 = load(a1.q.as_ptr().add(32 * g).cast());
            for ((v0, v1), wb) in v0.iter_mut().zip(v1.iter_mut()).zip(blocks) {
                let x = load(wb.scaled.as_ptr().add(32 * g));
                *v0 = _mm256_dpbusd_epi32(*v0, x, y0);
                *v1 = _mm256_dpbusd_epi32(*v1, x, y1);
            }
        }
        (v0, v1)
    }

    /// [`lanes`] of one block against two tokens' activations (weights and scales loaded once).
    #[inline(always)]
    unsafe fn lanes2(
        wb: &LaneBlock,
        a0: &Q8K,
        a1: &Q8K,
        g0: usize,
        g1: usize,
    ) -> (__m256i, __m256i) {
        let unsigned = wb.dmin != 0.0;
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        for g in g0..g1 {
            let x = load(wb.q.as_ptr().add(32 * g).cast());
            let y0 = load(a0.q.as_ptr().add(32 * g).cast());
            let y1 = load(a1.q.as_ptr().add(32 * g).cast());
            let (p0, p1) = if unsigned {
                (_mm256_maddubs_epi16(x, y0), _mm256_maddubs_epi16(x, y1))
            } else {
                let ax = _mm256_sign_epi8(x, x);
                (
                    _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y0, x)),
                    _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y1, x)),
                )
            };
            let scale = load(wb.scv[g].as_ptr().cast());
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, scale));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, scale));
        }
        (acc0, acc1)
    }

    /// Sums of the minima times the activations' sums over sub-blocks `8c..8c+8` (`per` 4) or
    /// all 16 (`per` 8) for eight rows, from each row's `madd` lanes (lane j: sub-blocks 2j, 2j+1).
    #[inline(always)]
    unsafe fn min_sums8(mins: &[__m256i; 8], per: usize, c: usize) -> __m256i {
        if per == 8 {
            return hsum8_i32(mins);
        }
        let keep = if c == 0 {
            _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0)
        } else {
            _mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1)
        };
        let mut kept = *mins;
        for m in kept.iter_mut() {
            *m = _mm256_and_si256(*m, keep);
        }
        hsum8_i32(&kept)
    }

    /// [`dot_q2k_repacked_x8`] for two tokens at once (each output's chain unchanged).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_q2k_repacked_x8x2(
        rows: &[Vec<LaneBlock>],
        a0: &[Q8K],
        a1: &[Q8K],
        group: usize,
        out0: &mut [f32; 8],
        out1: &mut [f32; 8],
    ) {
        q2k_repacked_x8x2::<false>(rows, a0, a1, group, out0, out1)
    }

    /// [`dot_q2k_repacked_x8x2`] with the integer sums in AVX-512 VNNI ([`lanes8x2_vnni`]).
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(crate) unsafe fn dot_q2k_repacked_x8x2_vnni(
        rows: &[Vec<LaneBlock>],
        a0: &[Q8K],
        a1: &[Q8K],
        group: usize,
        out0: &mut [f32; 8],
        out1: &mut [f32; 8],
    ) {
        q2k_repacked_x8x2::<true>(rows, a0, a1, group, out0, out1)
    }

    #[inline(always)]
    unsafe fn q2k_repacked_x8x2<const VNNI: bool>(
        rows: &[Vec<LaneBlock>],
        a0: &[Q8K],
        a1: &[Q8K],
        group: usize,
        out0: &mut [f32; 8],
        out1: &mut [f32; 8],
    ) {
        let (mut acc0, mut accm0) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut acc1, mut accm1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let per = group / 32;
        for (b, (ab0, ab1)) in a0.iter().zip(a1).enumerate() {
            let dw = _mm256_setr_ps(
                rows[0][b].d,
                rows[1][b].d,
                rows[2][b].d,
                rows[3][b].d,
                rows[4][b].d,
                rows[5][b].d,
                rows[6][b].d,
                rows[7][b].d,
            );
            let dmw = _mm256_setr_ps(
                rows[0][b].dmin,
                rows[1][b].dmin,
                rows[2][b].dmin,
                rows[3][b].dmin,
                rows[4][b].dmin,
                rows[5][b].dmin,
                rows[6][b].dmin,
                rows[7][b].dmin,
            );
            let (da0, da1) = (_mm256_set1_ps(ab0.d), _mm256_set1_ps(ab1.d));
            let (dd0, dd1) = (_mm256_mul_ps(dw, da0), _mm256_mul_ps(dw, da1));
            let (dm0, dm1) = (_mm256_mul_ps(dmw, da0), _mm256_mul_ps(dmw, da1));
            let bs0 = load(ab0.bsums16.as_ptr().cast());
            let bs1 = load(ab1.bsums16.as_ptr().cast());
            // (loops, not closures: a closure would not inherit the target features)
            let mut mins0 = [_mm256_setzero_si256(); 8];
            let mut mins1 = [_mm256_setzero_si256(); 8];
            for ((m0, m1), row) in mins0.iter_mut().zip(mins1.iter_mut()).zip(rows) {
                let m = load(row[b].m.as_ptr().cast());
                *m0 = _mm256_madd_epi16(m, bs0);
                *m1 = _mm256_madd_epi16(m, bs1);
            }
            for c in 0..8 / per {
                let mut v0 = [_mm256_setzero_si256(); 8];
                let mut v1 = [_mm256_setzero_si256(); 8];
                if VNNI {
                    let blocks: [&LaneBlock; 8] = std::array::from_fn(|r| &rows[r][b]);
                    (v0, v1) = lanes8x2_vnni(blocks, ab0, ab1, c * per, (c + 1) * per);
                } else {
                    for ((v0, v1), row) in v0.iter_mut().zip(v1.iter_mut()).zip(rows) {
                        (*v0, *v1) = lanes2(&row[b], ab0, ab1, c * per, (c + 1) * per);
                    }
                }
                let (isum0, isum1) = (hsum8_i32(&v0), hsum8_i32(&v1));
                let imin0 = min_sums8(&mins0, per, c);
                let imin1 = min_sums8(&mins1, per, c);
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum0), dd0, acc0);
                accm0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin0), dm0, accm0);
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum1), dd1, acc1);
                accm1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin1), dm1, accm1);
            }
        }
        _mm256_storeu_ps(out0.as_mut_ptr(), _mm256_sub_ps(acc0, accm0));
        _mm256_storeu_ps(out1.as_mut_ptr(), _mm256_sub_ps(acc1, accm1));
    }

    /// [`super::dot_q2k_repacked`] of eight rows at once: lane `r` of the float vectors is row
    /// `r`'s chain, so every output takes the same operations in the same order as alone.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_q2k_repacked_x8(
        rows: &[Vec<LaneBlock>],
        a: &[Q8K],
        group: usize,
        out: &mut [f32; 8],
    ) {
        let mut acc = _mm256_setzero_ps();
        let mut accm = _mm256_setzero_ps();
        let per = group / 32;
        for (b, ab) in a.iter().enumerate() {
            let da = _mm256_set1_ps(ab.d);
            let dd = _mm256_mul_ps(
                _mm256_setr_ps(
                    rows[0][b].d,
                    rows[1][b].d,
                    rows[2][b].d,
                    rows[3][b].d,
                    rows[4][b].d,
                    rows[5][b].d,
                    rows[6][b].d,
                    rows[7][b].d,
                ),
                da,
            );
            let dm = _mm256_mul_ps(
                _mm256_setr_ps(
                    rows[0][b].dmin,
                    rows[1][b].dmin,
                    rows[2][b].dmin,
                    rows[3][b].dmin,
                    rows[4][b].dmin,
                    rows[5][b].dmin,
                    rows[6][b].dmin,
                    rows[7][b].dmin,
                ),
                da,
            );
            // minima times the activations' 16-element sums: lane j holds sub-blocks 2j, 2j+1
            let bs = load(ab.bsums16.as_ptr().cast());
            // (loops, not closures: a closure would not inherit the target features)
            let mut mins = [_mm256_setzero_si256(); 8];
            for (m, row) in mins.iter_mut().zip(rows) {
                *m = _mm256_madd_epi16(load(row[b].m.as_ptr().cast()), bs);
            }
            for c in 0..8 / per {
                let mut v = [_mm256_setzero_si256(); 8];
                for (v, row) in v.iter_mut().zip(rows) {
                    *v = lanes(&row[b], ab, c * per, (c + 1) * per);
                }
                let isum = hsum8_i32(&v);
                let imin = if per == 8 {
                    hsum8_i32(&mins)
                } else {
                    // the lanes of this half: sub-blocks 8c..8c+8
                    let keep = if c == 0 {
                        _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0)
                    } else {
                        _mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1)
                    };
                    let mut kept = mins;
                    for m in kept.iter_mut() {
                        *m = _mm256_and_si256(*m, keep);
                    }
                    hsum8_i32(&kept)
                };
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc);
                accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dm, accm);
            }
        }
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_sub_ps(acc, accm));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_q2k_repacked(w: &[LaneBlock], a: &[Q8K], group: usize) -> f32 {
        let mut acc = 0f32;
        let mut accm = 0f32;
        let per = group / 32;
        for (wb, ab) in w.iter().zip(a) {
            let dd = wb.d * ab.d;
            let dm = wb.dmin * ab.d;
            for c in 0..8 / per {
                let isum = hsum_i32(lanes(wb, ab, c * per, (c + 1) * per));
                let imin = super::min_sum(wb, ab, 2 * c * per..2 * (c + 1) * per);
                acc = (isum as f32).mul_add(dd, acc);
                accm = (imin as f32).mul_add(dm, accm);
            }
        }
        acc - accm
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

/// [`dot_lanes`] with the fastest instructions this CPU has (same bits).
#[inline(always)]
fn dot_lanes_best(ty: LaneType, w: &[LaneBlock], a: &[Q8K]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
        return unsafe { avx2::dot_lanes(ty, w, a) };
    }
    dot_lanes(ty, w, a)
}

/// [`dot_q2k_repacked`] with the fastest instructions this CPU has (same bits).
#[inline(always)]
pub(crate) fn dot_q2k_repacked_best(w: &[LaneBlock], a: &[Q8K], group: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
        return unsafe { avx2::dot_q2k_repacked(w, a, group) };
    }
    dot_q2k_repacked(w, a, group)
}

/// [`dot_q4k`] with the fastest instructions this CPU has (same bits).
#[inline(always)]
pub(crate) fn dot_q4k_best(w: &[Q4Block], a: &[Q8K], group: usize) -> f32 {
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
    use crate::kernels::test_data::{acts, bytes};

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

    /// The sixteen-row VNNI panel of Q4_K gives the portable row-at-a-time bits: whole groups
    /// of four tokens in the gemm order (`group` 64), the rest in the gemv order (256).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn q4k_panel_gives_the_portable_bits() {
        if !(crate::cpu::simd512() && crate::cpu::vnni256()) {
            eprintln!("skipped: this CPU lacks AVX-512F and VNNI (the Q4_K panel does not run)");
            return;
        }
        let size = GgmlType::Q4_K.type_size() as usize;
        for (seed, n_tok) in [(1u64, 4usize), (2, 5), (3, 7), (4, 9), (5, 12)] {
            let nb = 1 + seed as usize % 4;
            let rows: Vec<Vec<Q4Block>> = (0..16)
                .map(|r| decode_q4k(&blocks(size, nb, &[q4k::D, q4k::DMIN], seed * 50 + r)))
                .collect();
            let acts: Vec<Vec<Q8K>> = (0..n_tok as u64)
                .map(|t| quantize_q8k(&acts(QK_K * nb, seed * 13 + t)))
                .collect();
            let mut out = vec![0f32; 16 * n_tok];
            q4k_panel16_products(&q4k_panel16(&rows), &acts, n_tok, &mut out);
            for (r, row) in rows.iter().enumerate() {
                for (t, a) in acts.iter().enumerate() {
                    let group = if t < n_tok / 4 * 4 { 64 } else { QK_K };
                    let want = dot_q4k(row, a, group);
                    let got = out[r * n_tok + t];
                    assert_eq!(
                        want.to_bits(),
                        got.to_bits(),
                        "seed {seed} row {r} token {t}"
                    );
                }
            }
        }
    }

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

    /// Digest of [`dot_lanes`] and [`dot_q2k_repacked`] on the blocks below, computed when the
    /// kernels were verified bit-exact against ggml (tests/ggml_ops.rs, zen4 and haswell).
    const LANES_DIGEST: u64 = 0xc5b2_232c_b580_044c;

    #[test]
    fn lane_kernels_avx2_and_portable_forms_give_the_same_bits() {
        use crate::kernels::layout::{q2k, q3k, q5k};
        use dynquant_quants::iq::layout::iq4xs;
        let avx2 = crate::cpu::avx2_fma_hardware();
        let types = [
            (LaneType::Q2K, GgmlType::Q2_K, vec![q2k::D, q2k::DMIN]),
            (LaneType::Q3K, GgmlType::Q3_K, vec![q3k::D]),
            (LaneType::Q5K, GgmlType::Q5_K, vec![q5k::D, q5k::DMIN]),
            (LaneType::IQ4XS, GgmlType::IQ4_XS, vec![iq4xs::D]),
        ];
        let mut portable = Vec::new();
        for seed in 1..12u64 {
            let nb = 1 + seed as usize % 5;
            let a = quantize_q8k(&acts(QK_K * nb, seed * 13));
            for (lt, ty, scales) in &types {
                let w = lt.decode(&blocks(ty.type_size() as usize, nb, scales, seed + 7));
                let mut got = vec![dot_lanes(*lt, &w, &a)];
                for group in [128, QK_K] {
                    got.push(dot_q2k_repacked(&w, &a, group));
                }
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: AVX2 and FMA detected above.
                    let v = unsafe {
                        [
                            avx2::dot_lanes(*lt, &w, &a),
                            avx2::dot_q2k_repacked(&w, &a, 128),
                            avx2::dot_q2k_repacked(&w, &a, QK_K),
                        ]
                    };
                    for (p, v) in got.iter().zip(v) {
                        assert_eq!(p.to_bits(), v.to_bits(), "{ty} seed {seed}");
                    }
                }
                portable.extend(got);
            }
        }
        assert_eq!(crate::kernels::bits_digest(&portable), LANES_DIGEST);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod vnni_tests {
    use super::*;
    use crate::kernels::test_data::{acts, bytes};

    /// Random blocks with a finite f16 scale at each of `scale_at`.
    fn blocks(ty: GgmlType, n: usize, scale_at: &[usize], seed: u64) -> Vec<u8> {
        let size = ty.type_size() as usize;
        let mut b = bytes(size * n, seed);
        for blk in b.chunks_exact_mut(size) {
            for &at in scale_at {
                let d = f16::from_f32(0.001 + blk[at] as f32 * 1e-4);
                blk[at..at + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        b
    }

    /// The VNNI kernels (four tokens through the lanes, two tokens times eight repacked Q2_K
    /// rows) give the portable forms' bits, token by token.
    #[test]
    fn vnni_lane_kernels_give_the_portable_bits() {
        if !crate::cpu::vnni256() {
            eprintln!("skipped: this CPU lacks AVX-512 VNNI/VL");
            return;
        }
        use crate::kernels::layout::q2k;
        use dynquant_quants::ternary::layout::{tq1, tq2};
        let types = [
            (LaneType::Q2K, GgmlType::Q2_K, vec![q2k::D, q2k::DMIN]),
            (LaneType::TQ1, GgmlType::TQ1_0, vec![tq1::D]),
            (LaneType::TQ2, GgmlType::TQ2_0, vec![tq2::D]),
        ];
        for seed in 1..8u64 {
            let nb = 1 + seed as usize % 4;
            let a: Vec<Vec<Q8K>> = (0..4)
                .map(|k| quantize_q8k_impl(&acts(QK_K * nb, seed * 13 + k)))
                .collect();
            for (lt, ty, scales) in &types {
                let rows: Vec<Vec<LaneBlock>> = (0..8)
                    .map(|r| lt.decode(&blocks(*ty, nb, scales, seed * 31 + r)))
                    .collect();
                for w in &rows {
                    let mut y = [0f32; 4];
                    // SAFETY: `cpu::vnni256` checked above.
                    unsafe { avx2::dot_lanes_vnni4(*lt, w, [&a[0], &a[1], &a[2], &a[3]], &mut y) };
                    for (k, y) in y.iter().enumerate() {
                        let want = dot_lanes(*lt, w, &a[k]);
                        assert_eq!(want.to_bits(), y.to_bits(), "{ty} seed {seed} token {k}");
                    }
                }
                if *lt != LaneType::Q2K {
                    continue;
                }
                for group in [128, QK_K] {
                    let (mut y0, mut y1) = ([0f32; 8], [0f32; 8]);
                    // SAFETY: as above.
                    unsafe {
                        avx2::dot_q2k_repacked_x8x2_vnni(
                            &rows, &a[0], &a[1], group, &mut y0, &mut y1,
                        )
                    };
                    for (r, w) in rows.iter().enumerate() {
                        let want = [
                            dot_q2k_repacked(w, &a[0], group),
                            dot_q2k_repacked(w, &a[1], group),
                        ];
                        assert_eq!(want[0].to_bits(), y0[r].to_bits(), "seed {seed} row {r}");
                        assert_eq!(want[1].to_bits(), y1[r].to_bits(), "seed {seed} row {r}");
                    }
                }
            }
        }
    }
}
