//! An opened GGUF file: its validated header plus access to tensor data, either zero-copy
//! from a memory map or through positioned reads (`pread`).

use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Location, Result};
use crate::header::{parse_header, GgufHeader, TensorInfo};

/// How tensor data is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Memory-map the file; tensor data is borrowed without copying.
    Mmap,
    /// Positioned reads into caller buffers (`--no-mmap`).
    Pread,
}

enum Source {
    Mmap(memmap2::Mmap),
    File(File),
    Bytes(Vec<u8>),
}

/// A GGUF file whose header has been parsed and fully validated: every tensor's data range
/// lies inside the file, aligned and non-overlapping.
pub struct GgufFile {
    path: PathBuf,
    source: Source,
    file_len: u64,
    header: GgufHeader,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("file_len", &self.file_len)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

/// Bytes copied per step when streaming tensor data through `pread`.
pub const COPY_CHUNK: usize = 8 << 20;

impl GgufFile {
    /// Opens `path` with positioned reads. Always safe.
    pub fn open_pread(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (file, file_len) = open_with_len(path)?;
        let header = parse_header(BufReader::with_capacity(1 << 20, &file), file_len)
            .map_err(|e| with_path(e, path))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            source: Source::File(file),
            file_len,
            header,
        })
    }

    /// Opens `path` through a memory map.
    ///
    /// # Safety
    /// The file must not be truncated or modified by anyone while the returned value (or any
    /// slice borrowed from it) is alive; otherwise reads may see changing data or fault.
    /// dynquant never writes to its inputs (writers refuse to overwrite an input path).
    pub unsafe fn open_mmap(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (file, file_len) = open_with_len(path)?;
        if file_len == 0 {
            // An empty file cannot be mapped; report it as what it is.
            return Self::from_bytes(path, Vec::new());
        }
        // SAFETY: the caller upholds the no-modification contract documented above.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::io("mmap", path, e))?;
        let header = parse_header(&map[..], file_len).map_err(|e| with_path(e, path))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            source: Source::Mmap(map),
            file_len,
            header,
        })
    }

    /// Opens `path` with the given access method. Mmap access relies on the contract of
    /// [`GgufFile::open_mmap`]: dynquant's tools never modify their inputs, and the caller
    /// asserts no other process does so while the file is open.
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        match access {
            // SAFETY: see the doc comment; inputs are treated as read-only for the whole run.
            Access::Mmap => unsafe { Self::open_mmap(path) },
            Access::Pread => Self::open_pread(path),
        }
    }

    /// Parses an in-memory file (tests, fuzzing). `path` is used in messages only.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        let file_len = bytes.len() as u64;
        let header = parse_header(&bytes[..], file_len).map_err(|e| with_path(e, path.as_ref()))?;
        Ok(GgufFile {
            path: path.as_ref().to_path_buf(),
            source: Source::Bytes(bytes),
            file_len,
            header,
        })
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The validated header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// Consumes the file, returning its header.
    pub fn into_header(self) -> GgufHeader {
        self.header
    }

    /// Absolute file range of `t`'s data (validated at open).
    fn range_of(&self, t: &TensorInfo) -> (u64, u64) {
        let start = self.header.data_offset + t.offset;
        (start, start + t.n_bytes)
    }

    /// The data of tensor `index`: borrowed from the map, or read into a new buffer.
    pub fn tensor_data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        let t = self.tensor(index)?;
        let (start, end) = self.range_of(t);
        match &self.source {
            Source::Mmap(m) => Ok(Cow::Borrowed(&m[start as usize..end as usize])),
            Source::Bytes(b) => Ok(Cow::Borrowed(&b[start as usize..end as usize])),
            Source::File(_) => {
                let mut buf = vec![0u8; t.n_bytes as usize];
                self.read_tensor_bytes(index, 0, &mut buf)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    fn tensor(&self, index: usize) -> Result<&TensorInfo> {
        self.header
            .tensors
            .get(index)
            .ok_or_else(|| GgufError::NoSuchTensor(format!("#{index}")))
    }

    /// Reads `buf.len()` bytes of tensor `index` starting `from` bytes into its data.
    pub fn read_tensor_bytes(&self, index: usize, from: u64, buf: &mut [u8]) -> Result<()> {
        let t = self.tensor(index)?;
        let (start, end) = self.range_of(t);
        let lo = start.checked_add(from);
        let hi = lo.and_then(|lo| lo.checked_add(buf.len() as u64));
        let (lo, hi) = match (lo, hi) {
            (Some(lo), Some(hi)) if hi <= end => (lo, hi),
            _ => {
                return Err(GgufError::TooMuchData {
                    name: t.name.clone(),
                    expected: t.n_bytes,
                    got: from.saturating_add(buf.len() as u64),
                })
            }
        };
        match &self.source {
            Source::Mmap(m) => buf.copy_from_slice(&m[lo as usize..hi as usize]),
            Source::Bytes(b) => buf.copy_from_slice(&b[lo as usize..hi as usize]),
            Source::File(f) => read_exact_at(f, buf, lo).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    // The header was checked against the length at open: the file was cut
                    // since. Say so with its current length, the file and the tensor.
                    let now = f.metadata().map_or(0, |m| m.len());
                    GgufError::InFile {
                        path: self.path.clone(),
                        source: Box::new(GgufError::Truncated {
                            location: Location::TensorData {
                                name: t.name.clone(),
                            },
                            offset: lo,
                            need: hi - lo,
                            file_len: now,
                        }),
                    }
                } else {
                    GgufError::io("read", &self.path, e)
                }
            })?,
        }
        Ok(())
    }

    /// Tells the kernel that the mapped pages of bytes `from..from + len` of tensor `index`
    /// are no longer needed, so a streaming pass over a model larger than memory keeps its
    /// resident set at what it is working on. Data stays correct: a later access reads the
    /// file again. A no-op without a memory map.
    pub fn release_tensor_pages(&self, index: usize, from: u64, len: u64) -> Result<()> {
        let t = self.tensor(index)?;
        let (start, end) = self.range_of(t);
        let lo = start.saturating_add(from).min(end);
        let hi = lo.saturating_add(len).min(end);
        if let Source::Mmap(m) = &self.source {
            #[cfg(unix)]
            {
                // SAFETY: the map is a read-only mapping of a file (never anonymous or
                // copy-on-write modified), so dropping pages only discards clean cached copies
                // that are faulted in again from the file; no data can change. Failure only
                // costs memory, so it is ignored.
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        lo as usize,
                        (hi - lo) as usize,
                    )
                };
            }
            #[cfg(not(unix))]
            let _ = (m, lo, hi);
        }
        Ok(())
    }

    /// Streams tensor `index`'s data to `sink` in pieces of at most [`COPY_CHUNK`] bytes (a
    /// single borrowed piece when mapped), so copying never holds a whole tensor.
    pub fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let t = self.tensor(index)?;
        if !matches!(self.source, Source::File(_)) {
            return sink(&self.tensor_data(index)?);
        }
        let mut buf = vec![0u8; (t.n_bytes as usize).min(COPY_CHUNK)];
        let mut done = 0u64;
        while done < t.n_bytes {
            let n = ((t.n_bytes - done) as usize).min(buf.len());
            self.read_tensor_bytes(index, done, &mut buf[..n])?;
            sink(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

fn open_with_len(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| GgufError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| GgufError::io("stat", path, e))?
        .len();
    Ok((file, len))
}

fn with_path(e: GgufError, path: &Path) -> GgufError {
    match e {
        GgufError::Io { op, source, .. } => GgufError::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

/// Fills `buf` from `f` at `offset` with positioned reads (no shared file cursor, so threads
/// can read one file concurrently); `UnexpectedEof` if the file ends first.
#[cfg(unix)]
pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

/// Fills `buf` from `f` at `offset` with positioned reads; `UnexpectedEof` if the file ends
/// first.
#[cfg(windows)]
pub fn read_exact_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
