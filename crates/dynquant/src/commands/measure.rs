//! `dynquant measure`: the sensitivity scan (`dynquant-measure`) and `measure merge`.

use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dynquant_engine::evaluation::EvalText;
use dynquant_gguf::GgmlType;
use dynquant_measure::{Event, ScanCost, ScanInputs, ScanOptions, Shard};
use dynquant_tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{MeasureAction, MeasureArgs, MeasureContextArgs, MeasureMergeArgs};

pub fn run(a: &MeasureArgs) -> Result<()> {
    match &a.action {
        Some(MeasureAction::Merge(m)) => merge(m),
        Some(MeasureAction::Context(c)) => context(c),
        None => scan(a),
    }
}

/// The progress bar of a scan.
fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} units ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Shows a scan's events on its progress bar (lines above it unless `quiet`): `cost_line`
/// words the work announced before it starts, `runs` the whole-model runs that calibrate it.
fn render_event(
    bar: &ProgressBar,
    quiet: bool,
    command: &str,
    runs: &str,
    cost_line: &dyn Fn(&ScanCost) -> String,
    e: Event<'_>,
) {
    match e {
        Event::Cost(c) => {
            if !quiet {
                bar.suspend(|| eprintln!("{command}: {}", cost_line(c)));
            }
            bar.set_length(c.owned as u64);
            bar.set_position(c.resumed as u64);
            bar.reset_eta();
        }
        Event::JournalReplaced => bar.suspend(|| {
            eprintln!(
                "{command}: the journal was made with other inputs or settings; starting over"
            )
        }),
        Event::Calibrated {
            seconds,
            per_evaluation,
        } => {
            if !quiet {
                bar.suspend(|| {
                    eprintln!(
                        "{command}: {runs} {seconds:.1} s; about {per_evaluation:.1} s per probe evaluation"
                    )
                });
            }
            bar.reset_eta();
        }
        Event::Unit { done, label, .. } => {
            bar.set_position(done as u64);
            bar.set_message(label.to_string());
        }
    }
}

fn context(a: &MeasureContextArgs) -> Result<()> {
    let t0 = Instant::now();
    let gguf = super::perplexity::open(&a.model)?;
    let quant = super::perplexity::open(&a.quant)?;
    let tokenizer = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    let sensitivity = std::fs::read_to_string(&a.sensitivity)
        .with_context(|| format!("reading {}", a.sensitivity.display()))?;
    // Checked here too, so that a bad file's error names it.
    dynquant_plan::sensitivity::Sensitivity::parse(&sensitivity)
        .with_context(|| a.sensitivity.display().to_string())?;
    let text = EvalText::read(&tokenizer, &a.text)
        .with_context(|| format!("reading {}", a.text.display()))?;
    let inputs = dynquant_measure::ContextInputs {
        model: &gguf,
        quant: &quant,
        tokenizer: &tokenizer,
        text: &text,
        sensitivity: &sensitivity,
    };
    let opts = dynquant_measure::ContextOptions {
        ctx: a.ctx,
        chunks: a.chunks,
        shard: a.shard.as_deref().map(Shard::from_str).transpose()?,
    };
    let pool = super::perplexity::worker_pool(a.threads)?;
    let bar = progress_bar(a.quiet);
    let cost_line = |c: &ScanCost| {
        format!(
            "{} groups; this run: {} ({} already done), {} engine evaluations of {} tokens",
            c.probe_units, c.owned, c.resumed, c.evaluations, c.tokens_per_evaluation
        )
    };
    let mut on_event = |e: Event<'_>| {
        render_event(
            &bar,
            a.quiet,
            "measure context",
            "unquantized and quantized runs",
            &cost_line,
            e,
        )
    };
    let summary =
        pool.install(|| dynquant_measure::context_scan(&inputs, &opts, &a.output, &mut on_event))?;
    bar.finish_and_clear();
    eprintln!(
        "measure context: wrote {} in {:.1} s: {} groups computed, {} tokens",
        summary.path.display(),
        t0.elapsed().as_secs_f64(),
        summary.computed,
        summary.tokens
    );
    Ok(())
}

/// Type names as given (`q4_k`, `IQ2_XXS`), each a weight type dynquant can quantize to.
fn types(what: &str, names: &[String], default: &[GgmlType]) -> Result<Vec<GgmlType>> {
    if names.is_empty() {
        return Ok(default.to_vec());
    }
    names
        .iter()
        .map(|n| {
            let ty = GgmlType::from_str(n.trim())
                .map_err(|_| anyhow::anyhow!("unknown {what} type '{n}'"))?;
            if !dynquant_measure::is_weight_type(ty) {
                bail!("{what} type {ty} is not a weight type dynquant can quantize to");
            }
            Ok(ty)
        })
        .collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(dynquant_engine::kld::sha256_hex(&bytes))
}

fn scan(a: &MeasureArgs) -> Result<()> {
    let t0 = Instant::now();
    let (Some(model_path), Some(out)) = (&a.model, &a.output) else {
        bail!("measure needs a MODEL and -o OUT");
    };
    let opts = ScanOptions {
        candidates: types(
            "candidate",
            &a.candidates,
            dynquant_measure::DEFAULT_CANDIDATES,
        )?,
        probes: types("probe", &a.probe, dynquant_measure::DEFAULT_PROBES)?,
        ctx: a.ctx,
        chunks: a.chunks,
        sample_rows: a.sample_rows,
        weights_only: a.weights_only,
        shard: a.shard.as_deref().map(Shard::from_str).transpose()?,
        expert_prior: a.expert_prior.prior(),
    };
    if !a.weights_only && a.text.is_none() {
        bail!("measure needs --text CALIB (or --weights-only)");
    }
    let gguf = super::perplexity::open(model_path)?;
    let tokenizer = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    let (imatrix, imatrix_sha256) = match &a.imatrix {
        Some(p) => (
            Some(dynquant_input::load_imatrix(p)?),
            Some(sha256_file(p)?),
        ),
        None => (None, None),
    };
    let text = match (&a.text, a.weights_only) {
        (Some(p), false) => Some(
            EvalText::read(&tokenizer, p).with_context(|| format!("reading {}", p.display()))?,
        ),
        _ => None,
    };
    let inputs = ScanInputs {
        model: &gguf,
        tokenizer: &tokenizer,
        imatrix: imatrix.as_ref(),
        imatrix_sha256,
        text: text.as_ref(),
    };
    let pool = super::perplexity::worker_pool(a.threads)?;
    let bar = progress_bar(a.quiet);
    let cost_line = |c: &ScanCost| {
        format!(
            "{} tensors x {} types, {} groups x {} probes; this run: {} of {} units ({} already done), {} engine evaluations of {} tokens",
            c.tensor_units,
            opts.candidates.len(),
            if opts.probes.is_empty() || opts.weights_only { 0 } else { c.probe_units / opts.probes.len() },
            if opts.weights_only { 0 } else { opts.probes.len() },
            c.owned,
            c.tensor_units + c.probe_units,
            c.resumed,
            c.evaluations,
            c.tokens_per_evaluation
        )
    };
    let mut on_event =
        |e: Event<'_>| render_event(&bar, a.quiet, "measure", "unquantized run", &cost_line, e);
    let summary = pool.install(|| dynquant_measure::scan(&inputs, &opts, out, &mut on_event))?;
    bar.finish_and_clear();
    eprintln!(
        "measure: wrote {} in {:.1} s: {} units computed, {} engine evaluations, {} tokens",
        summary.path.display(),
        t0.elapsed().as_secs_f64(),
        summary.computed,
        summary.evaluations,
        summary.tokens
    );
    Ok(())
}

fn merge(m: &MeasureMergeArgs) -> Result<()> {
    let s = dynquant_measure::merge(&m.shards, &m.output)?;
    eprintln!(
        "measure merge: wrote {} from {} shards ({} units)",
        m.output.display(),
        s.shards,
        s.units
    );
    Ok(())
}
