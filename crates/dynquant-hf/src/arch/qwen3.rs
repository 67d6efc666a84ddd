//! `Qwen3ForCausalLM` -> `qwen3`: per-head `q_norm` / `k_norm` (`attn_q_norm`, `attn_k_norm`,
//! F32), no biases, no permutation; `key_length`/`value_length` from `head_dim`.

use dynquant_gguf::Metadata;

use super::checkpoint::{dense_decoder, AttnParts};
use super::qwen2::qwen_map;
use super::{Arch, Mapped, Params};
use crate::config::Config;
use crate::error::Result;

pub(crate) struct Qwen3;

impl Arch for Qwen3 {
    fn gguf_arch(&self) -> &'static str {
        "qwen3"
    }
    fn extra_params(&self, _cfg: &Config, _p: &Params, _md: &mut Metadata) -> Result<()> {
        Ok(())
    }
    fn map(&self, name: &str, _layer: Option<usize>, _cfg: &Config) -> Result<Mapped> {
        qwen_map(name)
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(dense_decoder(cfg, qwen3_attention(cfg), false)?.0)
    }
}

/// Qwen3Attention: per-head q/k norms; biases on all four projections when `attention_bias`.
pub(crate) fn qwen3_attention(cfg: &Config) -> AttnParts {
    let bias = cfg.bool_of("attention_bias").unwrap_or(false);
    AttnParts {
        qkv_bias: bias,
        o_bias: bias,
        qk_norm: true,
    }
}
