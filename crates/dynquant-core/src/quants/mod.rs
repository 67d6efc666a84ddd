//! Conversions between f32 rows and stored ggml types.
//!
//! * Dequantization of every stored ggml type ([`dequantize`]), bit-exact with ggml's
//!   `to_float` at the pinned reference (llama.cpp 80fb11ac): `float`, `legacy`, `kquants`,
//!   `iquants` (+ `tables`, the grids), `ternary`, `fp4`.
//! * Quantization ([`quantize_rows`]) for every weight type: our own importance-weighted
//!   searches, scored on exactly what ggml will dequantize (f16-rounded scales), producing
//!   blocks ggml validates: `legacy`, `kquants_quant`, `iq4_quant`, `iq_codebook_quant`,
//!   `small_quant` (TQ1_0, TQ2_0, MXFP4). Every algorithm is described at the top of its file.
//! * Input rows are checked (NaN/Inf is a typed error naming row and column), every produced
//!   block is checked like `ggml_validate_row_data`, and types that need an importance matrix
//!   refuse to run without one ([`QuantError::NeedsImatrix`]); a caller may opt into uniform
//!   weights explicitly by passing them (the pipeline's `--imatrix-fallback`).

mod float;
mod fp4;
mod iq4_quant;
mod iq_codebook_quant;
mod iquants;
mod kquants;
mod kquants_quant;
mod legacy;
mod small_quant;
mod tables;
mod ternary;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

use crate::types::GgmlType;

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
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ2_XXS
            | IQ2_XS
            | IQ2_S
            | IQ3_XXS
            | IQ3_S
            | IQ1_S
            | IQ1_M
            | IQ4_NL
            | IQ4_XS
            | TQ1_0
            | TQ2_0
            | MXFP4
            | NVFP4
            | Q1_0
            | Q2_0
    )
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
        GgmlType::Q2_K => kquants::dequantize_q2_k(src, dst),
        GgmlType::Q3_K => kquants::dequantize_q3_k(src, dst),
        GgmlType::Q4_K => kquants::dequantize_q4_k(src, dst),
        GgmlType::Q5_K => kquants::dequantize_q5_k(src, dst),
        GgmlType::Q6_K => kquants::dequantize_q6_k(src, dst),
        GgmlType::Q8_K => kquants::dequantize_q8_k(src, dst),
        GgmlType::IQ2_XXS => iquants::dequantize_iq2_xxs(src, dst),
        GgmlType::IQ2_XS => iquants::dequantize_iq2_xs(src, dst),
        GgmlType::IQ2_S => iquants::dequantize_iq2_s(src, dst),
        GgmlType::IQ3_XXS => iquants::dequantize_iq3_xxs(src, dst),
        GgmlType::IQ3_S => iquants::dequantize_iq3_s(src, dst),
        GgmlType::IQ1_S => iquants::dequantize_iq1_s(src, dst),
        GgmlType::IQ1_M => iquants::dequantize_iq1_m(src, dst),
        GgmlType::IQ4_NL => iquants::dequantize_iq4_nl(src, dst),
        GgmlType::IQ4_XS => iquants::dequantize_iq4_xs(src, dst),
        GgmlType::TQ1_0 => ternary::dequantize_tq1_0(src, dst),
        GgmlType::TQ2_0 => ternary::dequantize_tq2_0(src, dst),
        GgmlType::MXFP4 => fp4::dequantize_mxfp4(src, dst),
        GgmlType::NVFP4 => fp4::dequantize_nvfp4(src, dst),
        GgmlType::Q1_0 => ternary::dequantize_q1_0(src, dst),
        GgmlType::Q2_0 => ternary::dequantize_q2_0(src, dst),
        other => return Err(QuantError::UnsupportedDequant(other)),
    }
    Ok(())
}

/// Whether [`quantize_rows`] handles `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
        || matches!(ty, Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
        || matches!(ty, IQ4_NL | IQ4_XS | TQ1_0 | TQ2_0 | MXFP4)
        || matches!(
            ty,
            IQ2_XXS | IQ1_S | IQ3_XXS | IQ2_XS | IQ1_M | IQ2_S | IQ3_S
        )
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
        && src.len() % n_per_row == 0
        && row_bytes.is_some_and(|rb| rb.checked_mul(src.len() / n_per_row) == Some(dst.len()));
    let (Some(row_bytes), true) = (row_bytes, shape_ok) else {
        return Err(QuantError::BadRowShape {
            ty,
            n_per_row,
            src: src.len(),
            dst: dst.len(),
        });
    };
    if !can_quantize(ty) {
        return Err(QuantError::UnsupportedEncode(ty));
    }
    if ty.info().imatrix == crate::types::ImatrixNeed::Required && importance.is_none() {
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
    let shape_kquant = is_kquant(ty);
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
        // The legacy types without importance check their input on the way (each block's
        // error is non-finite if a value is); the others before quantizing.
        let checked_on_the_way = importance.is_none()
            && matches!(
                ty,
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q5_1
            );
        if !checked_on_the_way && !all_finite(x) {
            if let Some(e) = non_finite(x) {
                return Err(e);
            }
        }
        let mut finite = true;
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let mut buf = Vec::with_capacity(out.len());
                encode_float(ty, x, &mut buf)?;
                out.copy_from_slice(&buf);
            }
            GgmlType::Q4_0 => {
                finite = legacy::quantize_symmetric(x, importance.map(|_| weights), out, 8)
            }
            GgmlType::Q5_0 => {
                finite = legacy::quantize_symmetric(x, importance.map(|_| weights), out, 16)
            }
            GgmlType::Q4_1 => {
                finite = legacy::quantize_affine(x, importance.map(|_| weights), out, 15)
            }
            GgmlType::Q5_1 => {
                finite = legacy::quantize_affine(x, importance.map(|_| weights), out, 31)
            }
            GgmlType::Q8_0 => legacy::quantize_q8_0(x, out),
            GgmlType::Q2_K if importance.is_none() => {
                kquants_quant::quantize_q2_k_plain(x, weights, out)
            }
            GgmlType::Q2_K => kquants_quant::quantize_q2_k(x, weights, out),
            GgmlType::Q3_K if importance.is_none() => {
                kquants_quant::quantize_q3_k_plain(x, weights, out)
            }
            GgmlType::Q3_K => kquants_quant::quantize_q3_k(x, weights, out),
            GgmlType::Q4_K if importance.is_none() => {
                kquants_quant::quantize_q4_k_plain(x, weights, out)
            }
            GgmlType::Q4_K => kquants_quant::quantize_q4_k(x, weights, out),
            GgmlType::Q5_K if importance.is_none() => {
                kquants_quant::quantize_q5_k_plain(x, weights, out)
            }
            GgmlType::Q5_K => kquants_quant::quantize_q5_k(x, weights, out),
            GgmlType::Q6_K => kquants_quant::quantize_q6_k(x, weights, out),
            GgmlType::IQ4_NL => iq4_quant::quantize_iq4_nl(x, weights, out),
            GgmlType::IQ4_XS => iq4_quant::quantize_iq4_xs(x, weights, out),
            GgmlType::TQ1_0 => small_quant::quantize_tq1_0(x, weights, out),
            GgmlType::TQ2_0 => small_quant::quantize_tq2_0(x, weights, out),
            GgmlType::MXFP4 => small_quant::quantize_mxfp4(x, weights, out),
            GgmlType::IQ2_XXS => iq_codebook_quant::quantize_iq2_xxs(x, weights, out),
            GgmlType::IQ2_XS => iq_codebook_quant::quantize_iq2_xs(x, weights, out),
            GgmlType::IQ2_S => iq_codebook_quant::quantize_iq2_s(x, weights, out),
            GgmlType::IQ3_XXS => iq_codebook_quant::quantize_iq3_xxs(x, weights, out),
            GgmlType::IQ3_S => iq_codebook_quant::quantize_iq3_s(x, weights, out),
            GgmlType::IQ1_S => iq_codebook_quant::quantize_iq1_s(x, weights, out),
            GgmlType::IQ1_M => iq_codebook_quant::quantize_iq1_m(x, weights, out),
            other => return Err(QuantError::UnsupportedEncode(other)),
        }
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

/// Whether every block's f16 scale fields are finite (ggml's `ggml_validate_row_data` rule).
pub fn blocks_are_valid(ty: GgmlType, data: &[u8]) -> bool {
    let finite_half = |b: &[u8], at: usize| {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        bits & 0x7c00 != 0x7c00
    };
    let size = ty.type_size() as usize;
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        // K-quants: d (and dmin), see the layouts in kquants.rs.
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        GgmlType::IQ4_XS => &[0],
        // Ternary blocks keep their f16 `d` at the end.
        GgmlType::TQ1_0 => &[52],
        GgmlType::TQ2_0 => &[64],
        // MXFP4's E8M0 scale byte: ggml rejects 0xFF (E8M0 NaN).
        GgmlType::MXFP4 => return data.chunks_exact(size).all(|b| b[0] != 0xff),
        // Codebook i-quants: f16 `d` first (IQ1_M: spread over the scale words, below).
        GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ3_XXS
        | GgmlType::IQ3_S
        | GgmlType::IQ1_S => &[0],
        // IQ1_M: the f16 super-scale is the top nibbles of the four u16 scale words at 48..56
        // (ggml's `ggml_validate_row_data` rejects it when not finite).
        GgmlType::IQ1_M => {
            return data.chunks_exact(size).all(|b| {
                let top = |i: usize| u16::from_le_bytes([b[48 + 2 * i], b[49 + 2 * i]]) >> 12;
                let bits = top(0) | (top(1) << 4) | (top(2) << 8) | (top(3) << 12);
                bits & 0x7c00 != 0x7c00
            })
        }
        // Float rows may legitimately hold infinities only if the input did; inputs are
        // checked to be finite, so an overflow to inf here means out of range.
        GgmlType::F16 | GgmlType::BF16 => {
            let inf_mask = if ty == GgmlType::F16 { 0x7c00 } else { 0x7f80 };
            return data
                .chunks_exact(2)
                .all(|c| u16::from_le_bytes([c[0], c[1]]) & inf_mask != inf_mask);
        }
        _ => &[],
    };
    data.chunks_exact(size)
        .all(|b| scale_offsets.iter().all(|&o| finite_half(b, o)))
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

fn is_kquant(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K
    )
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
