//! Conversions between f32 rows and stored ggml types.
//!
//! This module grows one family at a time (see the "Quantization formats" issue). Present:
//! the plain float types (F32, F16, BF16) both ways, and dequantization of the legacy
//! 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), bit-exact with ggml's
//! `dequantize_row_*` (`ggml/src/ggml-quants.c` at the pinned reference).

mod float;
mod legacy;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

use crate::types::GgmlType;

/// Errors of row conversion.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantError {
    /// The type has no dequantizer (yet).
    #[error("dequantization of {0} is not supported")]
    UnsupportedDequant(GgmlType),
    /// The type has no encoder (yet).
    #[error("conversion to {0} is not supported")]
    UnsupportedEncode(GgmlType),
    /// Input and output lengths do not describe the same number of whole blocks.
    #[error("{ty}: {bytes} bytes do not hold {elements} elements")]
    LengthMismatch {
        /// Type.
        ty: GgmlType,
        /// Bytes given.
        bytes: usize,
        /// Elements requested.
        elements: usize,
    },
}

fn check_lengths(ty: GgmlType, bytes: usize, elements: usize) -> Result<(), QuantError> {
    let expected = ty.info().bytes_for(elements as u64);
    if expected != Some(bytes as u64) {
        return Err(QuantError::LengthMismatch {
            ty,
            bytes,
            elements,
        });
    }
    Ok(())
}

/// Whether [`dequantize`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`, one f32 per element.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => float::f32_le_to_f32(src, dst),
        GgmlType::F16 => float::f16_le_to_f32(src, dst),
        GgmlType::BF16 => float::bf16_le_to_f32(src, dst),
        GgmlType::Q4_0 => legacy::dequantize_q4_0(src, dst),
        GgmlType::Q4_1 => legacy::dequantize_q4_1(src, dst),
        GgmlType::Q5_0 => legacy::dequantize_q5_0(src, dst),
        GgmlType::Q5_1 => legacy::dequantize_q5_1(src, dst),
        GgmlType::Q8_0 => legacy::dequantize_q8_0(src, dst),
        other => return Err(QuantError::UnsupportedDequant(other)),
    }
    Ok(())
}

/// Encodes f32 values as a plain float type (F32, F16 or BF16, round to nearest even),
/// appending little-endian bytes to `out`.
pub fn encode_float(ty: GgmlType, src: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => src
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgmlType::F16 => src
            .iter()
            .for_each(|&x| out.extend_from_slice(&f32_to_f16(x).to_le_bytes())),
        GgmlType::BF16 => src
            .iter()
            .for_each(|&x| out.extend_from_slice(&f32_to_bf16(x).to_le_bytes())),
        other => return Err(QuantError::UnsupportedEncode(other)),
    }
    Ok(())
}
