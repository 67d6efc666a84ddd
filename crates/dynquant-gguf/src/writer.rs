//! Streaming GGUF output, single file or split set.
//!
//! The headers are computed up front from the tensor infos; tensor data is then accepted
//! strictly in header order, chunk by chunk, and never held whole. Every output goes to a
//! hidden temporary file in the target folder and is renamed into place only when all
//! outputs are complete; on error or drop the temporaries are removed, so nothing under a
//! final name is ever half written. Inputs are never overwritten.

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::encode::{build_header, StreamEncoder};
use crate::error::{GgufError, Result};
use crate::header::{align_up, GgufHeader, TensorInfo};
use crate::keys;
use crate::value::{Metadata, Value};

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
fn commit_all(mut temps: Vec<TempOutput>) -> Result<Vec<PathBuf>> {
    let mut live = live_temporaries();
    let mut renamed: Vec<PathBuf> = Vec::with_capacity(temps.len());
    for t in &temps {
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
    live.outputs_written = true;
    drop(live);
    for t in &mut temps {
        t.committed = true;
    }
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

/// Bytes of a file with this header: header, data and padding.
fn shard_bytes(h: &GgufHeader) -> u64 {
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
}

struct OpenShard {
    encoder: StreamEncoder<BufWriter<File>>,
    temp: TempOutput,
}

/// Total bytes (headers, data, padding) the outputs for `tensors` with `metadata` would take
/// at `target`, exactly as [`GgufWriter::create`] lays them out, without touching the file
/// system: what a size target must be checked against.
pub fn planned_output_bytes(
    target: &OutputTarget,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
) -> Result<u64> {
    Ok(lay_out(target, metadata, tensors)?
        .iter()
        .map(|s| shard_bytes(&s.header))
        .sum())
}

/// The shards (headers with offsets, final paths) of `tensors` with `metadata` at `target`:
/// `split.*` keys dropped, a split set laid out by [`plan_shards`].
fn lay_out(
    target: &OutputTarget,
    mut metadata: Metadata,
    tensors: Vec<TensorInfo>,
) -> Result<Vec<Shard>> {
    for key in keys::split::ALL {
        metadata.remove(key);
    }
    match target {
        OutputTarget::Single(path) => Ok(vec![Shard {
            header: build_header(metadata, tensors)?,
            path: path.clone(),
        }]),
        OutputTarget::Split { prefix, spec } => split_headers(prefix, metadata, tensors, *spec),
    }
}

/// Streaming writer for one GGUF file or a split set.
pub struct GgufWriter {
    shards: Vec<Shard>,
    current: Option<(usize, OpenShard)>,
    completed: Vec<TempOutput>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// Final paths, in shard order.
    pub paths: Vec<PathBuf>,
    /// Total bytes over all files.
    pub bytes: u64,
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
        let shards = lay_out(target, metadata, tensors)?;
        for s in &shards {
            check_target(&s.path, opts)?;
        }
        let writer = GgufWriter {
            shards,
            current: None,
            completed: Vec::new(),
        };
        writer.check_free_space()?;
        Ok(writer)
    }

    /// Refuses to start when a target folder's file system cannot hold the outputs planned
    /// there (sizes are exact, known from the headers), instead of failing hours later.
    fn check_free_space(&self) -> Result<()> {
        let mut need: Vec<(PathBuf, u64)> = Vec::new();
        for s in &self.shards {
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
        Ok(OpenShard { encoder, temp })
    }

    /// Closes the open shard (checking it is complete) and keeps its temp file for commit.
    fn close_current(&mut self) -> Result<()> {
        if let Some((_, open)) = self.current.take() {
            let path = open.temp.tmp_path.clone();
            let (writer, _) = open.encoder.finish(&path)?;
            let file = writer
                .into_inner()
                .map_err(|e| GgufError::io("write", &path, e.into_error()))?;
            file.sync_all()
                .map_err(|e| GgufError::io("sync", &path, e))?;
            self.completed.push(open.temp);
        }
        Ok(())
    }

    /// Index of the shard after the open one (or the first unopened one).
    fn next_shard(&self) -> usize {
        self.current
            .as_ref()
            .map_or(self.completed.len(), |(i, _)| i + 1)
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
            let next = self.next_shard();
            self.close_current()?;
            if next >= self.shards.len() {
                return Ok(false);
            }
            self.current = Some((next, self.open_shard(next)?));
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
        let (_, open) = self.current.as_mut().expect("advance left a shard open");
        let path = open.temp.tmp_path.clone();
        open.encoder.write(name, data, &path)
    }

    /// Finishes every output and renames them into place; fails (removing all temporaries)
    /// if any tensor is incomplete.
    pub fn finish(mut self) -> Result<WriteSummary> {
        loop {
            let next = self.next_shard();
            self.close_current()?;
            if next >= self.shards.len() {
                break;
            }
            self.current = Some((next, self.open_shard(next)?));
        }
        let bytes = self.planned_bytes();
        let paths = commit_all(std::mem::take(&mut self.completed))?;
        Ok(WriteSummary { paths, bytes })
    }
}

fn split_headers(
    prefix: &Path,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    spec: SplitSpec,
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
        shards.push(Shard {
            header: build_header(md, tensors[range].to_vec())?,
            path: split_path(prefix, i, count),
        });
    }
    Ok(shards)
}
