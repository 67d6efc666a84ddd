//! Input covariance files: for every weight of a matrix product, the sum over calibration
//! tokens of `x xᵀ` (the full second moment of its input, not only the diagonal an imatrix
//! keeps), per matrix (expert), and the tokens each matrix saw.
//!
//! dynquant's own format, a GGUF beside the imatrix one: `general.type = "covariance"`,
//! `covariance.version` (u32, [`VERSION`]), `covariance.model` (string: the identity of the
//! model it was collected on, `dynquant_measure::model_identity`), `imatrix.datasets`, `imatrix.chunk_count` and
//! `imatrix.chunk_size` as an imatrix has them, and per weight `<name>` two F32 tensors:
//! `<name>.in_cov` of ne `{ne0, ne0, n_mat}` (symmetric, stored whole, rows of matrix 0
//! first) and `<name>.counts` of ne `{1, n_mat}`. Entries are sorted by name. The diagonal
//! of `in_cov` is the imatrix's `in_sum2` of the same tokens.
//!
//! A quantizer that sees the whole covariance can let the columns it has not rounded yet
//! compensate the error of those it has (GPTQ's error feedback, `dynquant-quantize`). The
//! file is read one weight at a time, so memory stays at one tensor's matrices.

use std::path::Path;

use crate::imatrix::{keys as im_keys, ExpertPrior, ImatrixError};
use crate::types::GgmlType;
use crate::{Access, Array, GgufModel, Metadata, TensorInfo, Value, WriteOptions};

/// `general.type` of a covariance file.
pub const FILE_TYPE: &str = "covariance";
/// Version key.
pub const VERSION_KEY: &str = "covariance.version";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Model identity key.
pub const MODEL_KEY: &str = "covariance.model";
/// Suffix of the covariance tensor.
pub const IN_COV: &str = ".in_cov";

/// The input covariance of one weight tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct CovarianceEntry {
    /// Weight name.
    pub name: String,
    /// Input columns (the weight's `ne0`).
    pub n_per_mat: usize,
    /// `n_per_mat²` sums per matrix, matrices consecutive, each row-major and symmetric.
    pub sums: Vec<f32>,
    /// Tokens seen per matrix.
    pub counts: Vec<f32>,
}

impl CovarianceEntry {
    /// Number of matrices (experts).
    pub fn n_mat(&self) -> usize {
        self.counts.len()
    }

    /// Every matrix's mean second moment `Σ x xᵀ / count`, f64, with `prior.tokens`
    /// pseudo-tokens at the tensor's pooled mean over all matrices added (the imatrix's
    /// expert prior, [`crate::imatrix::ImatrixEntry::shrunk_weights`], applied to the whole
    /// matrix: its diagonal is exactly those weights). A matrix that saw nothing gets the
    /// pooled mean; a tensor that saw nothing, `None`.
    pub fn second_moments(&self, prior: ExpertPrior) -> Option<Vec<Vec<f64>>> {
        let n2 = self.n_per_mat * self.n_per_mat;
        let total: f64 = self.counts.iter().map(|&c| f64::from(c)).sum();
        if total <= 0.0 {
            return None;
        }
        let k = if self.n_mat() > 1 {
            f64::from(prior.tokens)
        } else {
            0.0
        };
        let mut pooled = vec![0f64; n2];
        if k > 0.0 {
            for sums in self.sums.chunks_exact(n2) {
                for (p, &s) in pooled.iter_mut().zip(sums) {
                    *p += f64::from(s);
                }
            }
            pooled.iter_mut().for_each(|p| *p *= k / total);
        }
        Some(
            self.sums
                .chunks_exact(n2)
                .zip(&self.counts)
                .map(|(sums, &count)| {
                    let denom = f64::from(count) + k;
                    if denom <= 0.0 {
                        // Unseen and no prior: the pooled mean of the others.
                        let mut all = vec![0f64; n2];
                        for s in self.sums.chunks_exact(n2) {
                            for (a, &v) in all.iter_mut().zip(s) {
                                *a += f64::from(v) / total;
                            }
                        }
                        return all;
                    }
                    sums.iter()
                        .zip(&pooled)
                        .map(|(&s, &p)| (f64::from(s) + p) / denom)
                        .collect()
                })
                .collect(),
        )
    }
}

/// Metadata of a covariance file (the calibration run it came from).
#[derive(Debug, Clone, PartialEq)]
pub struct CovarianceInfo {
    /// Identity of the model the activations came from.
    pub model: String,
    /// Calibration dataset names.
    pub datasets: Vec<String>,
    /// Chunks processed.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
}

/// Writes entries (sorted by name here) as a covariance file.
pub fn write(
    info: &CovarianceInfo,
    entries: &[CovarianceEntry],
    path: impl AsRef<Path>,
    opts: &WriteOptions,
) -> Result<(), ImatrixError> {
    let mut md = Metadata::new();
    md.set(crate::keys::general::TYPE, Value::String(FILE_TYPE.into()));
    md.set(VERSION_KEY, Value::U32(VERSION));
    md.set(MODEL_KEY, Value::String(info.model.clone()));
    md.set(
        im_keys::DATASETS,
        Value::Array(Array::String(info.datasets.clone())),
    );
    md.set(im_keys::CHUNK_COUNT, Value::U32(info.chunk_count));
    md.set(im_keys::CHUNK_SIZE, Value::U32(info.chunk_size));
    let mut sorted: Vec<&CovarianceEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tensors = Vec::with_capacity(sorted.len() * 2);
    for e in &sorted {
        let k = e.n_per_mat as u64;
        let m = e.n_mat() as u64;
        tensors.push(TensorInfo::new(
            format!("{}{IN_COV}", e.name),
            vec![k, k, m],
            GgmlType::F32,
        )?);
        tensors.push(TensorInfo::new(
            format!("{}{}", e.name, im_keys::COUNTS),
            vec![1, m],
            GgmlType::F32,
        )?);
    }
    let values = sorted
        .iter()
        .flat_map(|e| [e.sums.as_slice(), e.counts.as_slice()]);
    crate::imatrix::write_f32_tensors(path.as_ref(), md, tensors.into_iter().zip(values), opts)
}

/// An open covariance file, read one entry at a time.
#[derive(Debug)]
pub struct CovarianceFile {
    model: GgufModel,
    /// The calibration run.
    pub info: CovarianceInfo,
}

impl CovarianceFile {
    /// Opens and checks the header (type, version, calibration keys).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ImatrixError> {
        let model = GgufModel::open(path, Access::Pread)?;
        let md = model.metadata();
        let ty = md.get(crate::keys::general::TYPE).and_then(Value::as_str);
        if ty != Some(FILE_TYPE) {
            return Err(ImatrixError::BadEntry {
                name: "general.type".into(),
                reason: format!("not a covariance file (general.type is {ty:?})"),
            });
        }
        match md.get(VERSION_KEY) {
            Some(Value::U32(VERSION)) => {}
            other => {
                return Err(ImatrixError::BadEntry {
                    name: VERSION_KEY.into(),
                    reason: format!("version {other:?}, this build reads {VERSION}"),
                })
            }
        }
        let datasets = match md.get(im_keys::DATASETS) {
            Some(Value::Array(Array::String(v))) => v.clone(),
            _ => return Err(ImatrixError::BadKey(im_keys::DATASETS)),
        };
        let u32_key = |k: &'static str| match md.get(k) {
            Some(Value::U32(v)) => Ok(*v),
            _ => Err(ImatrixError::BadKey(k)),
        };
        let model_id = md
            .get(MODEL_KEY)
            .and_then(Value::as_str)
            .ok_or(ImatrixError::BadKey(MODEL_KEY))?
            .to_string();
        let info = CovarianceInfo {
            model: model_id,
            datasets,
            chunk_count: u32_key(im_keys::CHUNK_COUNT)?,
            chunk_size: u32_key(im_keys::CHUNK_SIZE)?,
        };
        Ok(CovarianceFile { model, info })
    }

    /// Names of the weights the file covers.
    pub fn names(&self) -> Vec<String> {
        self.model
            .tensors()
            .filter_map(|t| t.info.name.strip_suffix(IN_COV).map(String::from))
            .collect()
    }

    /// `(columns, matrices)` of weight `name`'s entry as its tensor is declared (no data
    /// read), or `None` when the file has none.
    pub fn shape_of(&self, name: &str) -> Option<(usize, usize)> {
        let cov_name = format!("{name}{IN_COV}");
        let t = self.model.tensors().find(|t| t.info.name == cov_name)?;
        let shape = &t.info.shape;
        let k = shape.first().copied().unwrap_or(0) as usize;
        let m = shape.get(2).copied().unwrap_or(1) as usize;
        Some((k, m))
    }

    /// The entry of weight `name`, read and checked, or `None` when the file has none.
    pub fn get(&self, name: &str) -> Result<Option<CovarianceEntry>, ImatrixError> {
        let cov_name = format!("{name}{IN_COV}");
        let Some(t) = self.model.tensors().find(|t| t.info.name == cov_name) else {
            return Ok(None);
        };
        let bad = |reason: String| ImatrixError::BadEntry {
            name: name.into(),
            reason,
        };
        let (shape, sums) = crate::imatrix::f32_values(&self.model, &t.info.name)?;
        let counts_name = format!("{name}{}", im_keys::COUNTS);
        let (_, counts) = crate::imatrix::f32_values(&self.model, &counts_name)?;
        let k = shape.first().copied().unwrap_or(0) as usize;
        if shape.len() < 2
            || shape[1] as usize != k
            || k == 0
            || sums.len() != k * k * counts.len()
            || counts.is_empty()
        {
            return Err(bad(format!(
                "in_cov shape {shape:?} does not match {} counts",
                counts.len()
            )));
        }
        if let Some(v) = sums.iter().chain(&counts).find(|v| !v.is_finite()) {
            return Err(bad(format!("contains the invalid value {v}")));
        }
        if let Some(v) = counts.iter().find(|v| **v < 0.0) {
            return Err(bad(format!("has the negative count {v}")));
        }
        Ok(Some(CovarianceEntry {
            name: name.into(),
            n_per_mat: k,
            sums,
            counts,
        }))
    }
}
