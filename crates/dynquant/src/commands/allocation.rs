//! The plan `plan` and `quantize` work from: a preset's, or with a target an allocation
//! (`--target-size`/`--target-bpw`/`--target-kld`) over the recipe's constraints, with costs
//! from `--sensitivity` or the shipped priors. Only the glue lives here; the allocation is
//! `dynquant_plan::allocate`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{planned_output_bytes, Metadata, OutputTarget, TensorInfo};
use dynquant_input::{load_preset, ModelInput};
use dynquant_plan::{
    allocate, classify, to_recipe_toml, AllocationOptions, AllocationReport, CostModel, FileLayout,
    Inventory, Plan, PlanOptions, Preset, Priors, Sensitivity, SensitivityCosts, Target,
    DEFAULT_CANDIDATES,
};

use super::file_sha256;
use crate::args::{RecipeArgs, TargetArgs};

/// What to quantize by.
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// The preset `--recipe` named (with a target: the constraints).
    pub preset: Option<Preset>,
    /// The allocation's outcome, with a target.
    pub report: Option<AllocationReport>,
    /// `dynquant.recipe`.
    pub recipe_name: String,
    /// The text hashed into `dynquant.recipe.sha256`: the preset's, or the allocated plan as a
    /// recipe.
    pub recipe_source: String,
}

impl Planned {
    /// `general.file_type` of the quant.
    pub fn file_type(&self) -> u32 {
        match (&self.preset, &self.report) {
            (Some(p), None) => p.file_type(&self.plan),
            _ => self.plan.dominant_file_type(),
        }
    }
}

fn target_of(t: &TargetArgs) -> Result<Option<Target>> {
    Ok(match (t.target_size, t.target_bpw, t.target_kld) {
        (Some(b), None, None) => Some(Target::FileBytes(b)),
        (None, Some(b), None) => Some(Target::Bpw(b)),
        (None, None, Some(k)) => Some(Target::Kld(k)),
        (None, None, None) => None,
        _ => bail!("give one target: --target-size, --target-bpw or --target-kld"),
    })
}

/// The candidates `--candidates` names (default [`DEFAULT_CANDIDATES`]).
fn candidates(t: &TargetArgs) -> Result<Vec<GgmlType>> {
    let Some(names) = &t.candidates else {
        return Ok(DEFAULT_CANDIDATES.to_vec());
    };
    let mut out = Vec::new();
    for n in names {
        let ty: GgmlType = n.trim().parse()?;
        if !ty.info().weight_type {
            bail!("--candidates: {ty} cannot hold weights");
        }
        if !out.contains(&ty) {
            out.push(ty);
        }
    }
    if out.is_empty() {
        bail!("--candidates: no type given");
    }
    Ok(out)
}

/// The `--sensitivity` file, if given, checked against `input` (its identity hash,
/// `dynquant_measure::model_identity`) and, when given, the imatrix file.
pub fn load_sensitivity(
    path: Option<&Path>,
    input: &ModelInput,
    imatrix: Option<&Path>,
) -> Result<Option<Sensitivity>> {
    let Some(path) = path else { return Ok(None) };
    let imatrix_sha256 = imatrix.map(file_sha256).transpose()?;
    let identity = dynquant_measure::model_identity(input.source(), &input.metadata())?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let s = Sensitivity::parse(&text).with_context(|| path.display().to_string())?;
    s.check_for(&identity, imatrix_sha256.as_deref())
        .with_context(|| path.display().to_string())?;
    Ok(Some(s))
}

/// The layout-relevant metadata of the output and a function giving the whole output's bytes
/// for a plan's types.
pub struct OutputShape<'a> {
    /// Where it goes (a split target counts every shard's header).
    pub target: OutputTarget,
    /// The output's metadata (as quantize writes it; the types chosen do not change its size).
    pub metadata: &'a dyn Fn(&str) -> Metadata,
}

fn output_bytes(
    shape: &OutputShape<'_>,
    name: &str,
    inv: &Inventory,
    types: &[GgmlType],
) -> Result<u64> {
    let infos = inv
        .tensors
        .iter()
        .zip(types)
        .map(|(t, &ty)| TensorInfo::new(t.name.clone(), t.shape.clone(), ty))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(planned_output_bytes(
        &shape.target,
        (shape.metadata)(name),
        infos,
    )?)
}

/// Plans `inv` by the recipe flags, or allocates it to the target flags.
pub fn make_plan(
    recipe: &RecipeArgs,
    target: &TargetArgs,
    opts: &PlanOptions,
    inv: &Inventory,
    sensitivity: Option<&Sensitivity>,
    shape: &OutputShape<'_>,
) -> Result<Planned> {
    let preset = recipe.recipe.as_deref().map(load_preset).transpose()?;
    let Some(goal) = target_of(target)? else {
        if target.sensitivity.is_some()
            || target.candidates.is_some()
            || target.export_recipe.is_some()
        {
            bail!("--sensitivity, --candidates and --export-recipe need a target (--target-size, --target-bpw or --target-kld)");
        }
        let Some(preset) = preset else {
            bail!("give --recipe, or a target (--target-size, --target-bpw or --target-kld)");
        };
        let plan = preset.plan(inv, opts)?;
        return Ok(Planned {
            recipe_name: preset.name(),
            recipe_source: preset.source(),
            plan,
            preset: Some(preset),
            report: None,
        });
    };
    let constraints = match preset.as_ref() {
        None => None,
        Some(Preset::Rules(r)) => Some(r),
        Some(Preset::Mix(_)) => bail!(
            "a llama.cpp mix cannot constrain an allocation (its choices are not rules); give a recipe file or leave --recipe out"
        ),
    };
    let name = match constraints {
        Some(r) => format!("{}+alloc", r.name),
        None => "alloc".to_string(),
    };
    let priors = Priors::shipped().for_model(&classify(&inv.tensors));
    let costs: Box<dyn CostModel> = match sensitivity {
        Some(s) => {
            let cands = candidates(target)?;
            for c in &cands {
                if !s
                    .candidates
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(c.name()))
                {
                    bail!(
                        "candidate {c} was not measured in the sensitivity file (measured: {})",
                        s.candidates.join(", ")
                    );
                }
            }
            Box::new(SensitivityCosts::new(s, priors))
        }
        None => Box::new(priors),
    };
    // The header does not depend on the types chosen: measure it with the source types.
    let source_types: Vec<GgmlType> = inv.tensors.iter().map(|t| t.ggml_type).collect();
    let alignment = dynquant_gguf::alignment_of(&(shape.metadata)(&name))?;
    let data_padded: u64 = inv
        .tensors
        .iter()
        .map(|t| t.n_bytes.div_ceil(alignment) * alignment)
        .sum();
    let mut header_bytes =
        output_bytes(shape, &name, inv, &source_types)?.saturating_sub(data_padded);
    let mut opts_alloc = AllocationOptions {
        target: goal,
        candidates: candidates(target)?,
        constraints,
        plan_options: opts,
        layout: FileLayout {
            header_bytes,
            alignment,
        },
    };
    // A split set's shard count (so its headers) depends on the sizes chosen: allocate, measure
    // the real layout, and allocate again with the difference until it fits.
    for _ in 0..4 {
        let a = allocate(inv, costs.as_ref(), &opts_alloc)?;
        let types: Vec<GgmlType> = a.plan.tensors.iter().map(|t| t.target).collect();
        let real = output_bytes(shape, &name, inv, &types)?;
        let fits = match goal {
            Target::FileBytes(b) => real <= b,
            _ => true,
        };
        if fits {
            let mut report = a.report;
            report.file_bytes = real;
            let recipe_source = to_recipe_toml(&a.plan);
            return Ok(Planned {
                plan: a.plan,
                preset,
                report: Some(report),
                recipe_name: name,
                recipe_source,
            });
        }
        header_bytes += real - a.report.file_bytes.min(real) + 1;
        opts_alloc.layout.header_bytes = header_bytes;
    }
    bail!("could not fit the split set's headers into the target; raise --target-size")
}

/// Lines describing an allocation, for the text output of `plan` and `quantize`.
pub fn describe(r: &AllocationReport) -> Vec<String> {
    let mut out = vec![format!(
        "allocation to {}: {} bytes ({:.3} GiB), predicted ΔKLD {:.4}",
        dynquant_plan::allocate::target_label(r.target),
        r.file_bytes,
        r.file_bytes as f64 / (1u64 << 30) as f64,
        r.predicted_kld
    )];
    if let Target::FileBytes(b) = r.target {
        out.push(format!(
            "  {:.2}% of the target ({} bytes under)",
            100.0 * r.file_bytes as f64 / b as f64,
            b.saturating_sub(r.file_bytes)
        ));
    }
    out.push(format!(
        "  solver: {} (bound {:.6}, solution {:.6}, gap {:.3}%, {} nodes); {} tensors allocated, {} fixed",
        if r.proven_optimal { "proven optimal" } else { "node limit reached" },
        r.lower_bound,
        r.objective,
        100.0 * r.gap(),
        r.nodes,
        r.free,
        r.fixed
    ));
    if r.kld_per_mib > 0.0 {
        out.push(format!(
            "  price of bytes at the optimum: {:.3e} ΔKLD per MiB",
            r.kld_per_mib
        ));
    }
    out.push(format!("  costs: {}", r.cost_source));
    out
}

/// The allocation as JSON.
pub fn to_json(r: &AllocationReport) -> serde_json::Value {
    let (kind, value) = match r.target {
        Target::FileBytes(b) => ("size", serde_json::json!(b)),
        Target::Bpw(b) => ("bpw", serde_json::json!(b)),
        Target::Kld(k) => ("kld", serde_json::json!(k)),
    };
    serde_json::json!({
        "target": {"kind": kind, "value": value},
        "file_bytes": r.file_bytes, "predicted_kld": r.predicted_kld,
        "lower_bound": r.lower_bound, "objective": r.objective, "gap": r.gap(),
        "proven_optimal": r.proven_optimal, "nodes": r.nodes,
        "allocated_tensors": r.free, "fixed_tensors": r.fixed,
        "kld_per_mib": r.kld_per_mib, "costs": r.cost_source,
    })
}
