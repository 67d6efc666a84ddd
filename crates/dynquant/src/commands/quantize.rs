//! `quantize`: the main job. Plan, check, then stream the model through the quantizers.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::WriteOptions;
use dynquant_input::{load_imatrix, load_preset, ModelInput};
use dynquant_quantize::{
    check_imatrix_coverage, output_metadata, quantize_model, unseen_experts, Progress, Provenance,
    QuantizeJob, DEFAULT_SLAB_VALUES,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::human_bytes;
use super::overrides::plan_options;
use crate::args::QuantizeArgs;

struct Bar(ProgressBar);

impl Progress for Bar {
    fn tensor_started(&self, _index: usize, name: &str, from: GgmlType, to: GgmlType) {
        self.0.set_message(format!("{name} {from} -> {to}"));
    }
    fn advanced(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub fn run(a: &QuantizeArgs) -> Result<()> {
    let started = Instant::now();
    // A GGUF model, or a Hugging Face folder streamed straight from its safetensors.
    let input = ModelInput::open(&a.input, a.read.access())?;
    for w in input.warnings() {
        eprintln!("warning: {w}");
    }
    let inv = input.inventory();
    let preset = load_preset(&a.recipe.recipe)?;
    let mut opts = plan_options(&a.recipe)?;
    opts.has_imatrix = a.imatrix.is_some();
    let plan = preset.plan(&inv, &opts)?;
    let imatrix = a.imatrix.as_deref().map(load_imatrix).transpose()?;
    let recipe_name = preset.name();
    let recipe_source = preset.source();
    let md = output_metadata(
        input.metadata(),
        &Provenance {
            file_type: preset.file_type(&plan),
            tool_version: env!("CARGO_PKG_VERSION"),
            recipe_name: &recipe_name,
            recipe_source: &recipe_source,
            imatrix: imatrix.as_ref().zip(a.imatrix.as_deref()),
        },
    );

    let job = QuantizeJob {
        model: input.source(),
        targets: plan.tensors.iter().map(|t| t.target).collect(),
        metadata: md,
        imatrix: imatrix.as_ref(),
        imatrix_fallback: a.imatrix_fallback,
        allow_requantize: a.allow_requantize,
        slab_values: DEFAULT_SLAB_VALUES,
    };
    check_imatrix_coverage(&job)?;
    let unseen = unseen_experts(&job);
    for u in &unseen {
        eprintln!(
            "warning: {}: {} of {} experts saw no calibration tokens in the imatrix; they get neutral weights",
            u.tensor, u.unseen, u.total
        );
    }
    let target = a.shards.target(&a.output);
    let mut type_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &plan.tensors {
        *type_counts.entry(t.target.name()).or_default() += 1;
    }
    let summary_json = |paths: Vec<String>, bytes: u64, dry: bool| {
        json!({
            "recipe": recipe_name, "dry_run": dry, "outputs": paths, "bytes": bytes,
            "tensor_bytes": plan.total_bytes, "params": plan.total_params, "bpw": plan.bpw(),
            "types": type_counts, "seconds": started.elapsed().as_secs_f64(),
            "unseen_experts": unseen.iter().map(|u| json!({"tensor": u.tensor, "unseen": u.unseen, "total": u.total})).collect::<Vec<_>>(),
        })
    };
    if a.dry_run {
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary_json(vec![], plan.total_bytes, true))?
            );
        } else {
            println!(
                "dry run: {} tensors, {} of tensor data, {:.3} bpw; nothing written",
                plan.tensors.len(),
                human_bytes(plan.total_bytes),
                plan.bpw()
            );
        }
        return Ok(());
    }

    let total: u64 = inv.tensors.iter().map(|t| t.n_bytes).sum();
    let bar = if a.quiet || a.json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        b
    };
    let progress = Bar(bar);
    let write = WriteOptions {
        overwrite: a.force,
        protected_inputs: Vec::new(),
    };
    let threads = a.threads.unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting worker threads")?;
    let summary = pool
        .install(|| quantize_model(&job, &target, &write, &progress))
        .with_context(|| format!("quantizing {}", a.input.display()))?;
    progress.0.finish_and_clear();
    let paths: Vec<String> = summary
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(paths, summary.bytes, false))?
        );
    } else if !a.quiet {
        for p in &paths {
            println!("wrote {p}");
        }
        let types: Vec<String> = type_counts
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        println!(
            "{} ({} bytes), {:.3} bpw, {:.1} s; tensors: {}",
            human_bytes(summary.bytes),
            summary.bytes,
            plan.bpw(),
            started.elapsed().as_secs_f64(),
            types.join(", ")
        );
    }
    Ok(())
}
