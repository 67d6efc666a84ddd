//! `Qwen3MoeForCausalLM` -> `qwen3moe`: Qwen3 attention with `mlp.experts.<e>.*_proj` stacked
//! into `ffn_down_exps` / `ffn_gate_exps` / `ffn_up_exps`, the router `mlp.gate` as
//! `ffn_gate_inp`, and `expert_feed_forward_length`.

use dynquant_gguf::{Metadata, Value};

use super::qwen2::qwen_map;
use super::{expert_of, Arch, Mapped, Params};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Qwen3Moe;

/// `mlp.experts.<e>.{down,gate,up}_proj` of the Qwen-MoE and DeepSeek layouts.
pub(crate) fn mlp_expert(name: &str, layer: Option<usize>) -> Option<Result<Mapped>> {
    let (expert, proj) = expert_of(name, ".mlp.experts.")?;
    let proj = match proj.as_str() {
        "down_proj" => "down_proj",
        "gate_proj" => "gate_proj",
        "up_proj" => "up_proj",
        _ => return Some(Err(HfError::UnmappedTensor(name.into()))),
    };
    Some(
        layer
            .map(|layer| Mapped::Expert {
                layer,
                proj,
                expert,
            })
            .ok_or_else(|| HfError::UnmappedTensor(name.into())),
    )
}

/// Stacking order of the Qwen-MoE and DeepSeek converters.
pub(crate) const MLP_EXPERT_PROJS: &[(&str, &str)] = &[
    ("down_proj", "ffn_down_exps"),
    ("gate_proj", "ffn_gate_exps"),
    ("up_proj", "ffn_up_exps"),
];

impl Arch for Qwen3Moe {
    fn gguf_arch(&self) -> &'static str {
        "qwen3moe"
    }
    fn extra_params(&self, cfg: &Config, _p: &Params, md: &mut Metadata) -> Result<()> {
        if let Some(v) = cfg.u64_of(&["moe_intermediate_size"])? {
            md.set("qwen3moe.expert_feed_forward_length", Value::U32(v as u32));
        }
        Ok(())
    }
    fn map(&self, name: &str, layer: Option<usize>, _cfg: &Config) -> Result<Mapped> {
        if let Some(m) = mlp_expert(name, layer) {
            return m;
        }
        qwen_map(name)
    }
    fn expert_projs(&self) -> &'static [(&'static str, &'static str)] {
        MLP_EXPERT_PROJS
    }
    fn n_experts(&self, cfg: &Config) -> Result<usize> {
        Ok(cfg.req_u64(&["num_experts"])? as usize)
    }
}
