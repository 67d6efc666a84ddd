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

use crate::types::GgmlType;
use crate::{
    Access, Array, GgufError, GgufModel, GgufWriter, Metadata, OutputTarget, TensorInfo, Value,
    WriteOptions,
};

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
    /// A legacy `.dat` file that does not parse.
    #[error("legacy imatrix: {0}")]
    Legacy(String),
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

    /// Every expert's weights as the mean of its squared activations with `prior.tokens`
    /// pseudo-tokens at the tensor's pooled mean over all experts added:
    /// `(in_sum2_e + k·pooled) / (count_e + k)`, `pooled = Σ in_sum2 / Σ count` per column.
    ///
    /// Why: an expert's weights are an estimate from the tokens routed to it, and routing is
    /// uneven (the rarest experts of a calibration run see a handful of tokens, DeepSeek's
    /// 256-expert layers leave some at zero). A weighted quantizer fits whatever columns
    /// those few tokens happened to light up and neglects the rest, and the expert then
    /// fails on the tokens it meets later. Shrinking toward the pooled mean (a standard
    /// empirical-Bayes estimate) leaves well-covered experts nearly unchanged and gives an
    /// unseen expert the layer's importance instead of all ones. Measured in
    /// docs/benchmarks.md ("Experts that saw few calibration tokens").
    pub fn shrunk_weights(&self, prior: ExpertPrior) -> Vec<Vec<f32>> {
        let n = self.n_per_mat;
        let total: f64 = self.counts.iter().map(|&c| f64::from(c)).sum();
        if total <= 0.0 {
            return vec![vec![1.0; n]; self.n_mat()];
        }
        let mut pooled = vec![0f64; n];
        for sums in self.in_sum2.chunks_exact(n) {
            for (p, &s) in pooled.iter_mut().zip(sums) {
                *p += f64::from(s);
            }
        }
        let k = f64::from(prior.tokens);
        pooled.iter_mut().for_each(|p| *p = *p * k / total);
        self.in_sum2
            .chunks_exact(n)
            .zip(&self.counts)
            .map(|(sums, &count)| {
                let denom = f64::from(count) + k;
                sums.iter()
                    .zip(&pooled)
                    .map(|(&s, &p)| ((f64::from(s) + p) / denom) as f32)
                    .collect()
            })
            .collect()
    }

    /// Matrices (experts) that saw no tokens: llama-quantize gives them neutral weights,
    /// [`ImatrixEntry::shrunk_weights`] the pooled mean of the others.
    pub fn unseen_matrices(&self) -> usize {
        self.counts.iter().filter(|c| **c == 0.0).count()
    }

    /// Per-matrix weights for a tensor with rows of `ne0` values and `n_mat` matrices, or
    /// `None` when the entry does not fit that shape. A legacy `.dat` entry has no
    /// per-expert structure (its experts are concatenated in one vector with one call
    /// count), so a single vector of `ne0 * n_mat` values is cut into `n_mat` slices, as
    /// llama-quantize does.
    ///
    /// With `expert_prior` > 0 and per-expert counts, each expert's weights are shrunk
    /// toward the tensor's pooled mean ([`ImatrixEntry::shrunk_weights`]); 0 gives
    /// llama-quantize's weights.
    pub fn weights_for(
        &self,
        ne0: usize,
        n_mat: usize,
        expert_prior: ExpertPrior,
    ) -> Option<Vec<Vec<f32>>> {
        if self.n_per_mat == ne0 && self.n_mat() == n_mat {
            if n_mat > 1 && expert_prior.tokens > 0.0 {
                return Some(self.shrunk_weights(expert_prior));
            }
            return Some((0..n_mat).map(|m| self.weights(m)).collect());
        }
        if self.n_mat() == 1 && n_mat > 1 && Some(self.n_per_mat) == ne0.checked_mul(n_mat) {
            let all = self.weights(0);
            return Some(all.chunks(ne0).map(<[f32]>::to_vec).collect());
        }
        None
    }

    /// [`ImatrixEntry::weights_for`] the shape of tensor `t`: its row length and matrices.
    pub fn weights_for_tensor(
        &self,
        t: &crate::TensorInfo,
        expert_prior: ExpertPrior,
    ) -> Option<Vec<Vec<f32>>> {
        self.weights_for(t.row_len() as usize, t.n_matrices() as usize, expert_prior)
    }
}

/// How strongly an expert's importance weights are pulled toward its tensor's pooled mean
/// over all experts: the weight, in calibration tokens, of that pooled mean
/// ([`ImatrixEntry::shrunk_weights`]). 0 gives llama-quantize's per-expert weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertPrior {
    /// Pseudo-tokens at the pooled mean.
    pub tokens: f32,
}

impl ExpertPrior {
    /// dynquant's default: 16 tokens. Measured on `smollm2-moe-routed`, whose rarest experts
    /// saw 2-7 calibration tokens (docs/benchmarks.md): on an allocated plan 16, 64 and 256
    /// gave the same large gain and pooling every expert into one vector less; on the
    /// uniform-expert hand presets 16 is even with no prior and 64 slightly worse (it also
    /// pulls well-covered experts toward inputs they do not see).
    pub const DEFAULT: ExpertPrior = ExpertPrior { tokens: 16.0 };
    /// llama-quantize's weights: each expert's own mean (all ones when it saw nothing).
    pub const NONE: ExpertPrior = ExpertPrior { tokens: 0.0 };
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

/// Writes a GGUF of F32 tensors (each with its values) under `md`: the imatrix and covariance
/// files.
pub(crate) fn write_f32_tensors<'v>(
    path: &Path,
    md: Metadata,
    tensors: impl Iterator<Item = (TensorInfo, &'v [f32])>,
    opts: &WriteOptions,
) -> Result<(), ImatrixError> {
    let (infos, values): (Vec<TensorInfo>, Vec<&[f32]>) = tensors.unzip();
    let mut w = GgufWriter::create(
        &OutputTarget::Single(path.to_path_buf()),
        md,
        infos.clone(),
        opts,
    )?;
    let mut buf = Vec::new();
    for (t, v) in infos.iter().zip(values) {
        buf.clear();
        buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        w.write(&t.name, &buf)?;
    }
    w.finish()?;
    Ok(())
}

pub(crate) fn f32_values(
    model: &GgufModel,
    name: &str,
) -> Result<(Vec<u64>, Vec<f32>), ImatrixError> {
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
    if bytes.len() as u64 != 4 * t.info.n_elements() {
        return Err(ImatrixError::BadEntry {
            name: name.into(),
            reason: format!(
                "{} bytes do not hold {} f32 values",
                bytes.len(),
                t.info.n_elements()
            ),
        });
    }
    let out: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((t.info.shape.clone(), out))
}

/// The entry with `n_mat` matrices: a batched entry stored as one matrix of all experts'
/// sums with a single count (llama-imatrix's form when every expert saw the same tokens) is
/// spread back over its matrices.
fn with_matrices(e: &ImatrixEntry, n_mat: usize) -> Option<ImatrixEntry> {
    if e.n_mat() == n_mat {
        return Some(e.clone());
    }
    (e.n_mat() == 1 && n_mat > 1 && e.n_per_mat.is_multiple_of(n_mat)).then(|| ImatrixEntry {
        name: e.name.clone(),
        n_per_mat: e.n_per_mat / n_mat,
        in_sum2: e.in_sum2.clone(),
        counts: vec![e.counts.first().copied().unwrap_or(0.0); n_mat],
    })
}

/// Joins imatrices computed over disjoint chunks of one text into the imatrix of all of
/// them, as llama-imatrix combines files: per weight and per matrix (expert) the sums and
/// the token counts are added; chunk counts are added and datasets listed once each. The
/// chunk size must agree. Sums are added in f64 and rounded once, so the result is within
/// float rounding of one run over all chunks.
pub fn merge(parts: &[Imatrix]) -> Result<Imatrix, ImatrixError> {
    let bad = |name: &str, reason: String| ImatrixError::BadEntry {
        name: name.into(),
        reason,
    };
    let Some(first) = parts.first() else {
        return Err(bad("", "nothing to merge".into()));
    };
    let mut datasets: Vec<String> = Vec::new();
    let mut chunk_count = 0u32;
    for p in parts {
        if p.chunk_size != first.chunk_size {
            return Err(ImatrixError::BadKey(keys::CHUNK_SIZE));
        }
        chunk_count = chunk_count.saturating_add(p.chunk_count);
        for d in &p.datasets {
            if !datasets.contains(d) {
                datasets.push(d.clone());
            }
        }
    }
    let mut names: Vec<&str> = parts
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let found: Vec<&ImatrixEntry> = parts.iter().filter_map(|p| p.get(name)).collect();
        let n_mat = found.iter().map(|e| e.n_mat()).max().unwrap_or(1);
        let collapsed = found.iter().any(|e| e.n_mat() < n_mat) || n_mat == 1;
        let spread: Vec<ImatrixEntry> = found
            .iter()
            .map(|e| {
                with_matrices(e, n_mat).ok_or_else(|| {
                    bad(
                        name,
                        format!("{} matrices in one part, {n_mat} in another", e.n_mat()),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let n_per_mat = spread[0].n_per_mat;
        if let Some(e) = spread.iter().find(|e| e.n_per_mat != n_per_mat) {
            return Err(bad(
                name,
                format!(
                    "{} values per matrix in one part, {n_per_mat} in another",
                    e.n_per_mat
                ),
            ));
        }
        let mut sums = vec![0f64; n_per_mat * n_mat];
        let mut counts = vec![0f64; n_mat];
        for e in &spread {
            sums.iter_mut()
                .zip(&e.in_sum2)
                .for_each(|(s, &v)| *s += f64::from(v));
            counts
                .iter_mut()
                .zip(&e.counts)
                .for_each(|(c, &v)| *c += f64::from(v));
        }
        // Stored as one matrix again when it came so and every expert still has one count.
        let one = collapsed && n_mat > 1 && counts.windows(2).all(|c| c[0] == c[1]);
        entries.push(ImatrixEntry {
            name: name.to_string(),
            n_per_mat: if one { n_per_mat * n_mat } else { n_per_mat },
            in_sum2: sums.iter().map(|&v| v as f32).collect(),
            counts: if one {
                vec![counts[0] as f32]
            } else {
                counts.iter().map(|&c| c as f32).collect()
            },
        });
    }
    Ok(Imatrix {
        datasets,
        chunk_count,
        chunk_size: first.chunk_size,
        entries,
    })
}

impl Imatrix {
    /// Reads an imatrix file: GGUF (recognised by its magic) or llama.cpp's legacy `.dat`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ImatrixError> {
        let path = path.as_ref();
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|()| &magic == b"GGUF")
            .unwrap_or(false);
        if is_gguf {
            Self::read_gguf(path)
        } else {
            let bytes = std::fs::read(path).map_err(|e| GgufError::io("read", path, e))?;
            Self::parse_legacy(&bytes)
        }
    }

    /// Reads a GGUF imatrix.
    pub fn read_gguf(path: impl AsRef<Path>) -> Result<Self, ImatrixError> {
        let model = GgufModel::open(path, Access::Pread)?;
        let md = model.metadata();
        let ty = md.get(crate::keys::general::TYPE).and_then(Value::as_str);
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
        md.set(crate::keys::general::TYPE, Value::String("imatrix".into()));
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
        let values = entries
            .iter()
            .flat_map(|e| [e.in_sum2.as_slice(), e.counts.as_slice()]);
        write_f32_tensors(path.as_ref(), md, tensors.into_iter().zip(values), opts)
    }
}

/// Reads little-endian fields of a legacy `.dat` file, every length checked against what is
/// left.
struct LegacyReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl LegacyReader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], ImatrixError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ImatrixError::Legacy(format!(
                "truncated at byte {} reading {what} ({n} bytes needed, {} left)",
                self.pos,
                self.bytes.len() - self.pos
            )));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32, ImatrixError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative count no larger than `max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize, ImatrixError> {
        let v = self.i32(what)?;
        usize::try_from(v)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| ImatrixError::Legacy(format!("{what} is {v}, outside 0..={max}")))
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

impl Imatrix {
    /// Parses llama.cpp's legacy `.dat` imatrix (`--output-format dat`): `int32 n_entries`;
    /// per entry `int32 name_len`, the name, `int32 ncall`, `int32 nval`, `nval` f32 values;
    /// then optionally `int32 last_chunk`, `int32 dataset_len` and the dataset name (all
    /// little-endian; format from llama.cpp `tools/imatrix/imatrix.cpp`). The stored values
    /// are mean squared activations times `ncall`, so each entry becomes `in_sum2 = values`
    /// with a single count of `ncall`, and [`ImatrixEntry::weights`] gives `values / ncall`
    /// exactly as llama-quantize computes it (raw values when `ncall` is 0).
    pub fn parse_legacy(bytes: &[u8]) -> Result<Self, ImatrixError> {
        let mut r = LegacyReader { bytes, pos: 0 };
        // Each entry needs at least 12 bytes, which bounds the entry count by the file size.
        let n_entries = r.count("entry count", bytes.len() / 12)?;
        let mut entries = Vec::with_capacity(n_entries);
        for i in 0..n_entries {
            let name_len = r.count("name length", r.left())?;
            let name = std::str::from_utf8(r.take(name_len, "name")?)
                .map_err(|_| ImatrixError::Legacy(format!("entry {i}: name is not UTF-8")))?
                .to_string();
            let ncall = r.i32("call count")?;
            let nval = r.count("value count", r.left() / 4)?;
            let raw = r.take(nval * 4, "values")?;
            let in_sum2: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if nval == 0 {
                return Err(ImatrixError::BadEntry {
                    name,
                    reason: "no values".into(),
                });
            }
            if let Some(v) = in_sum2.iter().find(|v| !v.is_finite() || **v < 0.0) {
                return Err(ImatrixError::BadEntry {
                    name,
                    reason: format!("contains the invalid value {v}"),
                });
            }
            if ncall < 0 {
                return Err(ImatrixError::BadEntry {
                    name,
                    reason: format!("negative call count {ncall}"),
                });
            }
            // llama-quantize divides by ncall, or keeps the raw values when it is 0.
            let count = if ncall == 0 { 1.0 } else { ncall as f32 };
            entries.push(ImatrixEntry {
                name,
                n_per_mat: nval,
                in_sum2,
                counts: vec![count],
            });
        }
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if r.left() >= 4 {
            chunk_count = r.count("last chunk", i32::MAX as usize)? as u32;
            if r.left() >= 4 {
                let len = r.count("dataset name length", r.left())?;
                let name = r.take(len, "dataset name")?;
                datasets.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        if r.left() != 0 {
            return Err(ImatrixError::Legacy(format!(
                "{} unexpected bytes after the last field",
                r.left()
            )));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if entries.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(ImatrixError::Legacy("duplicate entry names".into()));
        }
        Ok(Imatrix {
            datasets,
            chunk_count,
            chunk_size: 0,
            entries,
        })
    }

    /// Encodes the imatrix as a legacy `.dat` file the way llama.cpp's writer does:
    /// `ncall = ceil(max(counts) / chunk_size)` (the largest count when the chunk size is
    /// unknown), each value `in_sum2 / count * ncall`, an expert that saw nothing stored as
    /// `ncall` (neutral), and entries without any data skipped.
    pub fn to_legacy_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let kept: Vec<&ImatrixEntry> = self
            .entries
            .iter()
            .filter(|e| e.counts.iter().any(|c| *c > 0.0))
            .collect();
        out.extend_from_slice(&(kept.len() as i32).to_le_bytes());
        for e in kept {
            let max_count = e.counts.iter().copied().fold(0f32, f32::max) as f64;
            let ncall = if self.chunk_size > 0 {
                (max_count / self.chunk_size as f64).ceil()
            } else {
                max_count
            }
            .max(1.0) as i32;
            out.extend_from_slice(&(e.name.len() as i32).to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&ncall.to_le_bytes());
            out.extend_from_slice(&(e.in_sum2.len() as i32).to_le_bytes());
            for m in 0..e.n_mat() {
                let count = e.counts[m];
                for s in &e.in_sum2[m * e.n_per_mat..(m + 1) * e.n_per_mat] {
                    let v = if count > 0.0 {
                        (*s / count) * ncall as f32
                    } else {
                        ncall as f32
                    };
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(self.chunk_count as i32).to_le_bytes());
        let dataset = self.datasets.first().map_or("", String::as_str);
        out.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
        out.extend_from_slice(dataset.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three experts of two columns: one with 1000 tokens, one with 2, one unseen.
    fn entry() -> ImatrixEntry {
        ImatrixEntry {
            name: "blk.0.ffn_down_exps.weight".into(),
            n_per_mat: 2,
            // means: (1, 3), (50, 0.5), none
            in_sum2: vec![1000.0, 3000.0, 100.0, 1.0, 0.0, 0.0],
            counts: vec![1000.0, 2.0, 0.0],
        }
    }

    #[test]
    fn experts_are_shrunk_toward_the_pooled_mean_by_their_token_count() {
        let e = entry();
        let pooled = [1100.0 / 1002.0, 3001.0 / 1002.0];
        let w = e.weights_for(2, 3, ExpertPrior { tokens: 64.0 }).unwrap();
        // The well-covered expert moves by about 64/1064 of the way.
        for (c, want) in [(0, [1.0, 3.0]), (1, [50.0, 0.5])] {
            let n = e.counts[c] as f64;
            for j in 0..2 {
                let expect = (want[j] * n + 64.0 * pooled[j]) / (n + 64.0);
                assert!((w[c][j] as f64 - expect).abs() < 1e-5 * expect, "{c} {j}");
            }
        }
        assert!((w[0][0] - 1.0).abs() < 0.01);
        // The expert that saw 2 tokens is mostly the pooled mean; the unseen one is exactly it.
        assert!(w[1][0] < 3.0 && w[1][1] > 2.5, "{:?}", w[1]);
        for j in 0..2 {
            assert!((w[2][j] as f64 - pooled[j]).abs() < 1e-5);
        }
    }

    #[test]
    fn no_prior_gives_llama_quantize_weights() {
        let e = entry();
        let w = e.weights_for(2, 3, ExpertPrior::NONE).unwrap();
        assert_eq!(w, vec![vec![1.0, 3.0], vec![50.0, 0.5], vec![1.0, 1.0]]);
        // A dense entry (one matrix) ignores the prior.
        let dense = ImatrixEntry {
            name: "blk.0.ffn_down.weight".into(),
            n_per_mat: 2,
            in_sum2: vec![4.0, 8.0],
            counts: vec![4.0],
        };
        assert_eq!(
            dense.weights_for(2, 1, ExpertPrior::DEFAULT).unwrap(),
            vec![vec![1.0, 2.0]]
        );
    }
}
