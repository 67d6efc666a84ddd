//! 4-bit floating-point microscaling types: MXFP4 (decoded and quantized) and NVFP4 (decoded).

mod dequant;
mod quantize;

use crate::codec::{BlockCheck, Codec};
use dynquant_gguf::types::GgmlType;

/// Byte offsets of every field of these blocks (`ggml/src/ggml-common.h`).
pub mod layout {
    pub use super::dequant::{mxfp4, nvfp4};
}

pub use dequant::e8m0_half;

/// Codec rows. MXFP4's E8M0 exponent byte must not be 0xFF (E8M0 NaN, rejected by ggml).
pub(crate) const CODECS: &[Codec] = &[
    Codec::new(
        GgmlType::MXFP4,
        dequant::dequantize_mxfp4,
        |x, _, w, out| {
            quantize::quantize_mxfp4(x, w, out);
            true
        },
        BlockCheck::E8m0At(dequant::mxfp4::E),
    ),
    Codec::read_only(GgmlType::NVFP4, dequant::dequantize_nvfp4),
];
