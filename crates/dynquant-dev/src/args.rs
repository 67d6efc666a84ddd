//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Developer tools for dynquant: test models, llama.cpp's quantizer as an oracle, models for
/// measurements. Not part of the shipped `dynquant` binary.
#[derive(Debug, Parser)]
#[command(name = "dynquant-dev", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build every test model (idempotent, cached, checksummed) into a folder.
    #[command(after_help = "Example:\n  dynquant-dev test-models --out .oracle/test-models")]
    TestModels(TestModelsArgs),
    /// Quantize with real llama.cpp (`llama_model_quantize` from $LLAMA_LIB), for comparisons.
    #[command(
        after_help = "Example:\n  dynquant-dev llama-quantize in.gguf out.gguf --ftype q4_k_m --imatrix im.gguf --threads 1"
    )]
    LlamaQuantize(LlamaQuantizeArgs),
    /// Write a synthetic F32 llama model with one large FFN pair, for memory measurements.
    #[command(
        after_help = "Example:\n  dynquant-dev big-model --out /tmp/big.gguf --ffn-mib 1024"
    )]
    BigModel(BigModelArgs),
    /// Fit the planner's priors (per-type errors, per-role laws) on sensitivity scans of the
    /// test models, for planning without a scan.
    #[command(
        after_help = "Example:\n  dynquant-dev fit-priors smollm2-768.sens smollm2-moe-routed.sens -o crates/dynquant-plan/priors/default.toml"
    )]
    FitPriors(FitPriorsArgs),
}

/// `fit-priors`.
#[derive(Debug, Args)]
pub struct FitPriorsArgs {
    /// Sensitivity files (`dynquant measure`).
    #[arg(required = true)]
    pub scans: Vec<PathBuf>,
    /// Take the per-type errors from these scans instead (e.g. a weights-only scan of a model
    /// with random weights).
    #[arg(long, value_name = "SCAN")]
    pub type_errors_from: Vec<PathBuf>,
    /// Output priors file (TOML).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `llama-quantize`.
#[derive(Debug, Args)]
pub struct LlamaQuantizeArgs {
    /// Input GGUF.
    pub input: PathBuf,
    /// Output GGUF.
    pub output: PathBuf,
    /// llama.cpp file type name (q4_k_m, iq2_xxs, ...).
    #[arg(long)]
    pub ftype: String,
    /// Importance matrix (GGUF or legacy .dat).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
}

/// `big-model`.
#[derive(Debug, Args)]
pub struct BigModelArgs {
    /// Output GGUF.
    #[arg(long)]
    pub out: PathBuf,
    /// Size of each of the two FFN matrices as f32, in MiB (rounded to whole rows).
    #[arg(long, default_value_t = 1024)]
    pub ffn_mib: u64,
}

/// `test-models`.
#[derive(Debug, Args)]
pub struct TestModelsArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// SmolLM2-135M-Instruct Q4_1 GGUF (default: $DYNQUANT_ORACLE/models/SmolLM2-135M-Instruct.Q4_1.gguf,
    /// made by scripts/prepare-oracles.sh).
    #[arg(long)]
    pub smollm2: Option<PathBuf>,
    /// llama.cpp's imatrix of SmolLM2 (default: ../shared/golden/smollm2-135m.imatrix.gguf).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
}
