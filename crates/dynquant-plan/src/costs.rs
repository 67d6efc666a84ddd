//! Predicted quality cost (ΔKLD against the unquantized model, nats per token) of storing one
//! tensor as one type: from a sensitivity scan ([`SensitivityCosts`]), or without one from
//! per-role priors fitted on the test models ([`Priors`]).
//!
//! The model behind both: a group's end-to-end KLD grows with its importance-weighted squared
//! weight error `W = Σ n·E` as a power law `d = a·W^p` (p = 1 to first order: logit errors are
//! linear in weight errors and KLD is quadratic in small logit errors), fitted through the
//! group's probes (log-log interpolation between neighbouring probes, p = 1 outside them; one
//! probe fixes `a` with p = 1),
//! and a tensor's share of its group scales with its own error. Contributions of different
//! tensors add (their errors are independent), which is what makes the allocation a knapsack.

use std::collections::BTreeMap;

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::TensorInfo;
use serde::Deserialize;

use crate::role::{Role, TensorClass};
use crate::sensitivity::{ContextScan, Sensitivity};

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
    /// A note on one tensor's predictions for its plan row's `why` (e.g. its in-context
    /// factor), if any.
    fn note(&self, _tensor: &str) -> Option<String> {
        None
    }
}

/// A group's ΔKLD as a function of its weight error `W`: piecewise power laws `d = a·W^p`
/// through its probes, and the first-order law (p = 1) outside them.
#[derive(Debug, Clone, PartialEq)]
struct PowerLaw {
    /// One segment per pair of neighbouring probes (by `W`); one probe gives one point.
    segments: Vec<Segment>,
}

/// `d = d0·(W/w0)^p` for `W` in `[w_lo, w_hi]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    w_lo: f64,
    w_hi: f64,
    w0: f64,
    d0: f64,
    p: f64,
}

impl Segment {
    fn at(&self, w: f64) -> f64 {
        self.d0 * (w / self.w0).powf(self.p)
    }
}

impl PowerLaw {
    /// Fits through probes `(W, d)`: between two neighbouring probes (sorted by `W`) the
    /// log-log line through them (slope clamped to [`EXPONENT_RANGE`], anchored at their
    /// geometric middle); below the lowest and above the highest probe, p = 1 from the end
    /// segment's value there.
    ///
    /// Why not extend the end segments: probes sit at the low-bit end (IQ1_S .. IQ3_XXS),
    /// where the KL divergence grows faster than the squared error; extending that slope to
    /// the 4-6-bit types predicts them nearly free and makes the allocator settle for the
    /// cheapest of them (measured on `smollm2-moe-routed`, docs/benchmarks.md). Small errors
    /// are where first-order theory holds: logits move linearly with the weights and KL
    /// divergence is quadratic in small logit changes, so `d ∝ W`.
    fn fit(mut probes: Vec<(f64, f64)>) -> Option<PowerLaw> {
        probes.retain(|&(w, d)| w > 0.0 && w.is_finite() && d.is_finite());
        if probes.is_empty() {
            return None;
        }
        probes.sort_by(|a, b| a.0.total_cmp(&b.0));
        // KLD is positive; a probe below the noise keeps a tiny positive value so logs exist.
        let floor = probes.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-12) * 1e-6;
        let pts: Vec<(f64, f64)> = probes.iter().map(|&(w, d)| (w, d.max(floor))).collect();
        let segments = if pts.len() == 1 {
            let (w, d) = pts[0];
            vec![Segment {
                w_lo: w,
                w_hi: w,
                w0: w,
                d0: d,
                p: 1.0,
            }]
        } else {
            pts.windows(2)
                .map(|ab| {
                    let ((wa, da), (wb, db)) = (ab[0], ab[1]);
                    let (la, lb) = (wa.ln(), wb.ln());
                    let p = if (lb - la).abs() < 1e-12 {
                        1.0
                    } else {
                        ((db.ln() - da.ln()) / (lb - la)).clamp(EXPONENT_RANGE.0, EXPONENT_RANGE.1)
                    };
                    Segment {
                        w_lo: wa,
                        w_hi: wb,
                        w0: (wa * wb).sqrt(),
                        d0: (da * db).sqrt(),
                        p,
                    }
                })
                .collect()
        };
        Some(PowerLaw { segments })
    }

    fn at(&self, w: f64) -> f64 {
        if w <= 0.0 {
            return 0.0;
        }
        let first = self.segments[0];
        let last = self.segments[self.segments.len() - 1];
        if w < first.w_lo {
            return first.at(first.w_lo) * w / first.w_lo;
        }
        if w > last.w_hi {
            return last.at(last.w_hi) * w / last.w_hi;
        }
        self.segments
            .iter()
            .find(|s| w <= s.w_hi)
            .unwrap_or(&last)
            .at(w)
    }
}

/// Costs from a sensitivity scan.
#[derive(Debug, Clone)]
pub struct SensitivityCosts {
    /// Per tensor: elements, errors per stored type, and its group's law and share.
    tensors: BTreeMap<String, TensorCost>,
    probes: usize,
    priors: Priors,
    /// In-context groups and the overall factor, when the file has a context scan.
    context: Option<(usize, f64)>,
}

#[derive(Debug, Clone)]
struct TensorCost {
    n: f64,
    /// Keyed by type (the file's names are parsed case-insensitively, as ggml names are).
    errors: BTreeMap<GgmlType, f64>,
    /// The group's law and this tensor's share of the group's weight error.
    law: Option<(PowerLaw, f64)>,
    /// The group's in-context cost over its isolated one (1 without a context scan).
    factor: f64,
}

impl TensorCost {
    /// Isolated cost (no context factor) at stored type `ty`, if measured and under a law.
    fn law_cost(&self, ty: GgmlType) -> Option<f64> {
        let e = *self.errors.get(&ty)?;
        let (law, share) = self.law.as_ref()?;
        Some(if *share > 0.0 {
            share * law.at(self.n * e / share)
        } else {
            0.0
        })
    }
}

/// How far a group's in-context factor may stray from the overall one before its own
/// measurement must say so: the prior's standard deviation, as a multiple of the overall
/// factor (factors of 0.3x-3x the overall one were measured on `smollm2-moe-routed`).
const CONTEXT_PRIOR_SPREAD: f64 = 1.0;
/// Factors are kept within this multiple of the overall factor either way.
const CONTEXT_FACTOR_RANGE: f64 = 10.0;

/// Each group's in-context factor and the overall one, over every context scan of the file
/// (each of a quantized file `A`, e.g. successive allocations).
///
/// *Relative* factors come from the savings: a group's `saved / predicted` at `A`'s types. A
/// group's own ratio is noisy where its cost is small next to its standard error (a 4-bit
/// attention tensor on a few hundred tokens), so it is the posterior mean of a normal model:
/// each scan's `saved ~ N(f·c, σ²)`, with the prior `f ~ N(F, (CONTEXT_PRIOR_SPREAD·F)²)`,
/// `F = Σ saved / Σ predicted`; a well-measured group keeps its own ratio, a noisy one gets `F`.
///
/// The *level* comes from `A`'s whole KLD: errors compound, so the savings add up to more than
/// the file's KLD (each counts its interactions with every other group). Scaled so that the
/// costs at `A`'s types add up to `A`'s measured KLD, the factors keep their ratios (which is
/// all an allocation to a size uses) and predict the file's KLD (which `--target-kld` uses).
fn context_factors(
    tensors: &BTreeMap<String, TensorCost>,
    scans: &[ContextScan],
) -> Option<(BTreeMap<String, f64>, f64)> {
    // (group, saved, stderr, predicted) per probe of every scan.
    let observations: Vec<(&str, f64, f64, f64)> = scans
        .iter()
        .flat_map(|c| &c.probes)
        .map(|p| {
            let predicted: f64 = p
                .tensors
                .iter()
                .zip(&p.stored)
                .filter_map(|(name, stored)| {
                    let ty = stored.parse::<GgmlType>().ok()?;
                    tensors.get(name)?.law_cost(ty)
                })
                .sum();
            (p.group.as_str(), p.saved, p.stderr, predicted)
        })
        .collect();
    let total_predicted: f64 = observations.iter().map(|o| o.3).sum();
    let total_saved: f64 = observations.iter().map(|o| o.1).sum();
    let total_kld: f64 = scans.iter().map(|c| c.kld).sum();
    if !(total_predicted > 0.0 && total_saved > 0.0 && total_kld > 0.0) {
        return None;
    }
    let overall = total_saved / total_predicted;
    let prior_precision = 1.0 / (CONTEXT_PRIOR_SPREAD * overall).powi(2);
    // Per group: (Σ saved·c/σ², Σ c²/σ²), or the exact ratio of a noiseless observation.
    let mut sums: BTreeMap<&str, (f64, f64, Option<f64>)> = BTreeMap::new();
    for &(group, saved, stderr, cost) in &observations {
        let e = sums.entry(group).or_insert((0.0, 0.0, None));
        if cost <= 0.0 {
            continue;
        }
        if stderr > 0.0 {
            let precision = 1.0 / (stderr * stderr);
            e.0 += saved * cost * precision;
            e.1 += cost * cost * precision;
        } else {
            e.2 = Some(saved / cost);
        }
    }
    let relative: BTreeMap<String, f64> = sums
        .into_iter()
        .map(|(group, (num, den, exact))| {
            let f = exact.unwrap_or((overall * prior_precision + num) / (prior_precision + den));
            let f = f.clamp(
                overall / CONTEXT_FACTOR_RANGE,
                overall * CONTEXT_FACTOR_RANGE,
            );
            (group.to_string(), f)
        })
        .collect();
    // The level: the costs at each scanned file's types, with these factors, add up to the
    // file's KLD (over all scans together). Shrunk and clamped factors are not the raw ratios,
    // so this is computed from the factors themselves, not from the savings.
    let at_files: f64 = observations
        .iter()
        .map(|&(group, _, _, cost)| relative.get(group).copied().unwrap_or(overall) * cost)
        .sum();
    if at_files <= 0.0 {
        return None;
    }
    let level = total_kld / at_files;
    let factors = relative
        .into_iter()
        .map(|(group, f)| (group, f * level))
        .collect();
    Some((factors, overall * level))
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
                        errors: t
                            .errors
                            .iter()
                            .filter_map(|(ty, e)| ty.parse::<GgmlType>().ok().map(|ty| (ty, *e)))
                            .collect(),
                        law: None,
                        factor: 1.0,
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
                let own = first
                    .probe
                    .parse::<GgmlType>()
                    .ok()
                    .and_then(|p| t.errors.get(&p))
                    .map_or(0.0, |e| e * t.n);
                let share = if total > 0.0 && first.tensors.len() > 1 {
                    (own / total).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                t.law = Some((law.clone(), share));
            }
        }
        let mut context = None;
        if let Some((factors, overall)) = context_factors(&tensors, &s.context) {
            let group_of: BTreeMap<&str, &str> = s
                .context
                .iter()
                .flat_map(|c| &c.probes)
                .flat_map(|p| p.tensors.iter().map(|t| (t.as_str(), p.group.as_str())))
                .collect();
            for (name, t) in tensors.iter_mut() {
                t.factor = group_of
                    .get(name.as_str())
                    .and_then(|g| factors.get(*g))
                    .copied()
                    .unwrap_or(overall);
            }
            context = Some((factors.len(), overall));
        }
        SensitivityCosts {
            tensors,
            probes: s.groups.len(),
            priors,
            context,
        }
    }

    /// The in-context factor of each tensor's group (1 without a context scan).
    pub fn context_factor(&self, tensor: &str) -> f64 {
        self.tensors.get(tensor).map_or(1.0, |t| t.factor)
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
        let e = *t.errors.get(&stored)?;
        let isolated = match &t.law {
            Some(_) => t.law_cost(stored)?,
            None => self
                .priors
                .cost_of_error(class.role, e, tensor_count(&self.priors, class)),
        };
        Some(t.factor * isolated)
    }

    fn note(&self, tensor: &str) -> Option<String> {
        self.context?;
        let f = self.tensors.get(tensor)?.factor;
        Some(format!("in context x{f:.2} its isolated cost"))
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "sensitivity scan: measured weight errors of {} tensors, {} end-to-end probes",
            self.tensors.len(),
            self.probes
        );
        if let Some((groups, overall)) = self.context {
            s.push_str(&format!(
                ", in-context factors of {groups} groups (x{overall:.2} overall)"
            ));
        }
        s
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

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

impl Priors {
    /// Fits priors on sensitivity scans of whole models (`dynquant-dev fit-priors`):
    /// * each type's typical error: the median over every measured tensor that stores it, in
    ///   `type_scans` when given (e.g. a weights-only scan of random weights, when the probed
    ///   models' weights sit on a quantization grid that flatters some types), else in `scans`;
    /// * each role's law: from each probed group, its element-weighted relative error
    ///   `E = W / Σn` and ΔKLD `d`; the exponent is the median log-log slope between a group's
    ///   probes (1 with one probe), and the scale the median of `d · n_groups / E^p` (a group of
    ///   `m` tensors gives each of its roles `1/m` of it), `n_groups` the number of groups of that
    ///   kind in the model, so a deeper model spreads the same role's cost over more layers.
    pub fn fit(scans: &[(&str, &Sensitivity)], type_scans: &[(&str, &Sensitivity)]) -> Priors {
        let mut type_samples: BTreeMap<GgmlType, Vec<f64>> = BTreeMap::new();
        let typed = if type_scans.is_empty() {
            scans
        } else {
            type_scans
        };
        for (_, s) in typed {
            for t in &s.tensors {
                for (ty, e) in &t.errors {
                    if let Ok(ty) = ty.parse::<GgmlType>() {
                        type_samples.entry(ty).or_default().push(*e);
                    }
                }
            }
        }
        let mut scale_samples: BTreeMap<Role, Vec<f64>> = BTreeMap::new();
        let mut slope_samples: BTreeMap<Role, Vec<f64>> = BTreeMap::new();
        for (_, s) in scans {
            let n_of: BTreeMap<&str, f64> = s
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t.n_elements as f64))
                .collect();
            let mut groups: BTreeMap<&str, Vec<&crate::sensitivity::GroupProbe>> = BTreeMap::new();
            for g in &s.groups {
                groups.entry(g.group.as_str()).or_default().push(g);
            }
            // Groups of one kind: the same set of roles.
            let roles_of = |g: &crate::sensitivity::GroupProbe| -> Vec<Role> {
                let mut r: Vec<Role> = g
                    .tensors
                    .iter()
                    .map(|n| crate::role::parse_name(n).0)
                    .collect();
                r.sort();
                r.dedup();
                r
            };
            let mut kind_counts: BTreeMap<Vec<Role>, usize> = BTreeMap::new();
            for probes in groups.values() {
                *kind_counts.entry(roles_of(probes[0])).or_default() += 1;
            }
            for probes in groups.values() {
                let roles = roles_of(probes[0]);
                let n_groups = kind_counts[&roles] as f64;
                let m = probes[0].tensors.len().max(1) as f64;
                let pts: Vec<(f64, f64)> = probes
                    .iter()
                    .filter_map(|p| {
                        let n: f64 = p.tensors.iter().filter_map(|t| n_of.get(t.as_str())).sum();
                        (n > 0.0 && p.weight_error > 0.0 && p.delta_kld > 0.0)
                            .then(|| (p.weight_error / n, p.delta_kld))
                    })
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let slope = if pts.len() >= 2 {
                    let (a, b) = (pts[0], pts[pts.len() - 1]);
                    let dl = (b.0.ln() - a.0.ln()).abs();
                    (dl > 1e-9).then(|| {
                        ((b.1.ln() - a.1.ln()) / (b.0.ln() - a.0.ln()))
                            .clamp(EXPONENT_RANGE.0, EXPONENT_RANGE.1)
                    })
                } else {
                    None
                };
                for role in &roles {
                    if let Some(sl) = slope {
                        slope_samples.entry(*role).or_default().push(sl);
                    }
                }
                let p = slope.unwrap_or(1.0);
                for (e, d) in &pts {
                    for role in &roles {
                        scale_samples
                            .entry(*role)
                            .or_default()
                            .push(d * n_groups / e.powf(p) / m);
                    }
                }
            }
        }
        let mut roles = BTreeMap::new();
        for (role, scales) in scale_samples {
            let exponent = slope_samples.remove(&role).and_then(median).unwrap_or(1.0);
            // The scale again at the role's exponent, from the samples' own (1 if unknown).
            if let Some(scale) = median(scales) {
                roles.insert(role, RolePrior { scale, exponent });
            }
        }
        let fallback = RolePrior {
            scale: median(roles.values().map(|r| r.scale).collect()).unwrap_or(1.0),
            exponent: median(roles.values().map(|r| r.exponent).collect()).unwrap_or(1.0),
        };
        Priors {
            type_errors: type_samples
                .into_iter()
                .filter_map(|(t, v)| median(v).map(|m| (t, m)))
                .collect(),
            roles,
            fallback,
            fitted_on: scans
                .iter()
                .map(|(n, _)| format!("roles: {n}"))
                .chain(typed.iter().map(|(n, _)| format!("types: {n}")))
                .collect(),
            role_counts: BTreeMap::new(),
        }
    }

    /// The priors file's text (what [`Priors::parse`] reads).
    pub fn to_toml(&self) -> String {
        let mut s = String::from(
            "# Priors for planning to a target without a sensitivity scan (see costs.rs), made by\n\
             # `dynquant-dev fit-priors`; do not edit by hand.\n\
             # types: typical relative importance-weighted squared error of dynquant's quantizer.\n\
             # roles: ΔKLD (nats/token) of all of a model's tensors of one role at relative error E\n\
             # is scale * E^exponent (each of the role's n tensors gets 1/n of it).\n",
        );
        s.push_str(&format!("format = \"{PRIORS_FORMAT}\"\n"));
        let fitted: Vec<String> = self.fitted_on.iter().map(|f| format!("{f:?}")).collect();
        s.push_str(&format!("fitted_on = [{}]\n\n[types]\n", fitted.join(", ")));
        for (t, e) in &self.type_errors {
            s.push_str(&format!("{} = {e:.6e}\n", t.name().to_uppercase()));
        }
        let mut role = |name: &str, r: &RolePrior| {
            s.push_str(&format!(
                "\n[roles.{name}]\nscale = {:.6e}\nexponent = {:.4}\n",
                r.scale, r.exponent
            ));
        };
        role("default", &self.fallback);
        for (r, law) in &self.roles {
            role(r.name(), law);
        }
        s
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

    /// A scan of Q4_K and IQ2_XXS errors with `tensors` and `groups`, keyed to nothing.
    pub(super) fn scan_of(
        tensors: Vec<crate::sensitivity::TensorError>,
        groups: Vec<crate::sensitivity::GroupProbe>,
    ) -> Sensitivity {
        use crate::sensitivity::{SensitivityKey, SENSITIVITY_FORMAT};
        Sensitivity {
            format: SENSITIVITY_FORMAT.into(),
            dynquant_version: env!("CARGO_PKG_VERSION").into(),
            key: SensitivityKey {
                model_sha256: String::new(),
                imatrix_sha256: None,
                text_sha256: String::new(),
            },
            settings: BTreeMap::new(),
            candidates: vec!["Q4_K".into(), "IQ2_XXS".into()],
            tensors,
            groups,
            context: vec![],
        }
    }

    #[test]
    fn power_law_through_probes() {
        let one = PowerLaw::fit(vec![(2.0, 0.1)]).unwrap();
        assert!((one.at(4.0) - 0.2).abs() < 1e-12);
        assert!((one.at(1.0) - 0.05).abs() < 1e-12);
        let two = PowerLaw::fit(vec![(1.0, 0.01), (4.0, 0.16)]).unwrap();
        assert!((two.segments[0].p - 2.0).abs() < 1e-9);
        assert!((two.at(1.0) - 0.01).abs() < 1e-12);
        assert!((two.at(2.0) - 0.04).abs() < 1e-12);
        assert!((two.at(4.0) - 0.16).abs() < 1e-12);
        // Outside the probes: first order (p = 1) from the end probes.
        assert!((two.at(0.5) - 0.005).abs() < 1e-12);
        assert!((two.at(8.0) - 0.32).abs() < 1e-12);
        // Three probes: each pair of neighbours has its own slope.
        let three = PowerLaw::fit(vec![(4.0, 0.16), (1.0, 0.01), (16.0, 0.64)]).unwrap();
        assert!((three.segments[0].p - 2.0).abs() < 1e-9);
        assert!((three.segments[1].p - 1.0).abs() < 1e-9);
        assert!((three.at(8.0) - 0.32).abs() < 1e-12);
        assert!((three.at(2.0) - 0.04).abs() < 1e-12);
        // Steeper than the range: clamped.
        let steep = PowerLaw::fit(vec![(1.0, 1e-6), (2.0, 1.0)]).unwrap();
        assert_eq!(steep.segments[0].p, EXPONENT_RANGE.1);
        assert!(PowerLaw::fit(vec![(0.0, 1.0)]).is_none());
    }

    #[test]
    fn priors_fitted_on_a_scan_recover_its_law_and_predict_it() {
        use crate::sensitivity::{GroupProbe, TensorError};
        // Four layers of attn_q whose whole-role ΔKLD is 3·E^1.5 (each layer a quarter).
        let (scale, p, n) = (3.0, 1.5, 1000u64);
        let errors = BTreeMap::from([("Q4_K".to_string(), 0.004), ("IQ2_XXS".to_string(), 0.06)]);
        let mut tensors = Vec::new();
        let mut groups = Vec::new();
        for l in 0..4 {
            let name = format!("blk.{l}.attn_q.weight");
            tensors.push(TensorError {
                name: name.clone(),
                n_elements: n,
                rows_measured: 4,
                errors: errors.clone(),
            });
            for (ty, e) in &errors {
                groups.push(GroupProbe {
                    group: format!("blk.{l}.attn_q"),
                    tensors: vec![name.clone()],
                    probe: ty.clone(),
                    delta_kld: scale * e.powf(p) / 4.0,
                    stderr: 0.0,
                    weight_error: e * n as f64,
                    tokens: 100,
                });
            }
        }
        let s = scan_of(tensors, groups);
        let fitted = Priors::fit(&[("synthetic", &s)], &[]);
        let law = fitted.roles[&Role::AttnQ];
        assert!((law.exponent - p).abs() < 1e-9, "{law:?}");
        assert!((law.scale / scale - 1.0).abs() < 1e-9, "{law:?}");
        assert!((fitted.type_errors[&GgmlType::Q4_K] - 0.004).abs() < 1e-12);
        // Round trip through the file, and the scan's own costs agree with the probes.
        let again = Priors::parse(&fitted.to_toml()).unwrap();
        assert!((again.roles[&Role::AttnQ].scale / scale - 1.0).abs() < 1e-5);
        let costs = SensitivityCosts::new(&s, again);
        let t = TensorInfo::new("blk.2.attn_q.weight", vec![100, 10], GgmlType::F16).unwrap();
        let class = crate::role::classify(std::slice::from_ref(&t)).remove(0);
        let got = costs.predicted_kld(&t, &class, GgmlType::Q4_K).unwrap();
        assert!(
            (got / (scale * 0.004f64.powf(p) / 4.0) - 1.0).abs() < 1e-9,
            "{got}"
        );
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

#[cfg(test)]
mod context_tests {
    use super::*;
    use crate::sensitivity::{ContextProbe, GroupProbe, TensorError};
    use dynquant_gguf::TensorInfo;

    /// Three one-tensor groups probed alone at IQ2_XXS (ΔKLD 0.1 each), and a quantized file
    /// holding all three at IQ2_XXS where, in context, they save `saved` ± `stderr`.
    fn scan(context: &[(f64, f64)]) -> Sensitivity {
        let names = ["blk.0.attn_q", "blk.1.attn_q", "blk.2.attn_q"];
        let errors = BTreeMap::from([("Q4_K".to_string(), 0.01), ("IQ2_XXS".to_string(), 0.1)]);
        let mut s = super::tests::scan_of(
            names
                .iter()
                .map(|g| TensorError {
                    name: format!("{g}.weight"),
                    n_elements: 1000,
                    rows_measured: 10,
                    errors: errors.clone(),
                })
                .collect(),
            names
                .iter()
                .map(|g| GroupProbe {
                    group: g.to_string(),
                    tensors: vec![format!("{g}.weight")],
                    probe: "IQ2_XXS".into(),
                    delta_kld: 0.1,
                    stderr: 0.001,
                    weight_error: 100.0,
                    tokens: 100,
                })
                .collect(),
        );
        s.context = (!context.is_empty())
            .then(|| ContextScan {
                quant_sha256: String::new(),
                kld: 1.0,
                stderr: 0.01,
                ctx: 512,
                chunks: 1,
                probes: names
                    .iter()
                    .zip(context)
                    .map(|(g, &(saved, stderr))| ContextProbe {
                        group: g.to_string(),
                        tensors: vec![format!("{g}.weight")],
                        stored: vec!["IQ2_XXS".into()],
                        saved,
                        stderr,
                        tokens: 255,
                    })
                    .collect(),
            })
            .into_iter()
            .collect();
        s
    }

    fn cost(c: &SensitivityCosts, layer: usize, ty: GgmlType) -> f64 {
        let info = TensorInfo {
            name: format!("blk.{layer}.attn_q.weight"),
            ggml_type: GgmlType::F16,
            shape: vec![100, 10],
            offset: 0,
            n_bytes: 2000,
        };
        let class = crate::role::classify(std::slice::from_ref(&info)).remove(0);
        c.predicted_kld(&info, &class, ty).unwrap()
    }

    #[test]
    fn in_context_probes_scale_each_group_by_its_measured_ratio() {
        let plain = SensitivityCosts::new(&scan(&[]), Priors::shipped());
        assert!((cost(&plain, 0, GgmlType::IQ2_XXS) - 0.1).abs() < 1e-12);
        assert!((cost(&plain, 0, GgmlType::Q4_K) - 0.01).abs() < 1e-12);
        assert!(!plain.describe().contains("in-context"));

        // Well measured: 3x, 1x and 2x in context; each keeps its own ratio (the prior pulls
        // by a few percent at most), at every type, and the level is set by the file's KLD
        // (1.0: 0.6 saved in all, 0.3 predicted in isolation, so 5x, 1.67x and 3.33x).
        let s = scan(&[(0.3, 0.001), (0.1, 0.001), (0.2, 0.001)]);
        let c = SensitivityCosts::new(&s, Priors::shipped());
        assert!(c.describe().contains("x3.33 overall"), "{}", c.describe());
        for (layer, want) in [(0, 5.0), (1, 5.0 / 3.0), (2, 10.0 / 3.0)] {
            let f = c.context_factor(&format!("blk.{layer}.attn_q.weight"));
            assert!((f - want).abs() < 0.01 * want, "layer {layer}: {f}");
            let q4 = cost(&c, layer, GgmlType::Q4_K);
            assert!((q4 - 0.01 * f).abs() < 1e-12, "layer {layer}: {q4}");
        }
        let at_file: f64 = (0..3).map(|l| cost(&c, l, GgmlType::IQ2_XXS)).sum();
        assert!((at_file - 1.0).abs() < 0.01, "the file's KLD: {at_file}");

        // A saving within its noise says little: that group gets nearly the overall ratio
        // (2: 0.6 saved, 0.3 predicted), against 3 for the other two; the level still makes
        // the file's costs add up to its KLD.
        let s = scan(&[(0.3, 0.001), (0.0, 2.0), (0.3, 0.001)]);
        let c = SensitivityCosts::new(&s, Priors::shipped());
        let noisy = c.context_factor("blk.1.attn_q.weight");
        let sure = c.context_factor("blk.0.attn_q.weight");
        assert!((noisy / sure - 2.0 / 3.0).abs() < 0.01, "{noisy} vs {sure}");
        let at_file: f64 = (0..3).map(|l| cost(&c, l, GgmlType::IQ2_XXS)).sum();
        assert!((at_file - 1.0).abs() < 1e-9, "the file's KLD: {at_file}");

        // Nothing saved anywhere: no factors (the isolated laws stand).
        let s = scan(&[(0.0, 0.001), (-0.01, 0.001), (0.0, 0.001)]);
        let c = SensitivityCosts::new(&s, Priors::shipped());
        assert_eq!(c.context_factor("blk.0.attn_q.weight"), 1.0);
        assert!(!c.describe().contains("in-context"));
    }
}
