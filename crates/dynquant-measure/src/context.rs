//! The in-context scan behind `dynquant measure context`: each group's cost inside one
//! quantized file of the model, added to a sensitivity file as its
//! [`dynquant_plan::sensitivity::ContextScan`].
//!
//! For every group of the scan, the quantized file `A` is evaluated on the calibration chunks
//! with that group's tensors set back to the unquantized model's, from the state `A` has on
//! entering the group's first block; the saving is `A`'s KLD minus the probed one, both against
//! the unquantized model, as a mean of per-position differences (so its standard error is that
//! of a paired difference, far below either mean's). One unit per group, journaled and
//! resumable as the isolated scan's units are; with a [`Shard`] `I/N` only the groups whose
//! number is `I` modulo `N` are probed and a shard file is written, which
//! [`crate::merge`] joins into the file one whole run writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use dynquant_engine::evaluation::EvalText;
use dynquant_engine::WeightOverrides;
use dynquant_gguf::GgufModel;
use dynquant_plan::sensitivity::{ContextProbe, ContextScan, Sensitivity};
use dynquant_tokenizer::Tokenizer;

use crate::probe::{Calibration, Start};
use crate::records::{self, ContextPart, Header, Journal, ProbeRecord, Record, ShardFile};
use crate::{
    calibration_chunks, gguf_identity, grouped, partial_path, remove_journal, type_name, Event,
    MeasureError, ScanCost, ScanSummary, Shard,
};

/// Tokens per calibration chunk of an in-context scan by default.
pub const DEFAULT_CONTEXT_CTX: usize = 512;
/// Calibration chunks of an in-context scan by default: four (1,020 scored positions). A
/// group's saving is a difference of two large KLDs, so it needs more positions than an
/// isolated probe: on `smollm2-moe-routed` at 2.1 bpw one chunk left a median standard error
/// of 0.038 nats on savings of 0.05-0.26 and the re-allocation gained 7.9%; four chunks gave
/// 0.017 and 12.3% (docs/benchmarks.md, "Costs in context").
pub const DEFAULT_CONTEXT_CHUNKS: usize = 4;

/// What an in-context scan reads.
pub struct ContextInputs<'a> {
    /// The unquantized model (the reference distributions and the restored weights).
    pub model: &'a GgufModel,
    /// A quantized file of it.
    pub quant: &'a GgufModel,
    /// The model's tokenizer (chunk BOS substitution).
    pub tokenizer: &'a Tokenizer,
    /// The calibration text.
    pub text: &'a EvalText,
    /// The model's sensitivity file as read, which the result extends (a shard file keeps this
    /// text, so a merge parses exactly what a whole run parsed).
    pub sensitivity: &'a str,
}

/// How to run an in-context scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextOptions {
    /// Tokens per calibration chunk.
    pub ctx: usize,
    /// Calibration chunks (the first ones of the text).
    pub chunks: usize,
    /// Only this shard of the groups (a shard file is written).
    pub shard: Option<Shard>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            ctx: DEFAULT_CONTEXT_CTX,
            chunks: DEFAULT_CONTEXT_CHUNKS,
            shard: None,
        }
    }
}

/// A probed group: its tensors as (name, index in the model, index in the quantized file).
struct ContextGroup {
    name: String,
    tensors: Vec<(String, usize, usize)>,
    start: Start,
}

/// The scan's groups, from the sensitivity file's tensors, each checked to be in the
/// quantized file with the model's shape.
fn groups(
    model: &GgufModel,
    quant: &GgufModel,
    s: &Sensitivity,
    n_layer: usize,
) -> Result<Vec<ContextGroup>, MeasureError> {
    let index = |g: &GgufModel| -> BTreeMap<String, (usize, Vec<u64>)> {
        g.tensors()
            .enumerate()
            .map(|(i, t)| (t.info.name.clone(), (i, t.info.shape.clone())))
            .collect()
    };
    let (in_model, in_quant) = (index(model), index(quant));
    let mut tensors = Vec::new();
    for t in &s.tensors {
        let (mi, shape) = in_model.get(&t.name).ok_or_else(|| {
            MeasureError::Invalid(format!(
                "the sensitivity file names tensor {} that the model lacks",
                t.name
            ))
        })?;
        let (qi, qshape) = in_quant.get(&t.name).ok_or_else(|| {
            MeasureError::Invalid(format!(
                "tensor {} is not in the quantized file (is it a quant of this model?)",
                t.name
            ))
        })?;
        if qshape != shape {
            return Err(MeasureError::Invalid(format!(
                "tensor {} is {:?} in the quantized file and {:?} in the model",
                t.name, qshape, shape
            )));
        }
        tensors.push((t.name.as_str(), (t.name.clone(), *mi, *qi)));
    }
    let out = grouped(tensors.into_iter(), n_layer)
        .into_iter()
        .map(|(name, tensors, start)| ContextGroup {
            name,
            tensors,
            start,
        })
        .collect();
    Ok(out)
}

/// Runs (or resumes) an in-context scan of `inputs.quant` and writes `out`: the sensitivity
/// file of `inputs.sensitivity` with this scan added after the context scans it had (one of
/// the same quantized file is replaced), or with a shard the shard file [`crate::merge`]
/// reads. The journal is `out` with `.partial` appended.
pub fn context_scan(
    inputs: &ContextInputs<'_>,
    opts: &ContextOptions,
    out: &Path,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<ScanSummary, MeasureError> {
    use serde_json::json;
    let t0 = Instant::now();
    let (model, quant) = (inputs.model, inputs.quant);
    let sens = Sensitivity::parse(inputs.sensitivity)
        .map_err(|e| MeasureError::Invalid(format!("the sensitivity file: {e}")))?;
    let identity = gguf_identity(model)?;
    sens.check_for(&identity, None)
        .map_err(|e| MeasureError::Invalid(e.to_string()))?;
    if sens.key.text_sha256 != inputs.text.sha256 {
        return Err(MeasureError::Invalid(
            "the sensitivity file was measured on another calibration text".into(),
        ));
    }
    let quant_identity = gguf_identity(quant)?;
    if quant_identity == identity {
        return Err(MeasureError::Invalid(
            "the quantized file is the model itself".into(),
        ));
    }
    let chunks = calibration_chunks(inputs.tokenizer, inputs.text, opts.ctx, opts.chunks)?;
    let n_layer = dynquant_engine::arch::config(model.metadata())
        .map_err(|e| MeasureError::Engine(Box::new(e)))?
        .n_layer;
    let groups = groups(model, quant, &sens, n_layer)?;
    let model_tensors: Vec<_> = model.tensors().collect();
    let quant_tensors: Vec<_> = quant.tensors().collect();

    let mut settings = BTreeMap::new();
    settings.insert("in_context_of".into(), json!(quant_identity));
    settings.insert("ctx".into(), json!(opts.ctx));
    settings.insert("chunks".into(), json!(opts.chunks));
    let header = Header::new(
        sens.key.clone(),
        settings,
        sens.candidates.clone(),
        groups.len(),
        opts.shard,
    );
    let journal_path = partial_path(out);
    let (mut journal, replaced) = Journal::open(&journal_path, &header)?;
    if replaced {
        progress(Event::JournalReplaced);
    }
    let owned: Vec<usize> = (0..groups.len())
        .filter(|u| opts.shard.is_none_or(|s| u % s.count == s.index))
        .collect();
    let pending: Vec<usize> = owned.iter().copied().filter(|u| !journal.has(*u)).collect();
    let resumed = owned.len() - pending.len();
    let tokens_per_evaluation = chunks.iter().map(Vec::len).sum::<usize>();
    progress(Event::Cost(&ScanCost {
        tensor_units: 0,
        probe_units: groups.len(),
        owned: owned.len(),
        resumed,
        evaluations: pending.len(),
        tokens_per_evaluation,
    }));
    // The quantized file's own run is needed even when every unit is done: its KLD is kept.
    let (calibration, (kld, kld_stderr)) = Calibration::run_in_context(model, quant, chunks)?;
    let mut tokens = 2 * tokens_per_evaluation;
    let est = if pending.is_empty() {
        0.0
    } else {
        pending
            .iter()
            .map(|&u| groups[u].start.share_of_run(n_layer))
            .sum::<f64>()
            * calibration.seconds
            / 2.0
            / pending.len() as f64
    };
    progress(Event::Calibrated {
        seconds: calibration.seconds,
        per_evaluation: est,
    });
    for (done, &u) in (resumed + 1..).zip(&pending) {
        let g = &groups[u];
        let mut overrides = WeightOverrides::new();
        let mut names = Vec::new();
        let mut stored = Vec::new();
        for (name, mi, qi) in &g.tensors {
            let t = &model_tensors[*mi];
            let data = model.tensor_data(t).map_err(|e| MeasureError::Read {
                tensor: name.clone(),
                source: Box::new(e.into()),
            })?;
            overrides.insert(name.clone(), t.info.ggml_type, data.into_owned());
            names.push(name.clone());
            stored.push(type_name(quant_tensors[*qi].info.ggml_type));
        }
        let (saved, stderr) = calibration.saving(quant, &overrides, g.start)?;
        tokens += tokens_per_evaluation;
        let rec = ProbeRecord {
            group: g.name.clone(),
            tensors: names,
            stored,
            probe: "unquantized".into(),
            delta_kld_bits: saved.to_bits(),
            stderr_bits: stderr.to_bits(),
            tokens: calibration.positions() as u64,
        };
        journal.append(Record::probe(u, rec))?;
        progress(Event::Unit {
            done,
            total: owned.len(),
            label: &format!("{} in context", g.name),
        });
    }
    let part = ContextPart {
        base: inputs.sensitivity.to_string(),
        quant_sha256: quant_identity,
        ctx: opts.ctx,
        chunks: opts.chunks,
        kld_bits: kld.to_bits(),
        stderr_bits: kld_stderr.to_bits(),
    };
    let records = journal.into_records();
    match opts.shard {
        Some(_) => {
            let file = ShardFile {
                header,
                results: records,
                context: Some(part),
            };
            records::write_atomic(out, &file.to_json())?;
        }
        None => records::write_atomic(out, &extended(sens, &part, records).to_json())?,
    }
    remove_journal(&journal_path)?;
    Ok(ScanSummary {
        path: out.to_path_buf(),
        computed: pending.len(),
        evaluations: pending.len(),
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The sensitivity file `base` with the in-context scan of `part` and its units' `records`
/// (every group's, in unit order) added: after the scans it had, replacing one of the same
/// quantized file.
fn extended(mut base: Sensitivity, part: &ContextPart, records: Vec<Record>) -> Sensitivity {
    let probes: Vec<ContextProbe> = records
        .into_iter()
        .filter_map(|r| r.probe)
        .map(|p| ContextProbe {
            group: p.group,
            tensors: p.tensors,
            stored: p.stored,
            saved: f64::from_bits(p.delta_kld_bits),
            stderr: f64::from_bits(p.stderr_bits),
            tokens: p.tokens,
        })
        .collect();
    base.context.retain(|c| c.quant_sha256 != part.quant_sha256);
    base.context.push(ContextScan {
        quant_sha256: part.quant_sha256.clone(),
        kld: f64::from_bits(part.kld_bits),
        stderr: f64::from_bits(part.stderr_bits),
        ctx: part.ctx,
        chunks: part.chunks,
        probes,
    });
    base
}

/// The sensitivity file that joined shards of one in-context scan make (their units sorted
/// into unit order): the same bytes as one whole run's.
pub(crate) fn merged(
    part: &ContextPart,
    mut records: Vec<Record>,
) -> Result<Sensitivity, MeasureError> {
    let base = Sensitivity::parse(&part.base).map_err(|e| {
        MeasureError::Merge(format!("the sensitivity file kept in the shards: {e}"))
    })?;
    records.sort_by_key(|r| r.unit);
    Ok(extended(base, part, records))
}
