//! llama.cpp importance matrices in the GGUF imatrix format (llama.cpp PR #9400).
//!
//! An imatrix GGUF has `general.type = "imatrix"`, `imatrix.datasets` (array of strings),
//! `imatrix.chunk_count` and `imatrix.chunk_size` (u32), and per weight `<name>` two F32
//! tensors: `<name>.in_sum2` (raw sums of squared activations, ne `{ne0, n_mat}`) and
//! `<name>.counts` (tokens seen, ne `{1, n_mat}`), where `n_mat` is the expert count for
//! `*_exps` weights and 1 otherwise (a trailing 1 is dropped from the stored shape). Entries
//! are sorted by name (`tools/imatrix/imatrix.cpp`). llama-quantize turns an entry into
//! weights `in_sum2 / count` per matrix, all ones for a matrix whose count is 0
//! (`tools/quantize/quantize.cpp` `load_imatrix`).

use std::path::Path;

use crate::gguf::{
    Access, Array, GgufError, GgufModel, GgufWriter, Metadata, OutputTarget, TensorInfo, Value,
    WriteOptions,
};
use crate::types::GgmlType;

/// Metadata keys of imatrix files.
pub mod keys {
    /// Calibration dataset names (array of strings).
    pub const DATASETS: &str = "imatrix.datasets";
    /// Chunks processed (u32).
    pub const CHUNK_COUNT: &str = "imatrix.chunk_count";
    /// Tokens per chunk (u32).
    pub const CHUNK_SIZE: &str = "imatrix.chunk_size";
    /// Suffix of the sums tensor.
    pub const IN_SUM2: &str = ".in_sum2";
    /// Suffix of the counts tensor.
    pub const COUNTS: &str = ".counts";
}

/// Errors reading or writing imatrix files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImatrixError {
    /// The container itself is bad.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A required key is missing or has the wrong type.
    #[error("imatrix metadata key '{0}' is missing or has the wrong type")]
    BadKey(&'static str),
    /// `general.type` is not `imatrix`.
    #[error("not an imatrix file (general.type is {0:?})")]
    NotImatrix(Option<String>),
    /// An entry whose tensors are inconsistent.
    #[error("imatrix entry '{name}': {reason}")]
    BadEntry {
        /// Weight name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The importance data of one weight tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Weight name (`blk.3.ffn_down_exps.weight`).
    pub name: String,
    /// Values per matrix (the weight's `ne0`).
    pub n_per_mat: usize,
    /// Sums of squared activations, `n_per_mat` per matrix, matrices consecutive.
    pub in_sum2: Vec<f32>,
    /// Tokens seen per matrix.
    pub counts: Vec<f32>,
}

impl ImatrixEntry {
    /// Number of matrices (experts).
    pub fn n_mat(&self) -> usize {
        self.counts.len()
    }

    /// Per-column weights of matrix `mat` as llama-quantize derives them: mean squared
    /// activation, or all ones when the matrix saw no tokens.
    pub fn weights(&self, mat: usize) -> Vec<f32> {
        let sums = &self.in_sum2[mat * self.n_per_mat..(mat + 1) * self.n_per_mat];
        let count = self.counts[mat];
        if count == 0.0 {
            vec![1.0; self.n_per_mat]
        } else {
            sums.iter().map(|s| s / count).collect()
        }
    }
}

/// A whole imatrix file.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    /// Calibration dataset names.
    pub datasets: Vec<String>,
    /// Chunks processed.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
    /// Entries, sorted by name.
    pub entries: Vec<ImatrixEntry>,
}

fn f32_values(model: &GgufModel, name: &str) -> Result<(Vec<u64>, Vec<f32>), ImatrixError> {
    let t = model
        .tensors()
        .find(|t| t.info.name == name)
        .ok_or_else(|| ImatrixError::BadEntry {
            name: name.into(),
            reason: "tensor missing".into(),
        })?;
    if t.info.ggml_type != GgmlType::F32 {
        return Err(ImatrixError::BadEntry {
            name: name.into(),
            reason: format!("stored as {}, expected f32", t.info.ggml_type),
        });
    }
    let bytes = model.tensor_data(&t)?;
    let mut out = vec![0f32; t.info.n_elements() as usize];
    crate::quants::dequantize(GgmlType::F32, &bytes, &mut out).map_err(|e| {
        ImatrixError::BadEntry {
            name: name.into(),
            reason: e.to_string(),
        }
    })?;
    Ok((t.info.shape.clone(), out))
}

impl Imatrix {
    /// Reads a GGUF imatrix.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ImatrixError> {
        let model = GgufModel::open(path, Access::Pread)?;
        let md = model.metadata();
        let ty = md
            .get(crate::gguf::keys::general::TYPE)
            .and_then(Value::as_str);
        if ty != Some("imatrix") {
            return Err(ImatrixError::NotImatrix(ty.map(String::from)));
        }
        let datasets = match md.get(keys::DATASETS) {
            Some(Value::Array(Array::String(v))) => v.clone(),
            _ => return Err(ImatrixError::BadKey(keys::DATASETS)),
        };
        let u32_key = |k: &'static str| match md.get(k) {
            Some(Value::U32(v)) => Ok(*v),
            _ => Err(ImatrixError::BadKey(k)),
        };
        let chunk_count = u32_key(keys::CHUNK_COUNT)?;
        let chunk_size = u32_key(keys::CHUNK_SIZE)?;
        let mut entries = Vec::new();
        for t in model.tensors() {
            let Some(name) = t.info.name.strip_suffix(keys::IN_SUM2) else {
                continue;
            };
            let bad = |reason: String| ImatrixError::BadEntry {
                name: name.into(),
                reason,
            };
            let (sum_shape, in_sum2) = f32_values(&model, &t.info.name)?;
            let (count_shape, counts) = f32_values(&model, &format!("{name}{}", keys::COUNTS))?;
            let n_mat = counts.len();
            let n_per_mat = sum_shape.first().copied().unwrap_or(1) as usize;
            if count_shape.first().copied().unwrap_or(1) != 1
                || n_mat == 0
                || in_sum2.len() != n_per_mat * n_mat
            {
                return Err(bad(format!(
                    "in_sum2 shape {sum_shape:?} does not match counts shape {count_shape:?}"
                )));
            }
            if let Some(v) = in_sum2
                .iter()
                .chain(&counts)
                .find(|v| !v.is_finite() || **v < 0.0)
            {
                return Err(bad(format!("contains the invalid value {v}")));
            }
            entries.push(ImatrixEntry {
                name: name.to_string(),
                n_per_mat,
                in_sum2,
                counts,
            });
        }
        // Every counts tensor must belong to an entry.
        for t in model.tensors() {
            if let Some(name) = t.info.name.strip_suffix(keys::COUNTS) {
                if !entries.iter().any(|e| e.name == name) {
                    return Err(ImatrixError::BadEntry {
                        name: name.into(),
                        reason: "counts without in_sum2".into(),
                    });
                }
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Imatrix {
            datasets,
            chunk_count,
            chunk_size,
            entries,
        })
    }

    /// The entry for weight `name`.
    pub fn get(&self, name: &str) -> Option<&ImatrixEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Writes the imatrix as llama.cpp does: keys in its order, entries sorted by name, each
    /// `in_sum2` then `counts`, trailing unit dimensions dropped.
    pub fn write(&self, path: impl AsRef<Path>, opts: &WriteOptions) -> Result<(), ImatrixError> {
        let mut md = Metadata::new();
        md.set(
            crate::gguf::keys::general::TYPE,
            Value::String("imatrix".into()),
        );
        md.set(
            keys::DATASETS,
            Value::Array(Array::String(self.datasets.clone())),
        );
        md.set(keys::CHUNK_COUNT, Value::U32(self.chunk_count));
        md.set(keys::CHUNK_SIZE, Value::U32(self.chunk_size));
        let mut entries: Vec<&ImatrixEntry> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut tensors = Vec::with_capacity(entries.len() * 2);
        for e in &entries {
            let (sum_shape, count_shape) = if e.n_mat() == 1 {
                (vec![e.n_per_mat as u64], vec![1])
            } else {
                (
                    vec![e.n_per_mat as u64, e.n_mat() as u64],
                    vec![1, e.n_mat() as u64],
                )
            };
            tensors.push(TensorInfo::new(
                format!("{}{}", e.name, keys::IN_SUM2),
                sum_shape,
                GgmlType::F32,
            )?);
            tensors.push(TensorInfo::new(
                format!("{}{}", e.name, keys::COUNTS),
                count_shape,
                GgmlType::F32,
            )?);
        }
        let mut w = GgufWriter::create(
            &OutputTarget::Single(path.as_ref().to_path_buf()),
            md,
            tensors.clone(),
            opts,
        )?;
        let mut buf = Vec::new();
        for (e, pair) in entries.iter().zip(tensors.chunks(2)) {
            for (values, t) in [(&e.in_sum2, &pair[0]), (&e.counts, &pair[1])] {
                buf.clear();
                crate::quants::encode_float(GgmlType::F32, values, &mut buf)
                    .expect("f32 is always encodable");
                w.write(&t.name, &buf)?;
            }
        }
        w.finish()?;
        Ok(())
    }
}
