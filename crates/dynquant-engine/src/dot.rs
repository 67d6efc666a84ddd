//! The activation side of ggml's CPU matrix products.
//!
//! ggml-cpu multiplies a weight of type `T` by f32 activations by first converting the
//! activations to `T`'s `vec_dot_type` (ggml-cpu.c, `type_traits_cpu`) and then taking dot
//! products between the two stored forms. The numerics of a quantized model in llama.cpp are
//! therefore those of the weight *and* of this activation rounding. [`round_row`] reproduces the
//! rounding: it returns the activation values exactly as the dot product sees them (the
//! dequantized form of the quantized activations), so a float dot product with the dequantized
//! weight row gives llama.cpp's result up to float summation order.

use dynquant_gguf::GgmlType;
use half::{bf16, f16};

/// The type activations are converted to before a dot product with a weight (named as ggml
/// names the types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum DotType {
    /// Unchanged f32.
    F32,
    /// Rounded to f16 (round to nearest even).
    F16,
    /// Rounded to bf16.
    BF16,
    /// Blocks of 32 with an f16 scale and i8 values.
    Q8_0,
    /// As Q8_0 plus an f16 per-block `d * sum(q)`, used with the weight's block minimum.
    Q8_1,
    /// Blocks of 256 with an f32 scale and i8 values.
    Q8_K,
}

impl DotType {
    /// Elements per activation block.
    pub fn block(self) -> usize {
        match self {
            DotType::F32 | DotType::F16 | DotType::BF16 => 1,
            DotType::Q8_0 | DotType::Q8_1 => 32,
            DotType::Q8_K => 256,
        }
    }
}

/// ggml-cpu's `vec_dot_type` for a weight type, or `None` when the type cannot be a matrix
/// product weight. (Origin: ggml/src/ggml-cpu/ggml-cpu.c, `type_traits_cpu`.)
pub fn vec_dot_type(ty: GgmlType) -> Option<DotType> {
    use GgmlType::*;
    Some(match ty {
        F32 => DotType::F32,
        F16 => DotType::F16,
        BF16 => DotType::BF16,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 | NVFP4 => DotType::Q8_0,
        // Q1_0 and Q2_0 are newer block types without a K-quant super-block; ggml pairs
        // its 32-element-family types with Q8_0.
        Q1_0 | Q2_0 => DotType::Q8_0,
        Q4_1 | Q5_1 => DotType::Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S
        | IQ1_M | IQ4_XS | TQ1_0 | TQ2_0 => DotType::Q8_K,
        _ => return None,
    })
}

/// Q8_K's inverse scale of a 256-value block (`quantize_row_q8_K_ref`): `-127 / max`, where
/// `max` is the value of largest magnitude with its sign (the first of equal magnitudes); `None`
/// for an all-zero block.
#[inline(always)]
pub(crate) fn q8k_iscale(xb: &[f32]) -> Option<f32> {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax != 0.0).then(|| -127.0 / max)
}

/// Round to nearest, ties to even, as `_mm256_round_ps(.., _MM_ROUND_NEAREST)` and ggml's
/// `nearest_int` do.
#[inline]
fn round_even(x: f32) -> f32 {
    x.round_ties_even()
}

/// Nearest integer, ties to even, for |x| < 2^22 (ggml's `nearest_int`: adding 1.5 * 2^23
/// makes the float addition do the rounding). No library call, unlike `round_ties_even`
/// without SSE4.1.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    ((x + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Writes into `out` the values `x` takes after conversion to `dt` (and back to f32). For
/// [`DotType::Q8_1`] the per-block correction `s - f16(d) * sum(q)` is pushed to `corr`: ggml
/// multiplies the weight's block minimum by the stored `s`, not by the sum of the rounded
/// values. `x.len()` must be a multiple of `dt.block()`.
pub fn round_row(dt: DotType, x: &[f32], out: &mut [f32], corr: &mut Vec<f32>) {
    debug_assert_eq!(x.len(), out.len());
    match dt {
        DotType::F32 => out.copy_from_slice(x),
        DotType::F16 => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = f16::from_f32(v).to_f32();
            }
        }
        DotType::BF16 => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = bf16::from_f32(v).to_f32();
            }
        }
        DotType::Q8_0 | DotType::Q8_1 => {
            // ggml-cpu x86 quantize_row_q8_0/q8_1: d = amax/127 stored as f16, q = round(x*127/amax).
            for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let dh = f16::from_f32(d).to_f32();
                let mut sum = 0i32;
                for (o, &v) in ob.iter_mut().zip(xb) {
                    let q = round_even(v * id);
                    sum += q as i32;
                    *o = dh * q;
                }
                if dt == DotType::Q8_1 {
                    let s = f16::from_f32(d * sum as f32).to_f32();
                    corr.push(s - dh * sum as f32);
                }
            }
        }
        DotType::Q8_K => {
            // quantize_row_q8_K_ref: the value of largest magnitude keeps its sign,
            // iscale = -127/max, q = min(127, nearest_int(iscale*x)), d = 1/iscale (f32).
            for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(256)) {
                let Some(iscale) = q8k_iscale(xb) else {
                    ob.fill(0.0);
                    continue;
                };
                let d = 1.0 / iscale;
                for (o, &v) in ob.iter_mut().zip(xb) {
                    let q = round_even(iscale * v).min(127.0);
                    *o = d * q;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rounding_matches_definition() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 * 0.13 - 1.4)
            .collect();
        let mut out = vec![0.0; 64];
        let mut corr = Vec::new();
        round_row(DotType::Q8_1, &x, &mut out, &mut corr);
        assert_eq!(corr.len(), 2);
        for (b, (xb, ob)) in x.chunks(32).zip(out.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let dh = f16::from_f32(amax / 127.0).to_f32();
            for (&v, &o) in xb.iter().zip(ob) {
                let q = o / dh;
                assert!((q - q.round()).abs() < 1e-3 && q.abs() <= 127.0);
                assert!((o - v).abs() <= dh * 0.51 + amax * 1e-3, "{o} vs {v}");
            }
            assert!(corr[b].abs() < amax * 0.1);
        }
    }

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for i in -4000..4000 {
            let x = i as f32 * 0.25 + 0.0001 * (i % 3) as f32;
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
        }
        assert_eq!(nearest_int(-127.0), -127);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-3.5), -4);
    }

    #[test]
    fn q8_k_keeps_the_extreme_exact() {
        let mut x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.7).sin()).collect();
        x[17] = -3.0;
        let mut out = vec![0.0; 256];
        round_row(DotType::Q8_K, &x, &mut out, &mut Vec::new());
        assert_eq!(out[17], -3.0);
        let d = 3.0 / 127.0;
        for (&v, &o) in x.iter().zip(&out) {
            assert!((v - o).abs() <= d * 0.5001);
        }
    }
}
