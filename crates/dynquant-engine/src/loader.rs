//! Binds the tensors of a GGUF model by name, checking their shapes: the weights (borrowed from
//! the memory map when possible), the per-expert views of 3-D tensors, and f32 vectors. A
//! tensor named in the [`WeightOverrides`] is bound to the override's bytes instead of the
//! file's (same name and shape, possibly another type): what a sensitivity probe quantizes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use dynquant_gguf::{GgmlType, GgufModel, ModelTensor};

use crate::error::{EngineError, Result};
use crate::weight::Weight;

/// Replacement bytes for some tensors of a model, by name: each tensor keeps its shape and
/// takes the given stored type and bytes (checked against the shape when bound).
#[derive(Debug, Clone, Default)]
pub struct WeightOverrides {
    tensors: BTreeMap<String, (GgmlType, Vec<u8>)>,
}

impl WeightOverrides {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds tensor `name` to `data` stored as `ty` (replacing an earlier override).
    pub fn insert(&mut self, name: impl Into<String>, ty: GgmlType, data: Vec<u8>) {
        self.tensors.insert(name.into(), (ty, data));
    }

    /// Whether no tensor is overridden.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    fn get(&self, name: &str) -> Option<(GgmlType, &[u8])> {
        self.tensors.get(name).map(|(t, d)| (*t, d.as_slice()))
    }
}

/// Finds and checks tensors of a GGUF model by name.
pub(crate) struct Loader<'g> {
    gguf: &'g GgufModel,
    overrides: Option<&'g WeightOverrides>,
}

impl<'g> Loader<'g> {
    pub(crate) fn new(gguf: &'g GgufModel, overrides: Option<&'g WeightOverrides>) -> Self {
        Loader { gguf, overrides }
    }

    /// Stored type and bytes of `t`: the override's when there is one, else the file's.
    fn data(&self, t: &ModelTensor<'g>) -> Result<(GgmlType, Cow<'g, [u8]>)> {
        if let Some((ty, d)) = self.overrides.and_then(|o| o.get(&t.info.name)) {
            return Ok((ty, Cow::Borrowed(d)));
        }
        Ok((t.info.ggml_type, self.gguf.tensor_data(t)?))
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
        let (ty, data) = self.data(&t)?;
        Weight::new(name, ty, cols, rows, data).map(Some)
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
        let (ty, data) = self.data(&t)?;
        let per = ty
            .row_bytes(cols as u64)
            .and_then(|b| b.checked_mul(rows as u64))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad)?;
        if per.checked_mul(n) != Some(data.len()) {
            return Err(bad());
        }
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
        let (ty, data) = self.data(&t)?;
        let mut out = vec![0f32; n];
        dynquant_quants::dequantize(ty, &data, &mut out)?;
        Ok(Some(out))
    }

    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.vector_opt(name, n)?
            .ok_or_else(|| EngineError::MissingTensor(name.into()))
    }
}
