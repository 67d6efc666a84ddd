//! IQ4_NL and IQ4_XS weights as ggml-cpu's x86 kernels compute them. Both store 4-bit indices
//! into the non-linear levels `kvalues_iq4nl`.
//!
//! * IQ4_XS (times Q8_K) takes ggml's `vec_dot` with the eight lanes of the K-quants
//!   ([`super::kquant::LaneType::IQ4XS`]); this file only decodes it.
//! * IQ4_NL (times Q8_0) sits in ggml's repacked layout on every AVX2 build when the rows come
//!   in groups of eight (`gemv/gemm_iq4_nl_8x8_q8_0`): per output one chain
//!   `acc = fma(sum, d_w * d_a, acc)` over the exact integer sums of the 32-element blocks.
//!   Q4_0 weights (levels `nibble - 8`, the same block layout) take the same repacked kernels
//!   there (`q4_0_8x8_q8_0`, one template with IQ4_NL's in ggml's x86 repack.cpp).

use dynquant_gguf::GgmlType;
use dynquant_quants::iq::layout::{iq4nl, iq4xs};
use half::f16;

use super::kquant::{quantize_q8k_impl, LaneBlock, Q8K};
use super::layout::{q4_0, QK_K};
use super::legacy::{quantize_q8_0, ActBlock};
use super::panel::{interleave_group, PANEL_ROWS};
use crate::weight::Weight;
use dynquant_quants::fp4::{e8m0_half, layout::mxfp4};

/// ggml's `kvalues_iq4nl`: the 16 levels a 4-bit index selects.
const LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// MXFP4's levels (`kvalues_mxfp4`): the E2M1 values doubled, the block scale halved.
const MXFP4_LEVELS: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Q4_0's levels: `nibble - 8`.
const Q4_0_LEVELS: [i8; 16] = [-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7];

/// Elements of an IQ4_NL block (and of an IQ4_XS sub-block).
const QK4: usize = 32;

/// Levels of one 32-element group packed as IQ4_NL (and Q4_0) pack it: byte `l` holds element
/// `l` in its low nibble and element `16 + l` in its high nibble.
fn unpack_with(pairs: &[[i8; 2]; 256], qs: &[u8], out: &mut [i8]) {
    let (low, high) = out[..QK4].split_at_mut(QK4 / 2);
    for ((lo, hi), &b) in low.iter_mut().zip(high.iter_mut()).zip(&qs[..QK4 / 2]) {
        [*lo, *hi] = pairs[usize::from(b)];
    }
}

fn unpack(qs: &[u8], out: &mut [i8]) {
    unpack_with(&LEVEL_PAIRS, qs, out)
}

/// The levels of both nibbles of every byte (one lookup per byte instead of two).
const fn level_pairs(levels: &[i8; 16]) -> [[i8; 2]; 256] {
    let mut pairs = [[0i8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [levels[b & 0x0f], levels[b >> 4]];
        b += 1;
    }
    pairs
}

const LEVEL_PAIRS: [[i8; 2]; 256] = level_pairs(&LEVELS);
const Q4_0_LEVEL_PAIRS: [[i8; 2]; 256] = level_pairs(&Q4_0_LEVELS);
const MXFP4_LEVEL_PAIRS: [[i8; 2]; 256] = level_pairs(&MXFP4_LEVELS);

/// The 4-bit types ggml's x86 build multiplies with its repacked `*_8x8_q8_0` template: one
/// scale (f16, or MXFP4's E8M0 exponent) and 32 nibbles per block, the nibbles indexing a table
/// of levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NibbleType {
    IQ4NL,
    Q4_0,
    MXFP4,
}

impl NibbleType {
    fn ggml_type(self) -> GgmlType {
        match self {
            NibbleType::IQ4NL => GgmlType::IQ4_NL,
            NibbleType::Q4_0 => GgmlType::Q4_0,
            NibbleType::MXFP4 => GgmlType::MXFP4,
        }
    }

    /// The block's scale and where its nibbles start.
    fn scale_and_nibbles(self, block: &[u8]) -> (f32, &[u8]) {
        match self {
            // both store `d` first, then the 16 bytes of nibbles
            NibbleType::IQ4NL | NibbleType::Q4_0 => {
                const _: () = assert!(iq4nl::D == q4_0::D && iq4nl::QS == q4_0::QS);
                (f16_at(block, iq4nl::D), &block[iq4nl::QS..])
            }
            NibbleType::MXFP4 => (e8m0_half(block[mxfp4::E]), &block[mxfp4::QS..]),
        }
    }

    fn level_pairs(self) -> &'static [[i8; 2]; 256] {
        match self {
            NibbleType::IQ4NL => &LEVEL_PAIRS,
            NibbleType::Q4_0 => &Q4_0_LEVEL_PAIRS,
            NibbleType::MXFP4 => &MXFP4_LEVEL_PAIRS,
        }
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Integer values of an IQ4_XS row: 6-bit sub-block scales offset by 32 (low nibbles in
/// `scales_l`, two high bits per sub-block in `scales_h`), each repeated for both halves.
pub(crate) fn decode_iq4xs(row: &[u8]) -> Vec<LaneBlock> {
    row.chunks_exact(GgmlType::IQ4_XS.type_size() as usize)
        .map(|b| {
            let mut q = [0i8; QK_K];
            for (ib, out) in q.chunks_exact_mut(QK4).enumerate() {
                unpack(&b[iq4xs::QS + 16 * ib..], out);
            }
            let sh = u16::from_le_bytes([b[iq4xs::SCALES_H], b[iq4xs::SCALES_H + 1]]);
            let sc = std::array::from_fn(|j| {
                let ib = j / 2;
                let low = (b[iq4xs::SCALES_L + ib / 2] >> (4 * (ib % 2))) & 0x0f;
                let high = ((sh >> (2 * ib)) & 3) as u8;
                (low | (high << 4)) as i16 - 32
            });
            LaneBlock::new(f16_at(b, iq4xs::D), 0.0, sc, [0; 16], q)
        })
        .collect()
}

/// One IQ4_NL block in integer form.
pub(crate) struct NlBlock {
    d: f32,
    q: [i8; QK4],
}

/// Blocks of an IQ4_NL, Q4_0 or MXFP4 row.
fn decode_nibbles(ty: NibbleType, row: &[u8]) -> Vec<NlBlock> {
    let pairs = ty.level_pairs();
    row.chunks_exact(ty.ggml_type().type_size() as usize)
        .map(|b| {
            let (mut d, qs) = ty.scale_and_nibbles(b);
            let mut q = [0i8; QK4];
            unpack_with(pairs, qs, &mut q);
            // An MXFP4 block of zeros (ggml stores them with exponent 0, a subnormal scale) adds
            // `fma(0, d_w * d_a, acc)`: `+0` whatever the non-negative finite `d_w`, so a scale
            // of 1 gives the same bits while keeping the subnormal products (each a slow
            // microcode assist on x86) out of the loop. Scales above 1 are kept: `d_w * d_a`
            // might overflow to infinity, and `0 * inf` is NaN.
            if ty == NibbleType::MXFP4 && q.iter().all(|&v| v == 0) && d <= 1.0 {
                d = 1.0;
            }
            NlBlock { d, q }
        })
        .collect()
}

/// The repacked IQ4_NL product of one row and one token (portable form).
#[inline(always)]
fn dot_iq4nl(w: &[NlBlock], a: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let isum: i32 =
            wb.q.iter()
                .zip(&ab.q)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
        acc = (isum as f32).mul_add(wb.d * ab.d, acc);
    }
    acc
}

/// The same with AVX2 integer instructions (exact sums, the same float steps).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_iq4nl_avx2(w: &[NlBlock], a: &[ActBlock]) -> f32 {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let x = _mm256_loadu_si256(wb.q.as_ptr().cast());
        let y = _mm256_loadu_si256(ab.q.as_ptr().cast());
        // both within [-127, 127]: the pair sums cannot saturate
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        let v = _mm256_madd_epi16(p16, ones);
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        let isum = _mm_cvtsi128_si32(s);
        acc = (isum as f32).mul_add(wb.d * ab.d, acc);
    }
    acc
}

/// The scales of block `b` of eight rows, lane `r` row `r`'s.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_scales(rows: &[Vec<NlBlock>], b: usize) -> std::arch::x86_64::__m256 {
    std::arch::x86_64::_mm256_setr_ps(
        rows[0][b].d,
        rows[1][b].d,
        rows[2][b].d,
        rows[3][b].d,
        rows[4][b].d,
        rows[5][b].d,
        rows[6][b].d,
        rows[7][b].d,
    )
}

/// One block's float step for eight rows: the rows' exact integer sums (each row's lanes in
/// `v`, summed by `hsum8_i32`) times `d_w * d_a`, fused into `acc`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_step(
    v: &[std::arch::x86_64::__m256i; 8],
    dw: std::arch::x86_64::__m256,
    da: f32,
    acc: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let isum = super::kquant::hsum8_i32(v);
    _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(isum),
        _mm256_mul_ps(dw, _mm256_set1_ps(da)),
        acc,
    )
}

/// [`dot_iq4nl`] of eight rows at once: lane `r` of the float vector is row `r`'s chain, so
/// every output takes the same operations in the same order as alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_iq4nl_x8(rows: &[Vec<NlBlock>], a: &[ActBlock], out: &mut [f32; 8]) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (b, ab) in a.iter().enumerate() {
        let y = _mm256_loadu_si256(ab.q.as_ptr().cast());
        // (a loop, not a closure: a closure would not inherit the target features)
        let mut v = [_mm256_setzero_si256(); 8];
        for (v, row) in v.iter_mut().zip(rows) {
            let x = _mm256_loadu_si256(row[b].q.as_ptr().cast());
            // both within [-127, 127]: the pair sums cannot saturate
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            *v = _mm256_madd_epi16(p16, ones);
        }
        acc = block_step(&v, row_scales(rows, b), ab.d, acc);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), acc);
}

/// [`dot_iq4nl_x8x2`] with AVX-512 VNNI: each block's integer sums as `vpdpbusd` of the
/// weights offset to unsigned (`x + 128`) with the activations, added to lanes that start at
/// `-128` times the activations' sums: the same exact integers in half the instructions, then
/// the same float steps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
unsafe fn dot_iq4nl_x8x2_vnni(
    rows: &[Vec<NlBlock>],
    a0: &[ActBlock],
    a1: &[ActBlock],
    out0: &mut [f32; 8],
    out1: &mut [f32; 8],
) {
    use std::arch::x86_64::*;
    let flip = _mm256_set1_epi8(-128);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    for (b, (ab0, ab1)) in a0.iter().zip(a1).enumerate() {
        let y0 = _mm256_loadu_si256(ab0.q.as_ptr().cast());
        let y1 = _mm256_loadu_si256(ab1.q.as_ptr().cast());
        // each lane starts at -128 times its activations' sum, which the offset adds back
        let zero = _mm256_setzero_si256();
        let base0 = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, flip, y0));
        let base1 = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, flip, y1));
        // (a loop, not a closure: a closure would not inherit the target features)
        let mut v0 = [zero; 8];
        let mut v1 = [zero; 8];
        for ((v0, v1), row) in v0.iter_mut().zip(v1.iter_mut()).zip(rows) {
            // levels within [-127, 127]: x + 128 fits an unsigned byte
            let xu = _mm256_xor_si256(_mm256_loadu_si256(row[b].q.as_ptr().cast()), flip);
            *v0 = _mm256_dpbusd_epi32(base0, xu, y0);
            *v1 = _mm256_dpbusd_epi32(base1, xu, y1);
        }
        let dw = row_scales(rows, b);
        acc0 = block_step(&v0, dw, ab0.d, acc0);
        acc1 = block_step(&v1, dw, ab1.d, acc1);
    }
    _mm256_storeu_ps(out0.as_mut_ptr(), acc0);
    _mm256_storeu_ps(out1.as_mut_ptr(), acc1);
}

/// [`dot_iq4nl_x8`] for two tokens at once (the weights' loads and magnitudes shared; each
/// output's chain unchanged).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_iq4nl_x8x2(
    rows: &[Vec<NlBlock>],
    a0: &[ActBlock],
    a1: &[ActBlock],
    out0: &mut [f32; 8],
    out1: &mut [f32; 8],
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    for (b, (ab0, ab1)) in a0.iter().zip(a1).enumerate() {
        let y0 = _mm256_loadu_si256(ab0.q.as_ptr().cast());
        let y1 = _mm256_loadu_si256(ab1.q.as_ptr().cast());
        // (a loop, not a closure: a closure would not inherit the target features)
        let mut v0 = [_mm256_setzero_si256(); 8];
        let mut v1 = [_mm256_setzero_si256(); 8];
        for ((v0, v1), row) in v0.iter_mut().zip(v1.iter_mut()).zip(rows) {
            let x = _mm256_loadu_si256(row[b].q.as_ptr().cast());
            let ax = _mm256_sign_epi8(x, x);
            // both within [-127, 127]: the pair sums cannot saturate
            let p0 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y0, x));
            let p1 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y1, x));
            *v0 = _mm256_madd_epi16(p0, ones);
            *v1 = _mm256_madd_epi16(p1, ones);
        }
        let dw = row_scales(rows, b);
        acc0 = block_step(&v0, dw, ab0.d, acc0);
        acc1 = block_step(&v1, dw, ab1.d, acc1);
    }
    _mm256_storeu_ps(out0.as_mut_ptr(), acc0);
    _mm256_storeu_ps(out1.as_mut_ptr(), acc1);
}

/// Whether the 512-bit VNNI form may run: AVX-512F ([`crate::cpu::simd512`]) and VNNI
/// ([`crate::cpu::vnni256`]). It keeps every lane's integers and float steps, so it changes
/// speed, never results.
#[cfg(target_arch = "x86_64")]
fn vnni512() -> bool {
    crate::cpu::simd512() && crate::cpu::vnni256()
}

/// Q8_0 activations of one token for the repacked nibble kernels, with each block's
/// `-128 * sum(q)`: the term that turns `vpdpbusd`'s products with weights offset to unsigned
/// (`level + 128`) back into the exact products with the levels.
struct NibbleActs {
    blocks: Vec<ActBlock>,
    offset: Vec<i32>,
}

fn quantize_nibble_acts(x: &[f32]) -> NibbleActs {
    let blocks = quantize_q8_0(x);
    let offset = blocks
        .iter()
        .map(|b| -128 * b.q.iter().map(|&v| i32::from(v)).sum::<i32>())
        .collect();
    NibbleActs { blocks, offset }
}

/// One 32-element block of sixteen rows, interleaved for `vpdpbusd` against broadcast
/// activations: bytes `64k + 4r .. 64k + 4r + 4` hold row `r`'s elements `4k .. 4k + 4` as
/// `level + 128`, so the dword lane `r` of eight `vpdpbusd` (one per `k`) is row `r`'s sum, with
/// no horizontal reduction; `d` holds the rows' scales.
#[repr(C, align(64))]
struct PanelBlock {
    q: [u8; 8 * 64],
    d: [f32; PANEL_ROWS],
}

/// Sixteen decoded rows as [`PanelBlock`]s, one per block of the rows.
fn panel16(rows: &[Vec<NlBlock>]) -> Vec<PanelBlock> {
    debug_assert_eq!(rows.len(), PANEL_ROWS);
    (0..rows[0].len())
        .map(|b| {
            let mut p = PanelBlock {
                q: [0; 8 * 64],
                d: [0.0; PANEL_ROWS],
            };
            for (r, row) in rows.iter().enumerate() {
                p.d[r] = row[b].d;
                interleave_group(row[b].q.iter().map(|&v| (v as u8) ^ 0x80), r, &mut p.q);
            }
            p
        })
        .collect()
}

/// [`dot_iq4nl_x8`] of sixteen rows (as [`PanelBlock`]s) and `T` tokens with AVX-512 VNNI: lane `r`
/// of each token's integer vector is row `r`'s exact block sum, and of its float vector row
/// `r`'s chain `acc = fma(sum, d_w * d_a, acc)`, in the same order as alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
unsafe fn dot_panel16_vnni<const T: usize>(
    panel: &[PanelBlock],
    acts: [&NibbleActs; T],
    out: &mut [[f32; PANEL_ROWS]; T],
) {
    use super::panel::avx512::{group_sums, load_group};
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, pb) in panel.iter().enumerate() {
        let wk = load_group(&pb.q);
        let dw = _mm512_load_ps(pb.d.as_ptr());
        for t in 0..T {
            let ab = &acts[t].blocks[b];
            let init = _mm512_set1_epi32(acts[t].offset[b]);
            let isum = group_sums(&wk, ab.q.as_ptr().cast(), init);
            acc[t] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(isum),
                _mm512_mul_ps(dw, _mm512_set1_ps(ab.d)),
                acc[t],
            );
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// The products of sixteen rows (as [`PanelBlock`]s) with every token (four at a time, then
/// one), into the tile's rows-major `out`.
#[cfg(target_arch = "x86_64")]
fn panel16_products(panel: &[PanelBlock], acts: &[NibbleActs], n_tok: usize, out: &mut [f32]) {
    super::panel::panel_tokens(
        n_tok,
        out,
        |t0, y| {
            let a = std::array::from_fn(|i| &acts[t0 + i]);
            // SAFETY: the caller checked `cpu::vnni512`.
            unsafe { dot_panel16_vnni::<4>(panel, a, y) }
        },
        // SAFETY: as above.
        |t0, y| unsafe { dot_panel16_vnni::<1>(panel, [&acts[t0]], y) },
    );
}

#[inline(always)]
fn dot_iq4nl_best(w: &[NlBlock], a: &[ActBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd() {
        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
        return unsafe { dot_iq4nl_avx2(w, a) };
    }
    dot_iq4nl(w, a)
}

/// Products of a repacked IQ4_NL or Q4_0 weight (rows in groups of eight) with `n_tok` rows of
/// activations (tokens x rows). The gemm and the gemv accumulate alike.
pub(crate) fn matmul_nibbles(ty: NibbleType, w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_nibble_acts,
        |row| decode_nibbles(ty, row),
        |rows, acts, n_tok, out| {
            #[cfg(target_arch = "x86_64")]
            if rows.len() == PANEL_ROWS && n_tok >= 4 && vnni512() {
                panel16_products(&panel16(rows), acts, n_tok, out);
                return;
            }
            let mut t0 = 0;
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::simd() && rows.len() % 8 == 0 {
                let (mut y0, mut y1) = ([0f32; 8], [0f32; 8]);
                while t0 + 2 <= n_tok {
                    for i0 in (0..rows.len()).step_by(8) {
                        let rows = &rows[i0..i0 + 8];
                        let (a0, a1) = (&acts[t0].blocks, &acts[t0 + 1].blocks);
                        if crate::cpu::vnni256() {
                            // SAFETY: `cpu::vnni256` detected AVX2, FMA and AVX-512 VNNI/VL.
                            unsafe { dot_iq4nl_x8x2_vnni(rows, a0, a1, &mut y0, &mut y1) };
                        } else {
                            // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                            unsafe { dot_iq4nl_x8x2(rows, a0, a1, &mut y0, &mut y1) };
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
                let a = &a.blocks;
                let mut i0 = 0;
                #[cfg(target_arch = "x86_64")]
                if crate::cpu::simd() {
                    let mut y = [0f32; 8];
                    while i0 + 8 <= rows.len() {
                        // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                        unsafe { dot_iq4nl_x8(&rows[i0..i0 + 8], a, &mut y) };
                        for (r, &v) in y.iter().enumerate() {
                            out[(i0 + r) * n_tok + t] = v;
                        }
                        i0 += 8;
                    }
                }
                for (i, wb) in rows.iter().enumerate().skip(i0) {
                    out[i * n_tok + t] = dot_iq4nl_best(wb, a);
                }
            }
        },
    )
}

fma_variant!(quantize_q8k, quantize_q8k_impl, (x: &[f32]) -> Vec<Q8K>);

/// Smallest batch ggml's IQ panel gemm takes (`GGML_IQP_MIN_BATCH`; smaller ones take the
/// `vec_dot`, see [`super::kquant::LanePath::Panel`]).
const IQ_PANEL_MIN_BATCH: usize = 8;

/// Whether [`matmul_iq4xs_panel16`] computes the product of an IQ4_XS weight that takes
/// ggml's IQ panel gemm: a batch the gemm takes, rows in whole panels of sixteen, and AVX-512
/// VNNI.
pub(crate) fn iq4xs_panel16_fits(w: &Weight<'_>, n_tok: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        w.ty == GgmlType::IQ4_XS
            && w.rows.is_multiple_of(PANEL_ROWS)
            && n_tok >= IQ_PANEL_MIN_BATCH
            && vnni512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, n_tok);
        false
    }
}

/// Q8_K activations of one token for the IQ4_XS panel, with each 32-element group's
/// `-128 * sum(q)` (see [`NibbleActs`]).
struct XsActs {
    blocks: Vec<Q8K>,
    offset: Vec<[i32; 8]>,
}

fn quantize_xs_acts(x: &[f32]) -> XsActs {
    let blocks = quantize_q8k(x);
    let offset = blocks
        .iter()
        .map(|b| std::array::from_fn(|g| -128 * (b.bsums[2 * g] + b.bsums[2 * g + 1])))
        .collect();
    XsActs { blocks, offset }
}

/// One IQ4_XS super-block of sixteen rows: each 32-element group interleaved as a
/// [`PanelBlock`]'s, with the rows' group scales and super-block scales.
#[repr(C, align(64))]
struct XsPanelBlock {
    q: [[u8; 8 * 64]; 8],
    sc: [[i32; PANEL_ROWS]; 8],
    d: [f32; PANEL_ROWS],
}

fn xs_panel16(rows: &[Vec<LaneBlock>]) -> Vec<XsPanelBlock> {
    debug_assert_eq!(rows.len(), PANEL_ROWS);
    (0..rows[0].len())
        .map(|b| {
            let mut p = XsPanelBlock {
                q: [[0; 8 * 64]; 8],
                sc: [[0; PANEL_ROWS]; 8],
                d: [0.0; PANEL_ROWS],
            };
            for (r, row) in rows.iter().enumerate() {
                let wb = &row[b];
                p.d[r] = wb.d;
                for (g, (q, sc)) in p.q.iter_mut().zip(&mut p.sc).enumerate() {
                    // IQ4_XS repeats each group's scale for both of its halves
                    sc[r] = i32::from(wb.sc[2 * g]);
                    interleave_group(
                        wb.q[32 * g..32 * g + 32].iter().map(|&v| (v as u8) ^ 0x80),
                        r,
                        q,
                    );
                }
            }
            p
        })
        .collect()
}

/// ggml's IQ panel gemm of IQ4_XS (`dot_q2k_repacked` with whole super-blocks and no minima)
/// for sixteen rows and `T` tokens with AVX-512 VNNI: lane `r` of each token's integer vector is
/// row `r`'s exact super-block sum, and of its float vectors row `r`'s chains
/// `acc = fma(sum, d_w * d_a, acc)` and `accm = fma(0, dmin_w * d_a, accm)` (`dmin_w = 0`), then
/// `acc - accm`, in the same order as alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
unsafe fn dot_xs_panel16_vnni<const T: usize>(
    panel: &[XsPanelBlock],
    acts: [&XsActs; T],
    out: &mut [[f32; PANEL_ROWS]; T],
) {
    use super::panel::avx512::{group_sums, load_group};
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm512_setzero_ps(); T];
    for (b, pb) in panel.iter().enumerate() {
        let mut isum = [_mm512_setzero_si512(); T];
        for (g, (q, sc)) in pb.q.iter().zip(&pb.sc).enumerate() {
            let wk = load_group(q);
            let sc = _mm512_load_si512(sc.as_ptr().cast());
            for t in 0..T {
                let y = acts[t].blocks[b].q.as_ptr().add(32 * g).cast();
                let init = _mm512_set1_epi32(acts[t].offset[b][g]);
                let group = _mm512_mullo_epi32(group_sums(&wk, y, init), sc);
                isum[t] = _mm512_add_epi32(isum[t], group);
            }
        }
        let dw = _mm512_load_ps(pb.d.as_ptr());
        for t in 0..T {
            let da = _mm512_set1_ps(acts[t].blocks[b].d);
            let dd = _mm512_mul_ps(dw, da);
            let dm = _mm512_mul_ps(_mm512_setzero_ps(), da);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), dd, acc[t]);
            accm[t] = _mm512_fmadd_ps(_mm512_setzero_ps(), dm, accm[t]);
        }
    }
    for ((o, a), m) in out.iter_mut().zip(acc).zip(accm) {
        _mm512_storeu_ps(o.as_mut_ptr(), _mm512_sub_ps(a, m));
    }
}

/// Products of an IQ4_XS weight that [`iq4xs_panel16_fits`] with `n_tok` rows of activations
/// (tokens x rows): ggml's IQ panel gemm, sixteen rows and four tokens at a time.
pub(crate) fn matmul_iq4xs_panel16(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_xs_acts,
        decode_iq4xs,
        |rows, acts, n_tok, out| {
            #[cfg(target_arch = "x86_64")]
            {
                let panel = xs_panel16(rows);
                super::panel::panel_tokens(
                    n_tok,
                    out,
                    |t0, y| {
                        let a = std::array::from_fn(|i| &acts[t0 + i]);
                        // SAFETY: `iq4xs_panel16_fits` checked AVX-512F and VNNI.
                        unsafe { dot_xs_panel16_vnni::<4>(&panel, a, y) }
                    },
                    // SAFETY: as above.
                    |t0, y| unsafe { dot_xs_panel16_vnni::<1>(&panel, [&acts[t0]], y) },
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (rows, acts, n_tok, out);
                unreachable!("the IQ4_XS panel runs only where iq4xs_panel16_fits");
            }
        },
    )
}

/// `ggml_vec_dot_mxfp4_q8_0` (AVX2) of one row and one token: the eight lanes of each block's
/// exact products (lane `l`: elements `4l..4l+3`) accumulate with `fma(d_a * d_w, lanes, acc)`
/// in two vectors, even blocks in one and odd in the other; their sum is reduced by
/// `hsum_float_8`, and an odd last block added as `fma(d, sum, total)`.
fn dot_mxfp4_vec_dot(w: &[NlBlock], a: &[ActBlock]) -> f32 {
    let mut acc = [[0f32; 8]; 2];
    let pairs = w.len() / 2 * 2;
    for (i, (wb, ab)) in w.iter().zip(a).take(pairs).enumerate() {
        let d = ab.d * wb.d;
        for (l, acc) in acc[i % 2].iter_mut().enumerate() {
            let lane: i32 = (4 * l..4 * l + 4)
                .map(|e| i32::from(wb.q[e]) * i32::from(ab.q[e]))
                .sum();
            *acc = d.mul_add(lane as f32, *acc);
        }
    }
    let sum: [f32; 8] = std::array::from_fn(|l| acc[0][l] + acc[1][l]);
    let mut total = crate::reduce::hsum_float_8(&sum);
    for (wb, ab) in w.iter().zip(a).skip(pairs) {
        let isum: i32 =
            wb.q.iter()
                .zip(&ab.q)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
        total = (ab.d * wb.d).mul_add(isum as f32, total);
    }
    total
}

/// Products of an MXFP4 weight ggml does not repack (rows not in groups of eight) with `n_tok`
/// rows of activations: its `vec_dot` for every token.
pub(crate) fn matmul_mxfp4_vec_dot(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_q8_0,
        |row| decode_nibbles(NibbleType::MXFP4, row),
        |rows, acts, n_tok, out| {
            for (i, wb) in rows.iter().enumerate() {
                for (t, a) in acts.iter().enumerate() {
                    out[i * n_tok + t] = dot_mxfp4_vec_dot(wb, a);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digest of the portable IQ4_NL form's results below, computed when the kernel was verified
    /// bit-exact against ggml (tests/ggml_ops.rs, zen4 and haswell).
    const PORTABLE_DIGEST: u64 = 0x76fc_c714_6024_cfdb;

    #[test]
    fn iq4_nl_avx2_and_portable_forms_give_the_same_bits() {
        let avx2 = crate::cpu::avx2_fma_hardware();
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let size = GgmlType::IQ4_NL.type_size() as usize;
        let mut portable = Vec::new();
        for nb in [1usize, 2, 7, 48] {
            let mut row: Vec<u8> = (0..size * nb).map(|_| next() as u8).collect();
            for b in row.chunks_exact_mut(size) {
                let d = f16::from_f32(0.001 + (next() % 100) as f32 * 1e-4);
                b[iq4nl::D..iq4nl::D + 2].copy_from_slice(&d.to_le_bytes());
            }
            let x: Vec<f32> = (0..QK4 * nb)
                .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
                .collect();
            let (w, a) = (decode_nibbles(NibbleType::IQ4NL, &row), quantize_q8_0(&x));
            let p = dot_iq4nl(&w, &a);
            portable.push(p);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: AVX2 and FMA detected above.
                let v = unsafe { dot_iq4nl_avx2(&w, &a) };
                assert_eq!(p.to_bits(), v.to_bits(), "{nb} blocks");
            }
        }
        assert_eq!(crate::kernels::bits_digest(&portable), PORTABLE_DIGEST);
    }
}
