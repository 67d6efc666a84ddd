//! Legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Block layouts (`ggml/src/ggml-common.h`): Q4_0 `{d: f16, qs[16]}`, Q4_1 `{d, m: f16, qs[16]}`,
//! Q5_0 `{d, qh: u32, qs[16]}`, Q5_1 `{d, m, qh, qs[16]}`, Q8_0 `{d, qs: i8[32]}`. Nibble byte
//! `j` holds element `j` (low) and `j + 16` (high); bit `j` of `qh` is element `j`'s fifth bit.
//! Dequantization is `q * d` (`+ m` for the `_1` types), unfused, as in ggml's scalar code.

use super::float::f16_to_f32;

const QK: usize = 32;

fn half_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub(super) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        for j in 0..16 {
            let q = b[2 + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let m = half_at(b, 2);
        for j in 0..16 {
            let q = b[4 + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

fn fifth_bits(qh: u32, j: usize) -> (u8, u8) {
    let lo = ((qh >> j) << 4) as u8 & 0x10;
    let hi = (qh >> (j + 12)) as u8 & 0x10;
    (lo, hi)
}

pub(super) fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let q = b[6 + j];
            let (lo, hi) = fifth_bits(qh, j);
            y[j] = (((q & 0x0f) | lo) as i32 - 16) as f32 * d;
            y[j + 16] = (((q >> 4) | hi) as i32 - 16) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let m = half_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..16 {
            let q = b[8 + j];
            let (lo, hi) = fifth_bits(qh, j);
            y[j] = ((q & 0x0f) | lo) as f32 * d + m;
            y[j + 16] = ((q >> 4) | hi) as f32 * d + m;
        }
    }
}

pub(super) fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        for j in 0..QK {
            y[j] = b[2 + j] as i8 as f32 * d;
        }
    }
}
