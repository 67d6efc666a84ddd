//! dynquant-quants: conversions between f32 rows and stored ggml types.
//!
//! * Dequantization of every stored ggml type ([`dequantize`]), bit-exact with ggml's
//!   `to_float` at the pinned reference (llama.cpp 80fb11ac).
//! * Quantization ([`quantize_rows`]) for every weight type: our own importance-weighted
//!   searches, scored on exactly what ggml will dequantize (f16-rounded scales), producing
//!   blocks ggml validates. Every algorithm is described at the top of its file.
//! * Kernels live by family: [`float`] (F32/F16/BF16), `legacy` (Q4_0..Q8_0), [`k`] (K-quants),
//!   `iq` (i-quants and their grids), `ternary` (TQ1_0, TQ2_0, Q1_0, Q2_0), `fp4` (MXFP4,
//!   NVFP4). Each family declares its types' rows of the codec table (`codec.rs`: decoder,
//!   quantizer, block validity rule); every per-type dispatch below derives from that table.
//! * Block layouts (byte offsets of every field, from `ggml/src/ggml-common.h`) are public in
//!   [`legacy::layout`], [`k::layout`], [`iq::layout`], [`ternary::layout`] and [`fp4::layout`], so other crates (the
//!   evaluation engine) decode blocks from the same source.
//! * Input rows are checked (NaN/Inf is a typed error naming row and column), every produced
//!   block is checked like `ggml_validate_row_data`, and types that need an importance matrix
//!   refuse to run without one ([`QuantError::NeedsImatrix`]); a caller may opt into uniform
//!   weights explicitly by passing them (the pipeline's `--imatrix-fallback`).
#![deny(missing_docs)]

mod block;
mod codec;
pub mod float;
pub mod fp4;
pub mod iq;
pub mod k;
pub mod legacy;
mod tables;
pub mod ternary;
#[cfg(test)]
mod test_rows;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

use codec::{BlockCheck, Codec};
use dynquant_gguf::types::{GgmlType, ImatrixNeed};

/// Every family's rows.
const FAMILIES: &[&[Codec]] = &[
    float::CODECS,
    legacy::CODECS,
    k::CODECS,
    iq::CODECS,
    ternary::CODECS,
    fp4::CODECS,
];

/// The codec row of `ty`, if dynquant can decode it.
pub(crate) fn codec(ty: GgmlType) -> Option<&'static Codec> {
    FAMILIES.iter().flat_map(|f| f.iter()).find(|c| c.ty == ty)
}

/// Errors of row conversion.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum QuantError {
    /// The type needs an importance matrix and none was given.
    #[error("{0} needs an importance matrix (--imatrix), or an explicit fallback weighting")]
    NeedsImatrix(GgmlType),
    /// An input value is NaN or infinite.
    #[error("input row {row}, column {col} is {value}")]
    NonFiniteInput {
        /// Row index within the call.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// An importance weight is negative or not finite.
    #[error("importance weight {col} is {value}")]
    BadImportance {
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A produced block does not hold finite scales (values beyond the type's range).
    #[error("row {row}: a {ty} block scale overflows (input magnitude beyond the type's range)")]
    InvalidBlock {
        /// Type.
        ty: GgmlType,
        /// Row index within the call.
        row: usize,
    },
    /// The row length does not divide into blocks, or buffers disagree with it.
    #[error("{ty}: rows of {n_per_row} elements do not fit the given buffers ({src} values, {dst} bytes)")]
    BadRowShape {
        /// Type.
        ty: GgmlType,
        /// Elements per row.
        n_per_row: usize,
        /// Input values.
        src: usize,
        /// Output bytes.
        dst: usize,
    },
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
    codec(ty).is_some()
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`, one f32 per element.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    let codec = codec(ty).ok_or(QuantError::UnsupportedDequant(ty))?;
    (codec.dequantize)(src, dst);
    Ok(())
}

/// Whether [`quantize_rows`] handles `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    codec(ty).is_some_and(|c| c.quantize.is_some())
}

/// Whether every value is finite: exponent bits OR-ed over 8 lanes (vectorizes; no early
/// exit, as the check almost always passes).
fn all_finite(x: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    let mut acc = [0u32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] |= u32::from(c[k].to_bits() & EXP == EXP);
        }
    }
    acc.iter().all(|&a| a == 0) && tail.iter().all(|v| v.is_finite())
}

/// Quantizes rows of `n_per_row` values from `src` into `dst` (whole rows of `ty`), choosing
/// levels to minimise the squared error weighted by `importance` (one weight per column: the
/// imatrix slice of this matrix or expert; uniform when `None`). Every input value is checked
/// (NaN/Inf is an error naming its row and column) and every produced block is checked for
/// finite scales, as ggml's `ggml_validate_row_data` would.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    importance: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let row_bytes = ty.row_bytes(n_per_row as u64).map(|b| b as usize);
    let shape_ok = n_per_row > 0
        && src.len().is_multiple_of(n_per_row)
        && row_bytes.is_some_and(|rb| rb.checked_mul(src.len() / n_per_row) == Some(dst.len()));
    let (Some(row_bytes), true) = (row_bytes, shape_ok) else {
        return Err(QuantError::BadRowShape {
            ty,
            n_per_row,
            src: src.len(),
            dst: dst.len(),
        });
    };
    let (Some(codec), Some(quantize_row)) = (codec(ty), codec(ty).and_then(|c| c.quantize)) else {
        return Err(QuantError::UnsupportedEncode(ty));
    };
    if ty.info().imatrix == ImatrixNeed::Required && importance.is_none() {
        return Err(QuantError::NeedsImatrix(ty));
    }
    let ones;
    let weights = match importance {
        Some(w) => {
            if w.len() != n_per_row {
                return Err(QuantError::BadRowShape {
                    ty,
                    n_per_row,
                    src: w.len(),
                    dst: dst.len(),
                });
            }
            if let Some((col, &value)) = w
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(QuantError::BadImportance { col, value });
            }
            w
        }
        None => {
            ones = vec![1f32; n_per_row];
            &ones
        }
    };
    let shape_kquant = codec.shapes_importance;
    let mut shaped = Vec::new();
    for (row, (x, out)) in src
        .chunks_exact(n_per_row)
        .zip(dst.chunks_exact_mut(row_bytes))
        .enumerate()
    {
        // K-quants search under shaped weights (see `shape_importance`).
        let weights: &[f32] = if shape_kquant && all_finite(x) {
            shape_importance(x, weights, &mut shaped);
            &shaped
        } else {
            weights
        };
        let non_finite = |x: &[f32]| {
            x.iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
                .map(|(col, &value)| QuantError::NonFiniteInput { row, col, value })
        };
        // Some quantizers without importance check their input on the way (each block's
        // error is non-finite if a value is); the others are checked before quantizing.
        let checked_on_the_way = importance.is_none() && codec.checks_input_on_the_way;
        if !checked_on_the_way && !all_finite(x) {
            if let Some(e) = non_finite(x) {
                return Err(e);
            }
        }
        let finite = quantize_row(x, importance, weights, out);
        if !finite {
            if let Some(e) = non_finite(x) {
                return Err(e);
            }
        }
        if !blocks_are_valid(ty, out) {
            return Err(QuantError::InvalidBlock { ty, row });
        }
    }
    Ok(())
}

/// Whether every block's f16 scale fields are finite (ggml's `ggml_validate_row_data` rule,
/// per type from the codec table).
pub fn blocks_are_valid(ty: GgmlType, data: &[u8]) -> bool {
    let finite_half = |b: &[u8], at: usize| {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        bits & 0x7c00 != 0x7c00
    };
    let size = ty.type_size() as usize;
    match codec(ty).map_or(BlockCheck::Nothing, |c| c.check) {
        BlockCheck::Nothing => true,
        BlockCheck::HalfScalesAt(offsets) => data
            .chunks_exact(size)
            .all(|b| offsets.iter().all(|&o| finite_half(b, o))),
        BlockCheck::E8m0At(at) => data.chunks_exact(size).all(|b| b[at] != 0xff),
        BlockCheck::Iq1mSuperScale(at) => data.chunks_exact(size).all(|b| {
            let top = |i: usize| u16::from_le_bytes([b[at + 2 * i], b[at + 1 + 2 * i]]) >> 12;
            let bits = top(0) | (top(1) << 4) | (top(2) << 8) | (top(3) << 12);
            bits & 0x7c00 != 0x7c00
        }),
        BlockCheck::HalfFloatValues(mask) => data
            .chunks_exact(2)
            .all(|c| u16::from_le_bytes([c[0], c[1]]) & mask != mask),
    }
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

/// Importance shaping for the K-quant searches: each weight (the imatrix's, or 1 without one)
/// is multiplied by `sqrt(σ² + x²)`, with `σ²` twice the mean square of the 256-value
/// super-block. The imatrix alone (mean squared activation per column) ignores the
/// correlations between columns, and a search that follows it strictly moves error onto
/// low-importance columns and small weights; this factor (the weighting ggml's K-quant
/// searches use with an imatrix, `ggml-quants.c`) keeps relative precision on the larger
/// weights. Measured on `smollm2-768` q4_k_m against llama.cpp's own file over 16384 tokens:
/// PPL ratio 1.0047 without it and 0.9999 with it (`docs/benchmarks.md`), while the
/// imatrix-weighted error stays below ggml's on every tensor.
fn shape_importance(x: &[f32], w: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    for ((xb, wb), ob) in x.chunks(256).zip(w.chunks(256)).zip(out.chunks_mut(256)) {
        let sum_sq: f32 = xb.iter().map(|v| v * v).sum();
        let sigma2 = 2.0 * sum_sq / xb.len() as f32;
        for ((o, &xv), &wv) in ob.iter_mut().zip(xb).zip(wb) {
            *o = wv * (sigma2 + xv * xv).sqrt();
        }
    }
}
