//! Ternary and other 1-2 bit linear types: TQ1_0, TQ2_0, Q1_0, Q2_0.
//!
//! All four store plain integer levels times one fp16 scale `d`:
//! TQ1_0/TQ2_0 levels {-1, 0, 1}, Q2_0 levels {-1, 0, 1, 2}, Q1_0 signs {-1, +1}. Layouts are
//! byte offsets below (`ggml/src/ggml-common.h`, `block_tq*` / `block_q1_0` / `block_q2_0`);
//! dequantization follows ggml's scalar `dequantize_row_*` (`ggml/src/ggml-quants.c` at
//! 80fb11ac), `(level as f32)·d`, so results are bit-identical.

use crate::block::{blocks, f16_at, QK_K};

/// `block_tq1_0`: `qs[48]` (5 trits per byte, base-3 fixed point), `qh[4]` (4 trits per
/// byte, same encoding), `d: f16`.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod tq1 {
    use super::QK_K;
    pub const QS: usize = 0;
    pub const QH: usize = QS + (QK_K - 4 * QK_K / 64) / 5;
    pub const D: usize = QH + QK_K / 64;
    pub const BYTES: usize = D + 2;
}

/// `block_tq2_0`: `qs[64]` (2 bits per element), `d: f16`.
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod tq2 {
    use super::QK_K;
    pub const QS: usize = 0;
    pub const D: usize = QS + QK_K / 4;
    pub const BYTES: usize = D + 2;
}

/// `block_q1_0`: `d: f16`, `qs[16]` (bit j of the row of bits is element j).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q1 {
    pub const ELEMS: usize = 128;
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const BYTES: usize = QS + ELEMS / 8;
}

/// `block_q2_0`: `d: f16`, `qs[16]` (bits 2(j%4) of byte j/4 are element j).
#[allow(missing_docs)] // offsets named after the fields of ggml-common.h's struct
pub mod q2 {
    pub const ELEMS: usize = 64;
    pub const D: usize = 0;
    pub const QS: usize = 2;
    pub const BYTES: usize = QS + ELEMS / 4;
}

const _: () = assert!(tq1::BYTES == 54);
const _: () = assert!(tq2::BYTES == 66);
const _: () = assert!(q1::BYTES == 18);
const _: () = assert!(q2::BYTES == 18);

/// Powers of 3 selecting trit `n` of a TQ1_0 byte.
const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Unpacks TQ1_0 trits: byte `b` stores its trits as the base-3 fraction `b/256·3^k`, so
/// trit `n` is the integer part of `3·(b·3^n mod 256)/256`. Output `n·len + m` is trit `n`
/// of `bytes[m]`, scaled: `(trit − 1)·d`.
fn put_trits(y: &mut [f32], bytes: &[u8], n_trits: usize, d: f32) {
    let len = bytes.len();
    for (n, y) in y.chunks_exact_mut(len).take(n_trits).enumerate() {
        for (y, &b) in y.iter_mut().zip(bytes) {
            let q = b.wrapping_mul(POW3[n]);
            let trit = (u16::from(q) * 3) >> 8;
            *y = (i32::from(trit) - 1) as f32 * d;
        }
    }
}

pub(super) fn dequantize_tq1_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ tq1::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, tq1::D);
        // Elements 0..160: 5 trits of qs[0..32]; 160..240: 5 of qs[32..48]; 240..256: 4 of qh.
        let (y_a, rest) = y.split_at_mut(160);
        let (y_b, y_c) = rest.split_at_mut(80);
        put_trits(y_a, &b[tq1::QS..tq1::QS + 32], 5, d);
        put_trits(y_b, &b[tq1::QS + 32..tq1::QH], 5, d);
        put_trits(y_c, &b[tq1::QH..tq1::D], 4, d);
    }
}

pub(super) fn dequantize_tq2_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ tq2::BYTES }, QK_K>(src, dst) {
        let d = f16_at(b, tq2::D);
        // Per 128 elements, 32 bytes: element 32l + m is bits 2l of byte m.
        for (c, y128) in y.chunks_exact_mut(128).enumerate() {
            let qs = &b[tq2::QS + 32 * c..][..32];
            for (l, y32) in y128.chunks_exact_mut(32).enumerate() {
                for (y, &q) in y32.iter_mut().zip(qs) {
                    *y = (i32::from((q >> (2 * l)) & 3) - 1) as f32 * d;
                }
            }
        }
    }
}

pub(super) fn dequantize_q1_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q1::BYTES }, { q1::ELEMS }>(src, dst) {
        let d = f16_at(b, q1::D);
        let neg_d = -d;
        for (y8, &q) in y.chunks_exact_mut(8).zip(&b[q1::QS..]) {
            for (j, y) in y8.iter_mut().enumerate() {
                *y = if (q >> j) & 1 != 0 { d } else { neg_d };
            }
        }
    }
}

pub(super) fn dequantize_q2_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<{ q2::BYTES }, { q2::ELEMS }>(src, dst) {
        let d = f16_at(b, q2::D);
        for (y4, &q) in y.chunks_exact_mut(4).zip(&b[q2::QS..]) {
            for (j, y) in y4.iter_mut().enumerate() {
                *y = (i32::from((q >> (2 * j)) & 3) - 1) as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::types::GgmlType;

    #[test]
    fn block_sizes_match_type_table() {
        for (ty, bytes, elems) in [
            (GgmlType::TQ1_0, tq1::BYTES, QK_K),
            (GgmlType::TQ2_0, tq2::BYTES, QK_K),
            (GgmlType::Q1_0, q1::BYTES, q1::ELEMS),
            (GgmlType::Q2_0, q2::BYTES, q2::ELEMS),
        ] {
            assert_eq!(ty.type_size(), bytes as u64, "{ty}");
            assert_eq!(ty.block_size(), elems as u64, "{ty}");
        }
    }

    #[test]
    fn tq1_trits_decode_base3_bytes() {
        // ggml packs 5 trits t0..t4 as ceil((sum t_i 3^(4-i)) * 256 / 243).
        for value in 0..243u16 {
            let byte = ((value * 256).div_ceil(243)) as u8;
            let mut y = [0f32; 5];
            put_trits(&mut y, &[byte], 5, 1.0);
            let mut want = [0f32; 5];
            let mut v = value;
            for t in (0..5).rev() {
                want[t] = (v % 3) as f32 - 1.0;
                v /= 3;
            }
            assert_eq!(y, want, "value {value}");
        }
    }
}
