//! The codec table: for every ggml type dynquant can read or write, how to decode its blocks,
//! how to quantize a row into them, and which block fields must hold finite scales.
//!
//! Each family module (`float`, `legacy`, `k`, `iq`, `ternary`, `fp4`) declares the rows of its
//! own types next to its kernels (`CODECS`); the crate root lists the families and looks a type
//! up in them (`codec`), so this file depends on no family. Every per-type
//! dispatch of this crate ([`crate::dequantize`], [`crate::quantize_rows`],
//! [`crate::can_dequantize`], [`crate::can_quantize`], [`crate::blocks_are_valid`]) derives from
//! these rows, so a new type is one row of `dynquant_gguf::types` (its format facts) plus its
//! family file (kernels and codec row).

use dynquant_gguf::types::GgmlType;

/// Decodes whole blocks of `src` into one f32 per element (lengths already checked).
pub(crate) type DequantizeFn = fn(src: &[u8], dst: &mut [f32]);

/// Quantizes one row `x` into `out` (exactly one row of blocks).
///
/// `given` is the caller's importance (the imatrix slice; `None` without one) and `weights`
/// what the search should weight by: `given`, or ones without it, shaped per super-block for
/// the types that ask for it ([`Codec::shapes_importance`]). Returns `false` when the row
/// produced a non-finite block error, meaning the input may hold a non-finite value (only the
/// codecs with [`Codec::checks_input_on_the_way`] rely on this; the others return `true`).
pub(crate) type QuantizeRowFn =
    fn(x: &[f32], given: Option<&[f32]>, weights: &[f32], out: &mut [u8]) -> bool;

/// Which fields of a block must be finite for ggml to accept it (`ggml_validate_row_data`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlockCheck {
    /// Nothing to check (plain F32, intermediates).
    Nothing,
    /// The f16 scales at these byte offsets of every block.
    HalfScalesAt(&'static [usize]),
    /// The E8M0 exponent byte at this offset must not be 0xFF (E8M0 NaN).
    E8m0At(usize),
    /// IQ1_M: the f16 super-scale spread over the top nibbles of the four u16 scale words
    /// starting at this offset.
    Iq1mSuperScale(usize),
    /// Every element is a 16-bit float whose exponent field is this mask: none may be all ones
    /// (inputs are checked finite, so an infinity here means the value was out of range).
    HalfFloatValues(u16),
}

/// One row of the codec table.
pub(crate) struct Codec {
    /// The type.
    pub ty: GgmlType,
    /// Block decoder, bit-exact with ggml's `to_float`.
    pub dequantize: DequantizeFn,
    /// Row quantizer; `None` for types dynquant reads but does not write.
    pub quantize: Option<QuantizeRowFn>,
    /// Whether the search runs under importance shaped by `sqrt(σ² + x²)` per super-block
    /// (the K-quants; see `shape_importance` in lib.rs).
    pub shapes_importance: bool,
    /// Whether, without an importance matrix, the quantizer itself reports non-finite input
    /// (through its return value) so that the up-front finiteness pass can be skipped.
    pub checks_input_on_the_way: bool,
    /// The validity rule for produced blocks.
    pub check: BlockCheck,
}

impl Codec {
    /// A decode-only row.
    pub(crate) const fn read_only(ty: GgmlType, dequantize: DequantizeFn) -> Codec {
        Codec {
            ty,
            dequantize,
            quantize: None,
            shapes_importance: false,
            checks_input_on_the_way: false,
            check: BlockCheck::Nothing,
        }
    }

    /// A row whose quantizer takes the effective weights and reports nothing.
    pub(crate) const fn new(
        ty: GgmlType,
        dequantize: DequantizeFn,
        quantize: QuantizeRowFn,
        check: BlockCheck,
    ) -> Codec {
        Codec {
            ty,
            dequantize,
            quantize: Some(quantize),
            shapes_importance: false,
            checks_input_on_the_way: false,
            check,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec, FAMILIES};
    use dynquant_gguf::types::TYPE_TABLE;

    #[test]
    fn one_row_per_type_and_only_for_known_types() {
        for info in TYPE_TABLE {
            let n = FAMILIES
                .iter()
                .flat_map(|f| f.iter())
                .filter(|c| c.ty == info.ty)
                .count();
            assert!(n <= 1, "{}: {n} codec rows", info.name);
        }
        // Every weight type of the table is at least readable.
        for info in TYPE_TABLE.iter().filter(|t| t.weight_type) {
            assert!(codec(info.ty).is_some(), "{} has no codec row", info.name);
        }
    }

    #[test]
    fn checked_offsets_lie_inside_the_block() {
        for c in FAMILIES.iter().flat_map(|f| f.iter()) {
            let size = c.ty.type_size() as usize;
            match c.check {
                BlockCheck::HalfScalesAt(offsets) => {
                    assert!(offsets.iter().all(|&o| o + 2 <= size), "{}", c.ty)
                }
                BlockCheck::E8m0At(o) => assert!(o < size, "{}", c.ty),
                BlockCheck::Iq1mSuperScale(o) => assert!(o + 8 <= size, "{}", c.ty),
                BlockCheck::Nothing | BlockCheck::HalfFloatValues(_) => {}
            }
        }
    }
}
