//! The planner: a pure function from an inventory, a recipe and overrides to a type per
//! tensor, each with the reason.
//!
//! Precedence, first decision wins:
//! 1. **What may be quantized** ([`keep_reason`], llama.cpp's `tensor_allows_quantization`):
//!    tensors with fewer than 2 dimensions, names not ending in `weight`, norms, the MoE
//!    router (`ffn_gate_inp`) and a few small tensors of other architectures keep their
//!    source type.
//! 2. **User overrides** (`--tensor-type REGEX=TYPE`, first match wins, llama.cpp semantics),
//!    then `--token-embedding-type` / `--output-tensor-type`.
//! 3. **MXFP4 sources stay MXFP4** (gpt-oss ships its experts in MXFP4): re-quantizing a
//!    4-bit tensor only loses, so a recipe does not touch them unless
//!    [`PlanOptions::requantize_mxfp4`] (`--requantize-mxfp4`) lets its rules go lower.
//! 4. **Recipe rules**, first match wins; then the recipe default.
//! 5. **Shape fallback** from the type table when the row length does not divide the block
//!    (llama.cpp's `tensor_type_fallback`), recorded on the row.

use std::collections::BTreeMap;

use dynquant_gguf::types::{GgmlType, FILE_TYPE_TABLE};
use dynquant_gguf::TensorInfo;
use regex::Regex;

use crate::inventory::Inventory;
use crate::quantizable::keep_reason;
use crate::recipe::Recipe;
use crate::role::{classify, Role, TensorClass};

/// Why a tensor got its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Never quantized (deny-list); the text says which rule.
    Kept(&'static str),
    /// A user override (index into `PlanOptions::overrides`).
    Override(usize),
    /// `--token-embedding-type` / `--output-tensor-type`.
    SpecialOverride,
    /// A recipe rule (index into `Recipe::rules`).
    Rule(usize),
    /// The recipe default.
    Default,
    /// Chosen by the allocator for a target; within the bounds of a recipe rule (index into
    /// `Recipe::rules`) when one matched.
    Allocated(Option<usize>),
}

/// User overrides, applied before the recipe.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--tensor-type REGEX=TYPE`, in order.
    pub overrides: Vec<(Regex, GgmlType)>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// An importance matrix will be used. llama.cpp's mixes choose some types differently
    /// with one (`qs.has_imatrix`: IQ3_XXS, IQ4_NL/IQ4_XS and Q4_0/Q5_0 ffn_down, IQ3_XXS
    /// attn_v); recipes of rules ignore it.
    pub has_imatrix: bool,
    /// Let recipe rules re-quantize tensors stored as MXFP4 (gpt-oss's experts), as Unsloth's
    /// gpt-oss quants take experts below 4 bits; without it they keep MXFP4.
    pub requantize_mxfp4: bool,
}

/// Why an MXFP4 tensor keeps its type (see [`PlanOptions::requantize_mxfp4`]).
pub const MXFP4_KEPT: &str =
    "already MXFP4 (4.25 bpw): re-quantizing a 4-bit tensor only loses (--requantize-mxfp4 lets the recipe go lower)";

impl PlanOptions {
    /// The first `--tensor-type` override matching `name`: its index and type.
    pub fn override_for(&self, name: &str) -> Option<(usize, GgmlType)> {
        self.overrides
            .iter()
            .enumerate()
            .find(|(_, (re, _))| re.is_match(name))
            .map(|(i, (_, ty))| (i, *ty))
    }
}

/// One tensor's plan.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    /// Tensor name.
    pub name: String,
    /// Shape (ggml order).
    pub shape: Vec<u64>,
    /// Role.
    pub role: Role,
    /// Block index.
    pub layer: Option<u32>,
    /// Stored type in the source.
    pub source: GgmlType,
    /// Type asked for by the decision, before the shape fallback.
    pub requested: GgmlType,
    /// Type that will be written.
    pub target: GgmlType,
    /// Bytes at the target type.
    pub bytes: u64,
    /// Why.
    pub decision: Decision,
    /// Human-readable reason (the rule's `why`).
    pub why: String,
    /// Predicted ΔKLD (nats per token) at the target type, for allocated plans.
    pub predicted_kld: Option<f64>,
}

/// A whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The recipe's name.
    pub recipe: String,
    /// What the recipe is (one line).
    pub description: String,
    /// Per tensor, in inventory order.
    pub tensors: Vec<TensorPlan>,
    /// Total bytes of tensor data.
    pub total_bytes: u64,
    /// Total parameters.
    pub total_params: u64,
    /// Recipe rules that matched no tensor (1-based lines).
    pub unused_rules: Vec<usize>,
}

impl Plan {
    /// Bits per weight over all tensors.
    pub fn bpw(&self) -> f64 {
        if self.total_params == 0 {
            0.0
        } else {
            self.total_bytes as f64 * 8.0 / self.total_params as f64
        }
    }

    /// The llama.cpp file type (`general.file_type`) whose default type is the plan's dominant
    /// type by bytes (quantized, F16 or BF16), or 0 (all F32) when there is none.
    pub fn dominant_file_type(&self) -> u32 {
        let mut bytes: BTreeMap<GgmlType, u64> = BTreeMap::new();
        for t in &self.tensors {
            *bytes.entry(t.target).or_default() += t.bytes;
        }
        let dominant = bytes
            .iter()
            .filter(|(ty, _)| {
                ty.info().quantized || **ty == GgmlType::F16 || **ty == GgmlType::BF16
            })
            .max_by_key(|(_, b)| **b)
            .map(|(ty, _)| *ty);
        dominant
            .and_then(|ty| FILE_TYPE_TABLE.iter().find(|f| f.default_type == Some(ty)))
            .map_or(0, |f| f.id)
    }
}

/// Planning errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A row length that no type (not even the fallbacks) can store.
    #[error("tensor '{name}': rows of {row} elements cannot be stored as {ty} and llama.cpp defines no fallback")]
    NoFallback {
        /// Tensor.
        name: String,
        /// Row length.
        row: u64,
        /// Requested type.
        ty: GgmlType,
    },
    /// A type that cannot hold weights (Q8_1, Q8_K, integer types).
    #[error("tensor '{name}': {ty} cannot hold weights")]
    NotAWeightType {
        /// Tensor.
        name: String,
        /// Type.
        ty: GgmlType,
    },
    /// A recipe meant as constraints for an allocation, planned without a target.
    #[error("tensor '{name}': {what}, which only a target (--target-size, --target-bpw, --target-kld) can resolve")]
    NeedsTarget {
        /// Tensor.
        name: String,
        /// What needs the target.
        what: String,
    },
    /// An FFN tensor whose layer a llama.cpp mix cannot place (MoE models parse it from the
    /// name); llama-quantize stops with the same complaint.
    #[error("tensor '{name}': {reason}")]
    Layer {
        /// Tensor.
        name: String,
        /// llama.cpp's message.
        reason: String,
    },
}

/// llama.cpp's shape fallback for a tensor of `name` with rows of `row` elements: the
/// requested type when it fits, else its fallback chain, or an error when none is defined.
pub fn fallback_target(name: &str, requested: GgmlType, row: u64) -> Result<GgmlType, PlanError> {
    requested
        .fallback_for_row(row)
        .ok_or_else(|| PlanError::NoFallback {
            name: name.to_string(),
            row,
            ty: requested,
        })
}

/// The decisions that come before any recipe, in the planner's precedence: what llama.cpp never
/// quantizes keeps its type, then `--tensor-type` overrides, then the token-embedding/output
/// overrides. `None` when the recipe (or the allocator) decides.
pub(crate) fn fixed_choice(
    t: &TensorInfo,
    class: &TensorClass,
    opts: &PlanOptions,
) -> Option<(GgmlType, Decision, String)> {
    if let Some(reason) = keep_reason(&t.name, &t.shape) {
        return Some((t.ggml_type, Decision::Kept(reason), reason.to_string()));
    }
    if let Some((i, ty)) = opts.override_for(&t.name) {
        return Some((
            ty,
            Decision::Override(i),
            format!("--tensor-type override #{}", i + 1),
        ));
    }
    let special = match class.role {
        Role::TokenEmbd => opts.token_embedding_type,
        Role::Output => opts.output_tensor_type,
        _ => None,
    };
    if special.is_none() && t.ggml_type == GgmlType::MXFP4 && !opts.requantize_mxfp4 {
        return Some((
            GgmlType::MXFP4,
            Decision::Kept(MXFP4_KEPT),
            MXFP4_KEPT.to_string(),
        ));
    }
    let special = special?;
    Some((
        special,
        Decision::SpecialOverride,
        "token-embedding/output type override".into(),
    ))
}

/// Plans every tensor of `inv` with `recipe` and `opts` (`opts.has_imatrix` does not matter to
/// a recipe of rules).
pub fn plan(inv: &Inventory, recipe: &Recipe, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let classes = classify(&inv.tensors);
    let n_layer = classes
        .iter()
        .filter_map(|c| c.layer)
        .max()
        .map_or(0, |l| l + 1);
    let mut used = vec![false; recipe.rules.len()];
    let mut tensors = Vec::with_capacity(inv.tensors.len());
    for (t, class) in inv.tensors.iter().zip(&classes) {
        let (requested, decision, why) = if let Some(fixed) = fixed_choice(t, class, opts) {
            fixed
        } else if let Some((i, rule)) = recipe
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(&t.name, class, n_layer))
        {
            used[i] = true;
            let ty = rule.action.pinned().ok_or_else(|| PlanError::NeedsTarget {
                name: t.name.clone(),
                what: format!("recipe rule at line {} sets bounds (min/max)", rule.line),
            })?;
            (ty, Decision::Rule(i), rule.why.clone())
        } else {
            let ty = recipe.default.ok_or_else(|| PlanError::NeedsTarget {
                name: t.name.clone(),
                what: format!("recipe '{}' has no default type", recipe.name),
            })?;
            (ty, Decision::Default, "recipe default".into())
        };
        if !requested.info().weight_type {
            return Err(PlanError::NotAWeightType {
                name: t.name.clone(),
                ty: requested,
            });
        }
        let row = t.row_len();
        let target = if matches!(decision, Decision::Kept(_)) {
            requested
        } else {
            fallback_target(&t.name, requested, row)?
        };
        // Fallback types always divide the row; the byte count cannot overflow for shapes that
        // passed TensorInfo's checks at a wider type.
        let bytes = target
            .row_bytes(row)
            .unwrap_or(0)
            .saturating_mul(t.n_rows());
        tensors.push(TensorPlan {
            name: t.name.clone(),
            shape: t.shape.clone(),
            role: class.role,
            layer: class.layer,
            source: t.ggml_type,
            requested,
            target,
            bytes,
            decision,
            why,
            predicted_kld: None,
        });
    }
    let total_bytes = tensors.iter().map(|t| t.bytes).sum();
    let total_params = inv.tensors.iter().map(|t| t.n_elements()).sum();
    let unused_rules = recipe
        .rules
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(r, _)| r.line)
        .collect();
    Ok(Plan {
        recipe: recipe.name.clone(),
        description: recipe.description.clone(),
        tensors,
        total_bytes,
        total_params,
        unused_rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynquant_gguf::{Metadata, TensorInfo};

    fn inv(tensors: Vec<TensorInfo>) -> Inventory {
        Inventory {
            metadata: Metadata::new(),
            tensors,
        }
    }

    fn t(name: &str, shape: Vec<u64>) -> TensorInfo {
        TensorInfo::new(name, shape, GgmlType::F16).unwrap()
    }

    #[test]
    fn precedence_deny_list_override_rule_default_fallback() {
        let recipe = Recipe::parse(
            "name = \"t\"\ndefault = \"q4_K\"\n[[rules]]\nroles = [\"attn_q\"]\ntype = \"q6_K\"\nwhy = \"q\"\n[[rules]]\nroles = [\"ffn_up\"]\ntype = \"iq1_s\"\nwhy = \"never used\"\n",
            "t",
        )
        .unwrap();
        let model = inv(vec![
            t("blk.0.attn_norm.weight", vec![512]),
            t("blk.0.attn_q.weight", vec![512, 512]),
            t("blk.0.attn_k.weight", vec![512, 128]),
            t("blk.0.attn_v.weight", vec![576, 128]),
            t("blk.0.ffn_gate_inp.weight", vec![512, 8]),
            t("token_embd.weight", vec![512, 100]),
        ]);
        let opts = PlanOptions {
            overrides: vec![(Regex::new("attn_k").unwrap(), GgmlType::Q8_0)],
            token_embedding_type: Some(GgmlType::Q5_K),
            output_tensor_type: None,
            has_imatrix: false,
            requantize_mxfp4: false,
        };
        let p = plan(&model, &recipe, &opts).unwrap();
        let d: Vec<_> = p
            .tensors
            .iter()
            .map(|t| (t.target, t.decision.clone()))
            .collect();
        assert_eq!(d[0].0, GgmlType::F16);
        assert!(matches!(d[0].1, Decision::Kept(_)));
        assert_eq!(d[1], (GgmlType::Q6_K, Decision::Rule(0)));
        assert_eq!(d[2], (GgmlType::Q8_0, Decision::Override(0)));
        // Default Q4_K on a 576-wide row falls back to Q5_0.
        assert_eq!(d[3], (GgmlType::Q5_0, Decision::Default));
        assert_eq!(p.tensors[3].requested, GgmlType::Q4_K);
        assert!(matches!(d[4].1, Decision::Kept(_)));
        assert_eq!(d[5], (GgmlType::Q5_K, Decision::SpecialOverride));
        assert_eq!(p.unused_rules, vec![7]);
    }

    #[test]
    fn mxfp4_experts_stay_mxfp4_unless_requantizing_is_asked_for() {
        let recipe = Recipe::parse(
            "name = \"t\"\ndefault = \"q4_K\"\n[[rules]]\nroles = [\"ffn_up_exps\"]\ntype = \"iq2_xxs\"\nwhy = \"experts\"\n",
            "t",
        )
        .unwrap();
        let mx = |n: &str| TensorInfo::new(n, vec![256, 64, 4], GgmlType::MXFP4).unwrap();
        let model = inv(vec![
            mx("blk.0.ffn_up_exps.weight"),
            mx("blk.0.ffn_down_exps.weight"),
            t("blk.0.attn_q.weight", vec![256, 256]),
        ]);
        let kept = plan(&model, &recipe, &PlanOptions::default()).unwrap();
        for t in &kept.tensors[..2] {
            assert_eq!(t.target, GgmlType::MXFP4, "{}", t.name);
            assert_eq!(t.decision, Decision::Kept(MXFP4_KEPT));
        }
        assert_eq!(kept.tensors[2].target, GgmlType::Q4_K);
        let opts = PlanOptions {
            requantize_mxfp4: true,
            ..PlanOptions::default()
        };
        let lower = plan(&model, &recipe, &opts).unwrap();
        assert_eq!(lower.tensors[0].target, GgmlType::IQ2_XXS);
        assert_eq!(lower.tensors[0].decision, Decision::Rule(0));
        assert_eq!(lower.tensors[1].target, GgmlType::Q4_K);
        // A --tensor-type override is the user's explicit choice and wins either way.
        let opts = PlanOptions {
            overrides: vec![(Regex::new("down_exps").unwrap(), GgmlType::Q8_0)],
            ..PlanOptions::default()
        };
        let p = plan(&model, &recipe, &opts).unwrap();
        assert_eq!(p.tensors[1].target, GgmlType::Q8_0);
        assert_eq!(p.tensors[0].target, GgmlType::MXFP4);
    }
}
