//! FP4 block types: MXFP4 (OCP microscaling, E8M0 scale per 32) and NVFP4 (UE4M3 scale per 16).
//!
//! Both store E2M1 nibbles that select a `kvalues_mxfp4` level (the E2M1 value doubled);
//! the scale decoders halve the scale to compensate, as ggml's `ggml_e8m0_to_fp32_half` and
//! `ggml_ue4m3_to_fp32` do (`ggml/src/ggml-impl.h` at 80fb11ac). Every decoded scale is an
//! exact f32, and dequantization is `level·scale` as in `dequantize_row_mxfp4/nvfp4`.

use crate::block::blocks;
use crate::tables::KVALUES_MXFP4;

/// `block_mxfp4`: `e: u8` (E8M0 exponent), `qs[16]` (byte j: element j low, j + 16 high).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod mxfp4 {
    pub const ELEMS: usize = 32;
    pub const E: usize = 0;
    pub const QS: usize = 1;
    pub const BYTES: usize = QS + ELEMS / 2;
}

/// `block_nvfp4`: `d[4]` (UE4M3 scale per 16 elements), `qs[32]` (8 bytes per 16 elements:
/// byte j holds element j low, j + 8 high).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod nvfp4 {
    pub const ELEMS: usize = 64;
    pub const SUB: usize = 16;
    pub const D: usize = 0;
    pub const QS: usize = D + ELEMS / SUB;
    pub const BYTES: usize = QS + ELEMS / 2;
}

const _: () = assert!(mxfp4::BYTES == 17);
const _: () = assert!(nvfp4::BYTES == 36);

/// `2^(e − 128)`: half of the E8M0 scale `2^(e − 127)`, built from its bits (subnormal for
/// e < 2). E8M0's NaN code 255 is not special-cased, as in ggml.
pub fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// Half of the unsigned E4M3 value of `x` (bias 7, 3 mantissa bits, bit 7 ignored); 0 and
/// the NaN code 0x7f decode to 0.
fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = i32::from((x >> 3) & 0x0f);
    let man = f32::from(x & 7);
    // Both forms are exact: man·2^-9 and (1 + man/8)·2^(exp−7) have at most 4 significant bits.
    let raw = if exp == 0 {
        man * pow2(-9)
    } else {
        (1.0 + man / 8.0) * pow2(exp - 7)
    };
    raw * 0.5
}

/// `2^k` for a normal-range `k`, exactly (what `ldexpf(1, k)` gives).
fn pow2(k: i32) -> f32 {
    debug_assert!((-126..=127).contains(&k));
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `n` nibble-packed FP4 weights: byte `j` of `qs` holds element `j` (low nibble) and
/// `j + n/2` (high), each `kvalues_mxfp4[nibble]·d`.
#[inline(always)]
fn put_fp4(y: &mut [f32], d: f32, qs: &[u8]) {
    let (lo, hi) = y.split_at_mut(y.len() / 2);
    for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(qs) {
        *lo = f32::from(KVALUES_MXFP4[usize::from(q & 0x0f)]) * d;
        *hi = f32::from(KVALUES_MXFP4[usize::from(q >> 4)]) * d;
    }
}

pub(super) fn dequantize_mxfp4(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ mxfp4::BYTES }, { mxfp4::ELEMS }>(src, dst) {
        put_fp4(y, e8m0_half(b[mxfp4::E]), &b[mxfp4::QS..]);
    }
}

pub(super) fn dequantize_nvfp4(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ nvfp4::BYTES }, { nvfp4::ELEMS }>(src, dst) {
        for (s, y16) in y.chunks_exact_mut(nvfp4::SUB).enumerate() {
            let d = ue4m3_half(b[nvfp4::D + s]);
            put_fp4(
                y16,
                d,
                &b[nvfp4::QS + s * nvfp4::SUB / 2..][..nvfp4::SUB / 2],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::types::GgmlType;

    #[test]
    fn block_sizes_match_type_table() {
        assert_eq!(GgmlType::MXFP4.type_size(), mxfp4::BYTES as u64);
        assert_eq!(GgmlType::MXFP4.block_size(), mxfp4::ELEMS as u64);
        assert_eq!(GgmlType::NVFP4.type_size(), nvfp4::BYTES as u64);
        assert_eq!(GgmlType::NVFP4.block_size(), nvfp4::ELEMS as u64);
    }

    #[test]
    fn scale_decoders() {
        assert_eq!(e8m0_half(127), 0.5);
        assert_eq!(e8m0_half(0), 2f32.powi(-64) * 2f32.powi(-64));
        assert_eq!(e8m0_half(1), 2f32.powi(-64) * 2f32.powi(-63));
        assert_eq!(e8m0_half(255), 2f32.powi(127));
        assert_eq!(ue4m3_half(0x38), 0.5); // exp 7, man 0: 1.0
        assert_eq!(ue4m3_half(0x01), 2f32.powi(-10)); // subnormal 2^-9, halved
        assert_eq!(ue4m3_half(0x7e), 224.0); // 448 halved
        assert_eq!(ue4m3_half(0x7f), 0.0);
        assert_eq!(ue4m3_half(0x80), 0.0);
        assert_eq!(ue4m3_half(0xff), 240.0); // bit 7 ignored: exp 15, man 7
    }
}
