//! `Qwen3ForCausalLM` -> `qwen3`: per-head `q_norm` / `k_norm` (`attn_q_norm`, `attn_k_norm`,
//! F32), no biases, no permutation; `key_length`/`value_length` from `head_dim`.

use dynquant_gguf::Metadata;

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
}
