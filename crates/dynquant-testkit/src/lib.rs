//! dynquant-testkit: the models every dynquant test and benchmark uses, built
//! deterministically by the project's own code (`dynquant-dev test-models --out DIR`).
//! Test-only: the shipped `dynquant` binary does not link it (the synthetic models the demo
//! needs live in `dynquant-synth`, re-exported here as [`synth`] and [`rng`]).
//!
//! * [`smollm2`]: SmolLM2-135M-Instruct dequantized to F16 (the reference), the exactly
//!   equivalent block-friendly `smollm2-768` (hidden 576 → 768, heads 9 → 12), its llama-MoE
//!   form `smollm2-768-moe`, and the matching importance matrices derived from llama.cpp's.
//! * [`synth`]: synthetic MoE models with trained-looking weights: `deepseek2` in both
//!   attention layouts and `qwen3moe` (`dynquant_synth::moe`).
//! * [`build`]: the idempotent, checksummed build of all of them into one folder, and
//!   [`TestModels`], the one place tests get their paths from.
//! * [`oracle`]: the registry-package oracles (gguf-py, node-llama-cpp) for tests.
//! * [`llama_quantize`]: real llama.cpp quantization (`llama_model_quantize` from libllama).
#![deny(missing_docs)]

pub mod build;
pub mod llama_quantize;
pub mod oracle;
pub mod smollm2;
mod tensors;

pub use dynquant_synth::moe as synth;
pub use dynquant_synth::rng;

pub use build::{build_all, BuildReport, TestModels};

use dynquant_gguf::imatrix::ImatrixError;
use dynquant_gguf::GgufError;
use dynquant_quants::QuantError;

/// Errors while building test models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// Reading or writing a GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Reading or writing an imatrix.
    #[error(transparent)]
    Imatrix(#[from] ImatrixError),
    /// Converting tensor data.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// Building a synthetic model.
    #[error(transparent)]
    Synth(#[from] dynquant_synth::SynthError),
    /// A file-system error.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The source model is not what the construction expects.
    #[error("unexpected source model: {0}")]
    BadSource(String),
    /// A JSON file (config or manifest) could not be used.
    #[error("{path}: {reason}")]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// Result alias.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
