//! Streaming GGUF output, single file or split set.
//!
//! The headers are computed up front from the tensor infos; tensor data is then accepted
//! strictly in header order, chunk by chunk, and never held whole. Every output goes to a
//! hidden temporary file in the target folder and is renamed into place only when all
//! outputs are complete; on error or drop the temporaries are removed, so nothing under a
//! final name is ever half written. Inputs are never overwritten.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encode::{build_header, encode_header_unpadded, StreamEncoder};
use crate::error::{GgufError, Result};
use crate::header::{align_up, GgufHeader, TensorInfo};
use crate::keys;
use crate::value::{Array, Metadata, Value};
use crate::verify::check_finished_shard;

/// Safety rules for creating outputs.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Replace an existing output file (never an input).
    pub overwrite: bool,
    /// Files that must never be replaced (the inputs of the run).
    pub protected_inputs: Vec<PathBuf>,
}

/// Limits for splitting an output into shards, as gguf-split's `--split-max-size` and
/// `--split-max-tensors`; both may be given, and a shard closes when either would be exceeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitSpec {
    /// Most tensor-data bytes per shard (tensor sizes padded to the alignment, header not
    /// counted, as gguf-split counts). A single larger tensor still gets a shard of its own.
    pub max_bytes: Option<u64>,
    /// Most tensors per shard.
    pub max_tensors: Option<usize>,
}

impl SplitSpec {
    /// Whether any limit is set.
    pub fn is_active(&self) -> bool {
        self.max_bytes.is_some() || self.max_tensors.is_some()
    }
}

/// One of `count` workers that share the writing of a split set: worker `index` (0-based)
/// writes shard `k` (0-based) exactly when `k % count == index`, so shards are dealt round
/// robin and every worker's share is known from the plan alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardWorker {
    /// This worker, `0..count`.
    pub index: usize,
    /// Workers in all.
    pub count: usize,
}

impl ShardWorker {
    /// Whether shard `shard` (0-based) is this worker's to write.
    pub fn owns(&self, shard: usize) -> bool {
        self.count > 0 && shard % self.count == self.index
    }
}

/// How a set of outputs is produced beyond the file-safety rules of [`WriteOptions`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions {
    /// Record [`keys::dynquant::TENSOR_CHECKSUMS`] in every output (each file lists its own
    /// tensors). Changes the header, so it is off unless asked for; always on for a worker.
    pub tensor_checksums: bool,
    /// Write only this worker's shards, each renamed into place as soon as it is complete,
    /// and skip those already there and verified (a restarted worker redoes only the rest).
    pub worker: Option<ShardWorker>,
}

/// The checksum recorded for a tensor's bytes: the first eight bytes of their SHA-256,
/// little-endian.
pub fn tensor_checksum(data: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(data);
    checksum_of(h)
}

pub(crate) fn checksum_of(h: Sha256) -> u64 {
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// Where the values of the checksum key start in an encoded header and how many there are,
/// when the key is the header's last metadata entry (as the writer puts it).
pub(crate) fn checksum_values_at(h: &GgufHeader) -> Option<(u64, usize)> {
    let (key, value) = h.metadata.entries().last()?;
    if key != keys::dynquant::TENSOR_CHECKSUMS {
        return None;
    }
    let n = match value.as_array()? {
        Array::U64(v) => v.len(),
        _ => return None,
    };
    let kv_end = encode_header_unpadded(&GgufHeader {
        tensors: Vec::new(),
        ..h.clone()
    })
    .len() as u64;
    Some((kv_end - 8 * n as u64, n))
}

/// Where output goes.
#[derive(Debug, Clone)]
pub enum OutputTarget {
    /// One file.
    Single(PathBuf),
    /// A split set `<prefix>-00001-of-0000N.gguf`...
    Split {
        /// Path prefix (may include folders).
        prefix: PathBuf,
        /// Shard limits.
        spec: SplitSpec,
    },
}

/// `<prefix>-%05d-of-%05d.gguf` with a 0-based `index` (llama.cpp `llama_split_path`).
pub fn split_path(prefix: &Path, index: usize, count: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(format!("-{:05}-of-{:05}.gguf", index + 1, count));
    PathBuf::from(s)
}

/// The prefix of a shard path, if its name ends as shard `index` of `count` must
/// (llama.cpp `llama_split_prefix`).
pub fn split_prefix(path: &Path, index: usize, count: usize) -> Option<PathBuf> {
    let s = path.to_str()?;
    let suffix = format!("-{:05}-of-{:05}.gguf", index + 1, count);
    s.strip_suffix(&suffix).map(PathBuf::from)
}

/// Groups tensors into shards the way gguf-split does: a new shard starts when adding the
/// next tensor (its size padded to `alignment`) would pass `max_bytes`, or when the shard
/// already holds `max_tensors`. Every shard gets at least one tensor.
pub fn plan_shards(
    tensors: &[TensorInfo],
    alignment: u64,
    spec: SplitSpec,
) -> Result<Vec<Range<usize>>> {
    if spec.max_tensors == Some(0) {
        return Err(GgufError::BadSplitOptions(
            "--split-max-tensors must be at least 1".into(),
        ));
    }
    if spec.max_bytes == Some(0) {
        return Err(GgufError::BadSplitOptions(
            "--split-max-size must be at least 1 byte".into(),
        ));
    }
    let mut shards = Vec::new();
    let mut start = 0usize;
    let mut bytes = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let size = align_up(t.n_bytes, alignment).unwrap_or(u64::MAX);
        let next_bytes = bytes.saturating_add(size);
        let over_bytes = spec.max_bytes.is_some_and(|m| next_bytes > m);
        let over_count = spec.max_tensors.is_some_and(|m| i - start >= m);
        if i > start && (over_bytes || over_count) {
            shards.push(start..i);
            start = i;
            bytes = size;
        } else {
            bytes = next_bytes;
        }
    }
    shards.push(start..tensors.len());
    if shards.len() > u16::MAX as usize {
        return Err(GgufError::BadSplitOptions(format!(
            "{} shards needed; split.count is a u16",
            shards.len()
        )));
    }
    Ok(shards)
}

/// Parses a size such as `50G`, `500M`, `1.5G` or a plain byte count. Like gguf-split, `M`
/// and `G` are decimal (10^6, 10^9); `K`/`T` and `MiB`/`GiB` forms are accepted too.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        "TIB" => 1024.0f64.powi(4),
        _ => return None,
    };
    let bytes = value * mult;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Temporary outputs currently being written, so that an interrupted process can remove
/// them before exiting (see [`remove_temporary_outputs_and_exit`]).
struct OutputRegistry {
    temporaries: Vec<PathBuf>,
    /// Set once the interrupt handler began: no new temporary may appear after it.
    closing: bool,
    /// Set once a complete set of outputs has its final names.
    outputs_written: bool,
}

static LIVE_TEMPORARIES: std::sync::Mutex<OutputRegistry> = std::sync::Mutex::new(OutputRegistry {
    temporaries: Vec::new(),
    closing: false,
    outputs_written: false,
});

fn live_temporaries() -> std::sync::MutexGuard<'static, OutputRegistry> {
    // A poisoned list is still a valid list of paths.
    LIVE_TEMPORARIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary output this process is writing and exits with `code`, for signal
/// handlers (Ctrl-C): nothing half-written is left behind and no final name was ever used.
/// `report` is told whether a complete set of outputs had already been renamed into place
/// (the signal came after the work was done), so the caller can say which case it was.
/// The registry stays locked until the process is gone, so no new temporary can appear in
/// between (temporaries are created, and sets committed, under the same lock).
pub fn remove_temporary_outputs_and_exit(code: i32, report: impl FnOnce(bool)) -> ! {
    let mut live = live_temporaries();
    live.closing = true;
    for p in live.temporaries.drain(..) {
        let _ = std::fs::remove_file(p);
    }
    report(live.outputs_written);
    std::process::exit(code)
}

/// What an interrupted command says (after "error: "), given whether a complete set of
/// outputs already had its final names when the signal came.
pub fn interrupted_message(outputs_written: bool) -> &'static str {
    if outputs_written {
        "interrupted after the output was complete; nothing partial was left"
    } else {
        "interrupted; no output was written"
    }
}

/// Renames a finished set of outputs into place as one step. The interrupt handler takes the
/// same lock, so it sees the set either before any rename or after all of them; a failed
/// rename removes the ones before it. A split set is thus all there or not at all.
/// The renames go last shard first: a SIGKILL (which no handler sees) between two renames
/// leaves complete shards under their final names but never the first one, the file every
/// reader opens a set by, so a cut set is never taken for a model.
/// `completes_set` is false for one shard of a worker committed on its own: the set is not
/// complete yet, so an interrupt must not say it was.
fn commit_all(mut temps: Vec<TempOutput>, completes_set: bool) -> Result<Vec<PathBuf>> {
    let mut live = live_temporaries();
    let mut renamed: Vec<PathBuf> = Vec::with_capacity(temps.len());
    for t in temps.iter().rev() {
        if let Err(e) = std::fs::rename(&t.tmp_path, &t.final_path) {
            for p in &renamed {
                let _ = std::fs::remove_file(p);
            }
            drop(live);
            return Err(GgufError::io("rename", &t.final_path, e));
        }
        renamed.push(t.final_path.clone());
    }
    live.temporaries
        .retain(|p| !temps.iter().any(|t| &t.tmp_path == p));
    live.outputs_written |= completes_set;
    drop(live);
    for t in &mut temps {
        t.committed = true;
    }
    renamed.reverse();
    Ok(renamed)
}

/// A temporary file that becomes `final_path` through [`commit_all`] and is removed if
/// dropped uncommitted.
struct TempOutput {
    tmp_path: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl TempOutput {
    fn create(final_path: &Path) -> Result<(Self, File)> {
        let dir = output_dir(final_path);
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out.gguf".into());
        let tmp_path = dir.join(format!(".{name}.{}.dynquant-tmp", std::process::id()));
        remove_dead_temporaries(&dir, &name);
        // Created and registered under one lock: see remove_temporary_outputs_and_exit.
        let file = {
            let mut live = live_temporaries();
            if live.closing {
                return Err(GgufError::io(
                    "create",
                    &tmp_path,
                    std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
                ));
            }
            let file =
                File::create(&tmp_path).map_err(|e| GgufError::io("create", &tmp_path, e))?;
            live.temporaries.push(tmp_path.clone());
            file
        };
        Ok((
            TempOutput {
                tmp_path,
                final_path: final_path.to_path_buf(),
                committed: false,
            },
            file,
        ))
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        live_temporaries()
            .temporaries
            .retain(|p| p != &self.tmp_path);
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Removes the temporaries of output `name` in `dir` whose writer is gone (`.{name}.{pid}
/// .dynquant-tmp` of a process id that no longer runs: a SIGKILLed or crashed run), so a killed
/// run's partial file does not stay forever beside the output. A temporary of a live process
/// (another run writing the same name) is left alone. Best effort.
fn remove_dead_temporaries(dir: &Path, name: &str) {
    let (lead, tail) = (format!(".{name}."), ".dynquant-tmp");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = n
            .strip_prefix(&lead)
            .and_then(|rest| rest.strip_suffix(tail))
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && !process_is_alive(pid)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether a process with this id exists (a signal-0 probe; "permission denied" means it does).
#[cfg(unix)]
fn process_is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Without a way to ask, every other writer counts as alive (nothing is removed).
#[cfg(not(unix))]
fn process_is_alive(_pid: u32) -> bool {
    true
}

/// Removes temporaries of `final_path` left by a killed writer (any process id): a worker
/// owns its shards, so a temporary of one of them is a dead run's. Best effort.
fn remove_stale_temporaries(final_path: &Path) {
    let Some(name) = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return;
    };
    let (lead, tail) = (format!(".{name}."), ".dynquant-tmp");
    let Ok(entries) = std::fs::read_dir(output_dir(final_path)) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&lead) && n.ends_with(tail) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Bytes of a file with this header: header, data and padding.
pub(crate) fn shard_bytes(h: &GgufHeader) -> u64 {
    let data: u64 = h
        .tensors
        .last()
        .map(|t| align_up(t.offset + t.n_bytes, h.alignment).unwrap_or(0))
        .unwrap_or(0);
    h.data_offset + data
}

/// The folder a file is written in.
fn output_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Bytes an unprivileged writer may still put on the file system holding `dir`, or `None`
/// when that cannot be asked (the write itself then reports a full disk).
fn available_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of
        // the right type; statvfs fills it on success only, which is checked before use.
        let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it initialised the struct.
        let st = unsafe { st.assume_init() };
        // The field types differ between platforms (32-bit on some).
        #[allow(clippy::unnecessary_cast)]
        (st.f_bavail as u64).checked_mul(st.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Whether two paths name the same existing file (same device and inode on Unix).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(ca), Ok(cb)) => ca == cb,
        _ => false,
    }
}

fn check_target(path: &Path, opts: &WriteOptions) -> Result<()> {
    if opts.protected_inputs.iter().any(|p| same_file(p, path)) {
        return Err(GgufError::WouldOverwriteInput(path.to_path_buf()));
    }
    if path.exists() && !opts.overwrite {
        return Err(GgufError::OutputExists(path.to_path_buf()));
    }
    Ok(())
}

struct Shard {
    header: GgufHeader,
    path: PathBuf,
    /// Indices of its tensors in the whole output.
    tensors: Range<usize>,
}

struct OpenShard {
    encoder: StreamEncoder<BufWriter<File>>,
    temp: TempOutput,
    /// One running hash per tensor of the shard when checksums are recorded.
    hashes: Option<Vec<Sha256>>,
    /// The tensor (index in the shard) last written, where the next search starts.
    last_tensor: usize,
}

/// Total bytes (headers, data, padding) the outputs for `tensors` with `metadata` would take
/// at `target`, exactly as [`GgufWriter::create`] lays them out, without touching the file
/// system: what a size target must be checked against.
pub fn planned_output_bytes(
    target: &OutputTarget,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
) -> Result<u64> {
    Ok(lay_out(target, metadata, tensors, false)?
        .iter()
        .map(|s| shard_bytes(&s.header))
        .sum())
}

/// The shards (headers with offsets, final paths) of `tensors` with `metadata` at `target`:
/// `split.*` keys and any checksums of an input dropped, a split set laid out by
/// [`plan_shards`], zeroed checksums last in each header when `checksums` (filled in as each
/// file is closed).
fn lay_out(
    target: &OutputTarget,
    mut metadata: Metadata,
    tensors: Vec<TensorInfo>,
    checksums: bool,
) -> Result<Vec<Shard>> {
    for key in keys::split::ALL {
        metadata.remove(key);
    }
    metadata.remove(keys::dynquant::TENSOR_CHECKSUMS);
    match target {
        OutputTarget::Single(path) => {
            if checksums {
                metadata.set(
                    keys::dynquant::TENSOR_CHECKSUMS,
                    Value::Array(Array::U64(vec![0; tensors.len()])),
                );
            }
            let n = tensors.len();
            Ok(vec![Shard {
                header: build_header(metadata, tensors)?,
                path: path.clone(),
                tensors: 0..n,
            }])
        }
        OutputTarget::Split { prefix, spec } => {
            split_headers(prefix, metadata, tensors, *spec, checksums)
        }
    }
}

/// Streaming writer for one GGUF file or a split set.
pub struct GgufWriter {
    shards: Vec<Shard>,
    /// Which shards this run writes (all of them unless it is one worker of several, or
    /// some were found finished).
    todo: Vec<bool>,
    set: SetOptions,
    /// The next shard to consider opening.
    next: usize,
    current: Option<(usize, OpenShard)>,
    completed: Vec<TempOutput>,
    /// Shards already renamed into place (a worker commits each as it completes).
    committed: Vec<PathBuf>,
    /// This worker's shards found finished and verified, left as they were.
    skipped: Vec<PathBuf>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// Final paths, in shard order.
    pub paths: Vec<PathBuf>,
    /// Total bytes over all files (for a worker, over its shards, skipped ones included).
    pub bytes: u64,
    /// A worker's shards that were already finished and verified, so not rewritten.
    pub skipped: Vec<PathBuf>,
}

impl GgufWriter {
    /// Prepares outputs for `tensors` (in the order their data will be given) with
    /// `metadata`. Offsets are assigned here; only names, shapes and types are used from
    /// `tensors`. Any existing `split.*` keys in `metadata` are dropped; a split set gets
    /// llama.cpp's `split.no`/`split.count`/`split.tensors.count` in every shard and all
    /// other metadata in the first shard only.
    pub fn create(
        target: &OutputTarget,
        metadata: Metadata,
        tensors: Vec<TensorInfo>,
        opts: &WriteOptions,
    ) -> Result<Self> {
        Self::create_with(target, metadata, tensors, opts, SetOptions::default())
    }

    /// [`GgufWriter::create`] with checksums and/or as one worker of several (see
    /// [`SetOptions`]). A worker's shards that already exist must be the planned shard,
    /// verified against the plan's header and their recorded checksums, and are then
    /// skipped; any other existing file is an error unless `opts.overwrite`.
    pub fn create_with(
        target: &OutputTarget,
        metadata: Metadata,
        tensors: Vec<TensorInfo>,
        opts: &WriteOptions,
        mut set: SetOptions,
    ) -> Result<Self> {
        if let Some(w) = set.worker {
            if w.count == 0 || w.index >= w.count {
                return Err(GgufError::BadSplitOptions(format!(
                    "worker {}/{} is out of range (workers are numbered 0 to N-1)",
                    w.index, w.count
                )));
            }
            set.tensor_checksums = true;
        }
        let shards = lay_out(target, metadata, tensors, set.tensor_checksums)?;
        let mut todo = vec![true; shards.len()];
        let mut skipped = Vec::new();
        if let Some(w) = set.worker {
            for (k, s) in shards.iter().enumerate() {
                if !w.owns(k) {
                    todo[k] = false;
                    continue;
                }
                remove_stale_temporaries(&s.path);
                if s.path.exists() && !opts.protected_inputs.iter().any(|p| same_file(p, &s.path)) {
                    match check_finished_shard(&s.path, &s.header) {
                        Ok(()) => {
                            todo[k] = false;
                            skipped.push(s.path.clone());
                        }
                        Err(_) if opts.overwrite => {}
                        Err(reason) => {
                            return Err(GgufError::ShardMismatch {
                                path: s.path.clone(),
                                reason,
                            })
                        }
                    }
                }
            }
        }
        for (s, _) in shards.iter().zip(&todo).filter(|(_, &t)| t) {
            check_target(&s.path, opts)?;
        }
        let writer = GgufWriter {
            shards,
            todo,
            set,
            next: 0,
            current: None,
            completed: Vec::new(),
            committed: Vec::new(),
            skipped,
        };
        writer.check_free_space()?;
        Ok(writer)
    }

    /// Whether the caller must give the data of tensor `index` (in the order of the
    /// `tensors` given to create): false for tensors of shards this run does not write.
    pub fn wants(&self, index: usize) -> bool {
        self.shards
            .iter()
            .zip(&self.todo)
            .any(|(s, &t)| t && s.tensors.contains(&index))
    }

    /// Refuses to start when a target folder's file system cannot hold the outputs planned
    /// there (sizes are exact, known from the headers), instead of failing hours later.
    fn check_free_space(&self) -> Result<()> {
        let mut need: Vec<(PathBuf, u64)> = Vec::new();
        for (s, _) in self.shards.iter().zip(&self.todo).filter(|(_, &t)| t) {
            let dir = output_dir(&s.path);
            let bytes = shard_bytes(&s.header);
            match need.iter_mut().find(|(d, _)| *d == dir) {
                Some((_, n)) => *n = n.saturating_add(bytes),
                None => need.push((dir, bytes)),
            }
        }
        for (dir, need) in need {
            if let Some(available) = available_space(&dir) {
                if need > available {
                    return Err(GgufError::NoSpace {
                        path: dir,
                        need,
                        available,
                    });
                }
            }
        }
        Ok(())
    }

    /// The headers that will be written, in shard order, with their final paths.
    pub fn planned(&self) -> impl Iterator<Item = (&Path, &GgufHeader)> {
        self.shards.iter().map(|s| (s.path.as_path(), &s.header))
    }

    /// Total bytes the outputs will take (headers, data and padding), known before writing.
    pub fn planned_bytes(&self) -> u64 {
        self.shards.iter().map(|s| shard_bytes(&s.header)).sum()
    }

    fn open_shard(&self, index: usize) -> Result<OpenShard> {
        let shard = &self.shards[index];
        let (temp, file) = TempOutput::create(&shard.path)?;
        let writer = BufWriter::with_capacity(4 << 20, file);
        let encoder = StreamEncoder::new(writer, &shard.header, &temp.tmp_path)?;
        let hashes = self
            .set
            .tensor_checksums
            .then(|| vec![Sha256::new(); shard.header.tensors.len()]);
        Ok(OpenShard {
            encoder,
            temp,
            hashes,
            last_tensor: 0,
        })
    }

    /// Closes the open shard (checking it is complete) and keeps its temp file for commit.
    fn close_current(&mut self) -> Result<()> {
        if let Some((index, open)) = self.current.take() {
            let path = open.temp.tmp_path.clone();
            let (writer, _) = open.encoder.finish(&path)?;
            let mut file = writer
                .into_inner()
                .map_err(|e| GgufError::io("write", &path, e.into_error()))?;
            if let Some(hashes) = open.hashes {
                let (at, n) = checksum_values_at(&self.shards[index].header)
                    .expect("checksums were laid out last");
                debug_assert_eq!(n, hashes.len());
                let bytes: Vec<u8> = hashes
                    .into_iter()
                    .flat_map(|h| checksum_of(h).to_le_bytes())
                    .collect();
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.write_all(&bytes))
                    .map_err(|e| GgufError::io("write", &path, e))?;
            }
            file.sync_all()
                .map_err(|e| GgufError::io("sync", &path, e))?;
            if self.set.worker.is_some() {
                // A worker keeps each finished shard: a restart then redoes only the rest.
                self.committed.extend(commit_all(vec![open.temp], false)?);
            } else {
                self.completed.push(open.temp);
            }
        }
        Ok(())
    }

    /// Closes the open shard and opens the next one this run writes; false when none is left.
    fn open_next(&mut self) -> Result<bool> {
        self.close_current()?;
        while self.next < self.shards.len() && !self.todo[self.next] {
            self.next += 1;
        }
        if self.next >= self.shards.len() {
            return Ok(false);
        }
        let index = self.next;
        self.next += 1;
        self.current = Some((index, self.open_shard(index)?));
        Ok(true)
    }

    /// Makes sure the open shard still expects data, moving to the next shard when the
    /// current one is complete. Returns false when every shard is complete.
    fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some((_, open)) = &self.current {
                if open.encoder.expected().is_some() {
                    return Ok(true);
                }
            }
            if !self.open_next()? {
                return Ok(false);
            }
        }
    }

    /// Appends `data` to tensor `name`, which must be the next tensor in order. Chunks of
    /// one tensor may be given in several calls.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<()> {
        if !self.advance()? {
            return Err(GgufError::OutOfOrder {
                expected: "<no more tensors>".into(),
                got: name.into(),
            });
        }
        let (index, open) = self.current.as_mut().expect("advance left a shard open");
        let path = open.temp.tmp_path.clone();
        open.encoder.write(name, data, &path)?;
        if let Some(hashes) = &mut open.hashes {
            let tensors = &self.shards[*index].header.tensors;
            // Tensors come in order: the one written is the last one or a later one.
            let at = (open.last_tensor..tensors.len())
                .find(|&i| tensors[i].name == name)
                .expect("the encoder accepted the name in order");
            open.last_tensor = at;
            hashes[at].update(data);
        }
        Ok(())
    }

    /// Finishes every output and renames them into place; fails (removing all temporaries)
    /// if any tensor is incomplete.
    pub fn finish(mut self) -> Result<WriteSummary> {
        while self.open_next()? {}
        let bytes = match self.set.worker {
            Some(w) => (self.shards.iter().enumerate())
                .filter(|(k, _)| w.owns(*k))
                .map(|(_, s)| shard_bytes(&s.header))
                .sum(),
            None => self.planned_bytes(),
        };
        let mut paths = std::mem::take(&mut self.committed);
        paths.extend(commit_all(std::mem::take(&mut self.completed), true)?);
        Ok(WriteSummary {
            paths,
            bytes,
            skipped: std::mem::take(&mut self.skipped),
        })
    }
}

fn split_headers(
    prefix: &Path,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    spec: SplitSpec,
    checksums: bool,
) -> Result<Vec<Shard>> {
    let alignment = crate::header::alignment_of(&metadata)?;
    let ranges = plan_shards(&tensors, alignment, spec)?;
    let count = ranges.len();
    let total = i32::try_from(tensors.len()).map_err(|_| {
        GgufError::BadSplitOptions("too many tensors for split.tensors.count".into())
    })?;
    let mut shards = Vec::with_capacity(count);
    for (i, range) in ranges.into_iter().enumerate() {
        let mut md = if i == 0 {
            metadata.clone()
        } else {
            let mut md = Metadata::new();
            // Later shards carry no metadata but must keep a non-default alignment.
            if let Some(v) = metadata.get(keys::general::ALIGNMENT) {
                md.set(keys::general::ALIGNMENT, v.clone());
            }
            md
        };
        md.set(keys::split::NO, Value::U16(i as u16));
        md.set(keys::split::COUNT, Value::U16(count as u16));
        md.set(keys::split::TENSORS_COUNT, Value::I32(total));
        if checksums {
            md.set(
                keys::dynquant::TENSOR_CHECKSUMS,
                Value::Array(Array::U64(vec![0; range.len()])),
            );
        }
        shards.push(Shard {
            header: build_header(md, tensors[range.clone()].to_vec())?,
            path: split_path(prefix, i, count),
            tensors: range,
        });
    }
    Ok(shards)
}
