//! The report's errors.

use thiserror::Error;

/// What can go wrong while measuring or rendering.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The engine failed (loading, evaluation, a base file).
    #[error(transparent)]
    Engine(#[from] dynquant_engine::EngineError),
    /// Tokenizing a text failed.
    #[error(transparent)]
    Tokenizer(#[from] dynquant_tokenizer::TokenizerError),
    /// A quant that is not a quantization of the base model.
    #[error("{quant} is not a quant of {base}: {why}")]
    NotSameModel {
        /// The quant's file name.
        quant: String,
        /// The base's file name.
        base: String,
        /// What differs.
        why: String,
    },
    /// The page template failed to render.
    #[error("rendering the report: {0}")]
    Template(#[from] minijinja::Error),
    /// A chart failed to draw.
    #[error("drawing the {chart} chart: {why}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// The drawing backend's message.
        why: String,
    },
    /// JSON encoding failed.
    #[error("encoding the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Something else about the inputs.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`ReportError`].
pub type Result<T> = std::result::Result<T, ReportError>;
