//! Typed errors of GGUF reading and writing.

use std::fmt;
use std::path::PathBuf;

use crate::types::GgmlType;

/// Where in the header a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The fixed-size file header (magic, version, counts).
    FileHeader,
    /// The key of KV pair `index`.
    KeyOf {
        /// KV index in file order.
        index: u64,
    },
    /// The value of key `key`.
    ValueOf {
        /// Key name.
        key: String,
    },
    /// Tensor info `index` (its name once known).
    TensorInfo {
        /// Tensor index in file order.
        index: u64,
        /// Name, when already read.
        name: Option<String>,
    },
    /// Tensor data.
    TensorData {
        /// Tensor name.
        name: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::FileHeader => write!(f, "the file header"),
            Location::KeyOf { index } => write!(f, "the key of metadata entry {index}"),
            Location::ValueOf { key } => write!(f, "the value of '{key}'"),
            Location::TensorInfo { index, name: None } => write!(f, "tensor info {index}"),
            Location::TensorInfo {
                index,
                name: Some(n),
            } => write!(f, "tensor info {index} ('{n}')"),
            Location::TensorData { name } => write!(f, "the data of tensor '{name}'"),
        }
    }
}

/// Everything that can go wrong reading, writing, splitting or merging GGUF files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// An operating-system error on a file.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`open`, `read`, `write`, `rename`...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An error that must say which file it is about: in a shard of a split set other than
    /// the first (callers name the file they opened), or in a file that changed while read.
    #[error("{path}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<GgufError>,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// Version other than 2 or 3.
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    /// The file ends before the header does.
    #[error("file truncated in {location}: need {need} bytes at offset {offset}, file is {file_len} bytes")]
    Truncated {
        /// What was being read.
        location: Location,
        /// Byte offset of the read.
        offset: u64,
        /// Bytes needed.
        need: u64,
        /// File length.
        file_len: u64,
    },
    /// A count or length beyond what the file could hold or a sane limit.
    #[error("{what} in {location} is {count}, above the limit of {limit}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// Where.
        location: Location,
        /// The value found.
        count: u64,
        /// The largest value accepted here.
        limit: u64,
    },
    /// An unknown metadata value type id.
    #[error("invalid value type id {type_id} in {location}")]
    InvalidValueType {
        /// Where.
        location: Location,
        /// The id found.
        type_id: u32,
    },
    /// A bool byte other than 0 or 1.
    #[error("invalid bool byte {byte} in {location}")]
    InvalidBool {
        /// Where.
        location: Location,
        /// The byte found.
        byte: u8,
    },
    /// A string that is not UTF-8.
    #[error("string in {location} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where.
        location: Location,
    },
    /// Arrays nested too deep.
    #[error("arrays nested deeper than {limit} levels in {location}")]
    NestingTooDeep {
        /// Where.
        location: Location,
        /// The limit.
        limit: u32,
    },
    /// An empty key.
    #[error("metadata entry {index} has an empty key")]
    EmptyKey {
        /// KV index.
        index: u64,
    },
    /// A key that appears twice.
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    /// A tensor name that appears twice.
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    /// `general.alignment` is not a u32 power of two.
    #[error("invalid general.alignment: {0}")]
    BadAlignment(String),
    /// A tensor name of 64 bytes or more (`GGML_MAX_NAME`).
    #[error("tensor name '{name}' is {len} bytes; ggml allows at most 63")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// More than 4 dimensions.
    #[error("tensor '{name}' has {n_dims} dimensions; ggml allows at most 4")]
    TooManyDims {
        /// Tensor name.
        name: String,
        /// Dimensions found.
        n_dims: u32,
    },
    /// A tensor type id that is not a ggml type.
    #[error("tensor '{name}' has unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// Tensor name.
        name: String,
        /// Type id found.
        type_id: u32,
    },
    /// A shape that overflows, is negative as int64, or does not divide into blocks.
    #[error("tensor '{name}' has an invalid shape {shape:?} for type {ty}: {reason}")]
    BadShape {
        /// Tensor name.
        name: String,
        /// Shape (ggml order).
        shape: Vec<u64>,
        /// Type.
        ty: GgmlType,
        /// Why.
        reason: &'static str,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor '{name}' has offset {offset}, not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Alignment.
        alignment: u64,
    },
    /// Tensor data past the end of the file.
    #[error(
        "tensor '{name}' data [{start}, {end}) is past the end of the file ({file_len} bytes)"
    )]
    TensorOutOfBounds {
        /// Tensor name.
        name: String,
        /// Absolute start.
        start: u64,
        /// Absolute end (may be saturated on overflow).
        end: u64,
        /// File length.
        file_len: u64,
    },
    /// Two tensors whose data ranges overlap.
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    OverlappingTensors {
        /// Tensor with the lower offset.
        first: String,
        /// Tensor overlapping it.
        second: String,
    },
    /// A split set that is inconsistent or incomplete.
    #[error("bad split set at {path}: {reason}")]
    BadSplit {
        /// The file concerned.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The writer would replace one of its own inputs.
    #[error("refusing to overwrite input file {0}")]
    WouldOverwriteInput(PathBuf),
    /// The output folder's file system has less free space than the outputs need.
    #[error("not enough disk space for {path}: {need} bytes needed, {available} available")]
    NoSpace {
        /// Output folder.
        path: PathBuf,
        /// Bytes the outputs in that folder will take.
        need: u64,
        /// Bytes available to this user there.
        available: u64,
    },
    /// The output exists and overwriting was not allowed.
    #[error("output {0} already exists (pass --force to replace it)")]
    OutputExists(PathBuf),
    /// Tensor data given out of header order.
    #[error("tensor data out of order: expected '{expected}', got '{got}'")]
    OutOfOrder {
        /// The tensor the header says comes next.
        expected: String,
        /// The tensor given.
        got: String,
    },
    /// More data than the tensor holds.
    #[error("too much data for tensor '{name}': {got} bytes given, {expected} expected")]
    TooMuchData {
        /// Tensor name.
        name: String,
        /// Bytes expected in total.
        expected: u64,
        /// Bytes given in total.
        got: u64,
    },
    /// The writer was finished before all tensor data was written.
    #[error("output incomplete: tensor '{name}' has {written} of {expected} bytes")]
    Incomplete {
        /// First incomplete tensor.
        name: String,
        /// Bytes written.
        written: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// A tensor the caller asked for does not exist.
    #[error("no tensor named '{0}'")]
    NoSuchTensor(String),
    /// Invalid split options.
    #[error("invalid split options: {0}")]
    BadSplitOptions(String),
    /// A written file or split set does not match its headers or recorded checksums.
    #[error("{0}")]
    Verify(String),
    /// A file already under an output name is not the shard the plan expects.
    #[error("{path}: exists but is not the planned shard ({reason}); remove it or use --force")]
    ShardMismatch {
        /// The existing file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

impl GgufError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for GGUF operations.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
