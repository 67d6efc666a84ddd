//! `plan`: a type per tensor from a recipe, with sizes and reasons, before any work.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::{GgmlType, ImatrixNeed};
use dynquant_gguf::{Access, GgufModel};
use dynquant_plan::inventory::{
    deepseek_inventory, from_hf_config, DeepseekConfig, Inventory, MlaLayout,
};
use dynquant_plan::{plan_recipe, preset, Decision, Plan, PlanOptions, Recipe};
use serde_json::json;

use super::human_bytes;
use crate::args::{LayoutArg, PlanArgs, RecipeArgs};

const GIB: f64 = (1u64 << 30) as f64;

pub fn load_recipe(spec: &str) -> Result<Recipe> {
    if let Some(r) = preset(spec) {
        return Ok(r?);
    }
    let path = std::path::Path::new(spec);
    if !path.exists() {
        bail!("'{spec}' is neither a preset (ud-iq1_s, ud-iq1_m, ud-iq2_xxs, ud-q2_k_xl, basic-<type>, or a llama.cpp mix: q4_k_m, iq1_s, ...) nor a recipe file");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {spec}"))?;
    Ok(Recipe::parse(&text, spec)?)
}

fn parse_type(s: &str) -> Result<GgmlType> {
    Ok(s.parse::<GgmlType>()?)
}

pub fn options(a: &RecipeArgs) -> Result<PlanOptions> {
    let mut specs = a.tensor_type.clone();
    if let Some(path) = &a.tensor_type_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        specs.extend(text.split_whitespace().map(String::from));
    }
    let mut overrides = Vec::new();
    for spec in &specs {
        let (re, ty) = spec
            .rsplit_once('=')
            .with_context(|| format!("--tensor-type '{spec}': expected REGEX=TYPE"))?;
        let re =
            regex::Regex::new(re).with_context(|| format!("--tensor-type '{spec}': bad regex"))?;
        overrides.push((re, parse_type(ty)?));
    }
    Ok(PlanOptions {
        overrides,
        token_embedding_type: a
            .token_embedding_type
            .as_deref()
            .map(parse_type)
            .transpose()?,
        output_tensor_type: a
            .output_tensor_type
            .as_deref()
            .map(parse_type)
            .transpose()?,
    })
}

/// Inventories to plan: the model, or for a DeepSeek config both layouts (chosen first).
fn inventories(a: &PlanArgs) -> Result<Vec<(String, Inventory)>> {
    if dynquant_hf::is_hf_dir(&a.model) {
        // A checkpoint folder: plan exactly the tensors `convert` would write (headers and
        // config only; no tensor data is read).
        let hf = dynquant_hf::HfModel::open(&a.model, &dynquant_hf::ConvertOptions::default())
            .with_context(|| format!("reading {}", a.model.display()))?;
        let inv = Inventory {
            metadata: hf.metadata().clone(),
            tensors: hf.tensor_infos().to_vec(),
        };
        return Ok(vec![(String::new(), inv)]);
    }
    let is_config = a.model.is_dir() || a.model.extension().is_some_and(|e| e == "json");
    if !is_config {
        let model = GgufModel::open(&a.model, Access::Pread)
            .with_context(|| format!("reading {}", a.model.display()))?;
        return Ok(vec![(String::new(), Inventory::from_gguf(&model))]);
    }
    let config_path = if a.model.is_dir() {
        a.model.join("config.json")
    } else {
        a.model.clone()
    };
    let is_deepseek = std::fs::read_to_string(&config_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v["model_type"]
                .as_str()
                .map(|m| m.starts_with("deepseek_v"))
        })
        .unwrap_or(false);
    if !is_deepseek {
        let inv = from_hf_config(&config_path)
            .with_context(|| format!("planning from {}", config_path.display()))?;
        return Ok(vec![(String::new(), inv)]);
    }
    let config = DeepseekConfig::read(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let order = match a.layout {
        LayoutArg::Mla => [MlaLayout::Mla, MlaLayout::Legacy],
        LayoutArg::Legacy => [MlaLayout::Legacy, MlaLayout::Mla],
    };
    order
        .into_iter()
        .map(|l| {
            let name = match l {
                MlaLayout::Mla => "MLA layout (attn_k_b/attn_v_b)",
                MlaLayout::Legacy => "legacy layout (attn_kv_b)",
            };
            Ok((name.to_string(), deepseek_inventory(&config, l)?))
        })
        .collect()
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
            Some(e) => {
                let unseen = e.counts.iter().filter(|c| **c == 0.0).count();
                if unseen > 0 {
                    w.push(format!(
                        "{}: {unseen} of {} experts saw no calibration tokens (they get neutral weights)",
                        t.name,
                        e.n_mat()
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

fn rule_label(p: &Plan, t: &dynquant_plan::TensorPlan, recipe: &Recipe) -> String {
    let _ = p;
    match &t.decision {
        Decision::Kept(_) => "keep".into(),
        Decision::Override(i) => format!("override#{}", i + 1),
        Decision::SpecialOverride => "override".into(),
        Decision::Rule(i) => format!("line {}", recipe.rules[*i].line),
        Decision::Default => "default".into(),
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
    recipe: &Recipe,
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
                "bytes": t.bytes, "rule": rule_label(p, t, recipe), "why": t.why,
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
    recipe: &Recipe,
    layout: &str,
    all: bool,
    imatrix: Option<&Imatrix>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "recipe {}: {}", recipe.name, recipe.description);
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
                rule_label(p, t, recipe),
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
    let mut text = String::new();
    for t in p
        .tensors
        .iter()
        .filter(|t| !matches!(t.decision, Decision::Kept(_)))
    {
        let _ = writeln!(text, "^{}$={}", regex::escape(&t.name), t.target.name());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run(a: &PlanArgs) -> Result<()> {
    let recipe = load_recipe(&a.recipe.recipe)?;
    let opts = options(&a.recipe)?;
    let invs = inventories(a)?;
    let imatrix = a
        .imatrix
        .as_ref()
        .map(|p| Imatrix::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let mut plans = Vec::new();
    for (layout, inv) in &invs {
        plans.push((layout.clone(), plan_recipe(inv, &recipe, &opts)?));
    }
    let (layout, main) = &plans[0];
    if let Some(path) = &a.export_tensor_types {
        export_tensor_types(main, path)?;
    }
    let out = if a.json {
        let mut v = to_json(main, &recipe, layout, imatrix.as_ref());
        if let Some((other_layout, other)) = plans.get(1) {
            v["other_layout"] = json!({"layout": other_layout, "total_bytes": other.total_bytes, "total_gib": other.total_bytes as f64 / GIB, "bpw": other.bpw()});
        }
        serde_json::to_string_pretty(&v)? + "\n"
    } else {
        let mut s = to_text(main, &recipe, layout, a.tensors, imatrix.as_ref());
        if let Some((other_layout, other)) = plans.get(1) {
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
