//! `Qwen3MoeForCausalLM` -> `qwen3moe`: Qwen3 attention with `mlp.experts.<e>.*_proj` stacked
//! into `ffn_down_exps` / `ffn_gate_exps` / `ffn_up_exps`, the router `mlp.gate` as
//! `ffn_gate_inp`, and `expert_feed_forward_length`.

use dynquant_gguf::{Metadata, Value};

use super::checkpoint::{attention, embeddings, gated_mlp, Dims, TensorList};
use super::qwen2::qwen_map;
use super::qwen3::qwen3_attention;
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
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        let d = Dims::of(cfg)?;
        let n_exp = cfg.req_u64(&["num_experts"])? as usize;
        let moe_ff = cfg.req_u64(&["moe_intermediate_size"])? as usize;
        // Qwen3MoeDecoderLayer: experts unless the layer is listed in `mlp_only_layers` or
        // falls between `decoder_sparse_step`s.
        let dense_only: Vec<u64> = cfg
            .get("mlp_only_layers")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        let step = cfg.u64_of(&["decoder_sparse_step"])?.unwrap_or(1).max(1) as usize;
        let mut out = TensorList::default();
        embeddings(cfg, &d, &mut out);
        for l in 0..d.n_layer {
            attention(l, &d, qwen3_attention(cfg), &mut out);
            let mlp = format!("model.layers.{l}.mlp");
            if dense_only.contains(&(l as u64)) || (l + 1) % step != 0 {
                let ff = cfg.req_u64(&["intermediate_size"])? as usize;
                gated_mlp(&mlp, d.hidden, ff, false, &mut out);
                continue;
            }
            out.add(format!("{mlp}.gate.weight"), &[n_exp, d.hidden]);
            for e in 0..n_exp {
                gated_mlp(
                    &format!("{mlp}.experts.{e}"),
                    d.hidden,
                    moe_ff,
                    false,
                    &mut out,
                );
            }
        }
        Ok(out.0)
    }
}
