//! Allocation: a type per tensor that meets a target (file size, bits per weight, or predicted
//! KLD) at the least predicted quality cost, as an exact multiple-choice knapsack
//! ([`crate::knapsack`]) over each free tensor's candidate types.
//!
//! What is fixed first, in the planner's precedence: tensors llama.cpp never quantizes keep
//! their type, `--tensor-type` and the token-embedding/output overrides pin theirs, and a recipe
//! given with the target pins (`type`) or bounds (`min`/`max`, by bits per weight) the tensors
//! its rules match, first match wins. Every other quantizable tensor is free among the
//! candidates, each candidate mapped through ggml's shape fallback to the type that would
//! really be stored, so sizes are exact.
//!
//! Sizes: a file target counts the whole file: the header (`FileLayout::header_bytes`, from the
//! output's real metadata and tensor directory, which do not depend on the types chosen) and
//! each tensor's data padded to the alignment. The result is never over the target.

use std::collections::BTreeMap;

use dynquant_gguf::types::{GgmlType, ImatrixNeed};

use crate::costs::CostModel;
use crate::inventory::Inventory;
use crate::knapsack::{self, Choice, KnapsackError};
use crate::planner::{
    fallback_target, fixed_choice, Decision, Plan, PlanError, PlanOptions, TensorPlan,
};
use crate::recipe::{Recipe, RuleAction};
use crate::role::{classify, Role};

/// The candidate types when none are given: every i-quant and K-quant from 1.56 to 8.5 bits
/// per weight that llama.cpp's CPU backend runs.
pub const DEFAULT_CANDIDATES: [GgmlType; 14] = [
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
];

/// Node limit of the exact search: enough to prove optimality on every model tried; past it
/// the best solution found is kept and its gap reported.
pub const NODE_LIMIT: u64 = 5_000_000;

/// What to meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The whole output (all shards) at most this many bytes.
    FileBytes(u64),
    /// Tensor data at most this many bits per weight (over all tensors, as `Plan::bpw`).
    Bpw(f64),
    /// Predicted ΔKLD at most this (nats per token); the smallest file that meets it.
    Kld(f64),
}

/// The output file's fixed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLayout {
    /// Header bytes of the output (all shards), padded to the alignment.
    pub header_bytes: u64,
    /// Data alignment (`general.alignment`, 32 by default).
    pub alignment: u64,
}

/// How to allocate.
#[derive(Debug, Clone)]
pub struct AllocationOptions<'a> {
    /// The target.
    pub target: Target,
    /// Candidate types for free tensors.
    pub candidates: Vec<GgmlType>,
    /// A recipe whose rules become pins and bounds.
    pub constraints: Option<&'a Recipe>,
    /// Overrides (pins).
    pub plan_options: &'a PlanOptions,
    /// The output's header and alignment.
    pub layout: FileLayout,
}

/// What the allocation achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationReport {
    /// The target.
    pub target: Target,
    /// Whole-file bytes (header, padded data).
    pub file_bytes: u64,
    /// Predicted ΔKLD of the whole plan (free and pinned tensors).
    pub predicted_kld: f64,
    /// The relaxation's bound on the optimized quantity (predicted ΔKLD, or for a KLD target
    /// bytes of the free tensors' data), in the same units as `objective`.
    pub lower_bound: f64,
    /// The optimized quantity of the free tensors (ΔKLD, or padded data bytes).
    pub objective: f64,
    /// Whether the solution is proven optimal.
    pub proven_optimal: bool,
    /// Search nodes.
    pub nodes: u64,
    /// Free tensors, pinned or kept tensors.
    pub free: usize,
    /// Tensors with a fixed type.
    pub fixed: usize,
    /// The price of bytes at the optimum: predicted ΔKLD saved per MiB (size/bpw targets).
    pub kld_per_mib: f64,
    /// Where the predictions come from.
    pub cost_source: String,
}

impl AllocationReport {
    /// Relative gap between the solution and the bound (0 when proven optimal).
    pub fn gap(&self) -> f64 {
        if self.objective <= 0.0 {
            0.0
        } else {
            ((self.objective - self.lower_bound) / self.objective).max(0.0)
        }
    }
}

/// An allocated plan.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// The plan (decisions [`Decision::Allocated`] for free tensors).
    pub plan: Plan,
    /// What it achieved.
    pub report: AllocationReport,
}

/// Allocation errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocateError {
    /// A planning error (bad override type, no fallback).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The target is below the smallest file the constraints allow.
    #[error("{what} is below the smallest possible file: {smallest} bytes ({smallest_gib:.3} GiB, every free tensor at its smallest candidate)")]
    TooSmall {
        /// The target, in words.
        what: String,
        /// Smallest whole file.
        smallest: u64,
        /// The same in GiB.
        smallest_gib: f64,
    },
    /// The KLD target is below what the pinned tensors alone cost, or the best candidates.
    #[error("--target-kld {target} is below the smallest predicted ΔKLD the candidates allow ({best:.3e})")]
    KldTooSmall {
        /// The target.
        target: f64,
        /// Smallest predicted ΔKLD.
        best: f64,
    },
    /// A free tensor with no candidate (bounds exclude all, or nothing measured).
    #[error("tensor '{0}': no candidate type within its bounds has a predicted cost (measured types: see the sensitivity file; --candidates)")]
    NoCandidate(String),
    /// A bad target value.
    #[error("bad target: {0}")]
    BadTarget(String),
    /// The solver's complaint (should not happen after the checks above).
    #[error("allocation: {0}")]
    Solver(#[from] KnapsackError),
}

fn align(bytes: u64, alignment: u64) -> u64 {
    bytes.div_ceil(alignment.max(1)) * alignment.max(1)
}

struct Free {
    index: usize,
    /// (requested, stored, bytes, predicted ΔKLD)
    options: Vec<(GgmlType, GgmlType, u64, f64)>,
    rule: Option<usize>,
    why_bounds: Option<String>,
}

/// Allocates types for `inv` to meet `opts.target`, with costs from `costs`.
pub fn allocate(
    inv: &Inventory,
    costs: &dyn CostModel,
    opts: &AllocationOptions<'_>,
) -> Result<Allocation, AllocateError> {
    match opts.target {
        Target::Bpw(b) if !(b.is_finite() && b > 0.0) => {
            return Err(AllocateError::BadTarget(format!("{b} bits per weight")))
        }
        Target::Kld(k) if !(k.is_finite() && k > 0.0) => {
            return Err(AllocateError::BadTarget(format!("ΔKLD {k}")))
        }
        _ => {}
    }
    let classes = classify(&inv.tensors);
    let n_layer = classes
        .iter()
        .filter_map(|c| c.layer)
        .max()
        .map_or(0, |l| l + 1);
    let empty = Recipe::basic(GgmlType::F16);
    let recipe = opts.constraints.unwrap_or(&empty);
    let mut used = vec![false; recipe.rules.len()];
    let mut rows: Vec<TensorPlan> = Vec::with_capacity(inv.tensors.len());
    let mut free: Vec<Free> = Vec::new();
    for (index, (t, class)) in inv.tensors.iter().zip(&classes).enumerate() {
        let row = t.row_len();
        let mut pinned: Option<(GgmlType, Decision, String)> = None;
        let mut bounds: Option<(Option<GgmlType>, Option<GgmlType>, usize)> = None;
        if let Some(fixed) = fixed_choice(t, class, opts.plan_options) {
            pinned = Some(fixed);
        } else if let Some((i, rule)) = recipe
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(&t.name, class, n_layer))
        {
            used[i] = true;
            match rule.action {
                RuleAction::Pin(ty) => pinned = Some((ty, Decision::Rule(i), rule.why.clone())),
                RuleAction::Bounds { min, max } => bounds = Some((min, max, i)),
            }
        }
        let plan_row = |requested: GgmlType, target: GgmlType, decision, why| TensorPlan {
            name: t.name.clone(),
            shape: t.shape.clone(),
            role: class.role,
            layer: class.layer,
            source: t.ggml_type,
            requested,
            target,
            bytes: target
                .row_bytes(row)
                .unwrap_or(0)
                .saturating_mul(t.n_rows()),
            decision,
            why,
            predicted_kld: None,
        };
        if let Some((requested, decision, why)) = pinned {
            if !requested.info().weight_type {
                return Err(PlanError::NotAWeightType {
                    name: t.name.clone(),
                    ty: requested,
                }
                .into());
            }
            let target = if matches!(decision, Decision::Kept(_)) {
                requested
            } else {
                fallback_target(&t.name, requested, row)?
            };
            let mut r = plan_row(requested, target, decision, why);
            r.predicted_kld = if target == t.ggml_type {
                Some(0.0)
            } else {
                costs.predicted_kld(t, class, target)
            };
            rows.push(r);
            continue;
        }
        let (lo, hi) = bounds.map_or((None, None), |(lo, hi, _)| (lo, hi));
        let bpw_ok = |ty: GgmlType| {
            lo.is_none_or(|m| ty.info().bpw() >= m.info().bpw())
                && hi.is_none_or(|m| ty.info().bpw() <= m.info().bpw())
        };
        let mut options: Vec<(GgmlType, GgmlType, u64, f64)> = Vec::new();
        for &cand in &opts.candidates {
            let Some(stored) = cand.fallback_for_row(row) else {
                continue;
            };
            if !bpw_ok(stored) || options.iter().any(|o| o.1 == stored) {
                continue;
            }
            // No importance data exists for a NextN block (llama.cpp never runs it): only
            // types that can do without.
            if class.role == Role::Nextn && stored.info().imatrix == ImatrixNeed::Required {
                continue;
            }
            let Some(cost) = costs.predicted_kld(t, class, stored) else {
                continue;
            };
            let bytes = stored
                .row_bytes(row)
                .unwrap_or(0)
                .saturating_mul(t.n_rows());
            options.push((cand, stored, bytes, cost.max(0.0)));
        }
        if options.is_empty() {
            return Err(AllocateError::NoCandidate(t.name.clone()));
        }
        let why_bounds = bounds.map(|(lo, hi, i)| {
            let mut s = format!("within line {}", recipe.rules[i].line);
            if let Some(m) = lo {
                s.push_str(&format!(" min {m}"));
            }
            if let Some(m) = hi {
                s.push_str(&format!(" max {m}"));
            }
            s
        });
        // Placeholder row, filled in after solving.
        rows.push(plan_row(
            options[0].0,
            options[0].1,
            Decision::Allocated(None),
            String::new(),
        ));
        free.push(Free {
            index,
            options,
            rule: bounds.map(|b| b.2),
            why_bounds,
        });
    }

    let align_to = opts.layout.alignment;
    // Bytes (padded and not) and predicted ΔKLD of the tensors whose type is fixed.
    let (mut fixed_padded, mut fixed_raw, mut fixed_kld) = (0u64, 0u64, 0f64);
    let mut is_free = vec![false; rows.len()];
    for f in &free {
        is_free[f.index] = true;
    }
    for (r, _) in rows.iter().zip(&is_free).filter(|(_, free)| !**free) {
        fixed_padded += align(r.bytes, align_to);
        fixed_raw += r.bytes;
        fixed_kld += r.predicted_kld.unwrap_or(0.0);
    }
    let total_params = inv.n_params();
    let smallest_padded: u64 = free
        .iter()
        .map(|f| {
            f.options
                .iter()
                .map(|o| align(o.2, align_to))
                .min()
                .unwrap_or(0)
        })
        .sum();
    let smallest_file = opts.layout.header_bytes + fixed_padded + smallest_padded;

    // Each free tensor's options in the solver's terms: (bytes, predicted ΔKLD) -> choice.
    let items_by = |choice: &dyn Fn(u64, f64) -> Choice| -> Vec<Vec<Choice>> {
        free.iter()
            .map(|f| f.options.iter().map(|o| choice(o.2, o.3)).collect())
            .collect()
    };
    let (items, capacity): (Vec<Vec<Choice>>, f64) = match opts.target {
        Target::FileBytes(bytes) => {
            let too_small = || AllocateError::TooSmall {
                what: format!("--target-size {bytes} bytes"),
                smallest: smallest_file,
                smallest_gib: smallest_file as f64 / (1u64 << 30) as f64,
            };
            let room = bytes
                .checked_sub(opts.layout.header_bytes + fixed_padded)
                .ok_or_else(too_small)?;
            if room < smallest_padded {
                return Err(too_small());
            }
            let items = items_by(&|bytes, kld| Choice {
                weight: align(bytes, align_to) as f64,
                cost: kld,
            });
            (items, room as f64)
        }
        Target::Bpw(bpw) => {
            let budget = (bpw * total_params as f64 / 8.0).floor() as u64;
            let smallest_raw: u64 = free
                .iter()
                .map(|f| f.options.iter().map(|o| o.2).min().unwrap_or(0))
                .sum();
            let room = budget.saturating_sub(fixed_raw);
            if fixed_raw + smallest_raw > budget {
                return Err(AllocateError::TooSmall {
                    what: format!("--target-bpw {bpw}"),
                    smallest: smallest_file,
                    smallest_gib: smallest_file as f64 / (1u64 << 30) as f64,
                });
            }
            let items = items_by(&|bytes, kld| Choice {
                weight: bytes as f64,
                cost: kld,
            });
            (items, room as f64)
        }
        Target::Kld(k) => {
            let best: f64 = fixed_kld
                + free
                    .iter()
                    .map(|f| f.options.iter().map(|o| o.3).fold(f64::INFINITY, f64::min))
                    .sum::<f64>();
            if best > k {
                return Err(AllocateError::KldTooSmall { target: k, best });
            }
            let items = items_by(&|bytes, kld| Choice {
                weight: kld,
                cost: align(bytes, align_to) as f64,
            });
            (items, k - fixed_kld)
        }
    };
    let solution = knapsack::solve(&items, capacity, NODE_LIMIT)?;

    // Price of bytes for explanations: ΔKLD per byte at the optimum.
    let per_byte = match opts.target {
        Target::Kld(_) => {
            if solution.lambda > 0.0 {
                1.0 / solution.lambda
            } else {
                0.0
            }
        }
        _ => solution.lambda,
    };
    for (f, &pick) in free.iter().zip(&solution.picks) {
        let (requested, stored, bytes, cost) = f.options[pick];
        let mut by_bytes: Vec<&(GgmlType, GgmlType, u64, f64)> = f.options.iter().collect();
        by_bytes.sort_by_key(|o| o.2);
        let pos = by_bytes.iter().position(|o| o.1 == stored).unwrap_or(0);
        let mut why = format!("allocated: predicted ΔKLD {cost:.2e}");
        if let Some(note) = costs.note(&rows[f.index].name) {
            why.push_str(&format!(" ({note})"));
        }
        // The next larger candidate that would lower the cost, and what it would buy per MiB.
        if let Some(up) = by_bytes[pos + 1..].iter().find(|o| o.3 < cost) {
            let mib = (up.2 - bytes) as f64 / (1u64 << 20) as f64;
            why.push_str(&format!(
                "; {} would save {:.2e} for {:.2} MiB ({:.2e}/MiB",
                up.1,
                cost - up.3,
                mib,
                (cost - up.3) / mib.max(1e-12)
            ));
            if per_byte > 0.0 {
                why.push_str(&format!(
                    ", the plan's price {:.2e}/MiB)",
                    per_byte * (1u64 << 20) as f64
                ));
            } else {
                why.push(')');
            }
        } else {
            why.push_str("; the best candidate");
        }
        if requested != stored {
            why.push_str(&format!(
                " ({requested} falls back to {stored} for this row length)"
            ));
        }
        if let Some(b) = &f.why_bounds {
            why.push_str(&format!("; {b}"));
        }
        let r = &mut rows[f.index];
        r.requested = requested;
        r.target = stored;
        r.bytes = bytes;
        r.decision = Decision::Allocated(f.rule);
        r.why = why;
        r.predicted_kld = Some(cost);
    }

    let total_bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let file_bytes =
        opts.layout.header_bytes + rows.iter().map(|r| align(r.bytes, align_to)).sum::<u64>();
    let predicted_kld: f64 = rows.iter().filter_map(|r| r.predicted_kld).sum();
    let unused_rules = recipe
        .rules
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(r, _)| r.line)
        .collect();
    let name = match opts.constraints {
        Some(r) => format!("{}+alloc", r.name),
        None => "alloc".to_string(),
    };
    let description = format!(
        "allocated to {} ({})",
        target_label(opts.target),
        costs.describe()
    );
    let report = AllocationReport {
        target: opts.target,
        file_bytes,
        predicted_kld,
        lower_bound: solution.lower_bound,
        objective: solution.cost,
        proven_optimal: solution.proven_optimal,
        nodes: solution.nodes,
        free: free.len(),
        fixed: rows.len() - free.len(),
        kld_per_mib: per_byte * (1u64 << 20) as f64,
        cost_source: costs.describe(),
    };
    Ok(Allocation {
        plan: Plan {
            recipe: name,
            description,
            tensors: rows,
            total_bytes,
            total_params,
            unused_rules,
        },
        report,
    })
}

/// The target in words (`131.00 GiB file`, `1.70 bpw`, `ΔKLD 0.05`).
pub fn target_label(t: Target) -> String {
    match t {
        Target::FileBytes(b) => format!("{:.2} GiB file", b as f64 / (1u64 << 30) as f64),
        Target::Bpw(b) => format!("{b} bpw"),
        Target::Kld(k) => format!("predicted ΔKLD {k}"),
    }
}

/// The plan as a recipe (TOML): one rule per quantized tensor, by exact name, so `--recipe`
/// reproduces it without a target.
pub fn to_recipe_toml(plan: &Plan) -> String {
    let mut s = format!(
        "name = \"{}\"\ndescription = \"{}\"\n",
        plan.recipe.replace('"', "'"),
        plan.description.replace('"', "'")
    );
    // The most common allocated type as default keeps the file short.
    let mut counts: BTreeMap<GgmlType, usize> = BTreeMap::new();
    for t in &plan.tensors {
        if !matches!(t.decision, Decision::Kept(_)) {
            *counts.entry(t.requested).or_default() += 1;
        }
    }
    let default = counts
        .iter()
        .max_by_key(|(ty, n)| (**n, std::cmp::Reverse(**ty)))
        .map(|(ty, _)| *ty);
    if let Some(d) = default {
        s.push_str(&format!("default = \"{}\"\n", d.name()));
    }
    for t in &plan.tensors {
        if matches!(t.decision, Decision::Kept(_)) || Some(t.requested) == default {
            continue;
        }
        s.push_str(&format!(
            "\n[[rules]]\nname = \"^{}$\"\ntype = \"{}\"\nwhy = \"{}\"\n",
            regex::escape(&t.name).replace('\\', "\\\\"),
            t.requested.name(),
            t.why.replace('\\', "\\\\").replace('"', "'")
        ));
    }
    s
}

/// The plan as llama-quantize's `--tensor-type-file`: `^name$=TYPE` for every quantized tensor,
/// pinning every type of the plan (llama-quantize's shape fallback then changes nothing, as ours
/// already ran; it reads type names case-insensitively).
pub fn to_tensor_type_file(plan: &Plan) -> String {
    plan.tensors
        .iter()
        .filter(|t| !matches!(t.decision, Decision::Kept(_)))
        .map(|t| format!("^{}$={}\n", regex::escape(&t.name), t.target.name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::costs::Priors;
    use dynquant_gguf::{Metadata, TensorInfo};

    fn model() -> Inventory {
        let t = |n: &str, s: Vec<u64>| TensorInfo::new(n, s, GgmlType::F16).unwrap();
        let mut tensors = vec![
            t("token_embd.weight", vec![256, 1000]),
            t("output_norm.weight", vec![256]),
        ];
        for l in 0..4 {
            for (role, shape) in [
                ("attn_q", vec![256, 256]),
                ("attn_k", vec![256, 64]),
                ("attn_v", vec![256, 64]),
                ("attn_output", vec![256, 256]),
                ("ffn_gate", vec![256, 768]),
                ("ffn_up", vec![256, 768]),
                ("ffn_down", vec![768, 256]),
            ] {
                tensors.push(t(&format!("blk.{l}.{role}.weight"), shape));
            }
            tensors.push(t(&format!("blk.{l}.attn_norm.weight"), vec![256]));
        }
        Inventory {
            metadata: Metadata::new(),
            tensors,
        }
    }

    fn opts<'a>(
        target: Target,
        po: &'a PlanOptions,
        r: Option<&'a Recipe>,
    ) -> AllocationOptions<'a> {
        AllocationOptions {
            target,
            candidates: DEFAULT_CANDIDATES.to_vec(),
            constraints: r,
            plan_options: po,
            layout: FileLayout {
                header_bytes: 4096,
                alignment: 32,
            },
        }
    }

    #[test]
    fn meets_the_size_exactly_and_spends_the_budget() {
        let inv = model();
        let priors = Priors::shipped().for_model(&classify(&inv.tensors));
        let po = PlanOptions::default();
        let target = 1_400_000u64;
        let a = allocate(&inv, &priors, &opts(Target::FileBytes(target), &po, None)).unwrap();
        assert!(a.report.file_bytes <= target);
        assert!(
            a.report.file_bytes as f64 >= 0.995 * target as f64,
            "{}",
            a.report.file_bytes
        );
        assert!(a.report.proven_optimal);
        // More bytes never predict worse.
        let b = allocate(
            &inv,
            &priors,
            &opts(Target::FileBytes(2 * target), &po, None),
        )
        .unwrap();
        assert!(b.report.predicted_kld <= a.report.predicted_kld);
        // Norms kept, everything else allocated.
        for t in &a.plan.tensors {
            if t.name.contains("norm") {
                assert!(matches!(t.decision, Decision::Kept(_)));
            } else {
                assert!(
                    matches!(t.decision, Decision::Allocated(None)),
                    "{}",
                    t.name
                );
                assert!(t.why.starts_with("allocated"));
            }
        }
        // Too small: the message names the smallest file.
        let e = allocate(&inv, &priors, &opts(Target::FileBytes(100_000), &po, None)).unwrap_err();
        assert!(matches!(e, AllocateError::TooSmall { .. }), "{e}");
        assert!(e.to_string().contains("smallest possible file"));
    }

    #[test]
    fn a_nextn_block_gets_no_type_that_needs_an_imatrix() {
        let mut inv = model();
        let t = |n: &str, s: Vec<u64>| TensorInfo::new(n, s, GgmlType::F16).unwrap();
        inv.tensors
            .push(t("blk.4.nextn.eh_proj.weight", vec![512, 256]));
        inv.tensors.push(t("blk.4.ffn_up.weight", vec![256, 768]));
        inv.tensors.push(t("blk.4.attn_q.weight", vec![256, 256]));
        let priors = Priors::shipped().for_model(&classify(&inv.tensors));
        let po = PlanOptions::default();
        // About 2 bits per weight: the main blocks take IQ1/IQ2 types, the NextN block cannot.
        let a = allocate(&inv, &priors, &opts(Target::Bpw(2.0), &po, None)).unwrap();
        let mut low = 0;
        for t in &a.plan.tensors {
            let needs = t.target.info().imatrix == ImatrixNeed::Required;
            if t.role == Role::Nextn {
                assert!(!needs, "{} at {}", t.name, t.target);
            } else {
                low += usize::from(needs);
            }
        }
        assert!(low > 0, "the budget forces no imatrix type anywhere");
        assert_eq!(
            a.plan
                .tensors
                .iter()
                .filter(|t| t.role == Role::Nextn)
                .count(),
            3
        );
    }

    #[test]
    fn recipe_pins_and_bounds_constrain() {
        let inv = model();
        let priors = Priors::shipped().for_model(&classify(&inv.tensors));
        let po = PlanOptions::default();
        let r = Recipe::parse(
            "name = \"c\"\n[[rules]]\nroles = [\"attn_v\"]\ntype = \"q8_0\"\nwhy = \"pin\"\n[[rules]]\nroles = [\"attn_q\", \"attn_k\", \"attn_output\"]\nmin = \"q4_K\"\nwhy = \"floor\"\n[[rules]]\nroles = [\"ffn_up\"]\nmax = \"iq2_xs\"\nwhy = \"ceiling\"\n",
            "c",
        )
        .unwrap();
        let a = allocate(&inv, &priors, &opts(Target::Bpw(4.0), &po, Some(&r))).unwrap();
        assert!(a.plan.bpw() <= 4.0);
        for t in &a.plan.tensors {
            match t.role {
                Role::AttnV => assert_eq!(t.target, GgmlType::Q8_0),
                Role::AttnQ | Role::AttnK | Role::AttnOutput => {
                    assert!(t.target.info().bpw() >= 4.5, "{} {}", t.name, t.target)
                }
                Role::FfnUp => assert!(t.target.info().bpw() <= GgmlType::IQ2_XS.info().bpw()),
                _ => {}
            }
        }
        // The same recipe without a target is refused.
        let e = crate::planner::plan(&inv, &r, &po).unwrap_err();
        assert!(e.to_string().contains("target"), "{e}");
    }

    #[test]
    fn kld_target_is_the_smallest_meeting_it() {
        let inv = model();
        let priors = Priors::shipped().for_model(&classify(&inv.tensors));
        let po = PlanOptions::default();
        let loose = allocate(&inv, &priors, &opts(Target::Kld(0.5), &po, None)).unwrap();
        let tight = allocate(&inv, &priors, &opts(Target::Kld(0.01), &po, None)).unwrap();
        assert!(loose.report.predicted_kld <= 0.5 + 1e-12);
        assert!(tight.report.predicted_kld <= 0.01 + 1e-12);
        assert!(tight.report.file_bytes > loose.report.file_bytes);
        assert!(matches!(
            allocate(&inv, &priors, &opts(Target::Kld(1e-12), &po, None)).unwrap_err(),
            AllocateError::KldTooSmall { .. }
        ));
    }

    #[test]
    fn exports_reproduce_the_plan() {
        let inv = model();
        let priors = Priors::shipped().for_model(&classify(&inv.tensors));
        let po = PlanOptions::default();
        let a = allocate(&inv, &priors, &opts(Target::Bpw(3.0), &po, None)).unwrap();
        let toml = to_recipe_toml(&a.plan);
        let r = Recipe::parse(&toml, "exported").unwrap();
        let again = crate::planner::plan(&inv, &r, &po).unwrap();
        let types = |p: &Plan| p.tensors.iter().map(|t| t.target).collect::<Vec<_>>();
        assert_eq!(types(&again), types(&a.plan));
        let tt = to_tensor_type_file(&a.plan);
        assert_eq!(tt.lines().count(), a.report.free);
        assert!(tt.contains("^blk\\.0\\.attn_q\\.weight$="));
    }
}
