//! F32, F16 and BF16 element conversions.

/// IEEE binary16 bits to f32 (exact).
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// f32 to IEEE binary16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// bfloat16 bits to f32 (exact: the bits are the high half of an f32).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bfloat16 bits as ggml's `ggml_compute_fp32_to_bf16` does: NaN is kept quiet
/// (`0x0040` set), everything else rounds to nearest even.
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

pub(super) fn f32_le_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

pub(super) fn f16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    // Eight values per instruction where the CPU has F16C (it decodes every F16 weight the
    // engine multiplies, so element-wise conversion was the bottleneck of F16 models).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: both features were detected at run time.
        unsafe { f16_le_to_f32_f16c(src, dst) };
        return;
    }
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c,avx")]
unsafe fn f16_le_to_f32_f16c(src: &[u8], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = dst.len().min(src.len() / 2);
    let whole = n / 8 * 8;
    for (d, s) in dst[..whole]
        .chunks_exact_mut(8)
        .zip(src[..2 * whole].chunks_exact(16))
    {
        // SAFETY: `s` holds 16 readable bytes and `d` 8 writable f32s; both intrinsics take
        // unaligned pointers. (x86 is little-endian, so the bytes are the f16 lanes.)
        unsafe {
            let h = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for (d, c) in dst[whole..n]
        .iter_mut()
        .zip(src[2 * whole..].chunks_exact(2))
    {
        *d = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

pub(super) fn bf16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

fn quantize_f32(x: &[f32], _: Option<&[f32]>, _: &[f32], out: &mut [u8]) -> bool {
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
    true
}

fn quantize_f16(x: &[f32], _: Option<&[f32]>, _: &[f32], out: &mut [u8]) -> bool {
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f32_to_f16(v).to_le_bytes());
    }
    true
}

fn quantize_bf16(x: &[f32], _: Option<&[f32]>, _: &[f32], out: &mut [u8]) -> bool {
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
    }
    true
}

use crate::codec::{BlockCheck, Codec};
use dynquant_gguf::types::GgmlType;

/// Codec rows of the plain float types (round to nearest even; an F16/BF16 value that
/// overflows to infinity is an out-of-range input).
pub(crate) const CODECS: &[Codec] = &[
    Codec::new(
        GgmlType::F32,
        f32_le_to_f32,
        quantize_f32,
        BlockCheck::Nothing,
    ),
    Codec::new(
        GgmlType::F16,
        f16_le_to_f32,
        quantize_f16,
        BlockCheck::HalfFloatValues(0x7c00),
    ),
    Codec::new(
        GgmlType::BF16,
        bf16_le_to_f32,
        quantize_bf16,
        BlockCheck::HalfFloatValues(0x7f80),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_to_nearest_even() {
        // 1 + 2^-11 is exactly half-way between 1 and the next f16: rounds to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // overflows to inf
    }

    #[test]
    fn bf16_matches_ggml_rule() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        // Half-way cases round to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::NAN) & 0x7fc0, 0x7fc0);
    }
}
