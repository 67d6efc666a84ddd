//! dynquant-synth: small GGUF models dynquant builds itself, deterministically, so the demo
//! runs on a fresh machine with nothing to download and measurements have inputs of any size.
//!
//! * [`moe`]: synthetic MoE models with trained-looking weights: `deepseek2` in both
//!   attention layouts and `qwen3moe`, and a byte-level tokenizer for them.
//! * [`big_llama`]: a one-layer F32 llama model of any size, written in bounded memory.
//! * [`tensors`]: writing a model one tensor at a time from values made on demand.
//! * [`rng`]: the seeded generator behind every value.
//!
//! The test kit (`dynquant-testkit`) builds its test models on top of this crate.
#![deny(missing_docs)]

pub mod big_llama;
pub mod moe;
pub mod rng;
pub mod tensors;

use dynquant_gguf::GgufError;
use dynquant_quants::QuantError;

/// Errors while building a synthetic model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// Writing the GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Encoding tensor values.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The requested model cannot be built as specified.
    #[error("bad synthetic model spec: {0}")]
    BadSpec(String),
    /// A tensor's value function produced the wrong number of values.
    #[error("{name}: produced {got} values for shape {shape:?}")]
    WrongLength {
        /// The tensor.
        name: String,
        /// Values produced.
        got: usize,
        /// The tensor's shape (ggml order).
        shape: Vec<u64>,
    },
}

/// Result alias.
pub type Result<T, E = SynthError> = std::result::Result<T, E>;
