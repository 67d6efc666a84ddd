//! The products ggml-cpu's `mul_mat_id` computes differently from a dense `mul_mat` of the same
//! rows (ggml-cpu.c `ggml_compute_forward_mul_mat_id`, repack.cpp `forward_mul_mat_id`): a
//! repacked weight's expert product runs the single-token gemv for every routed row, never the
//! gemm of four tokens, so Q4_K (and Q2_K on AVX-512 builds) sum whole super-blocks for every
//! token.

use super::kquant::{
    decode_q2k, decode_q4k, dot_q2k_repacked_best, dot_q4k_best, quantize_q8k_impl,
};
use super::layout::QK_K;
use crate::weight::Weight;

/// A repacked Q4_K expert times `n_tok` routed rows (tokens x rows): `gemv_q4_K_8x8_q8_K` for
/// each row.
pub(crate) fn matmul_q4k_gemv(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_q8k_impl,
        decode_q4k,
        |rows, acts, n_tok, out| {
            for (t, a) in acts.iter().enumerate() {
                for (i, wb) in rows.iter().enumerate() {
                    out[i * n_tok + t] = dot_q4k_best(wb, a, QK_K);
                }
            }
        },
    )
}

/// A repacked Q2_K expert (AVX-512 builds) times `n_tok` routed rows (tokens x rows):
/// `gemv_q2_K_8x8_q8_K` for each row.
pub(crate) fn matmul_q2k_gemv(w: &Weight<'_>, x: &[f32], n_tok: usize) -> Vec<f32> {
    super::tiled::tiled_product(
        w,
        x,
        n_tok,
        quantize_q8k_impl,
        decode_q2k,
        |rows, acts, n_tok, out| {
            for (t, a) in acts.iter().enumerate() {
                for (i, wb) in rows.iter().enumerate() {
                    out[i * n_tok + t] = dot_q2k_repacked_best(wb, a, QK_K);
                }
            }
        },
    )
}
