//! Sensitivity measurements: what `dynquant measure` writes and the allocator reads.
//!
//! A sensitivity file (`MODEL.sens`, JSON) holds two kinds of measurement of one model, made
//! with one importance matrix on one calibration text:
//!
//! * **Weight-space error** per quantizable tensor and candidate type ([`TensorError`]): the
//!   importance-weighted relative squared error of dynquant's own quantizer,
//!   `Σ w·(x − q(x))² / Σ w·x²` over the rows measured (all rows of small tensors, a
//!   deterministic sample of large ones, every expert of a 3-D tensor), with `w` the imatrix
//!   column weights (1 without an entry).
//! * **End-to-end probes** per group ([`GroupProbe`]): the mean KLD between the unquantized
//!   model's next-token distributions and those of the model with only that group's tensors
//!   quantized to a probe type, on the calibration text, with its standard error. A group is
//!   a role in one layer (`blk.3.attn_v`), or one layer's routed-expert tensors together.
//!
//! The allocator turns the two into a predicted ΔKLD per tensor and type: a group's probe
//! fixes how its weight error becomes KLD (`ΔKLD ≈ k · Σ n·E`, first order in the squared
//! error, additive over independent tensors), and each tensor's errors at the other types
//! scale it.
//!
//! The file is keyed by the SHA-256 of the model's identity, the imatrix and the text, and by
//! the dynquant version that made it; [`Sensitivity::check_for`] refuses a file made for
//! something else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The format tag of the current sensitivity files.
pub const SENSITIVITY_FORMAT: &str = "dynquant-sensitivity/1";

/// One model's sensitivity measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensitivity {
    /// [`SENSITIVITY_FORMAT`].
    pub format: String,
    /// The dynquant version that measured (`CARGO_PKG_VERSION`).
    pub dynquant_version: String,
    /// What was measured and with what.
    pub key: SensitivityKey,
    /// How the scan was run (context, chunks, probe types, sampled rows...); informational.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Candidate types measured (ggml names, e.g. `IQ2_XXS`).
    pub candidates: Vec<String>,
    /// Weight-space error per quantizable tensor, in model order.
    pub tensors: Vec<TensorError>,
    /// End-to-end probes, one entry per group and probe type.
    #[serde(default)]
    pub groups: Vec<GroupProbe>,
    /// Probes in the context of quantized files (`dynquant measure context`, one scan per
    /// file), which scale each group's law to what it costs among the other groups' errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextScan>,
}

/// Group probes made in the context of one quantized file `A` of the model: each group's
/// tensors set back to the unquantized weights while every other tensor keeps `A`'s type.
///
/// Why: the isolated probes measure a group's ΔKLD with every other tensor exact. In a file
/// where every group is quantized, an early group's error also passes through every later
/// damaged layer, so its cost there can be several times the isolated one, and unevenly so
/// across groups (measured on `smollm2-moe-routed`, docs/benchmarks.md). The allocator scales
/// each group's law by its measured in-context cost over its predicted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextScan {
    /// SHA-256 of the quantized file's identity (see `dynquant-measure`'s `model_identity`).
    pub quant_sha256: String,
    /// Its mean KLD vs the unquantized model on the calibration chunks.
    pub kld: f64,
    /// Standard error of `kld`.
    pub stderr: f64,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// One entry per group, in the order of the scan's groups.
    pub probes: Vec<ContextProbe>,
}

/// One group's cost in the context of the quantized file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextProbe {
    /// Group name, as in [`GroupProbe::group`].
    pub group: String,
    /// Its tensors.
    pub tensors: Vec<String>,
    /// Each tensor's type in the quantized file (ggml names).
    pub stored: Vec<String>,
    /// Mean KLD of the quantized file minus that with the group unquantized (nats per token,
    /// per-position differences on the same positions).
    pub saved: f64,
    /// Standard error of `saved` (over the per-position differences).
    pub stderr: f64,
    /// Tokens scored.
    pub tokens: u64,
}

/// What a sensitivity file was measured on: SHA-256 hex digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitivityKey {
    /// The model's identity (see `dynquant-measure`'s `model_identity`).
    pub model_sha256: String,
    /// The importance matrix file, or `None` when measured without one.
    pub imatrix_sha256: Option<String>,
    /// The calibration text.
    pub text_sha256: String,
}

/// One tensor's weight-space error per candidate type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorError {
    /// GGUF tensor name.
    pub name: String,
    /// Elements in the whole tensor.
    pub n_elements: u64,
    /// Rows measured (of all rows, all experts).
    pub rows_measured: u64,
    /// Relative importance-weighted squared error per type name actually stored (after ggml's
    /// shape fallback, so a 576-wide row asked for `Q4_K` is measured as `Q5_0` under the key
    /// `Q5_0`). Types the tensor cannot be stored as are absent.
    pub errors: BTreeMap<String, f64>,
}

/// One end-to-end probe: a group quantized alone to one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupProbe {
    /// Group name (`blk.3.attn_v`, `blk.3.ffn_exps`, `token_embd`, `output`).
    pub group: String,
    /// Its tensors.
    pub tensors: Vec<String>,
    /// The probe type (ggml name) asked for; each tensor stores its fallback where needed.
    pub probe: String,
    /// Mean KLD (nats per token) vs the unquantized model.
    pub delta_kld: f64,
    /// Standard error of `delta_kld` over the scored tokens.
    pub stderr: f64,
    /// `Σ n_elements · E` over the group's tensors at the probe type, with `E` from
    /// [`TensorError::errors`] (so the probe and the tensor errors share one scale).
    pub weight_error: f64,
    /// Tokens scored.
    pub tokens: u64,
}

/// Why a sensitivity file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SensitivityError {
    /// Not JSON of this format.
    #[error("not a dynquant sensitivity file: {0}")]
    Parse(String),
    /// Another format version.
    #[error("sensitivity file format '{found}', this dynquant reads '{SENSITIVITY_FORMAT}' (measure again)")]
    Format {
        /// The file's format tag.
        found: String,
    },
    /// Made by another dynquant version.
    #[error("sensitivity file made by dynquant {found}, this is {expected} (measure again)")]
    Version {
        /// The file's version.
        found: String,
        /// This version.
        expected: String,
    },
    /// Made for another model, imatrix or text.
    #[error("sensitivity file was measured on another {what} (file {found}, given {expected})")]
    Mismatch {
        /// `model`, `imatrix` or `calibration text`.
        what: &'static str,
        /// Digest in the file (short).
        found: String,
        /// Digest of what was given (short).
        expected: String,
    },
}

fn short(d: Option<&str>) -> String {
    d.map_or_else(|| "none".to_string(), |d| d.chars().take(12).collect())
}

impl Sensitivity {
    /// Parses a sensitivity file's text and checks its format tag and dynquant version.
    pub fn parse(text: &str) -> Result<Sensitivity, SensitivityError> {
        // The format tag first, so an old file says so instead of failing on a field.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SensitivityError::Parse(e.to_string()))?;
        let found = value
            .get("format")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| SensitivityError::Parse("no \"format\" field".into()))?;
        if found != SENSITIVITY_FORMAT {
            return Err(SensitivityError::Format {
                found: found.to_string(),
            });
        }
        let s: Sensitivity =
            serde_json::from_value(value).map_err(|e| SensitivityError::Parse(e.to_string()))?;
        let expected = env!("CARGO_PKG_VERSION");
        if s.dynquant_version != expected {
            return Err(SensitivityError::Version {
                found: s.dynquant_version,
                expected: expected.to_string(),
            });
        }
        Ok(s)
    }

    /// The file's text: pretty JSON with a final newline (deterministic: maps are ordered).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("sensitivity serializes");
        s.push('\n');
        s
    }

    /// Checks the file was measured on `model` (and, when given, `imatrix`).
    pub fn check_for(
        &self,
        model_sha256: &str,
        imatrix_sha256: Option<&str>,
    ) -> Result<(), SensitivityError> {
        if self.key.model_sha256 != model_sha256 {
            return Err(SensitivityError::Mismatch {
                what: "model",
                found: short(Some(&self.key.model_sha256)),
                expected: short(Some(model_sha256)),
            });
        }
        if let Some(im) = imatrix_sha256 {
            if self.key.imatrix_sha256.as_deref() != Some(im) {
                return Err(SensitivityError::Mismatch {
                    what: "imatrix",
                    found: short(self.key.imatrix_sha256.as_deref()),
                    expected: short(Some(im)),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sensitivity {
        Sensitivity {
            format: SENSITIVITY_FORMAT.into(),
            dynquant_version: env!("CARGO_PKG_VERSION").into(),
            key: SensitivityKey {
                model_sha256: "aa".repeat(32),
                imatrix_sha256: Some("bb".repeat(32)),
                text_sha256: "cc".repeat(32),
            },
            settings: BTreeMap::new(),
            candidates: vec!["Q4_K".into()],
            tensors: vec![TensorError {
                name: "blk.0.attn_q.weight".into(),
                n_elements: 64,
                rows_measured: 2,
                errors: BTreeMap::from([("Q4_K".into(), 0.01)]),
            }],
            groups: vec![],
            context: vec![],
        }
    }

    #[test]
    fn round_trip_and_keys() {
        let s = sample();
        let back = Sensitivity::parse(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert!(!s.to_json().contains("\"context\""), "no context: no key");
        let mut with = sample();
        with.context.push(ContextScan {
            quant_sha256: "dd".repeat(32),
            kld: 0.1 + 0.2,
            stderr: 1e-3 / 3.0,
            ctx: 512,
            chunks: 1,
            probes: vec![ContextProbe {
                group: "blk.0.attn_q".into(),
                tensors: vec!["blk.0.attn_q.weight".into()],
                stored: vec!["Q4_K".into()],
                saved: -1.0 / 7.0,
                stderr: 2.0 / 3.0,
                tokens: 255,
            }],
        });
        assert_eq!(Sensitivity::parse(&with.to_json()).unwrap(), with);
        assert!(back.check_for(&"aa".repeat(32), None).is_ok());
        let e = back.check_for(&"ab".repeat(32), None).unwrap_err();
        assert!(e.to_string().contains("another model"), "{e}");
        let e = back
            .check_for(&"aa".repeat(32), Some(&"dd".repeat(32)))
            .unwrap_err();
        assert!(e.to_string().contains("another imatrix"), "{e}");
    }

    #[test]
    fn refuses_other_versions_and_formats() {
        let mut s = sample();
        s.dynquant_version = "0.0.1".into();
        let e = Sensitivity::parse(&s.to_json()).unwrap_err();
        assert!(matches!(e, SensitivityError::Version { .. }), "{e}");
        let text = sample()
            .to_json()
            .replace(SENSITIVITY_FORMAT, "dynquant-sensitivity/0");
        let e = Sensitivity::parse(&text).unwrap_err();
        assert!(matches!(e, SensitivityError::Format { .. }), "{e}");
        assert!(matches!(
            Sensitivity::parse("{}").unwrap_err(),
            SensitivityError::Parse(_)
        ));
    }
}
