//! Typed errors of the Hugging Face reader and converter.

use std::path::PathBuf;

/// Everything that can go wrong reading a checkpoint folder or converting it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    /// A file could not be read.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file whose header is invalid.
    #[error("{path}: not a valid safetensors file: {reason}")]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file that is missing, malformed or lacks a needed field.
    #[error("{path}: {reason}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The folder has no weights.
    #[error("{0}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are read)")]
    NoWeights(PathBuf),
    /// A shard named by the index is missing.
    #[error("{index}: shard '{shard}' is missing")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard's file name.
        shard: String,
    },
    /// The index and the shards disagree.
    #[error("{0}")]
    IndexMismatch(String),
    /// A tensor name appears twice.
    #[error("tensor '{0}' appears in more than one shard")]
    DuplicateTensor(String),
    /// A tensor the architecture needs is absent.
    #[error("tensor '{0}' is missing from the checkpoint")]
    MissingTensor(String),
    /// A tensor whose shape does not fit config.json.
    #[error("tensor '{name}' has shape {got:?}, config.json implies {want:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Stored shape.
        got: Vec<usize>,
        /// Expected shape.
        want: Vec<usize>,
    },
    /// A stored dtype the reader does not handle.
    #[error("tensor '{name}' has dtype {dtype}, which is not supported (F32, F16, BF16, F8_E4M3)")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The dtype.
        dtype: String,
    },
    /// An FP8 weight without its block scales.
    #[error("FP8 tensor '{0}' has no '{0}_scale_inv' block scales")]
    MissingScale(String),
    /// Block scales whose shape does not cover their weight.
    #[error(
        "'{name}_scale_inv' has shape {got:?}; blocks of {block:?} over {shape:?} need {want:?}"
    )]
    BadScale {
        /// Weight name.
        name: String,
        /// Scale shape.
        got: Vec<usize>,
        /// Needed scale shape.
        want: Vec<usize>,
        /// Weight shape.
        shape: Vec<usize>,
        /// Block size.
        block: [usize; 2],
    },
    /// The architecture in config.json is not one the converter knows.
    #[error("architecture '{0}' is not supported (supported: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, gemma3_text, gpt_oss, deepseek_v2, deepseek_v3, glm4_moe)")]
    UnknownArchitecture(String),
    /// A checkpoint tensor no rule of the architecture maps.
    #[error("cannot map tensor '{0}' to a GGUF name")]
    UnmappedTensor(String),
    /// A tokenizer that cannot be converted.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Writing the output.
    #[error(transparent)]
    Gguf(#[from] dynquant_gguf::GgufError),
    /// Quantizing the output (q8_0).
    #[error("tensor '{tensor}': {source}")]
    Quant {
        /// Tensor name.
        tensor: String,
        /// What went wrong.
        #[source]
        source: dynquant_quants::QuantError,
    },
}

/// Result with [`HfError`].
pub type Result<T, E = HfError> = std::result::Result<T, E>;

impl HfError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HfError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        HfError::BadJson {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
