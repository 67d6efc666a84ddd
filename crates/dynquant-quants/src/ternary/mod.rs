//! Ternary and 1-/2-bit types: TQ1_0, TQ2_0 (decoded and quantized) and Q1_0, Q2_0 (decoded).

mod dequant;
mod quantize;

use crate::codec::{BlockCheck, Codec};
use dynquant_gguf::types::GgmlType;

/// Byte offsets of every field of these blocks (`ggml/src/ggml-common.h`).
pub mod layout {
    pub use super::dequant::{q1, q2, tq1, tq2};
}

use dequant::{tq1, tq2};

/// Codec rows; the ternary blocks keep their f16 `d` at the end.
pub(crate) const CODECS: &[Codec] = &[
    Codec::new(
        GgmlType::TQ1_0,
        dequant::dequantize_tq1_0,
        |x, _, w, out| {
            quantize::quantize_tq1_0(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[tq1::D]),
    ),
    Codec::new(
        GgmlType::TQ2_0,
        dequant::dequantize_tq2_0,
        |x, _, w, out| {
            quantize::quantize_tq2_0(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[tq2::D]),
    ),
    Codec::read_only(GgmlType::Q1_0, dequant::dequantize_q1_0),
    Codec::read_only(GgmlType::Q2_0, dequant::dequantize_q2_0),
];
