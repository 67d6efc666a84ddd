//! `DeepseekV3ForCausalLM` / `DeepseekV2ForCausalLM` -> `deepseek2` (MLA + MoE):
//!
//! * `kv_b_proj` [H*(nope+v), kv_lora] is split into `attn_k_b` (the k part, transposed to
//!   [H, kv_lora, nope]) and `attn_v_b` ([H, v, kv_lora]);
//! * experts stacked into `ffn_{down,gate,up}_exps`, shared experts as `*_shexp`, the router as
//!   `ffn_gate_inp`, `e_score_correction_bias` as `exp_probs_b.bias`;
//! * Multi-Token-Prediction layers (index >= `num_hidden_layers`) are dropped;
//! * MLA is written as MQA: `head_count_kv` 1, `key_length` kv_lora+rope, `value_length`
//!   kv_lora, plus `key_length_mla` / `value_length_mla`; YaRN's `yarn_log_multiplier` is
//!   0.1 x `mscale_all_dim`.
//!
//! Files converted before llama.cpp PR #12801 hold `kv_b_proj` whole as `attn_kv_b`, with
//! `head_count_kv` = `num_key_value_heads`, `key_length` nope+rope and `value_length` v; that
//! legacy layout is only planned ([`MlaLayout::Legacy`]), never written.

use dynquant_gguf::{Metadata, Value};
use dynquant_plan::MlaLayout;

use super::checkpoint::{embeddings, gated_mlp, Dims, TensorList};
use super::qwen3moe::{mlp_expert, MLP_EXPERT_PROJS};
use super::{common_name, Arch, Mapped, Overrides, Params, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Deepseek {
    /// Which attention tensors `kv_b_proj` becomes.
    pub layout: MlaLayout,
}

impl Arch for Deepseek {
    fn gguf_arch(&self) -> &'static str {
        "deepseek2"
    }
    fn generic_overrides(&self, cfg: &Config) -> Result<Overrides> {
        let kv_lora = cfg.req_u64(&["kv_lora_rank"])?;
        let rope = cfg.req_u64(&["qk_rope_head_dim"])?;
        let expert_count = cfg.u64_of(&["n_routed_experts"])?;
        Ok(match self.layout {
            MlaLayout::Mla => Overrides {
                head_count_kv: Some(1),
                key_value_length: Some((kv_lora + rope, kv_lora)),
                expert_count,
                block_count: None,
            },
            MlaLayout::Legacy => Overrides {
                head_count_kv: None,
                key_value_length: Some((
                    cfg.req_u64(&["qk_nope_head_dim"])? + rope,
                    cfg.req_u64(&["v_head_dim"])?,
                )),
                expert_count,
                block_count: None,
            },
        })
    }
    fn extra_params(&self, cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
        let u = |v: u64| Value::U32(v as u32);
        let k = |s: &str| format!("deepseek2.{s}");
        md.set(
            k("leading_dense_block_count"),
            u(cfg.req_u64(&["first_k_dense_replace"])?),
        );
        if let Some(v) = p.n_vocab {
            md.set(k("vocab_size"), u(v));
        }
        if let Some(q) = cfg.u64_of(&["q_lora_rank"])? {
            md.set(k("attention.q_lora_rank"), u(q));
        }
        md.set(
            k("attention.kv_lora_rank"),
            u(cfg.req_u64(&["kv_lora_rank"])?),
        );
        let nope = cfg.req_u64(&["qk_nope_head_dim"])?;
        let rope = cfg.req_u64(&["qk_rope_head_dim"])?;
        if self.layout == MlaLayout::Mla {
            md.set(k("attention.key_length_mla"), u(nope + rope));
            md.set(
                k("attention.value_length_mla"),
                u(cfg.req_u64(&["v_head_dim"])?),
            );
        }
        md.set(
            k("expert_feed_forward_length"),
            u(cfg.req_u64(&["moe_intermediate_size"])?),
        );
        md.set(
            k("expert_shared_count"),
            u(cfg.req_u64(&["n_shared_experts"])?),
        );
        md.set(
            k("expert_weights_scale"),
            Value::F32(cfg.f64_of(&["routed_scaling_factor"])?.unwrap_or(1.0) as f32),
        );
        md.set(
            k("expert_weights_norm"),
            Value::Bool(cfg.bool_of("norm_topk_prob").unwrap_or(false)),
        );
        md.set(k("rope.dimension_count"), u(rope));
        if let Some(r) = cfg.get("rope_scaling").filter(|r| r.is_object()) {
            let ty = r
                .get("type")
                .or_else(|| r.get("rope_type"))
                .and_then(|t| t.as_str());
            if ty == Some("yarn") {
                if let Some(m) = r.get("mscale_all_dim").and_then(|v| v.as_f64()) {
                    md.set(
                        k("rope.scaling.yarn_log_multiplier"),
                        Value::F32((0.1 * m) as f32),
                    );
                }
            }
        }
        Ok(())
    }
    fn map(&self, name: &str, layer: Option<usize>, cfg: &Config) -> Result<Mapped> {
        let n_layer = cfg.req_u64(&["num_hidden_layers"])? as usize;
        if layer.is_some_and(|l| l >= n_layer) || name.ends_with("rotary_emb.inv_freq") {
            return Ok(Mapped::Skip);
        }
        if let Some(m) = mlp_expert(name, layer) {
            return m;
        }
        if name.ends_with(".mlp.gate.e_score_correction_bias") {
            let l = layer.ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
            return Ok(Mapped::Tensor(
                format!("blk.{l}.exp_probs_b.bias"),
                Transform::None,
            ));
        }
        if name.ends_with(".self_attn.kv_b_proj.weight") {
            let l = layer.ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
            if self.layout == MlaLayout::Legacy {
                return Ok(Mapped::Tensor(
                    format!("blk.{l}.attn_kv_b.weight"),
                    Transform::None,
                ));
            }
            // Emitted as two tensors: `plan_tensors` adds the attn_v_b half.
            let n_head = cfg.req_u64(&["num_attention_heads"])? as usize;
            let nope = cfg.req_u64(&["qk_nope_head_dim"])? as usize;
            let v = cfg.req_u64(&["v_head_dim"])? as usize;
            return Ok(Mapped::Tensor(
                format!("blk.{l}.attn_k_b.weight"),
                Transform::KvbK { n_head, nope, v },
            ));
        }
        let g = common_name(name).ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
        Ok(Mapped::Tensor(g, Transform::None))
    }
    fn expert_projs(&self) -> &'static [(&'static str, &'static str)] {
        MLP_EXPERT_PROJS
    }
    fn n_experts(&self, cfg: &Config) -> Result<usize> {
        Ok(cfg.req_u64(&["n_routed_experts"])? as usize)
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        let d = Dims::of(cfg)?;
        let req = |k: &str| -> Result<usize> { Ok(cfg.req_u64(&[k])? as usize) };
        let (nope, rope, v) = (
            req("qk_nope_head_dim")?,
            req("qk_rope_head_dim")?,
            req("v_head_dim")?,
        );
        let kv_lora = req("kv_lora_rank")?;
        let n_exp = cfg.u64_of(&["n_routed_experts"])?.unwrap_or(0) as usize;
        let first_dense = cfg.u64_of(&["first_k_dense_replace"])?.unwrap_or(0) as usize;
        let freq = cfg.u64_of(&["moe_layer_freq"])?.unwrap_or(1).max(1) as usize;
        let n_shared = cfg.u64_of(&["n_shared_experts"])?.unwrap_or(0) as usize;
        // DeepseekV3's router keeps an expert bias for its "noaux_tc" top-k method.
        let router_bias = cfg.str_of("topk_method") == Some("noaux_tc");
        let mut out = TensorList::default();
        embeddings(cfg, &d, &mut out);
        for l in 0..d.n_layer {
            let p = format!("model.layers.{l}");
            out.add(format!("{p}.input_layernorm.weight"), &[d.hidden]);
            out.add(format!("{p}.post_attention_layernorm.weight"), &[d.hidden]);
            let a = format!("{p}.self_attn");
            let q_out = d.n_head * (nope + rope);
            match cfg.u64_of(&["q_lora_rank"])? {
                Some(q) => {
                    let q = q as usize;
                    out.add(format!("{a}.q_a_proj.weight"), &[q, d.hidden]);
                    out.add(format!("{a}.q_a_layernorm.weight"), &[q]);
                    out.add(format!("{a}.q_b_proj.weight"), &[q_out, q]);
                }
                None => out.add(format!("{a}.q_proj.weight"), &[q_out, d.hidden]),
            }
            out.add(
                format!("{a}.kv_a_proj_with_mqa.weight"),
                &[kv_lora + rope, d.hidden],
            );
            out.add(format!("{a}.kv_a_layernorm.weight"), &[kv_lora]);
            out.add(
                format!("{a}.kv_b_proj.weight"),
                &[d.n_head * (nope + v), kv_lora],
            );
            out.add(format!("{a}.o_proj.weight"), &[d.hidden, d.n_head * v]);
            let mlp = format!("{p}.mlp");
            if n_exp == 0 || l < first_dense || l % freq != 0 {
                gated_mlp(&mlp, d.hidden, req("intermediate_size")?, false, &mut out);
                continue;
            }
            let ff = req("moe_intermediate_size")?;
            out.add(format!("{mlp}.gate.weight"), &[n_exp, d.hidden]);
            if router_bias {
                out.add(format!("{mlp}.gate.e_score_correction_bias"), &[n_exp]);
            }
            for e in 0..n_exp {
                gated_mlp(&format!("{mlp}.experts.{e}"), d.hidden, ff, false, &mut out);
            }
            if n_shared > 0 {
                let shared = format!("{mlp}.shared_experts");
                gated_mlp(&shared, d.hidden, ff * n_shared, false, &mut out);
            }
        }
        Ok(out.0)
    }
}
