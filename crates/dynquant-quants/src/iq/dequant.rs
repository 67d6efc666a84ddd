//! I-quants: the codebook types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S and
//! the non-linear 4-bit types IQ4_NL, IQ4_XS.
//!
//! The codebook types cut a 256-element super-block into eight 32-element sub-blocks, each
//! with a small integer scale, and each sub-block into groups of 8 (or 4) weights that are
//! one entry of a fixed grid (`tables.rs`): the grid gives the magnitudes, a sign byte gives
//! the signs (bit `j` set = weight `j` negative). IQ1 grids hold signed values {-1, 0, 1}
//! shifted by ±1/8 instead. Block layouts are byte offsets below (`ggml/src/ggml-common.h`,
//! `block_iq*`); how indices, signs and scales are packed is described at each function.
//!
//! Arithmetic follows ggml's scalar `dequantize_row_iq*` (`ggml/src/ggml-quants.c` at
//! 80fb11ac) in order and rounding, e.g. IQ2_XXS forms `(d·(0.5 + s))·0.25` and then
//! `(db·magnitude)·(±1)`, so results are bit-identical.

use crate::block::{blocks, f16_at, QK_K};
use crate::tables::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS,
    KSIGNS_IQ2XS, KVALUES_IQ4NL,
};

/// `IQ1S_DELTA` = `IQ1M_DELTA`: the shift applied to every IQ1 grid value.
const IQ1_DELTA: f32 = 0.125;

/// `block_iq2_xxs`: `d: f16`, then per sub-block 8 bytes: 4 grid indices (one per group of
/// 8), then a u32 holding four 7-bit sign patterns (bits 0..28) and a 4-bit scale (bits 28..32).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq2xxs {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const BYTES: usize = QS + 8 * 8;
}

/// `block_iq2_xs`: `d: f16`, `qs: u16[32]` (9-bit grid index | 7-bit sign pattern << 9),
/// `scales[8]` (two 4-bit scales per sub-block: groups 0-1, then 2-3).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq2xs {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const SCALES: usize = QS + 2 * 32;
    pub const BYTES: usize = SCALES + 8;
}

/// `block_iq2_s`: `d: f16`, `qs[32]` (low 8 bits of the grid indices), `signs[32]` (one
/// plain sign byte per group), `qh[8]` (2 high index bits per group), `scales[8]` as IQ2_XS.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq2s {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const SIGNS: usize = QS + 32;
    pub const QH: usize = SIGNS + 32;
    pub const SCALES: usize = QH + 8;
    pub const BYTES: usize = SCALES + 8;
}

/// `block_iq3_xxs`: `d: f16`, `qs[64]` (one grid index per group of 4), then per sub-block a
/// u32: four 7-bit sign patterns (one per 8 weights) and a 4-bit scale in bits 28..32.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq3xxs {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const SCALES_SIGNS: usize = QS + 64;
    pub const BYTES: usize = SCALES_SIGNS + 4 * 8;
}

/// `block_iq3_s`: `d: f16`, `qs[64]` (low 8 bits of the grid indices, per group of 4),
/// `qh[8]` (ninth index bits, one byte per sub-block), `signs[32]` (plain sign bytes, per 8),
/// `scales[4]` (two 4-bit scales per byte: sub-blocks 2i and 2i+1).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq3s {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const QH: usize = QS + 64;
    pub const SIGNS: usize = QH + 8;
    pub const SCALES: usize = SIGNS + 32;
    pub const BYTES: usize = SCALES + 4;
}

/// `block_iq1_s`: `d: f16`, `qs[32]` (low 8 bits of the 11-bit grid indices), `qh: u16[8]`
/// (per sub-block: 3 high index bits per group, 3-bit scale in bits 12..15, delta sign in 15).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq1s {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const QH: usize = QS + 32;
    pub const BYTES: usize = QH + 2 * 8;
}

/// `block_iq1_m`: `qs[32]` (low index bits), `qh[16]` (per group a nibble: 3 high index bits
/// and the delta sign), `scales: u16[4]` (four 3-bit scales each in bits 0..12; the fp16
/// super-scale is spread over bits 12..16 of the four words, lowest nibble first).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq1m {
    pub const QS: usize = 0;
    pub const QH: usize = QS + 32;
    pub const SCALES: usize = QH + 16;
    pub const BYTES: usize = SCALES + 8;
}

/// `block_iq4_nl`: `d: f16`, `qs[16]` (byte j: element j low nibble, j + 16 high nibble).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq4nl {
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const BYTES: usize = QS + 16;
    pub const ELEMS: usize = 32;
}

/// `block_iq4_xs`: `d: f16`, `scales_h: u16` (high 2 bits of 8 scales), `scales_l[4]` (low
/// nibbles), `qs[128]` (16 bytes per sub-block, packed as IQ4_NL).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod iq4xs {
    pub const D: usize = 0;
    pub const SCALES_H: usize = 2;
    pub const SCALES_L: usize = 4;
    pub const QS: usize = SCALES_L + 4;
    pub const BYTES: usize = QS + 128;
}

const _: () = assert!(iq2xxs::BYTES == 66);
const _: () = assert!(iq2xs::BYTES == 74);
const _: () = assert!(iq2s::BYTES == 82);
const _: () = assert!(iq3xxs::BYTES == 98);
const _: () = assert!(iq3s::BYTES == 110);
const _: () = assert!(iq1s::BYTES == 50);
const _: () = assert!(iq1m::BYTES == 56);
const _: () = assert!(iq4nl::BYTES == 18);
const _: () = assert!(iq4xs::BYTES == 136);

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes `(scale·magnitude_j)·(±1)` for 8 weights: byte `j` of `grid` is the magnitude of
/// weight `j`, bit `j` of `signs` makes it negative.
#[inline(always)]
fn put_signed8(y: &mut [f32], scale: f32, grid: u64, signs: u8) {
    let g = grid.to_le_bytes();
    for ((y, &g), &mask) in y[..8].iter_mut().zip(&g).zip(&KMASK_IQ2XS) {
        let sign = if signs & mask != 0 { -1.0 } else { 1.0 };
        *y = scale * f32::from(g) * sign;
    }
}

/// Two 4-weight grid entries as one 8-weight entry (first in the low half).
fn join4(first: u32, second: u32) -> u64 {
    u64::from(first) | (u64::from(second) << 32)
}

/// The 8 signs of a 7-bit pattern (`ksigns_iq2xs`: the eighth bit makes the parity even).
fn signs7(pattern: u32) -> u8 {
    KSIGNS_IQ2XS[(pattern & 127) as usize]
}

/// IQ2_XXS/IQ2_XS/IQ2_S sub-block scale: `d·(0.5 + s)·0.25`.
fn iq2_scale(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

pub(super) fn dequantize_iq2_xxs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq2xxs::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq2xxs::D);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let at = iq2xxs::QS + 8 * ib;
            let aux = u32_at(b, at + 4);
            let db = iq2_scale(d, aux >> 28);
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                let grid = IQ2XXS_GRID[usize::from(b[at + l])];
                put_signed8(y8, db, grid, signs7(aux >> (7 * l)));
            }
        }
    }
}

pub(super) fn dequantize_iq2_xs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq2xs::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq2xs::D);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let sc = b[iq2xs::SCALES + ib];
            let db = [
                iq2_scale(d, u32::from(sc & 0x0f)),
                iq2_scale(d, u32::from(sc >> 4)),
            ];
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                let q = u16_at(b, iq2xs::QS + 2 * (4 * ib + l));
                let grid = IQ2XS_GRID[usize::from(q & 511)];
                put_signed8(y8, db[l / 2], grid, signs7(u32::from(q >> 9)));
            }
        }
    }
}

pub(super) fn dequantize_iq2_s(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq2s::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq2s::D);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let sc = b[iq2s::SCALES + ib];
            let db = [
                iq2_scale(d, u32::from(sc & 0x0f)),
                iq2_scale(d, u32::from(sc >> 4)),
            ];
            let qh = usize::from(b[iq2s::QH + ib]);
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                let g = 4 * ib + l;
                let index = usize::from(b[iq2s::QS + g]) | (((qh >> (2 * l)) & 3) << 8);
                put_signed8(y8, db[l / 2], IQ2S_GRID[index], b[iq2s::SIGNS + g]);
            }
        }
    }
}

pub(super) fn dequantize_iq3_xxs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq3xxs::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq3xxs::D);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let aux = u32_at(b, iq3xxs::SCALES_SIGNS + 4 * ib);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            let qs = &b[iq3xxs::QS + 8 * ib..][..8];
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                let first = IQ3XXS_GRID[usize::from(qs[2 * l])];
                let second = IQ3XXS_GRID[usize::from(qs[2 * l + 1])];
                put_signed8(y8, db, join4(first, second), signs7(aux >> (7 * l)));
            }
        }
    }
}

pub(super) fn dequantize_iq3_s(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq3s::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq3s::D);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let sc = (b[iq3s::SCALES + ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let db = d * f32::from(1 + 2 * sc);
            // Group of 4 number k takes its ninth index bit from bit k of qh.
            let qh = usize::from(b[iq3s::QH + ib]);
            let index = |k: usize| usize::from(b[iq3s::QS + 8 * ib + k]) | (((qh >> k) & 1) << 8);
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                let grid = join4(IQ3S_GRID[index(2 * l)], IQ3S_GRID[index(2 * l + 1)]);
                put_signed8(y8, db, grid, b[iq3s::SIGNS + 4 * ib + l]);
            }
        }
    }
}

/// Writes `dl·(g_j + delta)` for the 8 signed grid values `g_j` (bytes of `grid`, as i8).
#[inline(always)]
fn put_iq1(y: &mut [f32], dl: f32, grid: u64, delta: f32) {
    let g = grid.to_le_bytes();
    for (y, &g) in y[..8].iter_mut().zip(&g) {
        *y = dl * (f32::from(g as i8) + delta);
    }
}

/// `-IQ1_DELTA` when `negative`, else `IQ1_DELTA`.
fn iq1_delta(negative: bool) -> f32 {
    if negative {
        -IQ1_DELTA
    } else {
        IQ1_DELTA
    }
}

pub(super) fn dequantize_iq1_s(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq1s::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq1s::D);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let qh = u16_at(b, iq1s::QH + 2 * ib);
            let dl = d * f32::from(2 * ((qh >> 12) & 7) + 1);
            let delta = iq1_delta(qh & 0x8000 != 0);
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                let high = usize::from((qh >> (3 * l)) & 7);
                let index = usize::from(b[iq1s::QS + 4 * ib + l]) | (high << 8);
                put_iq1(y8, dl, IQ1S_GRID[index], delta);
            }
        }
    }
}

/// The IQ1_M fp16 super-scale: the top nibbles of the four scale words, lowest first.
fn iq1m_super_scale(sc: &[u16; 4]) -> u16 {
    (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)
}

pub(super) fn dequantize_iq1_m(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq1m::BYTES }, QK_K>(src, dst) {
        let sc: [u16; 4] = core::array::from_fn(|i| u16_at(b, iq1m::SCALES + 2 * i));
        let d = crate::float::f16_to_f32(iq1m_super_scale(&sc));
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            // Two 3-bit scales per sub-block (groups 0-1, then 2-3), 6 bits per sub-block.
            let s = sc[ib / 2] >> (6 * (ib % 2));
            let dl = [
                d * f32::from(2 * (s & 7) + 1),
                d * f32::from(2 * ((s >> 3) & 7) + 1),
            ];
            for (l, y8) in y32.chunks_exact_mut(8).enumerate() {
                // Group l's nibble: 3 high index bits, then the delta sign.
                let nib = b[iq1m::QH + 2 * ib + l / 2] >> (4 * (l % 2));
                let index = usize::from(b[iq1m::QS + 4 * ib + l]) | (usize::from(nib & 7) << 8);
                put_iq1(y8, dl[l / 2], IQ1S_GRID[index], iq1_delta(nib & 8 != 0));
            }
        }
    }
}

/// 32 IQ4 weights: byte `j` of `qs` holds element `j` (low nibble) and `j + 16` (high),
/// each selecting a `kvalues_iq4nl` level that is multiplied by `d`.
#[inline(always)]
fn put_iq4(y: &mut [f32], d: f32, qs: &[u8]) {
    let (lo, hi) = y[..32].split_at_mut(16);
    for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&qs[..16]) {
        *lo = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
        *hi = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
    }
}

pub(super) fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq4nl::BYTES }, { iq4nl::ELEMS }>(src, dst) {
        put_iq4(y, f16_at(b, iq4nl::D), &b[iq4nl::QS..]);
    }
}

pub(super) fn dequantize_iq4_xs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ iq4xs::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, iq4xs::D);
        let scales_h = u16_at(b, iq4xs::SCALES_H);
        for (ib, y32) in y.chunks_exact_mut(32).enumerate() {
            let low = (b[iq4xs::SCALES_L + ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let high = ((scales_h >> (2 * ib)) & 3) as u8;
            let ls = i32::from(low | (high << 4));
            let dl = d * (ls - 32) as f32;
            put_iq4(y32, dl, &b[iq4xs::QS + 16 * ib..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::types::GgmlType;

    #[test]
    fn block_sizes_match_type_table() {
        for (ty, bytes) in [
            (GgmlType::IQ2_XXS, iq2xxs::BYTES),
            (GgmlType::IQ2_XS, iq2xs::BYTES),
            (GgmlType::IQ2_S, iq2s::BYTES),
            (GgmlType::IQ3_XXS, iq3xxs::BYTES),
            (GgmlType::IQ3_S, iq3s::BYTES),
            (GgmlType::IQ1_S, iq1s::BYTES),
            (GgmlType::IQ1_M, iq1m::BYTES),
            (GgmlType::IQ4_NL, iq4nl::BYTES),
            (GgmlType::IQ4_XS, iq4xs::BYTES),
        ] {
            assert_eq!(ty.type_size(), bytes as u64, "{ty}");
        }
        assert_eq!(GgmlType::IQ4_NL.block_size(), iq4nl::ELEMS as u64);
    }

    #[test]
    fn iq1m_super_scale_gathers_top_nibbles() {
        let sc = [0x1abc, 0x2def, 0x3123, 0x4456];
        assert_eq!(iq1m_super_scale(&sc), 0x4321);
    }

    #[test]
    fn sign_patterns_have_even_parity() {
        for p in 0..128u32 {
            let s = signs7(p);
            assert_eq!(u32::from(s & 127), p);
            assert_eq!(s.count_ones() % 2, 0);
        }
    }
}
