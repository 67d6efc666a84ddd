//! Binds the tensors of a GGUF model by name, checking their shapes: the weights (borrowed from
//! the memory map when possible), the per-expert views of 3-D tensors, and f32 vectors.

use std::borrow::Cow;

use dynquant_gguf::{GgufModel, ModelTensor};

use crate::error::{EngineError, Result};
use crate::weight::Weight;

/// Finds and checks tensors of a GGUF model by name.
pub(crate) struct Loader<'g> {
    gguf: &'g GgufModel,
}

impl<'g> Loader<'g> {
    pub(crate) fn new(gguf: &'g GgufModel) -> Self {
        Loader { gguf }
    }

    pub(crate) fn find(&self, name: &str) -> Option<ModelTensor<'g>> {
        self.gguf.tensors().find(|t| t.info.name == name)
    }

    pub(crate) fn weight(&self, name: &str, cols: usize, rows: usize) -> Result<Weight<'g>> {
        self.weight_opt(name, cols, rows)?
            .ok_or_else(|| EngineError::MissingTensor(name.into()))
    }

    pub(crate) fn weight_opt(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Option<Weight<'g>>> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        if t.info.shape != [cols as u64, rows as u64] {
            return Err(EngineError::BadShape {
                name: name.into(),
                shape: t.info.shape.clone(),
                expected: vec![cols as u64, rows as u64],
            });
        }
        let data = self.gguf.tensor_data(&t)?;
        Weight::new(name, t.info.ggml_type, cols, rows, data).map(Some)
    }

    /// The `n` per-expert `rows` x `cols` matrices of the 3-D tensor `name` (ggml shape
    /// `{cols, rows, n}`), each borrowing its slice of the stored bytes.
    pub(crate) fn experts(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
        n: usize,
    ) -> Result<Vec<Weight<'g>>> {
        let t = self
            .find(name)
            .ok_or_else(|| EngineError::MissingTensor(name.into()))?;
        let expected = vec![cols as u64, rows as u64, n as u64];
        let bad = || EngineError::BadShape {
            name: name.into(),
            shape: t.info.shape.clone(),
            expected: expected.clone(),
        };
        if t.info.shape != expected {
            return Err(bad());
        }
        let per = t
            .info
            .ggml_type
            .row_bytes(cols as u64)
            .and_then(|b| b.checked_mul(rows as u64))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad)?;
        let data = self.gguf.tensor_data(&t)?;
        if per.checked_mul(n) != Some(data.len()) {
            return Err(bad());
        }
        let ty = t.info.ggml_type;
        (0..n)
            .map(|e| {
                let range = e * per..(e + 1) * per;
                let bytes = match &data {
                    Cow::Borrowed(b) => {
                        let b: &'g [u8] = b;
                        Cow::Borrowed(&b[range])
                    }
                    Cow::Owned(v) => Cow::Owned(v[range].to_vec()),
                };
                Weight::new(name, ty, cols, rows, bytes)
            })
            .collect()
    }

    pub(crate) fn vector_opt(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        if t.info.n_elements() != n as u64 {
            return Err(EngineError::BadShape {
                name: name.into(),
                shape: t.info.shape.clone(),
                expected: vec![n as u64],
            });
        }
        let data = self.gguf.tensor_data(&t)?;
        let mut out = vec![0f32; n];
        dynquant_quants::dequantize(t.info.ggml_type, &data, &mut out)?;
        Ok(Some(out))
    }

    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.vector_opt(name, n)?
            .ok_or_else(|| EngineError::MissingTensor(name.into()))
    }
}
