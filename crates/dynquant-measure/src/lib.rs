//! dynquant-measure: the sensitivity scan behind `dynquant measure`, writing the
//! [`dynquant_plan::Sensitivity`] files the allocator reads.
//!
//! A scan is a list of independent **units**, numbered in a fixed order:
//!
//! 1. one per quantizable tensor (`dynquant_plan::keep_reason` is `None`), in model order: its
//!    importance-weighted relative error for every candidate and probe type (as stored after
//!    ggml's shape fallback), over a deterministic sample of rows (`weights.rs`);
//! 2. one per group and probe type, groups in the order of their first tensor: the mean KL
//!    divergence from the unquantized model on the calibration chunks when only that group is
//!    quantized to the probe type (`probe.rs`). A group is a tensor's role in one layer
//!    (`blk.3.attn_v`), one layer's routed-expert tensors together (`blk.3.ffn_exps`),
//!    `token_embd` or `output`.
//!
//! Every unit's result depends only on the inputs and the settings, never on the number of
//! threads or on which process computed it. Finished units are appended, one JSON line each
//! and synced, to a journal next to the output (`OUT.partial`, headed by the key and the
//! settings), so a killed scan restarted with the same arguments redoes nothing it finished.
//! With a [`Shard`] `I/N` a scan does the units whose number is `I` modulo `N` and writes a
//! shard file; [`merge`] joins shard files into the file one whole run writes, byte for byte
//! (journal and shard records hold floats as their IEEE bits, so no decimal round trip can
//! change a value). Outputs are written to a temporary name and renamed.
//!
//! Nothing is printed: progress goes to an [`Event`] callback.
#![deny(missing_docs)]

mod context;
mod identity;
mod probe;
mod records;
mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dynquant_engine::eval::ChunkOptions;
use dynquant_engine::evaluation::EvalText;
use dynquant_engine::WeightOverrides;
use dynquant_gguf::imatrix::{ExpertPrior, Imatrix};
use dynquant_gguf::{GgmlType, GgufModel};
use dynquant_plan::sensitivity::{Sensitivity, SensitivityKey};
use dynquant_quantize::TensorSource;
use dynquant_tokenizer::Tokenizer;

pub use context::{
    context_scan, ContextInputs, ContextOptions, DEFAULT_CONTEXT_CHUNKS, DEFAULT_CONTEXT_CTX,
};
pub use identity::{gguf_identity, model_identity};
use probe::{Calibration, Start};
use records::{Header, Journal, ProbeRecord, Record, ShardFile, TensorRecord};

/// Candidate types measured by default: the allocator's default candidates (the useful weight
/// types from 1.56 to 8.5 bits), so a default scan covers a default allocation.
pub const DEFAULT_CANDIDATES: &[GgmlType] = &dynquant_plan::DEFAULT_CANDIDATES;

/// Probe types by default: one low type, where a single group's ΔKLD stands well above the
/// evaluation's rounding on a short calibration slice, so the ratio ΔKLD / weight error of
/// every group is measured with a small relative error (see docs/formats.md).
pub const DEFAULT_PROBES: &[GgmlType] = &[GgmlType::IQ2_XXS];

/// Tokens per calibration chunk by default.
pub const DEFAULT_CTX: usize = 256;
/// Calibration chunks by default.
pub const DEFAULT_CHUNKS: usize = 1;
/// Rows measured per tensor by default (spread over its experts).
pub const DEFAULT_SAMPLE_ROWS: usize = 256;

/// A type's name in sensitivity files: ggml's name in capitals (`Q4_K`, `IQ2_XXS`, `Q5_0`).
pub fn type_name(ty: GgmlType) -> String {
    ty.name().to_ascii_uppercase()
}

/// Why a scan or a merge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// A setting that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// Reading a tensor's rows.
    #[error("reading tensor '{tensor}': {source}")]
    Read {
        /// Tensor name.
        tensor: String,
        /// The reader's error.
        source: Box<dynquant_quantize::PipelineError>,
    },
    /// Quantizing a tensor.
    #[error("quantizing tensor '{tensor}' to {ty}: {source}")]
    Quantize {
        /// Tensor name.
        tensor: String,
        /// The type.
        ty: GgmlType,
        /// The quantizer's error.
        source: dynquant_quants::QuantError,
    },
    /// An imatrix entry that does not fit its tensor.
    #[error("imatrix entry for '{tensor}' has {entry} values, the tensor needs {need}")]
    ImatrixShape {
        /// Tensor name.
        tensor: String,
        /// Entry shape (values x matrices).
        entry: String,
        /// Tensor shape (values x matrices).
        need: String,
    },
    /// The engine.
    #[error("engine: {0}")]
    Engine(Box<dynquant_engine::EngineError>),
    /// A file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A shard file that cannot be merged.
    #[error("{}: {reason}", path.display())]
    Shard {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Shard files that do not make one whole scan.
    #[error("{0}")]
    Merge(String),
}

/// One of `count` shards of a scan (`index` from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Shards in all.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = MeasureError;
    /// `I/N` with `0 <= I < N`.
    fn from_str(s: &str) -> Result<Self, MeasureError> {
        let bad = || MeasureError::Invalid(format!("shard '{s}': expected I/N with 0 <= I < N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(MeasureError::Invalid(format!(
                "shard {index}/{count} is out of range (shards are numbered 0 to N-1)"
            )));
        }
        Ok(Shard { index, count })
    }
}

/// The `settings` key recording the scan's `--imatrix-expert-prior` (tokens), which
/// `quantize --sensitivity` compares with its own.
pub const SETTING_EXPERT_PRIOR: &str = "imatrix_expert_prior";

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Types whose weight-space error is measured.
    pub candidates: Vec<GgmlType>,
    /// Types each group is probed at (their weight errors are measured too).
    pub probes: Vec<GgmlType>,
    /// Tokens per calibration chunk.
    pub ctx: usize,
    /// Calibration chunks (the first ones of the text).
    pub chunks: usize,
    /// Rows measured per tensor (every row of a tensor with fewer).
    pub sample_rows: usize,
    /// The weight-space part only (no probes, no engine).
    pub weights_only: bool,
    /// Only this shard's units.
    pub shard: Option<Shard>,
    /// How experts' imatrix weights are estimated (as `quantize` does with the same value).
    pub expert_prior: ExpertPrior,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            candidates: DEFAULT_CANDIDATES.to_vec(),
            probes: DEFAULT_PROBES.to_vec(),
            ctx: DEFAULT_CTX,
            chunks: DEFAULT_CHUNKS,
            sample_rows: DEFAULT_SAMPLE_ROWS,
            weights_only: false,
            shard: None,
            expert_prior: ExpertPrior::DEFAULT,
        }
    }
}

/// Whether `ty` can be a measured weight type: a weight type dynquant can write other than F32
/// (which loses nothing; integer and dot-product-only types are not weights).
pub fn is_weight_type(ty: GgmlType) -> bool {
    dynquant_quants::can_quantize(ty) && ty.info().weight_type && ty != GgmlType::F32
}

/// What a scan reads.
pub struct ScanInputs<'a> {
    /// The model (evaluated by the engine unless weights-only).
    pub model: &'a GgufModel,
    /// Its tokenizer (chunk BOS substitution).
    pub tokenizer: &'a Tokenizer,
    /// The importance matrix.
    pub imatrix: Option<&'a Imatrix>,
    /// SHA-256 of the importance matrix file.
    pub imatrix_sha256: Option<String>,
    /// The calibration text (`None` only for a weights-only scan).
    pub text: Option<&'a EvalText>,
}

/// The work of a scan, reported before any of it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCost {
    /// Tensor units (weight-space errors) in the whole scan.
    pub tensor_units: usize,
    /// Probe units (one engine evaluation of the calibration chunks each) in the whole scan.
    pub probe_units: usize,
    /// Units this run owns (its shard, or all).
    pub owned: usize,
    /// Of those, already in the journal.
    pub resumed: usize,
    /// Probe units this run will evaluate.
    pub evaluations: usize,
    /// Tokens per evaluation (chunks x ctx).
    pub tokens_per_evaluation: usize,
}

/// What a scan reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// The plan, before any work.
    Cost(&'a ScanCost),
    /// An existing journal was made with other inputs or settings and is started over.
    JournalReplaced,
    /// The unquantized model's calibration run is done (one whole-model evaluation), with
    /// the estimated wall time of each probe evaluation still to do, on average.
    Calibrated {
        /// Wall time of the calibration run.
        seconds: f64,
        /// Estimated seconds per probe evaluation (a probe of block L runs blocks L.. only).
        per_evaluation: f64,
    },
    /// A unit is done (`done` of `total` owned units, resumed ones included).
    Unit {
        /// Units done.
        done: usize,
        /// Units owned.
        total: usize,
        /// What it was (`blk.3.attn_v.weight`, `blk.3.attn_v @ IQ2_XXS`).
        label: &'a str,
    },
}

/// What a finished scan did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSummary {
    /// The file written (the sensitivity file, or the shard file).
    pub path: PathBuf,
    /// Units computed by this run (not resumed).
    pub computed: usize,
    /// Probe evaluations run by this run.
    pub evaluations: usize,
    /// Tokens evaluated by the engine in this run (calibration included).
    pub tokens: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A group of tensors probed together.
struct Group {
    name: String,
    tensors: Vec<usize>,
    start: Start,
}

/// The group a tensor belongs to: `blk.N.ffn_exps` for routed-expert tensors, else its name
/// without `.weight`.
fn group_name(tensor: &str) -> String {
    let base = tensor.strip_suffix(".weight").unwrap_or(tensor);
    if let Some(rest) = base.strip_prefix("blk.") {
        if let Some((layer, role)) = rest.split_once('.') {
            if role.starts_with("ffn_") && role.ends_with("_exps") {
                return format!("blk.{layer}.ffn_exps");
            }
        }
    }
    base.to_string()
}

/// Where a probe of tensors named `names` starts, for a model of `n_layer` blocks.
fn start_of(names: &[&str], n_layer: usize) -> Start {
    let mut first = n_layer;
    for n in names {
        if let Some(l) = n
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, _)| l.parse::<usize>().ok())
        {
            first = first.min(l);
        } else if *n != "output.weight" {
            return Start::Tokens;
        }
    }
    Start::Block(first)
}

/// Tensors `(name, item)` in model order gathered into their groups (in the order of each
/// group's first tensor), each with where its probe starts.
fn grouped<T>(
    tensors: impl Iterator<Item = (impl AsRef<str>, T)>,
    n_layer: usize,
) -> Vec<(String, Vec<T>, Start)> {
    let mut groups: Vec<(String, Vec<String>, Vec<T>)> = Vec::new();
    for (name, item) in tensors {
        let name = name.as_ref();
        let group = group_name(name);
        match groups.iter_mut().find(|g| g.0 == group) {
            Some(g) => {
                g.1.push(name.to_string());
                g.2.push(item);
            }
            None => groups.push((group, vec![name.to_string()], vec![item])),
        }
    }
    groups
        .into_iter()
        .map(|(group, names, items)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let start = start_of(&names, n_layer);
            (group, items, start)
        })
        .collect()
}

/// The first `chunks` chunks of `ctx` tokens of the calibration text, each as llama-perplexity
/// cuts it (BOS substitution by the tokenizer's rule).
fn calibration_chunks(
    tokenizer: &Tokenizer,
    text: &EvalText,
    ctx: usize,
    chunks: usize,
) -> Result<Vec<Vec<u32>>, MeasureError> {
    if ctx < 8 || !ctx.is_multiple_of(2) {
        return Err(MeasureError::Invalid(format!(
            "ctx must be even and at least 8, got {ctx}"
        )));
    }
    if chunks == 0 {
        return Err(MeasureError::Invalid("chunks must be at least 1".into()));
    }
    let chunking = ChunkOptions::for_tokenizer(tokenizer, ctx, None);
    let have = chunking.n_chunks(text.tokens.len());
    if have < chunks {
        return Err(MeasureError::Invalid(format!(
            "the calibration text gives {} tokens, {have} chunks of {ctx}; {chunks} asked",
            text.tokens.len(),
        )));
    }
    Ok((0..chunks)
        .map(|i| chunking.chunk(&text.tokens, i))
        .collect())
}

/// The units of a scan over `source`.
struct Units {
    tensors: Vec<usize>,
    groups: Vec<Group>,
    probes: Vec<GgmlType>,
}

impl Units {
    fn new(source: &dyn TensorSource, probes: &[GgmlType], n_layer: usize) -> Units {
        let tensors: Vec<usize> = (0..source.n_tensors())
            .filter(|&i| {
                let t = source.info(i);
                dynquant_plan::keep_reason(&t.name, &t.shape).is_none()
            })
            .collect();
        let groups = grouped(
            tensors.iter().map(|&i| (source.info(i).name.as_str(), i)),
            n_layer,
        )
        .into_iter()
        .map(|(name, tensors, start)| Group {
            name,
            tensors,
            start,
        })
        .collect();
        Units {
            tensors,
            groups,
            probes: probes.to_vec(),
        }
    }

    fn len(&self) -> usize {
        self.tensors.len() + self.groups.len() * self.probes.len()
    }
}

fn check_types(what: &str, types: &[GgmlType]) -> Result<(), MeasureError> {
    if let Some(t) = types.iter().find(|t| !is_weight_type(**t)) {
        return Err(MeasureError::Invalid(format!(
            "{what} type {t} is not a weight type dynquant can quantize to"
        )));
    }
    Ok(())
}

/// The types measured per tensor: candidates then probes, each once, in that order.
fn measured_types(opts: &ScanOptions) -> Vec<GgmlType> {
    let mut v: Vec<GgmlType> = Vec::new();
    for &t in opts.candidates.iter().chain(&opts.probes) {
        if !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

fn settings(opts: &ScanOptions) -> BTreeMap<String, serde_json::Value> {
    use serde_json::json;
    let mut s = BTreeMap::new();
    s.insert("sample_rows".into(), json!(opts.sample_rows));
    s.insert("weights_only".into(), json!(opts.weights_only));
    s.insert(SETTING_EXPERT_PRIOR.into(), json!(opts.expert_prior.tokens));
    if !opts.weights_only {
        s.insert("ctx".into(), json!(opts.ctx));
        s.insert("chunks".into(), json!(opts.chunks));
        let probes: Vec<String> = opts.probes.iter().map(|t| type_name(*t)).collect();
        s.insert("probes".into(), json!(probes));
        s.insert(
            "kld".into(),
            json!("mean over the second half of each chunk, full vocabulary"),
        );
    }
    s
}

/// Runs (or resumes) a scan and writes `out`: the sensitivity file, or with a shard the shard
/// file [`merge`] reads. The journal is `out` with `.partial` appended.
pub fn scan(
    inputs: &ScanInputs<'_>,
    opts: &ScanOptions,
    out: &Path,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<ScanSummary, MeasureError> {
    let t0 = Instant::now();
    check_types("candidate", &opts.candidates)?;
    check_types("probe", &opts.probes)?;
    if let Some(t) = opts
        .probes
        .iter()
        .find(|t| dynquant_engine::dot::vec_dot_type(**t).is_none())
    {
        return Err(MeasureError::Invalid(format!(
            "probe type {t} cannot be evaluated by the engine"
        )));
    }
    if opts.candidates.is_empty() {
        return Err(MeasureError::Invalid("no candidate types".into()));
    }
    if opts.sample_rows == 0 {
        return Err(MeasureError::Invalid(
            "sample rows must be at least 1".into(),
        ));
    }
    let mut opts = opts.clone();
    if opts.weights_only {
        opts.probes.clear();
    } else if opts.probes.is_empty() {
        return Err(MeasureError::Invalid(
            "no probe types (use the weights-only scan to skip probes)".into(),
        ));
    }
    let model = inputs.model;
    let source: &dyn TensorSource = model;
    let (n_layer, chunk_tokens) = if opts.weights_only {
        (0, Vec::new())
    } else {
        let text = inputs.text.ok_or_else(|| {
            MeasureError::Invalid("a calibration text is needed to probe groups".into())
        })?;
        let chunks = calibration_chunks(inputs.tokenizer, text, opts.ctx, opts.chunks)?;
        let config = dynquant_engine::arch::config(model.metadata())
            .map_err(|e| MeasureError::Engine(Box::new(e)))?;
        (config.n_layer, chunks)
    };
    let units = Units::new(source, &opts.probes, n_layer);
    let types = measured_types(&opts);
    let header = Header::new(
        SensitivityKey {
            model_sha256: gguf_identity(model)?,
            imatrix_sha256: inputs.imatrix_sha256.clone(),
            text_sha256: inputs
                .text
                .map_or_else(|| "none".to_string(), |t| t.sha256.clone()),
        },
        settings(&opts),
        types.iter().map(|t| type_name(*t)).collect(),
        units.len(),
        opts.shard,
    );
    let owned: Vec<usize> = (0..units.len())
        .filter(|u| opts.shard.is_none_or(|s| u % s.count == s.index))
        .collect();
    let journal_path = partial_path(out);
    let (mut journal, replaced) = Journal::open(&journal_path, &header)?;
    if replaced {
        progress(Event::JournalReplaced);
    }
    let done_before = owned.iter().filter(|u| journal.has(**u)).count();
    let pending: Vec<usize> = owned.iter().copied().filter(|u| !journal.has(*u)).collect();
    let n_tensor_units = units.tensors.len();
    let evaluations = pending.iter().filter(|&&u| u >= n_tensor_units).count();
    let tokens_per_evaluation = chunk_tokens.iter().map(Vec::len).sum::<usize>();
    progress(Event::Cost(&ScanCost {
        tensor_units: n_tensor_units,
        probe_units: units.len() - n_tensor_units,
        owned: owned.len(),
        resumed: done_before,
        evaluations,
        tokens_per_evaluation,
    }));
    let mut tokens = 0usize;
    let calibration = if evaluations > 0 {
        let c = Calibration::run(model, chunk_tokens)?;
        tokens += tokens_per_evaluation;
        let est: f64 = pending
            .iter()
            .filter(|&&u| u >= n_tensor_units)
            .map(|&u| {
                units.groups[(u - n_tensor_units) / units.probes.len()]
                    .start
                    .share_of_run(n_layer)
            })
            .sum::<f64>()
            * c.seconds
            / evaluations as f64;
        progress(Event::Calibrated {
            seconds: c.seconds,
            per_evaluation: est,
        });
        Some(c)
    } else {
        None
    };
    let mut done = done_before;
    for &u in &pending {
        let (record, label) = if u < n_tensor_units {
            let index = units.tensors[u];
            let info = source.info(index);
            let e = weights::tensor_errors(
                source,
                index,
                inputs.imatrix,
                opts.expert_prior,
                &types,
                opts.sample_rows,
            )?;
            let rec = TensorRecord {
                name: info.name.clone(),
                n_elements: info.n_elements(),
                rows_measured: e.rows_measured,
                errors_bits: e
                    .errors
                    .iter()
                    .map(|(t, v)| (type_name(*t), v.to_bits()))
                    .collect(),
            };
            (Record::tensor(u, rec), info.name.clone())
        } else {
            let j = u - n_tensor_units;
            let group = &units.groups[j / units.probes.len()];
            let probe = units.probes[j % units.probes.len()];
            let mut overrides = WeightOverrides::new();
            let mut names = Vec::new();
            let mut stored = Vec::new();
            for &i in &group.tensors {
                let info = source.info(i);
                let Some(ty) = probe.fallback_for_row(info.row_len()) else {
                    continue;
                };
                let bytes =
                    weights::quantize_tensor(source, i, inputs.imatrix, opts.expert_prior, ty)?;
                overrides.insert(info.name.clone(), ty, bytes);
                names.push(info.name.clone());
                stored.push(type_name(ty));
            }
            let cal = calibration
                .as_ref()
                .expect("calibrated when probes are pending");
            let (mean, stderr) = cal.probe(model, &overrides, group.start)?;
            tokens += tokens_per_evaluation;
            let rec = ProbeRecord {
                group: group.name.clone(),
                tensors: names,
                stored,
                probe: type_name(probe),
                delta_kld_bits: mean.to_bits(),
                stderr_bits: stderr.to_bits(),
                tokens: cal.positions() as u64,
            };
            (
                Record::probe(u, rec),
                format!("{} @ {}", group.name, type_name(probe)),
            )
        };
        journal.append(record)?;
        done += 1;
        progress(Event::Unit {
            done,
            total: owned.len(),
            label: &label,
        });
    }
    let records = journal.into_records();
    match opts.shard {
        Some(_) => {
            let file = ShardFile {
                header: header.clone(),
                results: records,
                context: None,
            };
            records::write_atomic(out, &file.to_json())?;
        }
        None => {
            let s = assemble(&header, records)?;
            records::write_atomic(out, &s.to_json())?;
        }
    }
    remove_journal(&journal_path)?;
    Ok(ScanSummary {
        path: out.to_path_buf(),
        computed: pending.len(),
        evaluations,
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The journal of a scan writing `out`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn remove_journal(p: &Path) -> Result<(), MeasureError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MeasureError::Io {
            path: p.to_path_buf(),
            source,
        }),
    }
}

/// The sensitivity file of a whole scan from every unit's record.
fn assemble(header: &Header, mut records: Vec<Record>) -> Result<Sensitivity, MeasureError> {
    records.sort_by_key(|r| r.unit);
    let mut tensors = Vec::new();
    let mut by_name: BTreeMap<String, (u64, BTreeMap<String, f64>)> = BTreeMap::new();
    let mut groups = Vec::new();
    for r in &records {
        if let Some(t) = &r.tensor {
            let errors: BTreeMap<String, f64> = t
                .errors_bits
                .iter()
                .map(|(k, v)| (k.clone(), f64::from_bits(*v)))
                .collect();
            by_name.insert(t.name.clone(), (t.n_elements, errors.clone()));
            tensors.push(dynquant_plan::TensorError {
                name: t.name.clone(),
                n_elements: t.n_elements,
                rows_measured: t.rows_measured,
                errors,
            });
        }
    }
    for r in &records {
        if let Some(p) = &r.probe {
            let mut weight_error = 0f64;
            for (name, stored) in p.tensors.iter().zip(&p.stored) {
                let (n, errors) = by_name.get(name).ok_or_else(|| {
                    MeasureError::Merge(format!(
                        "probe of {} names unmeasured tensor {name}",
                        p.group
                    ))
                })?;
                let e = errors.get(stored).ok_or_else(|| {
                    MeasureError::Merge(format!("tensor {name} has no error at {stored}"))
                })?;
                weight_error += *n as f64 * e;
            }
            groups.push(dynquant_plan::GroupProbe {
                group: p.group.clone(),
                tensors: p.tensors.clone(),
                probe: p.probe.clone(),
                delta_kld: f64::from_bits(p.delta_kld_bits),
                stderr: f64::from_bits(p.stderr_bits),
                weight_error,
                tokens: p.tokens,
            });
        }
    }
    Ok(Sensitivity {
        format: dynquant_plan::sensitivity::SENSITIVITY_FORMAT.to_string(),
        dynquant_version: header.dynquant_version.clone(),
        key: header.key.clone(),
        settings: header.settings.clone(),
        candidates: header.candidates.clone(),
        tensors,
        groups,
        context: Vec::new(),
    })
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSummary {
    /// Shard files read.
    pub shards: usize,
    /// Units joined.
    pub units: usize,
}

/// Joins the shard files of one scan (same key, settings and version, shard counts equal,
/// every unit exactly once) into the sensitivity file a whole run writes, at `out`: the
/// isolated scan's, or the in-context scan's (its shards name the same quantized file and
/// extend the same sensitivity file).
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<MergeSummary, MeasureError> {
    if shards.is_empty() {
        return Err(MeasureError::Merge("no shard files given".into()));
    }
    let mut files = Vec::new();
    for p in shards {
        files.push((p, ShardFile::read(p)?));
    }
    let (first_path, first) = &files[0];
    let base = first.header.without_shard();
    let mut records: Vec<Record> = Vec::new();
    let mut seen = vec![false; first.header.units];
    let mut seen_shards = BTreeMap::new();
    for (p, f) in &files {
        if f.header.without_shard() != base {
            return Err(MeasureError::Merge(format!(
                "{} and {} were made with different models, imatrices, texts, settings or versions",
                first_path.display(),
                p.display()
            )));
        }
        let shard = f.header.shard.ok_or_else(|| MeasureError::Shard {
            path: (*p).clone(),
            reason: "not a shard file".into(),
        })?;
        if let Some(other) = seen_shards.insert(shard.index, *p) {
            return Err(MeasureError::Merge(format!(
                "{} and {} are both shard {}/{}",
                other.display(),
                p.display(),
                shard.index,
                shard.count
            )));
        }
        for r in &f.results {
            let slot = seen.get_mut(r.unit).ok_or_else(|| MeasureError::Shard {
                path: (*p).clone(),
                reason: format!("unit {} out of range", r.unit),
            })?;
            if *slot {
                return Err(MeasureError::Merge(format!(
                    "unit {} appears twice ({})",
                    r.unit,
                    p.display()
                )));
            }
            *slot = true;
            records.push(r.clone());
        }
    }
    let missing = seen.iter().filter(|s| !**s).count();
    if missing > 0 {
        let count = first.header.shard.map_or(0, |s| s.count);
        let absent: Vec<String> = (0..count)
            .filter(|i| !seen_shards.contains_key(i))
            .map(|i| format!("{i}/{count}"))
            .collect();
        return Err(MeasureError::Merge(format!(
            "{missing} of {} units are missing (shards not given: {})",
            seen.len(),
            if absent.is_empty() {
                "none".to_string()
            } else {
                absent.join(", ")
            }
        )));
    }
    let s = match &first.context {
        None => assemble(&base, records)?,
        Some(part) => {
            if let Some((p, _)) = files.iter().find(|(_, f)| f.context.as_ref() != Some(part)) {
                return Err(MeasureError::Merge(format!(
                    "{} and {} extend different sensitivity files",
                    first_path.display(),
                    p.display()
                )));
            }
            context::merged(part, records)?
        }
    };
    records::write_atomic(out, &s.to_json())?;
    Ok(MergeSummary {
        shards: files.len(),
        units: seen.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_roles_in_a_layer_with_routed_experts_together() {
        assert_eq!(group_name("blk.3.attn_v.weight"), "blk.3.attn_v");
        assert_eq!(group_name("blk.3.ffn_down_exps.weight"), "blk.3.ffn_exps");
        assert_eq!(
            group_name("blk.3.ffn_gate_up_exps.weight"),
            "blk.3.ffn_exps"
        );
        assert_eq!(
            group_name("blk.3.ffn_down_shexp.weight"),
            "blk.3.ffn_down_shexp"
        );
        assert_eq!(group_name("token_embd.weight"), "token_embd");
        assert_eq!(group_name("output.weight"), "output");
    }

    #[test]
    fn probes_start_at_the_first_block_they_change() {
        assert_eq!(start_of(&["blk.7.attn_q.weight"], 30), Start::Block(7));
        assert_eq!(
            start_of(
                &["blk.12.ffn_up_exps.weight", "blk.12.ffn_down_exps.weight"],
                30
            ),
            Start::Block(12)
        );
        assert_eq!(start_of(&["output.weight"], 30), Start::Block(30));
        assert_eq!(start_of(&["token_embd.weight"], 30), Start::Tokens);
    }

    #[test]
    fn shards_are_numbered_from_zero() {
        assert_eq!(
            "1/3".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 3 }
        );
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("a/2".parse::<Shard>().is_err());
        assert!(is_weight_type(GgmlType::Q4_K) && is_weight_type(GgmlType::F16));
        assert!(!is_weight_type(GgmlType::F32) && !is_weight_type(GgmlType::I8));
    }
}
