//! llama-quantize's override flags (`--tensor-type`, `--tensor-type-file`,
//! `--token-embedding-type`, `--output-tensor-type`), parsed once for `plan` and `quantize`.

use anyhow::{Context, Result};
use dynquant_gguf::types::GgmlType;
use dynquant_plan::recipe::tensor_name_pattern;
use dynquant_plan::PlanOptions;

use crate::args::RecipeArgs;

fn parse_type(s: &str) -> Result<GgmlType> {
    Ok(s.parse::<GgmlType>()?)
}

/// The planner options the flags give; `has_imatrix` is left false for the caller to set.
pub fn plan_options(a: &RecipeArgs) -> Result<PlanOptions> {
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
        let re = tensor_name_pattern(re)
            .with_context(|| format!("--tensor-type '{spec}': bad regex"))?;
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
        has_imatrix: false,
        requantize_mxfp4: a.requantize_mxfp4,
    })
}
