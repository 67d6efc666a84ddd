//! One small file per architecture: each reads its typed hyper-parameters into a [`Config`]
//! and states its conventions; the forward pass itself is shared ([`crate::model`]).

mod deepseek2;
mod gemma3;
mod glm4moe;
mod gpt_oss;
mod llama;
mod qwen2;
mod qwen3;
mod qwen3moe;

use dynquant_gguf::Metadata;

use crate::config::{Config, Hparams};
use crate::error::{EngineError, Result};

/// The [`Config`] of a model from its metadata.
pub fn config(md: &Metadata) -> Result<Config> {
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| EngineError::BadHparam {
            key: "general.architecture".into(),
            reason: "missing".into(),
        })?;
    let hp = Hparams::new(md, arch);
    match arch {
        "llama" => llama::config(&hp),
        "qwen2" => qwen2::config(&hp),
        "qwen3" => qwen3::config(&hp),
        "qwen3moe" => qwen3moe::config(&hp),
        "gemma3" => gemma3::config(&hp),
        "gpt-oss" => gpt_oss::config(&hp),
        "deepseek2" => deepseek2::config(&hp),
        "glm4moe" => glm4moe::config(&hp),
        other => Err(EngineError::UnsupportedArch(other.to_string())),
    }
}
