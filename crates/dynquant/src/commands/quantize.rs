//! `quantize`: the main job. Plan, check, then stream the model through the quantizers.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use dynquant_gguf::imatrix::ExpertPrior;
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{SetOptions, ShardWorker, WriteOptions};
use dynquant_input::{load_imatrix, ModelInput};
use dynquant_quantize::{
    check_imatrix_coverage, covariance_coverage, output_metadata, quantize_model_with,
    unseen_experts, Progress, Provenance, QuantizeJob, DEFAULT_SLAB_VALUES,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::allocation::{self, describe, load_sensitivity, make_plan, OutputShape};
use super::overrides::plan_options;
use super::{human_bytes, write_atomically};
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
    let worker = a
        .shard
        .as_deref()
        .map(str::parse::<dynquant_measure::Shard>)
        .transpose()?;
    // A GGUF model, or a Hugging Face folder streamed straight from its safetensors.
    let input = ModelInput::open(&a.input, a.read.access())?;
    for w in input.warnings() {
        eprintln!("warning: {w}");
    }
    let inv = input.inventory();
    let mut opts = plan_options(&a.recipe)?;
    opts.has_imatrix = a.imatrix.is_some();
    let imatrix = a.imatrix.as_deref().map(load_imatrix).transpose()?;
    let sensitivity = load_sensitivity(
        a.target.sensitivity.as_deref(),
        &input,
        a.imatrix.as_deref(),
    )?;
    let expert_prior = a.expert_prior.prior();
    if let Some(scan_prior) = sensitivity
        .as_ref()
        .and_then(|s| s.settings.get(dynquant_measure::SETTING_EXPERT_PRIOR))
        .and_then(serde_json::Value::as_f64)
    {
        if scan_prior != f64::from(expert_prior.tokens) {
            eprintln!(
                "warning: the sensitivity scan weighted experts with --imatrix-expert-prior {scan_prior}, this quantize uses {}: its errors describe other weights",
                expert_prior.tokens
            );
        }
    }
    let target = a.shards.target(&a.output);
    let input_metadata = input.metadata();
    let metadata_for = |name: &str, source: &str, file_type: u32| {
        output_metadata(
            input_metadata.clone(),
            &Provenance {
                file_type,
                tool_version: env!("CARGO_PKG_VERSION"),
                recipe_name: name,
                recipe_source: source,
                imatrix: imatrix.as_ref().zip(a.imatrix.as_deref()),
            },
        )
    };
    let layout_metadata = |name: &str| metadata_for(name, "", 0);
    let planned = make_plan(
        &a.recipe,
        &a.target,
        &opts,
        &inv,
        sensitivity.as_ref(),
        &OutputShape {
            target: target.clone(),
            metadata: &layout_metadata,
        },
    )?;
    if let Some(path) = &a.target.export_recipe {
        write_atomically(path, &planned.recipe_source)?;
    }
    let plan = &planned.plan;
    let recipe_name = planned.recipe_name.clone();
    let md = metadata_for(&recipe_name, &planned.recipe_source, planned.file_type());

    let covariance = a
        .covariance
        .as_deref()
        .map(|p| {
            dynquant_gguf::covariance::CovarianceFile::open(p)
                .with_context(|| format!("reading {}", p.display()))
        })
        .transpose()?;
    if let (Some(cov), Some(path)) = (&covariance, &a.covariance) {
        let identity = dynquant_measure::model_identity(input.source(), &input.metadata())?;
        if cov.info.model != identity {
            anyhow::bail!(
                "{} was made for another model (identity {}), not {} ({identity})",
                path.display(),
                cov.info.model,
                a.input.display()
            );
        }
    }
    let job = QuantizeJob {
        model: input.source(),
        targets: plan.tensors.iter().map(|t| t.target).collect(),
        metadata: md,
        imatrix: imatrix.as_ref(),
        imatrix_fallback: a.imatrix_fallback,
        expert_prior,
        // --requantize-mxfp4 is consent to re-quantize the MXFP4 tensors (and only those).
        allow_requantize: a.allow_requantize
            || (a.recipe.requantize_mxfp4
                && plan.tensors.iter().all(|t| {
                    t.target == t.source
                        || !t.source.info().quantized
                        || t.source == GgmlType::MXFP4
                })),
        slab_values: DEFAULT_SLAB_VALUES,
        covariance: covariance.as_ref(),
    };
    check_imatrix_coverage(&job)?;
    let fed = covariance_coverage(&job)?;
    if let Some(path) = &a.covariance {
        if !a.quiet && !a.json {
            eprintln!(
                "error feedback (GPTQ) from {}: {} of the tensors to quantize",
                path.display(),
                fed.len()
            );
        }
    }
    if let Some(r) = &planned.report {
        if !a.quiet && !a.json {
            for line in describe(r) {
                eprintln!("{line}");
            }
        }
    }
    let unseen = unseen_experts(&job);
    for u in &unseen {
        eprintln!(
            "warning: {}: {} of {} experts saw no calibration tokens in the imatrix; they get {}",
            u.tensor,
            u.unseen,
            u.total,
            if expert_prior != ExpertPrior::NONE {
                "the mean importance of the others"
            } else {
                "neutral weights"
            }
        );
    }
    let mut type_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &plan.tensors {
        *type_counts.entry(t.target.name()).or_default() += 1;
    }
    let summary_json = |paths: Vec<String>, bytes: u64, dry: bool| {
        json!({
            "recipe": recipe_name, "dry_run": dry, "outputs": paths, "bytes": bytes,
            "tensor_bytes": plan.total_bytes, "params": plan.total_params, "bpw": plan.bpw(),
            "types": type_counts, "seconds": started.elapsed().as_secs_f64(),
            "allocation": planned.report.as_ref().map(allocation::to_json),
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
    let set = SetOptions {
        tensor_checksums: a.checksums,
        worker: worker.map(|w| ShardWorker {
            index: w.index,
            count: w.count,
        }),
    };
    let summary = pool
        .install(|| quantize_model_with(&job, &target, &write, set, &progress))
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
        for p in &summary.skipped {
            println!("kept {} (finished and verified)", p.display());
        }
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
