//! Unit records, the journal (`OUT.partial`) and shard files.
//!
//! Journal: one JSON line of [`Header`], then one JSON line per finished unit ([`Record`]),
//! each written whole, flushed and synced before the next unit starts. A line cut short by a
//! kill is dropped on reopening. Floats are kept as their IEEE-754 bits (`*_bits`, u64), so a
//! resumed or merged scan assembles exactly the values a whole run computed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use dynquant_plan::sensitivity::SensitivityKey;
use serde::{Deserialize, Serialize};

use crate::{MeasureError, Shard};

const JOURNAL_FORMAT: &str = "dynquant-measure-journal/1";
const SHARD_FORMAT: &str = "dynquant-sensitivity-shard/1";

/// What a journal or shard file was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    pub format: String,
    pub dynquant_version: String,
    pub key: SensitivityKey,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub candidates: Vec<String>,
    /// Units of the whole scan.
    pub units: usize,
    pub shard: Option<Shard>,
}

impl Header {
    pub(crate) fn new(
        key: SensitivityKey,
        settings: BTreeMap<String, serde_json::Value>,
        candidates: Vec<String>,
        units: usize,
        shard: Option<Shard>,
    ) -> Header {
        Header {
            format: JOURNAL_FORMAT.to_string(),
            dynquant_version: env!("CARGO_PKG_VERSION").to_string(),
            key,
            settings,
            candidates,
            units,
            shard,
        }
    }

    /// The header with the shard's index left out (its count kept): equal for every shard of
    /// one scan.
    pub(crate) fn without_shard(&self) -> Header {
        let mut h = self.clone();
        h.shard = h.shard.map(|s| Shard {
            index: 0,
            count: s.count,
        });
        h
    }
}

/// A tensor unit's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TensorRecord {
    pub name: String,
    pub n_elements: u64,
    pub rows_measured: u64,
    /// Stored type name -> relative error's bits.
    pub errors_bits: BTreeMap<String, u64>,
}

/// A probe unit's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeRecord {
    pub group: String,
    pub tensors: Vec<String>,
    /// The type each tensor was stored as (the probe, or its fallback).
    pub stored: Vec<String>,
    pub probe: String,
    pub delta_kld_bits: u64,
    pub stderr_bits: u64,
    pub tokens: u64,
}

/// One finished unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub unit: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<TensorRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeRecord>,
}

impl Record {
    pub(crate) fn tensor(unit: usize, t: TensorRecord) -> Record {
        Record {
            unit,
            tensor: Some(t),
            probe: None,
        }
    }

    pub(crate) fn probe(unit: usize, p: ProbeRecord) -> Record {
        Record {
            unit,
            tensor: None,
            probe: Some(p),
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MeasureError + '_ {
    move |source| MeasureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The journal of a running scan.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
    done: BTreeSet<usize>,
}

impl Journal {
    /// Opens the journal at `path` for `header`: its finished units when it was made for the
    /// same header (a last line cut short is dropped), else a new one (`true`: an existing
    /// journal for something else was replaced).
    pub(crate) fn open(path: &Path, header: &Header) -> Result<(Journal, bool), MeasureError> {
        let mut records = Vec::new();
        let mut keep_bytes = None;
        let mut replaced = false;
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut lines = bytes.split_inclusive(|b| *b == b'\n');
                let same = lines
                    .next()
                    .filter(|l| l.ends_with(b"\n"))
                    .and_then(|l| serde_json::from_slice::<Header>(l).ok())
                    .is_some_and(|h| h == *header);
                if same {
                    let mut len = bytes
                        .split_inclusive(|b| *b == b'\n')
                        .next()
                        .map_or(0, <[u8]>::len);
                    for l in lines {
                        let whole = l.ends_with(b"\n");
                        match serde_json::from_slice::<Record>(l) {
                            Ok(r) if whole && r.unit < header.units => {
                                records.push(r);
                                len += l.len();
                            }
                            _ => break,
                        }
                    }
                    keep_bytes = Some(len as u64);
                } else {
                    replaced = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(path)(e)),
        }
        let file = match keep_bytes {
            Some(len) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                f.set_len(len).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(io(path))?
            }
            None => {
                let mut f = File::create(path).map_err(io(path))?;
                let mut line = serde_json::to_vec(header).expect("header serializes");
                line.push(b'\n');
                f.write_all(&line).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                f
            }
        };
        let mut done = BTreeSet::new();
        records.retain(|r| done.insert(r.unit));
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                records,
                done,
            },
            replaced,
        ))
    }

    pub(crate) fn has(&self, unit: usize) -> bool {
        self.done.contains(&unit)
    }

    /// Appends a finished unit durably.
    pub(crate) fn append(&mut self, r: Record) -> Result<(), MeasureError> {
        let mut line = serde_json::to_vec(&r).expect("record serializes");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.done.insert(r.unit);
        self.records.push(r);
        Ok(())
    }

    pub(crate) fn into_records(self) -> Vec<Record> {
        let mut r = self.records;
        r.sort_by_key(|r| r.unit);
        r
    }
}

/// A shard's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShardFile {
    pub header: Header,
    pub results: Vec<Record>,
    /// What an in-context scan's merge needs besides the units (absent for the isolated scan,
    /// whose shard files are unchanged by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextPart>,
}

/// The part of an in-context scan's result that every shard computes alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContextPart {
    /// The sensitivity file the scan extends, as the text that was read: a merge parses the
    /// same text a whole run parsed, so no float goes through a second decimal round trip.
    pub base: String,
    /// The quantized file's identity.
    pub quant_sha256: String,
    /// Tokens per calibration chunk.
    pub ctx: usize,
    /// Calibration chunks.
    pub chunks: usize,
    /// The quantized file's own mean KLD and its standard error (IEEE bits).
    pub kld_bits: u64,
    pub stderr_bits: u64,
}

impl ShardFile {
    pub(crate) fn to_json(&self) -> String {
        let mut h = self.header.clone();
        h.format = SHARD_FORMAT.to_string();
        let f = ShardFile {
            header: h,
            results: self.results.clone(),
            context: self.context.clone(),
        };
        let mut s = serde_json::to_string_pretty(&f).expect("shard serializes");
        s.push('\n');
        s
    }

    pub(crate) fn read(path: &Path) -> Result<ShardFile, MeasureError> {
        let bad = |reason: String| MeasureError::Shard {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut f: ShardFile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a dynquant sensitivity shard file: {e}")))?;
        if f.header.format != SHARD_FORMAT {
            return Err(bad(format!(
                "format '{}', expected '{SHARD_FORMAT}'",
                f.header.format
            )));
        }
        if f.header.dynquant_version != env!("CARGO_PKG_VERSION") {
            return Err(bad(format!(
                "made by dynquant {}, this is {} (measure again)",
                f.header.dynquant_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        f.header.format = JOURNAL_FORMAT.to_string();
        Ok(f)
    }
}

/// Writes `text` to `path` through a temporary file in the same folder, synced and renamed.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), MeasureError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}
