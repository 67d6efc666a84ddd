//! Matrix products between stored (mmap'd) weights of any ggml type and f32 activations, with
//! llama.cpp's CPU numerics (activations rounded to the weight's `vec_dot_type`, see
//! [`crate::dot`]) or exact f32 numerics. This file only picks the kernel of each product
//! ([`crate::kernels`] holds them).
//!
//! Layout: a weight has `rows` output rows of `cols` values each (ggml `ne0 = cols`,
//! `ne1 = rows`); activations are `n_tok` rows of `cols` values; the result is `n_tok` rows of
//! `rows` values. Every kernel splits the work over tiles of weight rows with rayon and computes
//! each output value in one task in a fixed order, so results do not depend on the thread
//! count.

use dynquant_gguf::GgmlType;

use crate::dot::DotType;
use crate::error::{EngineError, Result};
use crate::kernels::iq4::NibbleType;
use crate::kernels::kquant::{LanePath, LaneType};
use crate::kernels::{
    expert, float, iq4, iquant, iquant::IqType, kquant, legacy, legacy::LegacyType,
};
pub use crate::weight::Weight;

/// How matrix products round their activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numerics {
    /// As llama.cpp's CPU backend: activations converted to the weight's `vec_dot_type`.
    #[default]
    Llama,
    /// Activations kept in f32 (dequantized weight times exact activation).
    Exact,
}

/// The kernel of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// ggml-cpu's integer dot products of Q4_0, Q4_1, Q5_0 and Q8_0 weights.
    Legacy(LegacyType),
    /// ggml-cpu's repacked Q4_K kernels (`gemv/gemm_q4_K_8x8_q8_K`).
    Q4K,
    /// ggml-cpu's Q6_K dot product.
    Q6K,
    /// ggml-cpu's Q2_K, Q3_K, Q5_K and IQ4_XS kernels (`vec_dot` with eight lanes per
    /// super-block, repacked Q2_K on AVX-512, IQ4_XS's panel gemm for batches).
    Lanes(LaneType, LanePath),
    /// ggml-cpu's repacked IQ4_NL, Q4_0 and MXFP4 kernels (`gemv/gemm_*_8x8_q8_0`).
    Nibbles(NibbleType),
    /// ggml-cpu's MXFP4 `vec_dot` (weights it does not repack).
    Mxfp4VecDot,
    /// ggml-cpu's dot products of the codebook i-quants.
    IQuant(IqType),
    /// Dequantized rows times activations rounded to this dot type (f32 for exact numerics).
    Dequantized(DotType),
}

/// Which kernel multiplies `w` with the given numerics. With llama.cpp's numerics, the types
/// with integer kernels take them; every other type [`Weight::new`] accepted (it has a dot type
/// and a dequantizer) takes the dequantized path.
fn kernel(w: &Weight<'_>, numerics: Numerics) -> Kernel {
    if numerics == Numerics::Exact {
        return Kernel::Dequantized(DotType::F32);
    }
    // ggml repacks IQ4_NL and Q4_0 weights whose rows come in groups of eight on every AVX2
    // build (Q2_K ones on AVX-512 builds: `LanePath`)
    if w.rows.is_multiple_of(8) && crate::cpu::fused() {
        match w.ty {
            GgmlType::IQ4_NL => return Kernel::Nibbles(NibbleType::IQ4NL),
            GgmlType::Q4_0 => return Kernel::Nibbles(NibbleType::Q4_0),
            GgmlType::MXFP4 => return Kernel::Nibbles(NibbleType::MXFP4),
            _ => {}
        }
    }
    if w.ty == GgmlType::MXFP4 && crate::cpu::fused() {
        return Kernel::Mxfp4VecDot;
    }
    if let Some(l) = LegacyType::of(w.ty) {
        return Kernel::Legacy(l);
    }
    if let Some(iq) = IqType::of(w.ty) {
        return Kernel::IQuant(iq);
    }
    match w.ty {
        GgmlType::Q6_K => Kernel::Q6K,
        // ggml repacks Q4_K weights whose rows come in groups of eight
        GgmlType::Q4_K if w.rows.is_multiple_of(8) => Kernel::Q4K,
        ty => match LaneType::of(ty) {
            Some(l) => {
                let avx512 = crate::cpu::flavor() == crate::cpu::Flavor::Avx512;
                let path = match l {
                    LaneType::Q2K if w.rows.is_multiple_of(8) && avx512 => LanePath::Q2KRepacked,
                    LaneType::IQ4XS if w.rows.is_multiple_of(8) && crate::cpu::fused() => {
                        LanePath::Panel
                    }
                    _ => LanePath::VecDot,
                };
                Kernel::Lanes(l, path)
            }
            None => Kernel::Dequantized(w.dot_type()),
        },
    }
}

/// Which ggml op a product reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `ggml_mul_mat`: the kernel may depend on the batch (tinyBLAS, repacked gemm).
    MulMat,
    /// One expert's share of `ggml_mul_mat_id` (the rows routed to it): ggml-cpu runs the
    /// single-row `vec_dot` (or a repacked weight's gemv) for each row; only the IQ panel gemm
    /// still takes batches (of at least 8 rows per expert, as for `mul_mat`).
    MulMatId,
}

/// `x` (`n_tok` x `w.cols`) times `w` transposed: returns `n_tok` x `w.rows`.
pub fn matmul(w: &Weight<'_>, x: &[f32], n_tok: usize, numerics: Numerics) -> Result<Vec<f32>> {
    product(w, x, n_tok, numerics, Op::MulMat)
}

/// One expert of a 3-D expert tensor times the `n_tok` rows routed to it, in the float order of
/// ggml-cpu's `mul_mat_id` (which differs from [`matmul`]'s for F16 and F32 weights and for
/// repacked Q4_K and Q2_K weights): returns `n_tok` x `w.rows`.
pub fn matmul_expert(
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
    numerics: Numerics,
) -> Result<Vec<f32>> {
    product(w, x, n_tok, numerics, Op::MulMatId)
}

fn product(
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
    numerics: Numerics,
    op: Op,
) -> Result<Vec<f32>> {
    let k = w.cols;
    if x.len() != n_tok * k {
        return Err(EngineError::Invalid(format!(
            "matmul {}: {} activations for {n_tok} tokens of {k}",
            w.name,
            x.len()
        )));
    }
    if n_tok == 0 || w.rows == 0 {
        return Ok(Vec::new());
    }
    Ok(match kernel(w, numerics) {
        Kernel::Legacy(l) => legacy::matmul(l, w, x, n_tok),
        Kernel::Q4K if op == Op::MulMatId => expert::matmul_q4k_gemv(w, x, n_tok),
        Kernel::Lanes(LaneType::Q2K, LanePath::Q2KRepacked) if op == Op::MulMatId => {
            expert::matmul_q2k_gemv(w, x, n_tok)
        }
        Kernel::Dequantized(dt) if op == Op::MulMatId => {
            return float::matmul_each_token(w, x, n_tok, dt)
        }
        Kernel::Q4K => kquant::matmul_q4k(w, x, n_tok),
        Kernel::Q6K => kquant::matmul_q6k(w, x, n_tok),
        Kernel::Lanes(LaneType::IQ4XS, LanePath::Panel) if iq4::iq4xs_panel16_fits(w, n_tok) => {
            iq4::matmul_iq4xs_panel16(w, x, n_tok)
        }
        Kernel::Lanes(l, path) => kquant::matmul_lanes(l, path, w, x, n_tok),
        Kernel::Nibbles(ty) => iq4::matmul_nibbles(ty, w, x, n_tok),
        Kernel::Mxfp4VecDot => iq4::matmul_mxfp4_vec_dot(w, x, n_tok),
        Kernel::IQuant(iq) => iquant::matmul(iq, w, x, n_tok),
        Kernel::Dequantized(dt) => return float::matmul(w, x, n_tok, dt),
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn odd_shapes_match_a_plain_product() {
        let (k, n, t) = (40, 7, 5);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let x: Vec<f32> = (0..k * t).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let wt = Weight::new("w", GgmlType::F32, k, n, Cow::Owned(bytes)).unwrap();
        let y = matmul(&wt, &x, t, Numerics::Llama).unwrap();
        for ti in 0..t {
            for r in 0..n {
                let e: f32 = (0..k).map(|j| w[r * k + j] * x[ti * k + j]).sum();
                assert_eq!(y[ti * n + r], e, "token {ti} row {r}");
            }
        }
    }
}
