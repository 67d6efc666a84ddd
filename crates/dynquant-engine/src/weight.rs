//! A 2-D weight matrix in its stored type, borrowed from the memory-mapped file when possible:
//! what every matrix product multiplies and every block holds.

use std::borrow::Cow;

use dynquant_gguf::GgmlType;

use crate::dot::{vec_dot_type, DotType};
use crate::error::{EngineError, Result};

/// A 2-D weight matrix in its stored type (borrowed from the memory-mapped file when possible).
#[derive(Debug)]
pub struct Weight<'a> {
    /// Tensor name in the GGUF file.
    pub name: String,
    /// Stored type.
    pub ty: GgmlType,
    /// Values per row (ggml `ne0`): the input dimension.
    pub cols: usize,
    /// Number of rows (ggml `ne1`): the output dimension.
    pub rows: usize,
    /// Stored bytes, rows consecutive.
    pub data: Cow<'a, [u8]>,
    row_bytes: usize,
    dot: DotType,
}

impl<'a> Weight<'a> {
    /// Wraps stored bytes as a `rows` x `cols` matrix of type `ty`.
    pub fn new(
        name: impl Into<String>,
        ty: GgmlType,
        cols: usize,
        rows: usize,
        data: Cow<'a, [u8]>,
    ) -> Result<Self> {
        let name = name.into();
        let unsupported = || EngineError::UnsupportedType {
            name: name.clone(),
            ty,
        };
        let dot = vec_dot_type(ty).ok_or_else(unsupported)?;
        if !dynquant_quants::can_dequantize(ty) {
            return Err(unsupported());
        }
        let bad = || EngineError::BadShape {
            name: name.clone(),
            shape: vec![cols as u64, rows as u64],
            expected: vec![],
        };
        let row_bytes = ty
            .row_bytes(cols as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad)?;
        if !cols.is_multiple_of(dot.block()) || row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(bad());
        }
        Ok(Weight {
            name,
            ty,
            cols,
            rows,
            data,
            row_bytes,
            dot,
        })
    }

    /// The activation type of this weight's dot products.
    pub fn dot_type(&self) -> DotType {
        self.dot
    }

    /// Stored bytes of row `r`.
    pub fn row_data(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Stored bytes of rows `r0..r1`.
    pub(crate) fn rows_data(&self, r0: usize, r1: usize) -> &[u8] {
        &self.data[r0 * self.row_bytes..r1 * self.row_bytes]
    }

    /// Row `r` as f32 (as `ggml_get_rows` gives it).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<()> {
        dynquant_quants::dequantize(self.ty, self.row_data(r), out)?;
        Ok(())
    }
}
