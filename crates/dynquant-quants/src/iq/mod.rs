//! I-quants: the codebook types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S
//! (`codebook.rs`; their grids are in `crate::tables`) and the non-linear 4-bit types IQ4_NL,
//! IQ4_XS (`iq4.rs`); `dequant.rs` decodes all of them bit-exactly with ggml.

mod codebook;
mod dequant;
mod iq4;

use crate::codec::{BlockCheck, Codec};
use dynquant_gguf::types::GgmlType;

/// Byte offsets of every field of the i-quant blocks (`ggml/src/ggml-common.h`).
pub mod layout {
    pub use super::dequant::{iq1m, iq1s, iq2s, iq2xs, iq2xxs, iq3s, iq3xxs, iq4nl, iq4xs};
}

/// The codebook types' grids (`ggml-common.h`'s `iq*_grid`): each entry packs the magnitudes
/// (IQ1: the signed values) of a group of 8 (IQ3: 4) weights, one per byte, first weight in the
/// lowest byte; read by the engine's integer kernels.
pub mod grids {
    pub use crate::tables::{
        IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID,
    };
}

use dequant::{iq1m, iq1s, iq2s, iq2xs, iq2xxs, iq3s, iq3xxs, iq4nl, iq4xs};

/// Codec rows of the i-quants; the checked scale is the f16 `d` (IQ1_M: the super-scale spread
/// over its scale words).
pub(crate) const CODECS: &[Codec] = &[
    Codec::new(
        GgmlType::IQ2_XXS,
        dequant::dequantize_iq2_xxs,
        |x, _, w, out| {
            codebook::quantize_iq2_xxs(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq2xxs::D]),
    ),
    Codec::new(
        GgmlType::IQ2_XS,
        dequant::dequantize_iq2_xs,
        |x, _, w, out| {
            codebook::quantize_iq2_xs(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq2xs::D]),
    ),
    Codec::new(
        GgmlType::IQ2_S,
        dequant::dequantize_iq2_s,
        |x, _, w, out| {
            codebook::quantize_iq2_s(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq2s::D]),
    ),
    Codec::new(
        GgmlType::IQ3_XXS,
        dequant::dequantize_iq3_xxs,
        |x, _, w, out| {
            codebook::quantize_iq3_xxs(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq3xxs::D]),
    ),
    Codec::new(
        GgmlType::IQ3_S,
        dequant::dequantize_iq3_s,
        |x, _, w, out| {
            codebook::quantize_iq3_s(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq3s::D]),
    ),
    Codec::new(
        GgmlType::IQ1_S,
        dequant::dequantize_iq1_s,
        |x, _, w, out| {
            codebook::quantize_iq1_s(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq1s::D]),
    ),
    Codec::new(
        GgmlType::IQ1_M,
        dequant::dequantize_iq1_m,
        |x, _, w, out| {
            codebook::quantize_iq1_m(x, w, out);
            true
        },
        BlockCheck::Iq1mSuperScale(iq1m::SCALES),
    ),
    Codec::new(
        GgmlType::IQ4_NL,
        dequant::dequantize_iq4_nl,
        |x, _, w, out| {
            iq4::quantize_iq4_nl(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq4nl::D]),
    ),
    Codec::new(
        GgmlType::IQ4_XS,
        dequant::dequantize_iq4_xs,
        |x, _, w, out| {
            iq4::quantize_iq4_xs(x, w, out);
            true
        },
        BlockCheck::HalfScalesAt(&[iq4xs::D]),
    ),
];
