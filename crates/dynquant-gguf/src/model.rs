//! A model stored as one GGUF file or as a split set, opened from its (first) file.
//!
//! A split set is `<prefix>-00001-of-0000N.gguf` ... with `split.no` (0-based),
//! `split.count` and `split.tensors.count` in every shard and the model metadata in the first
//! (`tools/gguf-split/gguf-split.cpp`). Every shard is validated on open: its index, the
//! shard count, the total tensor count, and that no tensor name repeats across shards.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::file::{Access, GgufFile};
use crate::header::TensorInfo;
use crate::keys;
use crate::value::Metadata;
use crate::writer::{split_path, split_prefix};

/// A tensor of the model: which shard holds it and its info there.
#[derive(Debug, Clone, Copy)]
pub struct ModelTensor<'a> {
    /// Shard index (0 for a single file).
    pub part: usize,
    /// Index within that shard.
    pub index: usize,
    /// The tensor's header entry (offset relative to its shard's data section).
    pub info: &'a TensorInfo,
}

/// One GGUF model, from a single file or all shards of a split set.
#[derive(Debug)]
pub struct GgufModel {
    parts: Vec<GgufFile>,
    order: Vec<(usize, usize)>,
    metadata: Metadata,
}

fn split_key_u64(file: &GgufFile, key: &str) -> Result<Option<u64>> {
    match file.header().metadata.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| GgufError::BadSplit {
            path: file.path().to_path_buf(),
            reason: format!("{key} is {}, not a non-negative integer", v.value_type()),
        }),
    }
}

impl GgufModel {
    /// Opens a model from `path`; when the file is the first shard of a split set
    /// (`split.count` > 1), every other shard is opened and checked too.
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        let path = path.as_ref();
        let first = GgufFile::open(path, access)?;
        let count = split_key_u64(&first, keys::split::COUNT)?.unwrap_or(0);
        if count <= 1 {
            return Self::from_parts(vec![first]);
        }
        let bad = |p: &Path, reason: String| GgufError::BadSplit {
            path: p.to_path_buf(),
            reason,
        };
        let count = usize::try_from(count)
            .ok()
            .filter(|&c| c <= u16::MAX as usize)
            .ok_or_else(|| bad(path, format!("split.count {count} is above 65535")))?;
        let no = split_key_u64(&first, keys::split::NO)?;
        if no != Some(0) {
            return Err(bad(
                path,
                format!(
                    "this is shard {} of a {count}-part set; open the first part (…-00001-of-{count:05}.gguf)",
                    no.map_or("?".to_string(), |n| (n + 1).to_string())
                ),
            ));
        }
        let prefix = split_prefix(path, 0, count).ok_or_else(|| {
            bad(
                path,
                format!("a first shard of {count} must be named <prefix>-00001-of-{count:05}.gguf"),
            )
        })?;
        let mut parts = vec![first];
        for i in 1..count {
            let p = split_path(&prefix, i, count);
            if !p.exists() {
                return Err(bad(&p, format!("shard {} of {count} is missing", i + 1)));
            }
            // An I/O error names its file already; a parse error does not.
            let part = GgufFile::open(&p, access).map_err(|e| match e {
                e @ GgufError::Io { .. } => e,
                e => GgufError::InFile {
                    path: p.clone(),
                    source: Box::new(e),
                },
            })?;
            parts.push(part);
        }
        Self::from_parts(parts)
    }

    /// Builds a model from already opened shards, in order, checking their split keys.
    pub fn from_parts(parts: Vec<GgufFile>) -> Result<Self> {
        let count = parts.len();
        let bad = |p: &GgufFile, reason: String| GgufError::BadSplit {
            path: p.path().to_path_buf(),
            reason,
        };
        let mut total_expected = None;
        if count > 1 {
            for (i, part) in parts.iter().enumerate() {
                let no = split_key_u64(part, keys::split::NO)?;
                let c = split_key_u64(part, keys::split::COUNT)?;
                let t = split_key_u64(part, keys::split::TENSORS_COUNT)?;
                if no != Some(i as u64) {
                    return Err(bad(part, format!("split.no is {no:?}, expected {i}")));
                }
                if c != Some(count as u64) {
                    return Err(bad(part, format!("split.count is {c:?}, expected {count}")));
                }
                match (total_expected, t) {
                    (_, None) => return Err(bad(part, "split.tensors.count is missing".into())),
                    (None, Some(t)) => total_expected = Some(t),
                    (Some(e), Some(t)) if e != t => {
                        return Err(bad(
                            part,
                            format!("split.tensors.count is {t}, the first shard says {e}"),
                        ))
                    }
                    _ => {}
                }
            }
        }
        let mut order = Vec::new();
        let mut names = HashSet::new();
        for (p, part) in parts.iter().enumerate() {
            for (i, t) in part.header().tensors.iter().enumerate() {
                if !names.insert(t.name.as_str()) {
                    return Err(GgufError::DuplicateTensor(t.name.clone()));
                }
                order.push((p, i));
            }
        }
        if let Some(expected) = total_expected {
            if expected != order.len() as u64 {
                return Err(bad(
                    &parts[0],
                    format!(
                        "split.tensors.count is {expected} but the {count} shards hold {}",
                        order.len()
                    ),
                ));
            }
        }
        let metadata = parts[0].header().metadata.clone();
        Ok(GgufModel {
            parts,
            order,
            metadata,
        })
    }

    /// The shards (one for a single file).
    pub fn parts(&self) -> &[GgufFile] {
        &self.parts
    }

    /// Paths of all shards.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.path().to_path_buf()).collect()
    }

    /// Whether the model is a split set of more than one file.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1
    }

    /// The model metadata as stored in the first file (split keys included).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata without `split.*` keys: what a merged file carries.
    pub fn merged_metadata(&self) -> Metadata {
        let mut md = self.metadata.clone();
        for key in keys::split::ALL {
            md.remove(key);
        }
        md
    }

    /// Number of tensors over all shards.
    pub fn n_tensors(&self) -> usize {
        self.order.len()
    }

    /// Tensors in model order (shard by shard, file order within a shard).
    pub fn tensors(&self) -> impl Iterator<Item = ModelTensor<'_>> + '_ {
        self.order.iter().map(|&(part, index)| ModelTensor {
            part,
            index,
            info: &self.parts[part].header().tensors[index],
        })
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors().map(|t| t.info.n_bytes).sum()
    }

    /// The data of a tensor (borrowed when mapped).
    pub fn tensor_data(&self, t: &ModelTensor<'_>) -> Result<Cow<'_, [u8]>> {
        self.parts[t.part].tensor_data(t.index)
    }

    /// Reads `buf.len()` bytes of a tensor's data starting `from` bytes in.
    pub fn read_tensor_bytes(&self, t: &ModelTensor<'_>, from: u64, buf: &mut [u8]) -> Result<()> {
        self.parts[t.part].read_tensor_bytes(t.index, from, buf)
    }

    /// Drops mapped pages of a tensor's byte range that are no longer needed (see
    /// [`GgufFile::release_tensor_pages`]).
    pub fn release_tensor_pages(&self, t: &ModelTensor<'_>, from: u64, len: u64) -> Result<()> {
        self.parts[t.part].release_tensor_pages(t.index, from, len)
    }

    /// Streams a tensor's data to `sink` in bounded pieces.
    pub fn stream_tensor(
        &self,
        t: &ModelTensor<'_>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.parts[t.part].stream_tensor(t.index, sink)
    }
}
