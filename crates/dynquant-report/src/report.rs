//! The report's data model: everything the renderers show, and nothing else (no timings, no
//! absolute paths), so that it serializes to the same JSON for the same inputs.

use serde::{Deserialize, Serialize};

use crate::facts::ModelFacts;
use crate::functional::{FunctionalResult, FunctionalSettings};
use crate::sanity::{Answer, Rates, SanitySettings, Validation};

/// Format tag written into every report.
pub const FORMAT: &str = "dynquant-report/1";

/// A whole comparison: one base, its quants, optional reference points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`FORMAT`].
    pub format: String,
    /// dynquant's version that measured it.
    pub dynquant_version: String,
    /// The unquantized model (or, when only a KLD base file was given, what it records).
    pub base: BaseEntry,
    /// How the distributions were compared.
    pub evaluation: Evaluation,
    /// One entry per quant, in the order given.
    pub quants: Vec<QuantEntry>,
    /// Other published points (e.g. llama.cpp's mixes measured elsewhere) drawn for reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ReferencePoint>,
    /// How the generation checks ran, when they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksInfo>,
}

/// The settings of the generation checks and the validation of their thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksInfo {
    /// Generation sanity settings.
    pub sanity: SanitySettings,
    /// Functional-check settings.
    pub functional: FunctionalSettings,
    /// The detectors on known cases (synthetic loops, random tokens, the base's answers).
    pub validation: Validation,
}

/// One model's generation checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelChecks {
    /// Rates of the sanity detectors.
    pub sanity: Rates,
    /// Every sanity answer.
    pub answers: Vec<Answer>,
    /// The functional tasks.
    pub functional: FunctionalResult,
}

/// The base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseEntry {
    /// File name of the base (a GGUF model or a KLD base file).
    pub file: String,
    /// Facts of the base GGUF, when it was given as a model.
    pub facts: Option<ModelFacts>,
    /// The base's perplexity over the compared positions.
    pub ppl: f64,
    /// Its generation checks (a GGUF base only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ModelChecks>,
}

/// The text and chunks the comparison ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// sha256 of the text file.
    pub text_sha256: String,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Positions compared per quant (second half of each chunk).
    pub positions: usize,
    /// Tokens of the base's distribution stored per position.
    pub top_k: usize,
}

/// One quant's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantEntry {
    /// What the file is.
    pub facts: ModelFacts,
    /// Its divergence from the base.
    pub kld: KldSummary,
    /// KL divergence at percentiles of the positions (the curve the report draws).
    pub kld_curve: Vec<CurvePoint>,
    /// Its generation checks, when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ModelChecks>,
}

/// Summary statistics of the per-position KL divergences and agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KldSummary {
    /// Mean KL(base || quant), nats.
    pub mean: f64,
    /// Standard error of the mean.
    pub mean_err: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Fraction of positions where both models' most probable token is the same.
    pub top1: f64,
    /// RMS over positions of p_quant(next) - p_base(next).
    pub rms_dp: f64,
    /// The quant's perplexity over the positions.
    pub ppl: f64,
    /// llama-perplexity's uncertainty of it.
    pub ppl_err: Option<f64>,
}

/// One point of a percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile of the positions, 0..=100.
    pub pct: f64,
    /// KL divergence at it.
    pub kld: f64,
}

/// A point measured elsewhere, drawn for reference on the KLD-vs-size chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferencePoint {
    /// Its label.
    pub label: String,
    /// Its file size in bytes.
    pub size_bytes: u64,
    /// Its mean KL divergence.
    pub kld_mean: f64,
}

impl Report {
    /// The report as pretty JSON (a trailing newline included).
    pub fn to_json(&self) -> crate::Result<String> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }
}
