//! `LlamaForCausalLM` / `MistralForCausalLM` -> `llama`: q/k rows permuted for llama.cpp's RoPE
//! layout, `vocab_size` and `rope.dimension_count` after the file type.

use dynquant_core::gguf::{Metadata, Value};

use super::{common_name, Arch, Mapped, Params, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Llama;

/// The llama family's extra keys (shared with Mixtral).
pub(crate) fn llama_extra(cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
    if let Some(v) = p.n_vocab {
        md.set("llama.vocab_size", Value::U32(v as u32));
    }
    let rope_dim = match cfg.u64_of(&["head_dim"])? {
        Some(h) => h,
        None => (p.n_embd / p.n_head.max(1)) as u64,
    };
    md.set("llama.rope.dimension_count", Value::U32(rope_dim as u32));
    Ok(())
}

/// The llama family's tensor map: shared names, with q/k permuted.
pub(crate) fn llama_map(name: &str, cfg: &Config) -> Result<Mapped> {
    if name.ends_with("rotary_emb.inv_freq") {
        return Ok(Mapped::Skip);
    }
    let g = common_name(name).ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
    let n_head = cfg.req_u64(&["num_attention_heads", "n_heads"])? as usize;
    let n_kv = cfg
        .u64_of(&["num_key_value_heads", "n_kv_heads"])?
        .map_or(n_head, |v| v as usize);
    let tr = if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
        Transform::RopePermute { n_head }
    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
        Transform::RopePermute { n_head: n_kv }
    } else {
        Transform::None
    };
    Ok(Mapped::Tensor(g, tr))
}

impl Arch for Llama {
    fn gguf_arch(&self) -> &'static str {
        "llama"
    }
    fn extra_params(&self, cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
        llama_extra(cfg, p, md)
    }
    fn map(&self, name: &str, _layer: Option<usize>, cfg: &Config) -> Result<Mapped> {
        llama_map(name, cfg)
    }
    fn prefers_spm(&self) -> bool {
        true
    }
}
