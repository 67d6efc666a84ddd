//! `plan`: a type per tensor from a recipe, with sizes and reasons, before any work.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::{GgmlType, ImatrixNeed};
use dynquant_gguf::OutputTarget;
use dynquant_input::{load_imatrix, plan_targets, ModelInput};
use dynquant_plan::{Decision, MlaLayout, Plan, Preset};
use dynquant_quantize::{output_metadata, unseen_experts_of, Provenance};

use super::allocation::{self, load_sensitivity, make_plan, OutputShape};
use super::write_atomically;
use serde_json::json;

use super::human_bytes;
use super::overrides::plan_options;
use crate::args::{LayoutArg, PlanArgs};

const GIB: f64 = (1u64 << 30) as f64;

/// How a plan of a DeepSeek config names its attention layout.
fn layout_label(layout: Option<MlaLayout>) -> &'static str {
    match layout {
        None => "",
        Some(MlaLayout::Mla) => "MLA layout (attn_k_b/attn_v_b)",
        Some(MlaLayout::Legacy) => "legacy layout (attn_kv_b)",
    }
}

fn warnings(p: &Plan, imatrix: Option<&Imatrix>) -> Vec<String> {
    let mut w = Vec::new();
    let mut needing: BTreeMap<GgmlType, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    for t in &p.tensors {
        if t.target.info().imatrix == ImatrixNeed::Optional
            || matches!(t.decision, Decision::Kept(_))
        {
            continue;
        }
        *needing.entry(t.target).or_default() += 1;
        let Some(im) = imatrix else { continue };
        let n_mat = t.shape.get(2).copied().unwrap_or(1) as usize;
        match im.get(&t.name) {
            None => missing.push(t.name.clone()),
            Some(e) if e.n_per_mat as u64 != t.shape[0] || e.n_mat() != n_mat => w.push(format!(
                "imatrix entry for {} has {}x{} values, the tensor needs {}x{}",
                t.name,
                e.n_mat(),
                e.n_per_mat,
                n_mat,
                t.shape[0]
            )),
            Some(_) => {
                if let Some(u) = unseen_experts_of(im, &t.name) {
                    w.push(format!(
                        "{}: {} of {} experts saw no calibration tokens (quantize gives them the mean importance of the others)",
                        u.tensor, u.unseen, u.total
                    ));
                }
            }
        }
    }
    if imatrix.is_none() {
        for (ty, n) in needing {
            w.push(format!(
                "{n} tensors at {ty} need an importance matrix (--imatrix) to quantize well"
            ));
        }
    }
    if !missing.is_empty() {
        w.push(format!(
            "the imatrix has no entry for {} tensors that need one: {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    for line in &p.unused_rules {
        w.push(format!("recipe rule at line {line} matches no tensor"));
    }
    w
}

fn rule_label(t: &dynquant_plan::TensorPlan, preset: Option<&Preset>) -> String {
    let line = |i: usize| preset.map_or(0, |p| p.rule_line(i));
    match &t.decision {
        Decision::Kept(_) => "keep".into(),
        Decision::Override(i) => format!("override#{}", i + 1),
        Decision::SpecialOverride => "override".into(),
        Decision::Rule(i) => format!("line {}", line(*i)),
        Decision::Default => "default".into(),
        Decision::Allocated(None) => "alloc".into(),
        Decision::Allocated(Some(i)) => format!("alloc:{}", line(*i)),
    }
}

fn summary_by<K: Ord + ToString>(
    p: &Plan,
    key: impl Fn(&dynquant_plan::TensorPlan) -> K,
) -> BTreeMap<K, (usize, u64, u64)> {
    let mut m: BTreeMap<K, (usize, u64, u64)> = BTreeMap::new();
    for t in &p.tensors {
        let e = m.entry(key(t)).or_default();
        e.0 += 1;
        e.1 += t.shape.iter().product::<u64>();
        e.2 += t.bytes;
    }
    m
}

fn to_json(
    p: &Plan,
    preset: Option<&Preset>,
    layout: &str,
    imatrix: Option<&Imatrix>,
) -> serde_json::Value {
    let tensors: Vec<_> = p
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "shape": t.shape, "role": t.role.name(), "layer": t.layer,
                "source": t.source.name(), "requested": t.requested.name(), "type": t.target.name(),
                "fallback": t.requested != t.target && !matches!(t.decision, Decision::Kept(_)),
                "bytes": t.bytes, "rule": rule_label(t, preset), "why": t.why,
                "predicted_kld": t.predicted_kld,
            })
        })
        .collect();
    let by_type: serde_json::Map<_, _> = summary_by(p, |t| t.target.name())
        .into_iter()
        .map(|(k, (n, e, b))| {
            (
                k.to_string(),
                json!({"tensors": n, "params": e, "bytes": b}),
            )
        })
        .collect();
    let by_role: serde_json::Map<_, _> = summary_by(p, |t| t.role.name())
        .into_iter()
        .map(|(k, (n, e, b))| {
            (
                k.to_string(),
                json!({"tensors": n, "params": e, "bytes": b}),
            )
        })
        .collect();
    json!({
        "recipe": p.recipe, "layout": layout, "total_bytes": p.total_bytes,
        "total_gib": p.total_bytes as f64 / GIB, "total_gb": p.total_bytes as f64 / 1e9,
        "total_params": p.total_params, "bpw": p.bpw(), "tensors": tensors,
        "by_type": by_type, "by_role": by_role, "warnings": warnings(p, imatrix),
    })
}

fn to_text(
    p: &Plan,
    preset: Option<&Preset>,
    layout: &str,
    all: bool,
    imatrix: Option<&Imatrix>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "recipe {}: {}", p.recipe, p.description);
    if !layout.is_empty() {
        let _ = writeln!(s, "{layout}");
    }
    if all || p.tensors.len() <= 400 {
        let w = p.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4);
        let _ = writeln!(
            s,
            "\n{:<w$}  {:<16} {:<14} {:<7} {:<8} {:>12}  {:<9} why",
            "tensor", "shape", "role", "source", "type", "bytes", "rule"
        );
        for t in &p.tensors {
            let ty = if t.requested != t.target && !matches!(t.decision, Decision::Kept(_)) {
                format!("{}*", t.target.name())
            } else {
                t.target.name().to_string()
            };
            let _ = writeln!(
                s,
                "{:<w$}  {:<16} {:<14} {:<7} {:<8} {:>12}  {:<9} {}",
                t.name,
                format!("{:?}", t.shape),
                t.role.name(),
                t.source.name(),
                ty,
                t.bytes,
                rule_label(t, preset),
                t.why
            );
        }
        let _ = writeln!(
            s,
            "(* = llama.cpp's fallback: the row length does not fit the requested type's block)"
        );
    }
    for (title, table) in [
        ("by type", summary_by(p, |t| t.target.name().to_string())),
        ("by role", summary_by(p, |t| t.role.name().to_string())),
    ] {
        let _ = writeln!(s, "\n{title}:");
        for (k, (n, e, b)) in table {
            let bpw = if e == 0 {
                0.0
            } else {
                b as f64 * 8.0 / e as f64
            };
            let _ = writeln!(
                s,
                "  {k:<16} {n:>6} tensors {:>14} params {:>12} {bpw:>7.3} bpw",
                e,
                human_bytes(b)
            );
        }
    }
    let _ = writeln!(
        s,
        "\ntotal: {} bytes = {:.2} GB = {:.2} GiB, {} params, {:.3} bpw",
        p.total_bytes,
        p.total_bytes as f64 / 1e9,
        p.total_bytes as f64 / GIB,
        p.total_params,
        p.bpw()
    );
    for w in warnings(p, imatrix) {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// Writes `^name$=type` for every quantized tensor: a llama-quantize `--tensor-type-file` that
/// pins every type of this plan (its shape fallback then changes nothing, as ours already ran).
fn export_tensor_types(p: &Plan, path: &std::path::Path) -> Result<()> {
    write_atomically(path, &dynquant_plan::to_tensor_type_file(p))
}

pub fn run(a: &PlanArgs) -> Result<()> {
    let mut opts = plan_options(&a.recipe)?;
    opts.has_imatrix = a.imatrix.is_some();
    let first = match a.layout {
        LayoutArg::Mla => MlaLayout::Mla,
        LayoutArg::Legacy => MlaLayout::Legacy,
    };
    let targets = plan_targets(&a.model, first)?;
    let imatrix = a.imatrix.as_deref().map(load_imatrix).transpose()?;
    let sensitivity = match &a.target.sensitivity {
        // Checked against the model it was measured on: that needs the weights.
        Some(_) if a.model.is_file() && a.model.extension().is_some_and(|e| e == "json") => {
            anyhow::bail!(
                "--sensitivity needs the model's weights (a GGUF file or Hugging Face folder), not a config.json"
            )
        }
        Some(path) => load_sensitivity(
            Some(path),
            &ModelInput::open(&a.model, dynquant_gguf::Access::Mmap)?,
            a.imatrix.as_deref(),
        )?,
        None => None,
    };
    let mut plans = Vec::new();
    for t in &targets {
        let input_metadata = t.inventory.metadata.clone();
        let metadata = |name: &str| {
            output_metadata(
                input_metadata.clone(),
                &Provenance {
                    file_type: 0,
                    tool_version: env!("CARGO_PKG_VERSION"),
                    recipe_name: name,
                    recipe_source: "",
                    imatrix: imatrix.as_ref().zip(a.imatrix.as_deref()),
                },
            )
        };
        let shape = OutputShape {
            target: OutputTarget::Single("plan.gguf".into()),
            metadata: &metadata,
        };
        plans.push((
            layout_label(t.layout).to_string(),
            make_plan(
                &a.recipe,
                &a.target,
                &opts,
                &t.inventory,
                sensitivity.as_ref(),
                &shape,
            )?,
        ));
    }
    let (layout, planned) = &plans[0];
    let main = &planned.plan;
    let preset = planned.preset.as_ref();
    if let Some(path) = &a.export_tensor_types {
        export_tensor_types(main, path)?;
    }
    if let Some(path) = &a.target.export_recipe {
        write_atomically(path, &planned.recipe_source)?;
    }
    let out = if a.json {
        let mut v = to_json(main, preset, layout, imatrix.as_ref());
        if let Some(r) = &planned.report {
            v["allocation"] = allocation::to_json(r);
        }
        if let Some((other_layout, other)) = plans.get(1) {
            let other = &other.plan;
            v["other_layout"] = json!({"layout": other_layout, "total_bytes": other.total_bytes, "total_gib": other.total_bytes as f64 / GIB, "bpw": other.bpw()});
        }
        serde_json::to_string_pretty(&v)? + "\n"
    } else {
        let mut s = to_text(main, preset, layout, a.tensors, imatrix.as_ref());
        if let Some(r) = &planned.report {
            for line in allocation::describe(r) {
                let _ = writeln!(s, "{line}");
            }
        }
        if let Some((other_layout, other)) = plans.get(1) {
            let other = &other.plan;
            let _ = writeln!(
                s,
                "{other_layout}: {:.2} GiB, {:.3} bpw",
                other.total_bytes as f64 / GIB,
                other.bpw()
            );
        }
        s
    };
    use std::io::Write;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
