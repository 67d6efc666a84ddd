//! Predicted quality cost (ΔKLD against the unquantized model, nats per token) of storing one
//! tensor as one type: from a sensitivity scan ([`SensitivityCosts`]), or without one from
//! per-role priors fitted on the test models ([`Priors`]).
//!
//! The model behind both: a group's end-to-end KLD grows with its importance-weighted squared
//! weight error `W = Σ n·E` as a power law `d = a·W^p` (p = 1 to first order: logit errors are
//! linear in weight errors and KLD is quadratic in small logit errors), fitted through the
//! group's probes (log-log interpolation between two probes, one probe fixes `a` with p = 1),
//! and a tensor's share of its group scales with its own error. Contributions of different
//! tensors add (their errors are independent), which is what makes the allocation a knapsack.

use std::collections::BTreeMap;

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::TensorInfo;
use serde::Deserialize;

use crate::role::{Role, TensorClass};
use crate::sensitivity::Sensitivity;

/// Slopes of the log-log fit are kept in this range: a noisy pair of probes must not make the
/// allocator believe errors stop mattering, or explode.
const EXPONENT_RANGE: (f64, f64) = (0.5, 2.5);

/// A source of predicted costs.
pub trait CostModel {
    /// Predicted ΔKLD of tensor `tensor` (`class` its role) stored as `stored` (a type the
    /// tensor's rows fit, after ggml's fallback), or `None` when this model cannot tell (the
    /// type was not measured).
    fn predicted_kld(
        &self,
        tensor: &TensorInfo,
        class: &TensorClass,
        stored: GgmlType,
    ) -> Option<f64>;
    /// One line on where the predictions come from (printed with plans).
    fn describe(&self) -> String;
}

/// A power law `d = a·W^p`, anchored at a probe.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PowerLaw {
    /// Anchor: weight error and ΔKLD of one probe.
    w0: f64,
    d0: f64,
    /// Exponents below and above the anchor.
    p_low: f64,
    p_high: f64,
}

impl PowerLaw {
    /// Fits through probes `(W, d)` sorted by `W`: log-log interpolation between the two
    /// nearest probes, the end segments' slopes outside; one probe gives p = 1.
    fn fit(mut probes: Vec<(f64, f64)>) -> Option<PowerLaw> {
        probes.retain(|&(w, d)| w > 0.0 && w.is_finite() && d.is_finite());
        if probes.is_empty() {
            return None;
        }
        probes.sort_by(|a, b| a.0.total_cmp(&b.0));
        // KLD is positive; a probe below the noise keeps a tiny positive value so logs exist.
        let floor = probes.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-12) * 1e-6;
        let pts: Vec<(f64, f64)> = probes
            .iter()
            .map(|&(w, d)| (w.ln(), d.max(floor).ln()))
            .collect();
        let slope = |a: (f64, f64), b: (f64, f64)| {
            if (b.0 - a.0).abs() < 1e-12 {
                1.0
            } else {
                ((b.1 - a.1) / (b.0 - a.0)).clamp(EXPONENT_RANGE.0, EXPONENT_RANGE.1)
            }
        };
        let (p_low, p_high) = if pts.len() == 1 {
            (1.0, 1.0)
        } else {
            let s = slope(pts[0], pts[pts.len() - 1]);
            (s, s)
        };
        // Anchored at the geometric middle of the probes.
        let n = pts.len() as f64;
        let (lw, ld) = pts
            .iter()
            .fold((0.0, 0.0), |(a, b), p| (a + p.0 / n, b + p.1 / n));
        Some(PowerLaw {
            w0: lw.exp(),
            d0: ld.exp(),
            p_low,
            p_high,
        })
    }

    fn at(&self, w: f64) -> f64 {
        if w <= 0.0 {
            return 0.0;
        }
        let p = if w < self.w0 { self.p_low } else { self.p_high };
        self.d0 * (w / self.w0).powf(p)
    }
}

/// Costs from a sensitivity scan.
#[derive(Debug, Clone)]
pub struct SensitivityCosts {
    /// Per tensor: elements, errors per stored type, and its group's law and share.
    tensors: BTreeMap<String, TensorCost>,
    probes: usize,
    priors: Priors,
}

#[derive(Debug, Clone)]
struct TensorCost {
    n: f64,
    errors: BTreeMap<String, f64>,
    /// The group's law and this tensor's share of the group's weight error.
    law: Option<(PowerLaw, f64)>,
}

impl SensitivityCosts {
    /// Costs from `s`; tensors without probes (a `--weights-only` scan) use `priors`' laws
    /// with their measured errors.
    pub fn new(s: &Sensitivity, priors: Priors) -> SensitivityCosts {
        let mut tensors: BTreeMap<String, TensorCost> = s
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    TensorCost {
                        n: t.n_elements as f64,
                        errors: t.errors.clone(),
                        law: None,
                    },
                )
            })
            .collect();
        let mut groups: BTreeMap<&str, Vec<&crate::sensitivity::GroupProbe>> = BTreeMap::new();
        for g in &s.groups {
            groups.entry(g.group.as_str()).or_default().push(g);
        }
        for probes in groups.values() {
            let Some(law) = PowerLaw::fit(
                probes
                    .iter()
                    .map(|p| (p.weight_error, p.delta_kld))
                    .collect(),
            ) else {
                continue;
            };
            // Shares at the first probe type (the same for every probe to first order).
            let first = probes[0];
            let total: f64 = first.weight_error;
            for name in &first.tensors {
                let Some(t) = tensors.get_mut(name) else {
                    continue;
                };
                let own = t.errors.get(&first.probe).map_or(0.0, |e| e * t.n);
                let share = if total > 0.0 && first.tensors.len() > 1 {
                    (own / total).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                t.law = Some((law, share));
            }
        }
        SensitivityCosts {
            tensors,
            probes: s.groups.len(),
            priors,
        }
    }
}

impl CostModel for SensitivityCosts {
    fn predicted_kld(
        &self,
        tensor: &TensorInfo,
        class: &TensorClass,
        stored: GgmlType,
    ) -> Option<f64> {
        let t = self.tensors.get(&tensor.name)?;
        let e = *t.errors.get(stored.name())?;
        match t.law {
            Some((law, share)) if share > 0.0 => Some(share * law.at(t.n * e / share)),
            Some(_) => Some(0.0),
            None => Some(self.priors.cost_of_error(
                class.role,
                e,
                tensor_count(&self.priors, class),
            )),
        }
    }

    fn describe(&self) -> String {
        format!(
            "sensitivity scan: measured weight errors of {} tensors, {} end-to-end probes",
            self.tensors.len(),
            self.probes
        )
    }
}

fn tensor_count(priors: &Priors, class: &TensorClass) -> f64 {
    priors.role_counts.get(&class.role).copied().unwrap_or(1) as f64
}

/// The current priors file format.
pub const PRIORS_FORMAT: &str = "dynquant-priors/1";

/// Per-role laws and per-type typical errors, for planning without a scan (no weights at all,
/// e.g. a bare DeepSeek-R1 `config.json`).
#[derive(Debug, Clone)]
pub struct Priors {
    /// Typical relative importance-weighted squared error per type.
    pub type_errors: BTreeMap<GgmlType, f64>,
    /// Per role: ΔKLD of all of a model's tensors of that role together at relative error
    /// `E` is `scale·E^exponent`; one tensor of `n` gets `1/n` of it.
    pub roles: BTreeMap<Role, RolePrior>,
    /// For roles without an entry.
    pub fallback: RolePrior,
    /// Where they were fitted (informational).
    pub fitted_on: Vec<String>,
    /// Tensors per role in the model being planned (set by [`Priors::for_model`]).
    role_counts: BTreeMap<Role, usize>,
}

/// One role's prior law.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePrior {
    /// ΔKLD of the whole role at relative error 1.
    pub scale: f64,
    /// Exponent of the relative error.
    pub exponent: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriors {
    format: String,
    #[serde(default)]
    fitted_on: Vec<String>,
    types: BTreeMap<String, f64>,
    roles: BTreeMap<String, RolePrior>,
}

/// A priors file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("priors: {0}")]
pub struct PriorsError(String);

/// The priors shipped with dynquant.
const SHIPPED_PRIORS: &str = include_str!("../priors/default.toml");

impl Priors {
    /// The shipped priors.
    pub fn shipped() -> Priors {
        Priors::parse(SHIPPED_PRIORS).expect("shipped priors parse")
    }

    /// Parses a priors file (TOML).
    pub fn parse(text: &str) -> Result<Priors, PriorsError> {
        let raw: RawPriors = toml::from_str(text).map_err(|e| PriorsError(e.to_string()))?;
        if raw.format != PRIORS_FORMAT {
            return Err(PriorsError(format!(
                "format '{}', expected '{PRIORS_FORMAT}'",
                raw.format
            )));
        }
        let mut type_errors = BTreeMap::new();
        for (name, e) in raw.types {
            let ty: GgmlType = name.parse().map_err(|e| PriorsError(format!("{e}")))?;
            type_errors.insert(ty, e);
        }
        let mut roles = BTreeMap::new();
        let mut fallback = None;
        for (name, law) in raw.roles {
            if name == "default" {
                fallback = Some(law);
                continue;
            }
            let role = Role::from_name(&name)
                .ok_or_else(|| PriorsError(format!("unknown role '{name}'")))?;
            roles.insert(role, law);
        }
        Ok(Priors {
            type_errors,
            roles,
            fallback: fallback.ok_or_else(|| PriorsError("no [roles.default]".into()))?,
            fitted_on: raw.fitted_on,
            role_counts: BTreeMap::new(),
        })
    }

    /// These priors for a model whose tensors have `classes` (counts tensors per role).
    pub fn for_model(mut self, classes: &[TensorClass]) -> Priors {
        self.role_counts.clear();
        for c in classes {
            *self.role_counts.entry(c.role).or_default() += 1;
        }
        self
    }

    fn law(&self, role: Role) -> RolePrior {
        self.roles.get(&role).copied().unwrap_or(self.fallback)
    }

    /// ΔKLD of one of `n_role` tensors of `role` at relative error `e`.
    fn cost_of_error(&self, role: Role, e: f64, n_role: f64) -> f64 {
        let law = self.law(role);
        law.scale * e.max(0.0).powf(law.exponent) / n_role.max(1.0)
    }
}

impl CostModel for Priors {
    fn predicted_kld(
        &self,
        _tensor: &TensorInfo,
        class: &TensorClass,
        stored: GgmlType,
    ) -> Option<f64> {
        let e = *self.type_errors.get(&stored)?;
        Some(self.cost_of_error(class.role, e, tensor_count(self, class)))
    }

    fn describe(&self) -> String {
        format!(
            "priors (no sensitivity scan): per-role laws fitted on {}",
            if self.fitted_on.is_empty() {
                "nothing".to_string()
            } else {
                self.fitted_on.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_through_probes() {
        let one = PowerLaw::fit(vec![(2.0, 0.1)]).unwrap();
        assert!((one.at(4.0) - 0.2).abs() < 1e-12);
        let two = PowerLaw::fit(vec![(1.0, 0.01), (4.0, 0.16)]).unwrap();
        assert!((two.p_low - 2.0).abs() < 1e-9);
        assert!((two.at(1.0) - 0.01).abs() < 1e-12);
        assert!((two.at(4.0) - 0.16).abs() < 1e-12);
        // Steeper than the range: clamped.
        let steep = PowerLaw::fit(vec![(1.0, 1e-6), (2.0, 1.0)]).unwrap();
        assert_eq!(steep.p_high, EXPONENT_RANGE.1);
        assert!(PowerLaw::fit(vec![(0.0, 1.0)]).is_none());
    }

    #[test]
    fn shipped_priors_parse_and_rank_types() {
        let p = Priors::shipped();
        let e = |t| p.type_errors[&t];
        assert!(e(GgmlType::IQ1_S) > e(GgmlType::IQ2_XXS));
        assert!(e(GgmlType::Q4_K) > e(GgmlType::Q6_K));
        assert!(Priors::parse("format = \"x\"\n[types]\n[roles]\n").is_err());
    }
}
