//! Checking a written file or split set: every shard present, split keys and tensor counts
//! consistent, data inside each file, and each tensor's bytes against the checksum recorded
//! at write time (when the writer recorded them).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encode::encode_header;
use crate::error::{GgufError, Result};
use crate::file::GgufFile;
use crate::header::GgufHeader;
use crate::keys;
use crate::value::{Array, Value};
use crate::writer::{checksum_of, checksum_values_at, shard_bytes, split_path, split_prefix};

/// What [`verify_set`] checked.
#[derive(Debug, Clone)]
pub struct VerifySummary {
    /// Every file of the set, in shard order.
    pub files: Vec<PathBuf>,
    /// Tensors over all files.
    pub tensors: usize,
    /// Bytes over all files.
    pub bytes: u64,
    /// Files that carry per-tensor checksums (all of them checked); the others were checked
    /// for structure only.
    pub checksummed_files: usize,
}

/// The checksums a header records, in tensor order, if any.
pub fn recorded_checksums(h: &GgufHeader) -> Option<&[u64]> {
    match h
        .metadata
        .get(keys::dynquant::TENSOR_CHECKSUMS)?
        .as_array()?
    {
        Array::U64(v) => Some(v),
        _ => None,
    }
}

/// Recomputes the checksum of tensor `index` of `file`, streaming its bytes.
fn checksum_in_file(file: &GgufFile, index: usize) -> Result<u64> {
    let mut h = Sha256::new();
    file.stream_tensor(index, &mut |chunk| {
        h.update(chunk);
        Ok(())
    })?;
    Ok(checksum_of(h))
}

/// The first tensor of `file` whose bytes differ from its recorded checksum.
fn first_bad_tensor(file: &GgufFile, recorded: &[u64]) -> Result<Option<String>> {
    for (i, (t, &want)) in file.header().tensors.iter().zip(recorded).enumerate() {
        if checksum_in_file(file, i)? != want {
            return Ok(Some(t.name.clone()));
        }
    }
    Ok(None)
}

/// Whether the file at `path` is exactly the planned shard `planned` (checksum values
/// aside): same size, same header bytes, and every tensor matching the checksum recorded in
/// it. The reason it is not, otherwise.
pub(crate) fn check_finished_shard(
    path: &Path,
    planned: &GgufHeader,
) -> std::result::Result<(), String> {
    let file = GgufFile::open_pread(path).map_err(|e| e.to_string())?;
    let want = shard_bytes(planned);
    if file.file_len() != want {
        return Err(format!("{} bytes, the plan has {want}", file.file_len()));
    }
    let recorded = recorded_checksums(file.header())
        .ok_or("no tensor checksums recorded")?
        .to_vec();
    let mut zeroed = file.header().clone();
    if checksum_values_at(&zeroed).is_none() {
        return Err("the checksums are not the last metadata key".into());
    }
    let n = recorded.len();
    zeroed.metadata.set(
        keys::dynquant::TENSOR_CHECKSUMS,
        Value::Array(Array::U64(vec![0; n])),
    );
    if encode_header(&zeroed) != encode_header(planned) {
        return Err("its header differs from the planned one".into());
    }
    match first_bad_tensor(&file, &recorded).map_err(|e| e.to_string())? {
        Some(name) => Err(format!(
            "tensor {name}: bytes differ from its recorded checksum"
        )),
        None => Ok(()),
    }
}

fn fail(msg: String) -> GgufError {
    GgufError::Verify(msg)
}

fn split_key(h: &GgufHeader, key: &str) -> Option<u64> {
    h.metadata.get(key).and_then(Value::as_u64)
}

/// Checks the file or split set that starts at `first` (a single file, or the
/// `...-00001-of-0000N.gguf` shard): every shard present and named as llama.cpp expects,
/// `split.no`/`split.count`/`split.tensors.count` consistent, every tensor's data inside its
/// file, and, where recorded, every tensor's checksum. The first problem is the error.
pub fn verify_set(first: &Path) -> Result<VerifySummary> {
    let head = GgufFile::open_pread(first)?;
    let count = split_key(head.header(), keys::split::COUNT);
    let (prefix, count) = match count {
        None => (None, 1usize),
        Some(0) => return Err(fail(format!("{}: split.count is 0", first.display()))),
        Some(c) => {
            let c = c as usize;
            let prefix = split_prefix(first, 0, c).ok_or_else(|| {
                fail(format!(
                    "{}: not the first shard of a {c}-shard set (expected a name ending -00001-of-{c:05}.gguf)",
                    first.display()
                ))
            })?;
            (Some(prefix), c)
        }
    };
    let total = split_key(head.header(), keys::split::TENSORS_COUNT);
    let mut summary = VerifySummary {
        files: Vec::with_capacity(count),
        tensors: 0,
        bytes: 0,
        checksummed_files: 0,
    };
    let mut head = Some(head);
    for i in 0..count {
        let path = match &prefix {
            Some(p) => split_path(p, i, count),
            None => first.to_path_buf(),
        };
        let file = match head.take() {
            Some(f) => f,
            None => {
                if !path.exists() {
                    return Err(fail(format!(
                        "shard {} of {count} is missing: {}",
                        i + 1,
                        path.display()
                    )));
                }
                GgufFile::open_pread(&path)?
            }
        };
        let h = file.header();
        if prefix.is_some() {
            let no = split_key(h, keys::split::NO);
            let c = split_key(h, keys::split::COUNT);
            let t = split_key(h, keys::split::TENSORS_COUNT);
            if no != Some(i as u64) || c != Some(count as u64) || t != total {
                return Err(fail(format!(
                    "{}: split keys say shard {:?} of {:?} with {:?} tensors, the set needs shard {i} of {count} with {:?}",
                    path.display(),
                    no,
                    c,
                    t,
                    total
                )));
            }
        }
        for t in &h.tensors {
            let end = h.data_offset + t.offset + t.n_bytes;
            if end > file.file_len() {
                return Err(fail(format!(
                    "{}: tensor {} ends at byte {end}, past the file's {} bytes",
                    path.display(),
                    t.name,
                    file.file_len()
                )));
            }
        }
        if let Some(recorded) = recorded_checksums(h) {
            if recorded.len() != h.tensors.len() {
                return Err(fail(format!(
                    "{}: {} checksums recorded for {} tensors",
                    path.display(),
                    recorded.len(),
                    h.tensors.len()
                )));
            }
            if let Some(name) = first_bad_tensor(&file, recorded)? {
                return Err(fail(format!(
                    "{}: tensor {name}: bytes differ from the checksum recorded at write time",
                    path.display()
                )));
            }
            summary.checksummed_files += 1;
        }
        summary.tensors += h.tensors.len();
        summary.bytes += file.file_len();
        summary.files.push(path);
    }
    if let Some(t) = total {
        if t != summary.tensors as u64 {
            return Err(fail(format!(
                "the set holds {} tensors, split.tensors.count says {t}",
                summary.tensors
            )));
        }
    }
    Ok(summary)
}
