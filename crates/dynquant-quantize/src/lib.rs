//! dynquant-quantize: the streaming quantization pipeline, a plan executed over a model too large for memory.
//!
//! Tensor by tensor, in output order: a tensor whose target type equals its stored type is
//! copied; any other is read in slabs of whole rows (dequantized to f32), the rows of a slab
//! are quantized in parallel on the caller's rayon pool, and the slab's bytes are written in
//! order. Rows are independent and each row's bytes depend only on its values and its
//! importance weights, so the output is byte-identical for any thread count. Memory is
//! bounded by the slab size, not by the model.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use dynquant_gguf::covariance::CovarianceFile;
use dynquant_gguf::imatrix::{ExpertPrior, Imatrix, ImatrixError};
use dynquant_gguf::types::{GgmlType, ImatrixNeed};
use dynquant_gguf::{
    keys, GgufError, GgufModel, GgufWriter, Metadata, OutputTarget, SetOptions, TensorInfo, Value,
    WriteOptions, WriteSummary,
};
use dynquant_quants::{dequantize, quantize_rows, QuantError};

pub mod feedback;

/// Pipeline errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Reading or writing.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Converting a tensor.
    #[error("tensor '{tensor}': {source}")]
    Quant {
        /// Tensor name.
        tensor: String,
        /// What went wrong (rows are numbered within the tensor).
        #[source]
        source: QuantError,
    },
    /// The plan does not fit the model.
    #[error("the plan has {plan} entries for {model} tensors")]
    PlanMismatch {
        /// Plan entries.
        plan: usize,
        /// Model tensors.
        model: usize,
    },
    /// Tensors whose type needs an importance matrix that was not given.
    #[error("{} tensors need an importance matrix and have none (pass --imatrix, or --imatrix-fallback to accept a weaker substitute): {}", .0.len(), .0.join(", "))]
    MissingImatrix(Vec<String>),
    /// An imatrix entry that does not fit its tensor.
    #[error("imatrix entry for '{name}' holds {got} values per matrix x {mats} matrices, the tensor needs {need} x {need_mats}")]
    ImatrixShape {
        /// Tensor.
        name: String,
        /// Values per matrix in the imatrix.
        got: usize,
        /// Matrices in the imatrix.
        mats: usize,
        /// Row length of the tensor.
        need: u64,
        /// Matrices (experts) of the tensor.
        need_mats: u64,
    },
    /// A source tensor dynquant cannot read as f32.
    #[error("tensor '{0}' is stored as {1}; re-quantizing it needs --allow-requantize")]
    Requantize(String, GgmlType),
    /// A covariance entry that cannot be read or does not fit its tensor.
    #[error("covariance: {0}")]
    Covariance(#[from] ImatrixError),
    /// Reading a non-GGUF source (a Hugging Face checkpoint) failed.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
}

/// Where the pipeline's tensors come from: a GGUF model, or a converter that presents another
/// format (safetensors) as GGUF tensors. Tensors are addressed by their index in model order.
pub trait TensorSource: Sync {
    /// Number of tensors.
    fn n_tensors(&self) -> usize;
    /// Name, shape (GGUF order) and stored type of tensor `index`.
    fn info(&self, index: usize) -> &TensorInfo;
    /// Files that must never be overwritten by the output.
    fn input_paths(&self) -> Vec<PathBuf>;
    /// Streams tensor `index`'s bytes in its stored type, in bounded pieces.
    fn stream_raw(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), GgufError>,
    ) -> Result<(), PipelineError>;
    /// Fills `out` (a whole number of rows) with rows `first_row..` of tensor `index` as f32.
    /// `allow_requantize` permits dequantizing quantized stored types.
    fn read_rows_f32(
        &self,
        index: usize,
        first_row: usize,
        out: &mut [f32],
        allow_requantize: bool,
    ) -> Result<(), PipelineError>;
}

impl TensorSource for GgufModel {
    fn n_tensors(&self) -> usize {
        GgufModel::n_tensors(self)
    }

    fn info(&self, index: usize) -> &TensorInfo {
        self.tensors()
            .nth(index)
            .map(|t| t.info)
            .expect("tensor index in range")
    }

    fn input_paths(&self) -> Vec<PathBuf> {
        self.paths()
    }

    fn stream_raw(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), GgufError>,
    ) -> Result<(), PipelineError> {
        let t = self.tensors().nth(index).expect("tensor index in range");
        self.stream_tensor(&t, sink)?;
        // Copied: its mapped pages are not needed again.
        Ok(self.release_tensor_pages(&t, 0, t.info.n_bytes)?)
    }

    fn read_rows_f32(
        &self,
        index: usize,
        first_row: usize,
        out: &mut [f32],
        allow_requantize: bool,
    ) -> Result<(), PipelineError> {
        let t = self.tensors().nth(index).expect("tensor index in range");
        let info = t.info;
        if info.ggml_type.info().quantized && !allow_requantize {
            return Err(PipelineError::Requantize(info.name.clone(), info.ggml_type));
        }
        let row = info.row_len() as usize;
        let src_row_bytes = info.ggml_type.row_bytes(row as u64).unwrap_or(0) as usize;
        let rows = out.len() / row.max(1);
        // The slab's bytes are copied out of the map (or read), and its mapped pages released
        // afterwards, so a pass over a model larger than memory keeps only a slab resident.
        let from = first_row
            .checked_mul(src_row_bytes)
            .ok_or(GgufError::TooMuchData {
                name: info.name.clone(),
                expected: info.n_bytes,
                got: u64::MAX,
            })? as u64;
        let mut src = vec![0u8; rows * src_row_bytes];
        self.read_tensor_bytes(&t, from, &mut src)?;
        self.release_tensor_pages(&t, from, src.len() as u64)?;
        out.par_chunks_mut(row.max(1))
            .zip(src.par_chunks(src_row_bytes.max(1)))
            .try_for_each(|(x, s)| dequantize(info.ggml_type, s, x))
            .map_err(|source| PipelineError::Quant {
                tensor: info.name.clone(),
                source,
            })
    }
}

/// Progress reports (the library prints nothing; the CLI renders these).
pub trait Progress: Sync {
    /// A tensor starts.
    fn tensor_started(&self, _index: usize, _name: &str, _from: GgmlType, _to: GgmlType) {}
    /// `bytes` of source data were processed.
    fn advanced(&self, _bytes: u64) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What to do.
pub struct QuantizeJob<'a> {
    /// The source model (a [`GgufModel`], or any other [`TensorSource`]).
    pub model: &'a dyn TensorSource,
    /// Target type per tensor, in `model.tensors()` order.
    pub targets: Vec<GgmlType>,
    /// Output metadata (complete: the caller sets file type, recipe keys, imatrix keys).
    pub metadata: Metadata,
    /// Importance matrix.
    pub imatrix: Option<&'a Imatrix>,
    /// Use all-ones weights for types that need an imatrix when an entry is missing.
    pub imatrix_fallback: bool,
    /// How experts' imatrix weights are estimated (shrunk toward their tensor's pooled mean).
    pub expert_prior: ExpertPrior,
    /// Allow quantized sources (dequantized to f32 first).
    pub allow_requantize: bool,
    /// f32 values per slab (bounds memory: about 8 bytes per value plus output).
    pub slab_values: usize,
    /// Input covariances: the quantized tensors they cover get error feedback across each
    /// row's blocks ([`feedback`]).
    pub covariance: Option<&'a CovarianceFile>,
}

/// Default slab: 16 Mi values (64 MiB of f32).
pub const DEFAULT_SLAB_VALUES: usize = 16 << 20;

/// The per-matrix importance weights of a tensor, checked against its shape.
fn importance_of(
    imatrix: Option<&Imatrix>,
    prior: ExpertPrior,
    t: &TensorInfo,
) -> Result<Option<Vec<Vec<f32>>>, PipelineError> {
    let Some(entry) = imatrix.and_then(|im| im.get(&t.name)) else {
        return Ok(None);
    };
    entry
        .weights_for_tensor(t, prior)
        .map(Some)
        .ok_or_else(|| PipelineError::ImatrixShape {
            name: t.name.clone(),
            got: entry.n_per_mat,
            mats: entry.n_mat(),
            need: t.row_len(),
            need_mats: t.n_matrices(),
        })
}

/// The tensors that will be quantized with error feedback (those with a covariance entry and a
/// block-quantized target), checked against their entries' shapes before any work.
pub fn covariance_coverage(job: &QuantizeJob<'_>) -> Result<Vec<String>, PipelineError> {
    let Some(cov) = job.covariance else {
        return Ok(Vec::new());
    };
    let mut covered = Vec::new();
    for (i, &target) in job.targets.iter().enumerate().take(job.model.n_tensors()) {
        let t = job.model.info(i);
        if target == t.ggml_type || !target.info().quantized {
            continue;
        }
        let Some((k, m)) = cov.shape_of(&t.name) else {
            continue;
        };
        if k as u64 != t.row_len() || m as u64 != t.n_matrices() {
            return Err(ImatrixError::BadEntry {
                name: t.name.clone(),
                reason: format!(
                    "covariance of {k} columns x {m} matrices, the tensor has {} x {} (made for another model?)",
                    t.row_len(),
                    t.n_matrices()
                ),
            }
            .into());
        }
        covered.push(t.name.clone());
    }
    Ok(covered)
}

/// The error feedback of each matrix of tensor `t` quantized to `ty`, when the job has a
/// covariance entry for it and `ty` is a block quantization.
fn feedback_of(
    job: &QuantizeJob<'_>,
    t: &TensorInfo,
    ty: GgmlType,
    rows_per_mat: usize,
) -> Result<Option<Vec<feedback::Feedback>>, PipelineError> {
    let Some(cov) = job.covariance else {
        return Ok(None);
    };
    let info = ty.info();
    if !info.quantized || rows_per_mat == 0 {
        return Ok(None);
    }
    let Some(entry) = cov.get(&t.name)? else {
        return Ok(None);
    };
    // The entry's shape was checked against the tensor by `covariance_coverage` before any
    // work, and `get` checks its data against that shape.
    let n = t.row_len() as usize;
    let Some(moments) = entry.second_moments(job.expert_prior) else {
        return Ok(None);
    };
    let block = info.block_size as usize;
    let fb: Option<Vec<_>> = moments
        .par_iter()
        .map(|h| feedback::Feedback::new(h, n, block, feedback::DEFAULT_DAMPING))
        .collect();
    Ok(fb)
}

/// A tensor whose imatrix entry has experts that saw no calibration tokens: those experts
/// are quantized with the pooled importance of the others (with an expert prior), or with
/// neutral (all-ones) weights as llama-quantize does (without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnseenExperts {
    /// Tensor name.
    pub tensor: String,
    /// Experts without data.
    pub unseen: usize,
    /// Experts in the tensor.
    pub total: usize,
}

/// The experts of tensor `name` that saw no calibration tokens in `imatrix`, if any.
pub fn unseen_experts_of(imatrix: &Imatrix, name: &str) -> Option<UnseenExperts> {
    let e = imatrix.get(name)?;
    let unseen = e.unseen_matrices();
    (unseen > 0).then(|| UnseenExperts {
        tensor: name.to_string(),
        unseen,
        total: e.n_mat(),
    })
}

/// Tensors to be quantized whose imatrix entry has experts with a zero count, for a warning
/// before the run.
pub fn unseen_experts(job: &QuantizeJob<'_>) -> Vec<UnseenExperts> {
    let Some(im) = job.imatrix else {
        return Vec::new();
    };
    (0..job.model.n_tensors())
        .zip(&job.targets)
        .filter_map(|(i, &target)| {
            let info = job.model.info(i);
            if target == info.ggml_type {
                return None;
            }
            unseen_experts_of(im, &info.name)
        })
        .collect()
}

/// How a quant was made, as its metadata records it.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// `general.file_type` (a llama.cpp ftype).
    pub file_type: u32,
    /// `dynquant.version`: the version of the tool that made it.
    pub tool_version: &'a str,
    /// `dynquant.recipe`: the recipe's name.
    pub recipe_name: &'a str,
    /// The recipe's text, hashed into `dynquant.recipe.sha256`.
    pub recipe_source: &'a str,
    /// The importance matrix and the path it was read from (`quantize.imatrix.*`).
    pub imatrix: Option<(&'a Imatrix, &'a Path)>,
}

/// The metadata of a quant of a model with metadata `input`: every input key, then
/// `general.quantization_version` 2 and `general.file_type`, how dynquant made it
/// (`dynquant.version`, `dynquant.recipe`, `dynquant.recipe.sha256`), and with an imatrix
/// llama-quantize's `quantize.imatrix.file`/`dataset`/`entries_count`/`chunks_count` (strings
/// cut to 127 characters as llama-quantize does).
pub fn output_metadata(input: Metadata, p: &Provenance<'_>) -> Metadata {
    let mut md = input;
    md.set(keys::general::QUANTIZATION_VERSION, Value::U32(2));
    md.set(keys::general::FILE_TYPE, Value::U32(p.file_type));
    md.set("dynquant.version", Value::String(p.tool_version.into()));
    md.set("dynquant.recipe", Value::String(p.recipe_name.into()));
    let digest: String = Sha256::digest(p.recipe_source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    md.set("dynquant.recipe.sha256", Value::String(digest));
    if let Some((im, path)) = p.imatrix {
        let cut = |s: &str| s.chars().take(127).collect::<String>();
        md.set(
            "quantize.imatrix.file",
            Value::String(cut(&path.display().to_string())),
        );
        if let Some(d) = im.datasets.first() {
            md.set("quantize.imatrix.dataset", Value::String(cut(d)));
        }
        md.set(
            "quantize.imatrix.entries_count",
            Value::U32(im.entries.len() as u32),
        );
        if im.chunk_count > 0 {
            md.set("quantize.imatrix.chunks_count", Value::U32(im.chunk_count));
        }
    }
    md
}

/// Checks, before any work, that every tensor whose target needs an importance matrix has one.
pub fn check_imatrix_coverage(job: &QuantizeJob<'_>) -> Result<(), PipelineError> {
    let mut missing = Vec::new();
    for (i, &target) in job.targets.iter().enumerate().take(job.model.n_tensors()) {
        let info = job.model.info(i);
        if target == info.ggml_type || target.info().imatrix != ImatrixNeed::Required {
            continue;
        }
        if importance_of(job.imatrix, job.expert_prior, info)?.is_none() && !job.imatrix_fallback {
            missing.push(info.name.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PipelineError::MissingImatrix(missing))
    }
}

/// Runs the job into `target`. Call it inside a rayon pool of the wanted size.
pub fn quantize_model(
    job: &QuantizeJob<'_>,
    target: &OutputTarget,
    write: &WriteOptions,
    progress: &dyn Progress,
) -> Result<WriteSummary, PipelineError> {
    quantize_model_with(job, target, write, SetOptions::default(), progress)
}

/// [`quantize_model`] with checksums and/or as one worker of a split set (see
/// [`SetOptions`]): only the tensors of the shards this run writes are read and quantized.
pub fn quantize_model_with(
    job: &QuantizeJob<'_>,
    target: &OutputTarget,
    write: &WriteOptions,
    set: SetOptions,
    progress: &dyn Progress,
) -> Result<WriteSummary, PipelineError> {
    let n = job.model.n_tensors();
    if job.targets.len() != n {
        return Err(PipelineError::PlanMismatch {
            plan: job.targets.len(),
            model: n,
        });
    }
    check_imatrix_coverage(job)?;
    covariance_coverage(job)?;
    let mut infos = Vec::with_capacity(n);
    for (i, &ty) in job.targets.iter().enumerate() {
        let info = job.model.info(i);
        infos.push(TensorInfo::new(info.name.clone(), info.shape.clone(), ty)?);
    }
    let mut opts = write.clone();
    opts.protected_inputs.extend(job.model.input_paths());
    let mut writer = GgufWriter::create_with(target, job.metadata.clone(), infos, &opts, set)?;
    for (index, &ty) in job.targets.iter().enumerate() {
        if !writer.wants(index) {
            continue;
        }
        let info = job.model.info(index);
        progress.tensor_started(index, &info.name, info.ggml_type, ty);
        if ty == info.ggml_type {
            job.model.stream_raw(index, &mut |chunk| {
                progress.advanced(chunk.len() as u64);
                writer.write(&info.name, chunk)
            })?;
            continue;
        }
        if info.ggml_type.info().quantized && !job.allow_requantize {
            return Err(PipelineError::Requantize(info.name.clone(), info.ggml_type));
        }
        let row = info.row_len() as usize;
        let n_rows = info.n_rows() as usize;
        let rows_per_mat = info.shape.get(1).copied().unwrap_or(1) as usize;
        // Without an entry, types that need one get uniform weights when the user accepted the
        // fallback (checked above); the others quantize unweighted.
        let importance = match importance_of(job.imatrix, job.expert_prior, info)? {
            None if ty.info().imatrix == ImatrixNeed::Required => Some(vec![vec![1f32; row]]),
            other => other,
        };
        let mats = importance.as_ref().map_or(1, Vec::len);
        let src_row_bytes = info.ggml_type.row_bytes(row as u64).unwrap_or(0) as usize;
        let dst_row_bytes = ty.row_bytes(row as u64).unwrap_or(0) as usize;
        let slab_rows = (job.slab_values / row.max(1)).max(1);
        let feedback = feedback_of(job, info, ty, rows_per_mat)?;
        let qerr = |source| PipelineError::Quant {
            tensor: info.name.clone(),
            source,
        };
        // One slab of rows at a time: memory stays at a slab whatever the tensor and model size.
        let mut out = Vec::new();
        let mut src = Vec::new();
        for first in (0..n_rows).step_by(slab_rows) {
            let rows = slab_rows.min(n_rows - first);
            src.resize(rows * row, 0f32);
            job.model
                .read_rows_f32(index, first, &mut src, job.allow_requantize)?;
            out.resize(rows * dst_row_bytes, 0);
            // Rows in parallel; each row's bytes depend only on the row and its weights.
            out.par_chunks_mut(dst_row_bytes)
                .zip(src.par_chunks(row.max(1)))
                .enumerate()
                .try_for_each(|(i, (dst, x))| -> Result<(), QuantError> {
                    let r = first + i;
                    let w = importance
                        .as_ref()
                        .map(|m| m[(r / rows_per_mat).min(mats - 1)].as_slice());
                    let quantized = match &feedback {
                        Some(fb) => {
                            fb[(r / rows_per_mat).min(fb.len() - 1)].quantize_row(ty, x, w, dst)
                        }
                        None => quantize_rows(ty, x, row, w, dst),
                    };
                    quantized.map_err(|e| match e {
                        QuantError::NonFiniteInput { col, value, .. } => {
                            QuantError::NonFiniteInput { row: r, col, value }
                        }
                        QuantError::InvalidBlock { ty, .. } => {
                            QuantError::InvalidBlock { ty, row: r }
                        }
                        other => other,
                    })
                })
                .map_err(qerr)?;
            writer.write(&info.name, &out)?;
            progress.advanced((rows * src_row_bytes) as u64);
        }
    }
    Ok(writer.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::imatrix::ImatrixEntry;

    #[test]
    fn output_metadata_keys_in_llama_quantize_order() {
        let mut input = Metadata::new();
        input.set("general.architecture", Value::String("llama".into()));
        input.set(keys::general::FILE_TYPE, Value::U32(1));
        input.set("llama.block_count", Value::U32(2));
        let im = Imatrix {
            datasets: vec!["d".repeat(200)],
            chunk_count: 0,
            chunk_size: 512,
            entries: vec![ImatrixEntry {
                name: "blk.0.ffn_down.weight".into(),
                n_per_mat: 2,
                in_sum2: vec![1.0, 2.0],
                counts: vec![1.0],
            }],
        };
        let path = PathBuf::from("im.gguf");
        let md = output_metadata(
            input,
            &Provenance {
                file_type: 15,
                tool_version: "9.9.9",
                recipe_name: "q4_k_m",
                recipe_source: "abc",
                imatrix: Some((&im, &path)),
            },
        );
        let keys: Vec<&str> = md.entries().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "llama.block_count",
                "general.quantization_version",
                "general.file_type",
                "dynquant.version",
                "dynquant.recipe",
                "dynquant.recipe.sha256",
                "quantize.imatrix.file",
                "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count",
            ]
        );
        assert_eq!(md.get("general.file_type"), Some(&Value::U32(15)));
        assert_eq!(
            md.get("dynquant.recipe.sha256").and_then(Value::as_str),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        let dataset = md.get("quantize.imatrix.dataset").and_then(Value::as_str);
        assert_eq!(dataset.map(str::len), Some(127));
        assert_eq!(
            md.get("quantize.imatrix.entries_count"),
            Some(&Value::U32(1))
        );
    }
}
