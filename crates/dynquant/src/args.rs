//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Dynamic (per-tensor mixed-precision) GGUF quantization for llama.cpp and Ollama.
#[derive(Debug, Parser)]
#[command(name = "dynquant", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a GGUF file's metadata, tensors, per-type totals and bits per weight.
    #[command(after_help = "Examples:\n  \
        dynquant inspect model.gguf\n  \
        dynquant inspect model.gguf --tensors\n  \
        dynquant inspect model-00001-of-00004.gguf --json > model.json")]
    Inspect(InspectArgs),
    /// Split a GGUF file into shards llama.cpp loads from the first one.
    #[command(after_help = "Examples:\n  \
        dynquant split model.gguf out/model --split-max-size 50G\n  \
        dynquant split model.gguf out/model --split-max-tensors 128\n\
        Shards are named <OUT_PREFIX>-00001-of-0000N.gguf (llama.cpp's naming).")]
    Split(SplitArgs),
    /// Merge a split set, given its first shard, into one GGUF file.
    #[command(after_help = "Example:\n  \
        dynquant merge out/model-00001-of-00004.gguf model.gguf")]
    Merge(MergeArgs),
    /// Check a GGUF file or a whole split set: every shard present, split keys and tensor
    /// counts consistent, data inside each file, and the per-tensor checksums recorded at
    /// write time (`quantize --checksums` or `--shard`).
    #[command(after_help = "Example:\n  \
        dynquant verify out/model-00001-of-00006.gguf\n\
        Exit status 1 with a one-line error naming the missing shard or the tensor whose bytes differ.")]
    Verify(VerifyArgs),
    /// Plan a type for every tensor from a recipe, before any work: sizes, bpw, reasons.
    #[command(after_help = format!("Examples:\n  \
        dynquant plan ../shared/data/configs/deepseek-r1/config.json --recipe ud-iq1_s\n  \
        dynquant plan model.gguf --recipe basic-q4_k --tensor-type 'ffn_down=q6_k' --json\n  \
        dynquant plan model.gguf --recipe my-recipe.toml --tensors\n\
        Presets: {}.", dynquant_plan::preset_names()))]
    Plan(PlanArgs),
    /// Quantize a model with a recipe: streaming, parallel, deterministic.
    #[command(after_help = "Examples:\n  \
        dynquant quantize model-f16.gguf model-q4_k_m.gguf --recipe q4_k_m\n  \
        dynquant quantize r1-bf16-00001-of-00030.gguf r1-ud-iq1_s.gguf --recipe ud-iq1_s --imatrix r1.imatrix.gguf --split-max-size 50G\n  \
        dynquant quantize model.gguf out.gguf --recipe basic-iq4_xs --threads 8 --json\n  \
        dynquant quantize model.gguf out/m --recipe q4_k_m --split-max-size 5G --shard 0/3   # worker 0 of 3\n  \
        dynquant quantize model.gguf out.gguf --recipe iq2_xxs --imatrix model.imatrix.gguf --covariance model.cov.gguf")]
    Quantize(QuantizeArgs),
    /// Convert a Hugging Face safetensors folder (BF16/F16/F32 or block-scaled FP8) to GGUF.
    #[command(after_help = "Examples:\n  \
        dynquant convert ./Qwen3-0.6B qwen3-0.6b-bf16.gguf\n  \
        dynquant convert ./DeepSeek-R1 r1-bf16.gguf --outtype bf16 --split-max-size 50G\n\
        Architectures: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, deepseek_v2, deepseek_v3.")]
    Convert(ConvertArgs),
    /// Perplexity over a text with llama-perplexity's method (llama.cpp's CPU numerics).
    #[command(after_help = "Examples:\n  \
        dynquant perplexity model-f16.gguf --text wiki.test.raw --chunks 40\n  \
        dynquant perplexity model-f16.gguf --text wiki.test.raw --chunks 40 --save-logits f16.kldbase\n  \
        dynquant perplexity model.gguf -f wiki.test.raw --ctx 512 --json")]
    Perplexity(PerplexityArgs),
    /// KL divergence of a model's next-token distributions from a base saved by `perplexity --save-logits`.
    #[command(after_help = "Example:\n  \
        dynquant perplexity model-f16.gguf --text wiki.test.raw --chunks 40 --save-logits f16.kldbase\n  \
        dynquant kld model-q4_k_m.gguf --base f16.kldbase")]
    Kld(KldArgs),
    /// Importance matrix (sums of squared activations per input column) in llama.cpp's GGUF format.
    #[command(after_help = "Example:\n  \
        dynquant imatrix model-f16.gguf --text groups_merged.txt -o model.imatrix.gguf --chunks 100 --show-statistics\n  \
        dynquant imatrix model-f16.gguf --text groups_merged.txt -o part1.gguf --chunk-range 50..100\n  \
        dynquant imatrix merge part0.gguf part1.gguf -o model.imatrix.gguf\n  \
        dynquant imatrix model-f16.gguf --text groups_merged.txt -o model.imatrix.gguf --chunks 32 --covariance model.cov.gguf")]
    Imatrix(ImatrixArgs),
    /// Generate text from a prompt, streaming.
    #[command(after_help = "Examples:\n  \
        dynquant run model.gguf -p \"The capital of France is\" -n 32 --temp 0\n  \
        dynquant run model.gguf -p \"Write a haiku about rust\" --chat --seed 1")]
    Run(RunArgs),
    /// Measure each tensor's sensitivity (weight-space error per type, end-to-end KLD per group) for allocation.
    #[command(after_help = "Examples:\n  \
        dynquant measure model.gguf --imatrix model.imatrix.gguf --text groups_merged.txt -o model.sens\n  \
        dynquant measure model.gguf --imatrix im.gguf --text calib.txt -o part0.sens --shard 0/2\n  \
        dynquant measure merge part0.sens part1.sens -o model.sens\n  \
        dynquant measure big.gguf --imatrix im.gguf -o big.sens --weights-only\n  \
        dynquant measure context model.gguf model-alloc.gguf --sensitivity model.sens --text groups_merged.txt -o model.ctx.sens\n\
        A killed scan continues where it stopped when run again with the same arguments\n\
        (finished units are kept in OUT.partial). Shards are numbered 0 to N-1.")]
    Measure(MeasureArgs),
    /// Run the built-in demonstration on a model dynquant makes itself (no download).
    #[command(after_help = "Example:\n  dynquant demo\n  dynquant demo --out-dir /tmp/dq")]
    Demo(DemoArgs),
    /// Compare quants with their base: KLD, PPL, sizes, bit maps; a table, report.json and a self-contained report.html.
    #[command(after_help = "Examples:\n  \
        dynquant compare model-f16.gguf model-q2_k.gguf model-q4_k_m.gguf --text wiki.test.raw\n  \
        dynquant compare f16.kldbase model-q2_k.gguf --out out/report.html --card out/card.md\n\
        Writes the HTML report (--out) and report.json beside it; --json also prints the JSON.")]
    Compare(CompareArgs),
}

/// How input files are read.
#[derive(Debug, Args, Clone, Copy)]
pub struct ReadArgs {
    /// Read with positioned reads instead of memory-mapping the input.
    #[arg(long)]
    pub no_mmap: bool,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// GGUF file (for a split set, its first shard).
    pub file: PathBuf,
    /// Print everything as JSON (full metadata values and every tensor).
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor (name, type, shape, bytes, bpw).
    #[arg(long)]
    pub tensors: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Shard limits of an output split the way gguf-split splits (`split`, `quantize`, `convert`).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct ShardLimits {
    /// Most tensor bytes per shard: a byte count or a size such as 500M, 50G (decimal, as
    /// gguf-split), or 4GiB.
    #[arg(long, value_parser = parse_size_arg)]
    pub split_max_size: Option<u64>,
    /// Most tensors per shard.
    #[arg(long)]
    pub split_max_tensors: Option<usize>,
}

impl ShardLimits {
    /// The limits as the writer takes them.
    pub fn spec(&self) -> dynquant_gguf::SplitSpec {
        dynquant_gguf::SplitSpec {
            max_bytes: self.split_max_size,
            max_tensors: self.split_max_tensors,
        }
    }

    /// `output` as one file, or as the prefix of a split set when a limit is given.
    pub fn target(&self, output: &std::path::Path) -> dynquant_gguf::OutputTarget {
        let spec = self.spec();
        if spec.is_active() {
            dynquant_gguf::OutputTarget::Split {
                prefix: output.to_path_buf(),
                spec,
            }
        } else {
            dynquant_gguf::OutputTarget::Single(output.to_path_buf())
        }
    }
}

/// `split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Input GGUF file (or the first shard of a split set, to re-split it).
    pub input: PathBuf,
    /// Output prefix; shards are written as <OUT_PREFIX>-00001-of-0000N.gguf.
    pub out_prefix: PathBuf,
    #[command(flatten)]
    pub shards: ShardLimits,
    /// Replace existing output files (inputs are never replaced).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The file, or the first shard of a split set (…-00001-of-0000N.gguf).
    pub first_shard: PathBuf,
}

/// `merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// First shard of the split set (…-00001-of-0000N.gguf).
    pub first_part: PathBuf,
    /// Output GGUF file.
    pub output: PathBuf,
    /// Replace an existing output file (inputs are never replaced).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A GGUF file (header only is read; a split set from its first shard), or a Hugging Face
    /// model folder or `config.json` (llama, mistral, mixtral, qwen2, qwen3, qwen3_moe,
    /// deepseek_v2/v3) to plan without any weights.
    pub model: PathBuf,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write the plan as a llama-quantize `--tensor-type-file` (one exact-name pattern per
    /// quantized tensor), so llama-quantize users can reproduce it.
    #[arg(long, value_name = "FILE")]
    pub export_tensor_types: Option<PathBuf>,
    /// Importance matrix (llama.cpp GGUF format) the quantization would use: the plan then
    /// warns about tensors or experts it does not cover.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// For a DeepSeek config: attention layout to plan (the other is summarised too).
    #[arg(long, value_enum, default_value = "mla")]
    pub layout: LayoutArg,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print every tensor (the default prints the summaries only for more than 400 tensors).
    #[arg(long)]
    pub tensors: bool,
}

/// A recipe and llama.cpp-compatible overrides (shared by `plan` and `quantize`).
#[derive(Debug, Args)]
pub struct RecipeArgs {
    /// Preset name or recipe file (the help text lists the presets from their table). With a
    /// target (--target-size/--target-bpw/--target-kld) optional: its rules become pins
    /// (`type`) and bounds (`min`/`max`) for the allocation.
    #[arg(long, help = format!("Preset name ({}) or a recipe file; with a target, optional: its rules become constraints", dynquant_plan::preset_names()))]
    pub recipe: Option<String>,
    /// Override: tensors whose name matches REGEX get TYPE (repeatable; first match wins).
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<String>,
    /// More overrides from a file of `REGEX=TYPE` tokens separated by spaces or newlines
    /// (llama-quantize's `--tensor-type-file`), tried after the `--tensor-type` ones.
    #[arg(long, value_name = "FILE")]
    pub tensor_type_file: Option<PathBuf>,
    /// Type of the token embedding.
    #[arg(long)]
    pub token_embedding_type: Option<String>,
    /// Type of the output (LM head) tensor.
    #[arg(long)]
    pub output_tensor_type: Option<String>,
    /// Let the recipe re-quantize tensors stored as MXFP4 (gpt-oss's experts), e.g. to go
    /// below 4 bits as Unsloth's gpt-oss quants do; by default they stay MXFP4.
    #[arg(long)]
    pub requantize_mxfp4: bool,
}

/// Allocation to a target instead of a recipe's fixed types (shared by `plan` and `quantize`).
#[derive(Debug, Args, Default)]
pub struct TargetArgs {
    /// The whole output file (all shards) at most this size: bytes, or 131GiB, 24G (decimal),
    /// 500M. Never over, and within 0.5% under where the candidates allow.
    #[arg(long, value_parser = parse_size_arg, conflicts_with_all = ["target_bpw", "target_kld"])]
    pub target_size: Option<u64>,
    /// Tensor data at most this many bits per weight (over all tensors).
    #[arg(long, conflicts_with = "target_kld")]
    pub target_bpw: Option<f64>,
    /// The smallest file whose predicted mean KLD against the unquantized model is at most
    /// this (nats per token).
    #[arg(long)]
    pub target_kld: Option<f64>,
    /// A sensitivity scan of this model (`dynquant measure`); without it, the shipped priors.
    #[arg(long, value_name = "FILE")]
    pub sensitivity: Option<PathBuf>,
    /// Candidate types for allocated tensors, comma-separated (default: IQ1_S..Q8_0, 14 types).
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    pub candidates: Option<Vec<String>>,
    /// Write the allocated plan as a recipe (TOML) that reproduces it with `--recipe FILE`.
    #[arg(long, value_name = "FILE")]
    pub export_recipe: Option<PathBuf>,
}

/// `quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Input GGUF (F32, F16, BF16, Q8_0; other quantized types with --allow-requantize); a
    /// split set from its first shard; or a Hugging Face safetensors folder (BF16/F16/F32 or
    /// block-scaled FP8), streamed without an intermediate file.
    pub input: PathBuf,
    /// Output GGUF (with --split-max-size/--split-max-tensors: the shard prefix).
    pub output: PathBuf,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Importance matrix (llama.cpp's GGUF imatrix format).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Quantize types that need an imatrix with uniform weights where it has no entry.
    #[arg(long)]
    pub imatrix_fallback: bool,
    #[command(flatten)]
    pub expert_prior: ExpertPriorArgs,
    /// Input covariances (`imatrix --covariance`): each covered tensor's rows are quantized
    /// block by block with error feedback (GPTQ), the later blocks compensating the earlier
    /// ones' rounding. Same ggml types and sizes.
    #[arg(long, value_name = "FILE")]
    pub covariance: Option<PathBuf>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub shards: ShardLimits,
    /// Write only this worker's shards of the split set, I/N with I from 0 to N-1: shard k
    /// (0-based) is worker k mod N's. Finished, verified shards are skipped, so a rerun
    /// redoes only what is missing. Implies --checksums; the N workers' files together are
    /// byte for byte one `--checksums` run's set.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Record a checksum per tensor in each output (`dynquant.tensor_checksums`, which
    /// `dynquant verify` checks; llama.cpp ignores it).
    #[arg(long)]
    pub checksums: bool,
    /// Accept already quantized inputs (dequantized to f32 first).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Plan and check everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no summary (warnings and errors still go to stderr).
    #[arg(long)]
    pub quiet: bool,
    /// Replace an existing output (never an input).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Hugging Face model folder (config.json, model.safetensors or
    /// model.safetensors.index.json with its shards, tokenizer files).
    pub input: PathBuf,
    /// Output GGUF (with --split-max-size/--split-max-tensors: the shard prefix).
    pub output: PathBuf,
    /// Type of the converted matrices: f32, f16, bf16, q8_0 (norms, biases and routers stay F32).
    #[arg(long, default_value = "bf16")]
    pub outtype: String,
    /// BPE pre-tokenizer name for `tokenizer.ggml.pre` (default: identified from the tokenizer
    /// as llama.cpp does; `gpt-2`, with a warning, when it is not recognised).
    #[arg(long, value_name = "NAME")]
    pub tokenizer_pre: Option<String>,
    /// `general.name` (default: derived from the folder name, as llama.cpp does).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub shards: ShardLimits,
    /// Replace an existing output (never an input).
    #[arg(long)]
    pub force: bool,
}

/// deepseek2 attention layout.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LayoutArg {
    /// attn_k_b + attn_v_b (llama.cpp since PR #12801).
    Mla,
    /// attn_kv_b (older files).
    Legacy,
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's files (default: a folder under the system temp dir).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Stop after the small llama model's inspect/split/merge steps (skips the MoE model, its
    /// quantization and evaluation).
    #[arg(long)]
    pub model_only: bool,
    /// Worker threads for the evaluation steps (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    dynquant_gguf::parse_size(s)
        .ok_or_else(|| format!("'{s}' is not a size (examples: 1000000, 500M, 50G, 4GiB)"))
}

/// Options of the commands that run a model.
#[derive(Debug, Args, Clone, Copy)]
pub struct EngineArgs {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Keep activations in f32 instead of rounding them to each weight type's dot type as
    /// llama.cpp's CPU backend does.
    #[arg(long)]
    pub exact: bool,
}

/// `perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// GGUF model.
    pub model: PathBuf,
    /// Text file (tokenized whole, as llama-perplexity does).
    #[arg(long, short = 'f')]
    pub text: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// At most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Also write a KL-divergence base file (top-k log-probabilities per scored position).
    #[arg(long, value_name = "BASE")]
    pub save_logits: Option<PathBuf>,
    /// Tokens kept per position in the base file.
    #[arg(long, default_value_t = 32)]
    pub top_k: usize,
    /// Print {"ppl", "ppl_err", "tokens", ...} as JSON at the end.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `kld`.
#[derive(Debug, Args)]
pub struct KldArgs {
    /// GGUF model to compare with the base.
    pub model: PathBuf,
    /// Base file written by `perplexity --save-logits`.
    #[arg(long)]
    pub base: PathBuf,
    /// Print the statistics as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `imatrix`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ImatrixArgs {
    /// `merge`: join the imatrices of disjoint chunk ranges.
    #[command(subcommand)]
    pub action: Option<ImatrixAction>,
    /// GGUF model.
    #[arg(required = true)]
    pub model: Option<PathBuf>,
    /// Calibration text.
    #[arg(long, short = 'f', required = true)]
    pub text: Option<PathBuf>,
    /// Output imatrix (GGUF).
    #[arg(long, short = 'o', required = true)]
    pub output: Option<PathBuf>,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// At most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Only chunks A..B (0-based, half-open: 0..3 is the first three chunks of --ctx tokens),
    /// for one part of a split run joined by `imatrix merge`.
    #[arg(long, value_name = "A..B", conflicts_with = "chunks")]
    pub chunk_range: Option<String>,
    /// Also write each weight's whole input covariance (`Σ x xᵀ` per expert; the imatrix is
    /// its diagonal) to this file, for `quantize --covariance`. Large: 4·ne0² bytes per
    /// matrix.
    #[arg(long, value_name = "FILE")]
    pub covariance: Option<PathBuf>,
    /// Print per-tensor statistics of the result.
    #[arg(long)]
    pub show_statistics: bool,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `imatrix` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImatrixAction {
    /// Join imatrices of disjoint chunk ranges of one text (sums and per-expert counts
    /// added, as llama-imatrix combines files) into the imatrix of all of them.
    Merge(ImatrixMergeArgs),
}

/// `imatrix merge`.
#[derive(Debug, Args)]
pub struct ImatrixMergeArgs {
    /// The parts (GGUF imatrix files).
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    /// Output imatrix (GGUF).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// GGUF model.
    pub model: PathBuf,
    /// Prompt.
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub n_predict: usize,
    /// Wrap the prompt in the model's chat template as a user turn.
    #[arg(long)]
    pub chat: bool,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k filter (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p filter (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p filter (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context size.
    #[arg(long, short = 'c', default_value_t = 4096)]
    pub ctx: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The unquantized model (GGUF), or a KLD base file written by `perplexity --save-logits`.
    pub base: PathBuf,
    /// Quantized GGUF files of the same model.
    #[arg(required = true)]
    pub quants: Vec<PathBuf>,
    /// Text to compare on (needed with a GGUF base; with a base file, checked against it).
    #[arg(long, short = 'f')]
    pub text: Option<PathBuf>,
    /// Tokens per chunk (GGUF base).
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Chunks to compare (GGUF base).
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// Tokens of the base's distribution kept per position (GGUF base).
    #[arg(long, default_value_t = 32)]
    pub top_k: usize,
    /// The HTML report; report.json is written beside it (same name, .json).
    #[arg(long, short = 'o', default_value = "report.html")]
    pub out: PathBuf,
    /// Also write the model-card Markdown table to this file.
    #[arg(long, value_name = "FILE")]
    pub card: Option<PathBuf>,
    /// A reference point for the KLD-vs-size chart, `LABEL=SIZE:KLD` (SIZE in bytes or as
    /// 500M/4GiB; repeatable), e.g. a llama.cpp mix measured elsewhere.
    #[arg(long = "reference", value_name = "LABEL=SIZE:KLD")]
    pub references: Vec<String>,
    /// Skip the generation checks (sanity prompts and functional tasks).
    #[arg(long)]
    pub no_checks: bool,
    /// Sanity prompts to use, taken from the built-in suite of 24 by kind in turn (fewer is
    /// quicker).
    #[arg(long, default_value_t = 24)]
    pub prompts: usize,
    /// Tokens generated per answer of the sanity prompts (the functional tasks take up to 40).
    #[arg(long, default_value_t = 24)]
    pub gen_tokens: usize,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `measure`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MeasureArgs {
    /// `merge`: join shard files.
    #[command(subcommand)]
    pub action: Option<MeasureAction>,
    /// GGUF model to scan.
    #[arg(required = true)]
    pub model: Option<PathBuf>,
    /// Importance matrix (GGUF or legacy .dat) used to quantize and to weight errors.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    #[command(flatten)]
    pub expert_prior: ExpertPriorArgs,
    /// Calibration text (its first chunks are evaluated); not needed with --weights-only.
    #[arg(long, short = 'f')]
    pub text: Option<PathBuf>,
    /// Output sensitivity file (or shard file with --shard).
    #[arg(long, short = 'o', required = true)]
    pub output: Option<PathBuf>,
    /// Candidate types, comma-separated (default: IQ1_S,IQ1_M,IQ2_XXS,IQ2_XS,IQ2_S,IQ3_XXS,IQ3_S,Q2_K,Q3_K,IQ4_XS,Q4_K,Q5_K,Q6_K,Q8_0).
    #[arg(long, value_delimiter = ',')]
    pub candidates: Vec<String>,
    /// Probe types, comma-separated (default: IQ2_XXS).
    #[arg(long, value_delimiter = ',')]
    pub probe: Vec<String>,
    /// Tokens per calibration chunk.
    #[arg(long, short = 'c', default_value_t = dynquant_measure::DEFAULT_CTX)]
    pub ctx: usize,
    /// Calibration chunks (the first ones of the text).
    #[arg(long, default_value_t = dynquant_measure::DEFAULT_CHUNKS)]
    pub chunks: usize,
    /// Rows measured per tensor (spread over its experts; all rows of smaller tensors).
    #[arg(long, default_value_t = dynquant_measure::DEFAULT_SAMPLE_ROWS)]
    pub sample_rows: usize,
    /// Only this shard of the units, I/N with I from 0 to N-1; writes a shard file for `measure merge`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Only the weight-space errors (no engine evaluations; for models too large to run).
    #[arg(long)]
    pub weights_only: bool,
    /// Print no progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// `measure` subcommands.
#[derive(Debug, Subcommand)]
pub enum MeasureAction {
    /// Join the shard files of one scan into the sensitivity file a whole run writes.
    Merge(MeasureMergeArgs),
    /// Measure each group's cost inside a quantized file of the model (its tensors set back to
    /// the model's weights, every other tensor as quantized) and add it to a sensitivity file:
    /// allocating again with the result scales each group by how errors compound in that file.
    #[command(after_help = "Example:\n  \
        dynquant quantize model.gguf a.gguf --target-size 2GiB --sensitivity model.sens --imatrix im.gguf\n  \
        dynquant measure context model.gguf a.gguf --sensitivity model.sens --text groups_merged.txt -o model.ctx.sens\n  \
        dynquant quantize model.gguf b.gguf --target-size 2GiB --sensitivity model.ctx.sens --imatrix im.gguf\n\
        Split over two processes or machines, then join:\n  \
        dynquant measure context model.gguf a.gguf --sensitivity model.sens --text groups_merged.txt -o part0.ctx --shard 0/2\n  \
        dynquant measure merge part0.ctx part1.ctx -o model.ctx.sens")]
    Context(MeasureContextArgs),
}

/// `measure context`.
#[derive(Debug, Args)]
pub struct MeasureContextArgs {
    /// The unquantized model the sensitivity file was measured on.
    pub model: PathBuf,
    /// A quantized file of it (e.g. allocated with the sensitivity file).
    pub quant: PathBuf,
    /// The model's sensitivity file (`dynquant measure`).
    #[arg(long)]
    pub sensitivity: PathBuf,
    /// Calibration text: the one the sensitivity file was measured on.
    #[arg(long, short = 'f')]
    pub text: PathBuf,
    /// Output: the sensitivity file with the in-context costs added (or a shard file with --shard).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Tokens per calibration chunk.
    #[arg(long, short = 'c', default_value_t = dynquant_measure::DEFAULT_CONTEXT_CTX)]
    pub ctx: usize,
    /// Calibration chunks (the first ones of the text).
    #[arg(long, default_value_t = dynquant_measure::DEFAULT_CONTEXT_CHUNKS)]
    pub chunks: usize,
    /// Only this shard of the groups, I/N with I from 0 to N-1; writes a shard file for `measure merge`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print no progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// `measure merge`.
#[derive(Debug, Args)]
pub struct MeasureMergeArgs {
    /// Shard files (every shard of one scan, any order).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Output sensitivity file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

/// How experts' imatrix weights are estimated (shared by `quantize` and `measure`, which must
/// weight them alike).
#[derive(Debug, Args)]
pub struct ExpertPriorArgs {
    /// Pull each expert's imatrix weights toward its tensor's mean over all experts by this many
    /// calibration tokens' worth (experts that saw few tokens get mostly the layer's importance,
    /// unseen ones all of it); 0 gives llama-quantize's per-expert weights.
    #[arg(long, value_name = "TOKENS", default_value_t = dynquant_gguf::imatrix::ExpertPrior::DEFAULT.tokens, value_parser = expert_prior_tokens)]
    pub imatrix_expert_prior: f32,
}

impl ExpertPriorArgs {
    /// The prior these flags give.
    pub fn prior(&self) -> dynquant_gguf::imatrix::ExpertPrior {
        dynquant_gguf::imatrix::ExpertPrior {
            tokens: self.imatrix_expert_prior,
        }
    }
}

impl Default for ExpertPriorArgs {
    fn default() -> Self {
        ExpertPriorArgs {
            imatrix_expert_prior: dynquant_gguf::imatrix::ExpertPrior::DEFAULT.tokens,
        }
    }
}

/// `--imatrix-expert-prior`: a finite number of tokens, at least 0.
fn expert_prior_tokens(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of tokens (0 or more)")),
    }
}
