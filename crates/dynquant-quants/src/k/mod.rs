//! K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (weights) and Q8_K (the dot-product intermediate).
//! `dequant.rs` decodes (bit-exact with ggml), `quantize.rs` searches (our own algorithms).

mod dequant;
mod quantize;

use crate::codec::{BlockCheck, Codec, DequantizeFn};
use dynquant_gguf::types::GgmlType;

/// Byte offsets of every field of the K-quant super-blocks (`ggml/src/ggml-common.h`).
pub mod layout {
    pub use super::dequant::{q2k, q3k, q4k, q5k, q6k, q8k};
}

use dequant::{q2k, q3k, q4k, q5k, q6k};

/// A K-quant row: searches run under shaped importance; the checked scales are `d` (and
/// `dmin`).
const fn kquant(
    ty: GgmlType,
    dequantize: DequantizeFn,
    quantize: crate::codec::QuantizeRowFn,
    scales: &'static [usize],
) -> Codec {
    Codec {
        shapes_importance: true,
        ..Codec::new(ty, dequantize, quantize, BlockCheck::HalfScalesAt(scales))
    }
}

/// Codec rows of the K-quants. Without an imatrix the `_plain` searches minimise the plain
/// squared error (ggml's choice there); with one, the importance-weighted searches.
pub(crate) const CODECS: &[Codec] = &[
    kquant(
        GgmlType::Q2_K,
        dequant::dequantize_q2_k,
        |x, given, w, out| {
            match given {
                None => quantize::quantize_q2_k_plain(x, w, out),
                Some(_) => quantize::quantize_q2_k(x, w, out),
            }
            true
        },
        &[q2k::D, q2k::DMIN],
    ),
    kquant(
        GgmlType::Q3_K,
        dequant::dequantize_q3_k,
        |x, given, w, out| {
            match given {
                None => quantize::quantize_q3_k_plain(x, w, out),
                Some(_) => quantize::quantize_q3_k(x, w, out),
            }
            true
        },
        &[q3k::D],
    ),
    kquant(
        GgmlType::Q4_K,
        dequant::dequantize_q4_k,
        |x, given, w, out| {
            match given {
                None => quantize::quantize_q4_k_plain(x, w, out),
                Some(_) => quantize::quantize_q4_k(x, w, out),
            }
            true
        },
        &[q4k::D, q4k::DMIN],
    ),
    kquant(
        GgmlType::Q5_K,
        dequant::dequantize_q5_k,
        |x, given, w, out| {
            match given {
                None => quantize::quantize_q5_k_plain(x, w, out),
                Some(_) => quantize::quantize_q5_k(x, w, out),
            }
            true
        },
        &[q5k::D, q5k::DMIN],
    ),
    kquant(
        GgmlType::Q6_K,
        dequant::dequantize_q6_k,
        |x, _, w, out| {
            quantize::quantize_q6_k(x, w, out);
            true
        },
        &[q6k::D],
    ),
    Codec::read_only(GgmlType::Q8_K, dequant::dequantize_q8_k),
];
