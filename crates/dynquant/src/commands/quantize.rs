//! `quantize`: the main job. Plan, check, then stream the model through the quantizers.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::{file_type_by_name, GgmlType, FILE_TYPE_TABLE};
use dynquant_gguf::{keys, GgufModel, Value, WriteOptions};
use dynquant_hf::{is_hf_dir, ConvertOptions, HfModel};
use dynquant_plan::inventory::Inventory;
use dynquant_plan::{plan_recipe, Plan};
use dynquant_quantize::{
    check_imatrix_coverage, quantize_model, unseen_experts, Progress, QuantizeJob, TensorSource,
    DEFAULT_SLAB_VALUES,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::human_bytes;
use super::plan::{load_recipe, options};
use crate::args::QuantizeArgs;

/// `general.file_type` for a plan: the llama.cpp mix's own ftype, or the file type whose
/// default type is the plan's dominant quantized type (by bytes).
fn file_type_for(plan: &Plan, recipe_name: &str) -> u32 {
    if let Some(ft) = file_type_by_name(recipe_name) {
        return ft.id;
    }
    let mut bytes: BTreeMap<GgmlType, u64> = BTreeMap::new();
    for t in &plan.tensors {
        *bytes.entry(t.target).or_default() += t.bytes;
    }
    let dominant = bytes
        .iter()
        .filter(|(ty, _)| ty.info().quantized || **ty == GgmlType::F16 || **ty == GgmlType::BF16)
        .max_by_key(|(_, b)| **b)
        .map(|(ty, _)| *ty);
    dominant
        .and_then(|ty| FILE_TYPE_TABLE.iter().find(|f| f.default_type == Some(ty)))
        .map_or(0, |f| f.id)
}

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
    let gguf_model;
    let hf_model;
    let (model, inv, input_md): (&dyn TensorSource, Inventory, _) = if is_hf_dir(&a.input) {
        hf_model = HfModel::open(&a.input, &ConvertOptions::default())
            .with_context(|| format!("reading {}", a.input.display()))?;
        for w in hf_model.warnings() {
            eprintln!("warning: {w}");
        }
        let inv = Inventory {
            metadata: hf_model.metadata().clone(),
            tensors: hf_model.tensor_infos().to_vec(),
        };
        (&hf_model, inv, hf_model.metadata().clone())
    } else {
        gguf_model = GgufModel::open(&a.input, a.read.access())
            .with_context(|| format!("reading {}", a.input.display()))?;
        let inv = Inventory::from_gguf(&gguf_model);
        (&gguf_model, inv, gguf_model.merged_metadata())
    };
    let recipe = load_recipe(&a.recipe.recipe)?;
    let opts = options(&a.recipe)?;
    let plan = plan_recipe(&inv, &recipe, &opts)?;
    let imatrix = a
        .imatrix
        .as_ref()
        .map(|p| Imatrix::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;

    // Output metadata: the input's, then llama-quantize's keys, then how dynquant made it.
    let mut md = input_md;
    md.set(keys::general::QUANTIZATION_VERSION, Value::U32(2));
    md.set(
        keys::general::FILE_TYPE,
        Value::U32(file_type_for(&plan, &recipe.name)),
    );
    md.set(
        "dynquant.version",
        Value::String(env!("CARGO_PKG_VERSION").into()),
    );
    md.set("dynquant.recipe", Value::String(recipe.name.clone()));
    let digest: String = Sha256::digest(recipe.source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    md.set("dynquant.recipe.sha256", Value::String(digest));
    if let (Some(im), Some(path)) = (&imatrix, &a.imatrix) {
        let cut = |s: &str| s.chars().take(127).collect::<String>();
        md.set(
            "quantize.imatrix.file",
            Value::String(cut(&path.display().to_string())),
        );
        if let Some(d) = im.datasets.first() {
            md.set("quantize.imatrix.dataset", Value::String(cut(d)));
        }
        md.set(
            "quantize.imatrix.entries_count",
            Value::U32(im.entries.len() as u32),
        );
        if im.chunk_count > 0 {
            md.set("quantize.imatrix.chunks_count", Value::U32(im.chunk_count));
        }
    }

    let job = QuantizeJob {
        model,
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
            "recipe": recipe.name, "dry_run": dry, "outputs": paths, "bytes": bytes,
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
