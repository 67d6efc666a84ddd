//! K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (weights) and Q8_K (dot-product intermediate).
//!
//! Every type packs 256 elements (`QK_K`) into one super-block whose layout is given below as
//! byte offsets (`ggml/src/ggml-common.h`, `block_q*_K`; packed, little-endian). Within a
//! super-block, sub-block scales are small integers multiplied by one or two fp16 super-scales
//! (`d`, and `dmin` for the types with a minimum), and element `e` is
//! `d·scale[e/16 or e/32] · q_e − dmin·min[…]`.
//!
//! Dequantization reproduces ggml's scalar `dequantize_row_q*_K` (`ggml/src/ggml-quants.c`
//! at 80fb11ac) operation for operation: products are formed in the same order and never
//! fused, so results are bit-identical, including for subnormal and huge scales.

use crate::block::{blocks, f16_at, QK_K};

/// `block_q2_K`: `scales[16]` (low nibble scale, high nibble min, one pair per 16 elements),
/// `qs[64]` (2-bit quants), `d: f16`, `dmin: f16`.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q2k {
    use super::QK_K;
    pub const SCALES: usize = 0;
    pub const QS: usize = SCALES + QK_K / 16;
    pub const D: usize = QS + QK_K / 4;
    pub const DMIN: usize = D + 2;
    pub const BYTES: usize = DMIN + 2;
}

/// `block_q3_K`: `hmask[32]` (third bit), `qs[64]` (low 2 bits), `scales[12]` (16 × 6-bit,
/// offset by 32), `d: f16`.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q3k {
    use super::QK_K;
    pub const HMASK: usize = 0;
    pub const QS: usize = HMASK + QK_K / 8;
    pub const SCALES: usize = QS + QK_K / 4;
    pub const D: usize = SCALES + 12;
    pub const BYTES: usize = D + 2;
}

/// `block_q4_K`: `d: f16`, `dmin: f16`, `scales[12]` (8 × 6-bit scales and mins, see
/// `scale_min_k4`), `qs[128]` (nibbles).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q4k {
    use super::QK_K;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QS: usize = SCALES + 12;
    pub const BYTES: usize = QS + QK_K / 2;
}

/// `block_q5_K`: as Q4_K with `qh[32]` (fifth bits) between `scales` and `qs`.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q5k {
    use super::QK_K;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QH: usize = SCALES + 12;
    pub const QS: usize = QH + QK_K / 8;
    pub const BYTES: usize = QS + QK_K / 2;
}

/// `block_q6_K`: `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales: i8[16]`, `d: f16`.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q6k {
    use super::QK_K;
    pub const QL: usize = 0;
    pub const QH: usize = QL + QK_K / 2;
    pub const SCALES: usize = QH + QK_K / 4;
    pub const D: usize = SCALES + QK_K / 16;
    pub const BYTES: usize = D + 2;
}

/// `block_q8_K`: `d: f32`, `qs: i8[256]`, `bsums: i16[16]` (sums of 16 quants; unused here).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q8k {
    use super::QK_K;
    pub const D: usize = 0;
    pub const QS: usize = 4;
    pub const BSUMS: usize = QS + QK_K;
    pub const BYTES: usize = BSUMS + 2 * QK_K / 16;
}

// Block sizes as in ggml's static_asserts (and the type table, checked in the tests below).
const _: () = assert!(q2k::BYTES == 84);
const _: () = assert!(q3k::BYTES == 110);
const _: () = assert!(q4k::BYTES == 144);
const _: () = assert!(q5k::BYTES == 176);
const _: () = assert!(q6k::BYTES == 210);
const _: () = assert!(q8k::BYTES == 292);

/// Where the 2 bits of element `e` of a 128-element half of Q2_K/Q3_K/Q6_K-style packing
/// live: 16-element group `s = e / 16` reads byte `16·(s % 2) + lane` of the half's 32 bytes,
/// at bit shift `2·(s / 2)`.
fn two_bit_group(s: usize) -> (usize, u32) {
    (16 * (s % 2), 2 * (s as u32 / 2))
}

pub(super) fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q2k::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, q2k::D);
        let dmin = f16_at(b, q2k::DMIN);
        let scales = &b[q2k::SCALES..q2k::QS];
        for (s, (y16, &sc)) in y.chunks_exact_mut(16).zip(scales).enumerate() {
            let dl = d * f32::from(sc & 0x0f);
            let ml = dmin * f32::from(sc >> 4);
            let (off, shift) = two_bit_group(s % 8);
            let q = &b[q2k::QS + 32 * (s / 8) + off..][..16];
            for (y, &q) in y16.iter_mut().zip(q) {
                *y = dl * f32::from((q >> shift) & 3) - ml;
            }
        }
    }
}

/// The 16 signed 6-bit Q3_K scales: the low nibble of scale `i` is nibble `i / 8` of
/// `sc[i % 8]`, its high 2 bits are bits `2·(i / 4)` of `sc[8 + i % 4]`; stored offset by 32.
fn q3k_scales(sc: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

pub(super) fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q3k::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, q3k::D);
        let scales = q3k_scales(&b[q3k::SCALES..q3k::D]);
        let hmask = &b[q3k::HMASK..q3k::QS];
        for (s, (y16, &sc)) in y.chunks_exact_mut(16).zip(&scales).enumerate() {
            let dl = d * f32::from(sc);
            let (off, shift) = two_bit_group(s % 8);
            let q = &b[q3k::QS + 32 * (s / 8) + off..][..16];
            // The high bit of element e sits in hmask byte (e % 32), bit (e / 32).
            let hbit = (s / 2) as u32;
            let h = &hmask[off..][..16];
            for ((y, &q), &h) in y16.iter_mut().zip(q).zip(h) {
                let low = i32::from((q >> shift) & 3);
                let minus = if (h >> hbit) & 1 != 0 { 0 } else { 4 };
                *y = dl * (low - minus) as f32;
            }
        }
    }
}

/// Scale and min of 32-element sub-block `j` (0..8) from the 12-byte Q4_K/Q5_K packing
/// (`get_scale_min_k4`): for `j < 4` the low 6 bits of bytes `j` and `j + 4`; otherwise
/// the nibbles of byte `j + 4` with the top 2 bits of bytes `j − 4` (scale) and `j` (min).
fn scale_min_k4(sc: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (sc[j] & 63, sc[j + 4] & 63)
    } else {
        let scale = (sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4);
        let min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        (scale, min)
    }
}

/// `(d·scale, dmin·min)` of sub-block `j`, as ggml forms them.
fn k4_factors(d: f32, dmin: f32, sc: &[u8], j: usize) -> (f32, f32) {
    let (scale, min) = scale_min_k4(sc, j);
    (d * f32::from(scale), dmin * f32::from(min))
}

pub(super) fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q4k::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, q4k::D);
        let dmin = f16_at(b, q4k::DMIN);
        let sc = &b[q4k::SCALES..q4k::QS];
        // 64 elements per 32 bytes: low nibbles first (sub-block 2c), then high (2c + 1).
        for (c, y64) in y.chunks_exact_mut(64).enumerate() {
            let (d1, m1) = k4_factors(d, dmin, sc, 2 * c);
            let (d2, m2) = k4_factors(d, dmin, sc, 2 * c + 1);
            let q = &b[q4k::QS + 32 * c..][..32];
            let (lo, hi) = y64.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * f32::from(q & 0x0f) - m1;
                *hi = d2 * f32::from(q >> 4) - m2;
            }
        }
    }
}

pub(super) fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q5k::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, q5k::D);
        let dmin = f16_at(b, q5k::DMIN);
        let sc = &b[q5k::SCALES..q5k::QH];
        let qh = &b[q5k::QH..q5k::QS];
        // As Q4_K; the fifth bit of element l of sub-block j is bit j of qh[l].
        for (c, y64) in y.chunks_exact_mut(64).enumerate() {
            let (d1, m1) = k4_factors(d, dmin, sc, 2 * c);
            let (d2, m2) = k4_factors(d, dmin, sc, 2 * c + 1);
            let q = &b[q5k::QS + 32 * c..][..32];
            let (lo, hi) = y64.split_at_mut(32);
            for (((lo, hi), &q), &h) in lo.iter_mut().zip(hi).zip(q).zip(qh) {
                let h_lo = ((h >> (2 * c)) & 1) << 4;
                let h_hi = ((h >> (2 * c + 1)) & 1) << 4;
                *lo = d1 * f32::from((q & 0x0f) + h_lo) - m1;
                *hi = d2 * f32::from((q >> 4) + h_hi) - m2;
            }
        }
    }
}

pub(super) fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q6k::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, q6k::D);
        // Per 128-element half c: ql[64], qh[32], 8 scales. Quarter k (32 elements) takes the
        // low (k < 2) or high nibble of ql[32·(k % 2) + l] and bits 2k of qh[l].
        for (c, y128) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b[q6k::QL + 64 * c..][..64];
            let qh = &b[q6k::QH + 32 * c..][..32];
            let sc = &b[q6k::SCALES + 8 * c..][..8];
            for (k, y32) in y128.chunks_exact_mut(32).enumerate() {
                let ql = &ql[32 * (k % 2)..][..32];
                let (nshift, hshift) = (4 * (k / 2), 2 * k);
                for (h, y16) in y32.chunks_exact_mut(16).enumerate() {
                    let ds = d * f32::from(sc[2 * k + h] as i8);
                    let ql = &ql[16 * h..][..16];
                    let qh = &qh[16 * h..][..16];
                    for ((y, &l), &hb) in y16.iter_mut().zip(ql).zip(qh) {
                        let q = ((l >> nshift) & 0x0f) | (((hb >> hshift) & 3) << 4);
                        *y = ds * f32::from(q as i8 - 32);
                    }
                }
            }
        }
    }
}

pub(super) fn dequantize_q8_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q8k::BYTES }, QK_K>(src, dst) {
        let d = f32::from_le_bytes([b[q8k::D], b[q8k::D + 1], b[q8k::D + 2], b[q8k::D + 3]]);
        for (y, &q) in y.iter_mut().zip(&b[q8k::QS..q8k::BSUMS]) {
            *y = d * f32::from(q as i8);
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
            (GgmlType::Q2_K, q2k::BYTES),
            (GgmlType::Q3_K, q3k::BYTES),
            (GgmlType::Q4_K, q4k::BYTES),
            (GgmlType::Q5_K, q5k::BYTES),
            (GgmlType::Q6_K, q6k::BYTES),
            (GgmlType::Q8_K, q8k::BYTES),
        ] {
            assert_eq!(ty.type_size(), bytes as u64, "{ty}");
            assert_eq!(ty.block_size(), QK_K as u64, "{ty}");
        }
    }

    #[test]
    fn k4_scale_unpacking() {
        // Scales 0..8 = 1..8 and mins 9..16, with the high bits of j >= 4 exercised.
        let scales: [u8; 8] = [1, 2, 3, 4, 37, 50, 63, 18];
        let mins: [u8; 8] = [9, 10, 11, 12, 60, 33, 7, 48];
        let mut sc = [0u8; 12];
        for j in 0..4 {
            sc[j] = scales[j] | ((scales[j + 4] >> 4) << 6);
            sc[j + 4] = mins[j] | ((mins[j + 4] >> 4) << 6);
            sc[j + 8] = (scales[j + 4] & 0x0f) | ((mins[j + 4] & 0x0f) << 4);
        }
        for j in 0..8 {
            assert_eq!(scale_min_k4(&sc, j), (scales[j], mins[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q3k_scale_unpacking() {
        let want: [i8; 16] = core::array::from_fn(|i| (i as i8 * 4) - 32);
        let mut sc = [0u8; 12];
        for (i, &w) in want.iter().enumerate() {
            let v = (w + 32) as u8;
            sc[i % 8] |= (v & 0x0f) << (4 * (i / 8));
            sc[8 + i % 4] |= (v >> 4) << (2 * (i / 4));
        }
        assert_eq!(q3k_scales(&sc), want);
    }
}
