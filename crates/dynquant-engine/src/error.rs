//! Errors of the engine.

use dynquant_gguf::GgmlType;
use dynquant_gguf::GgufError;
use dynquant_quants::QuantError;
use dynquant_tokenizer::TokenizerError;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The GGUF container could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A tensor could not be converted.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// `general.architecture` names an architecture the engine does not run.
    #[error("unsupported architecture '{0}' (supported: llama, qwen2, qwen3, qwen3moe, gemma3, deepseek2, gpt-oss, glm4moe)")]
    UnsupportedArch(String),
    /// A hyper-parameter is missing or has an impossible value.
    #[error("hyper-parameter {key}: {reason}")]
    BadHparam {
        /// The GGUF key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    /// A tensor has a shape the architecture does not expect.
    #[error("tensor '{name}' has shape {shape:?}, expected {expected:?}")]
    BadShape {
        /// Tensor name.
        name: String,
        /// Its shape (ggml order, ne0 first).
        shape: Vec<u64>,
        /// The expected shape.
        expected: Vec<u64>,
    },
    /// A weight type the matrix product cannot use.
    #[error("tensor '{name}': type {ty} is not supported in matrix products")]
    UnsupportedType {
        /// Tensor name.
        name: String,
        /// Its type.
        ty: GgmlType,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken {
        /// The id.
        id: u32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// The context is full.
    #[error("context of {n_ctx} tokens is full (asked for {wanted})")]
    ContextFull {
        /// Capacity.
        n_ctx: usize,
        /// Tokens that would be held.
        wanted: usize,
    },
    /// Bad input to an evaluation (too few tokens, mismatched base file...).
    #[error("{0}")]
    Invalid(String),
    /// An evaluation text could not be read.
    #[error("reading {}", path.display())]
    ReadText {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An evaluation text is not UTF-8.
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// An evaluation text could not be tokenized.
    #[error("tokenizing {}", path.display())]
    TokenizeText {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: TokenizerError,
    },
    /// A chat prompt could not be rendered with the model's template.
    #[error("applying the chat template")]
    ChatTemplate(#[source] TokenizerError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// I/O on an evaluation file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Result with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
