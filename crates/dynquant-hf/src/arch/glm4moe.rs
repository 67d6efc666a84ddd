//! `Glm4MoeForCausalLM` (GLM-4.5 / 4.6) -> `glm4moe`:
//!
//! * GQA attention with q/k/v biases, optional per-head `q_norm` / `k_norm`, partial rotary
//!   (`rope.dimension_count` = head_dim x `partial_rotary_factor`, 0.5 when absent; the q/k
//!   rows are already in NeoX order, so nothing is permuted);
//! * `post_attention_layernorm` is written as `post_attention_norm` (not `ffn_norm`);
//! * the first `first_k_dense_replace` layers are dense, the others route `n_routed_experts`
//!   (stacked into `ffn_{down,gate,up}_exps`) with a sigmoid router, its
//!   `e_score_correction_bias` as `exp_probs_b.bias`, and shared experts as `*_shexp`;
//! * the NextN / Multi-Token-Prediction layers (index >= `num_hidden_layers`) are kept, unlike
//!   deepseek2's: `block_count` counts them, and their extra tensors become
//!   `blk.N.nextn.{eh_proj,embed_tokens,enorm,hnorm,shared_head_head,shared_head_norm}`;
//! * the vocabulary names `[gMASK]` BOS, `<|user|>` EOT, `<|endoftext|>` UNK and
//!   `<|observation|>` EOM (`_set_vocab_glm`), after the ids `tokenizer_config.json` gives.

use dynquant_gguf::{Metadata, Value};

use super::checkpoint::{attention, embeddings, gated_mlp, AttnParts, Dims, TensorList};
use super::qwen3moe::{mlp_expert, MLP_EXPERT_PROJS};
use super::{common_name, Arch, Mapped, Overrides, Params, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Glm4Moe;

/// NextN layer tensors (Hugging Face part after `model.layers.N.`) and their GGUF names.
const NEXTN: &[(&str, &str)] = &[
    ("eh_proj", "nextn.eh_proj"),
    ("embed_tokens", "nextn.embed_tokens"),
    ("enorm", "nextn.enorm"),
    ("hnorm", "nextn.hnorm"),
    ("shared_head.head", "nextn.shared_head_head"),
    ("shared_head.norm", "nextn.shared_head_norm"),
];

/// The special tokens `_set_vocab_glm` names by content, in its order.
pub(crate) const GLM_SPECIALS: &[(&str, &str)] = &[
    ("bos", "[gMASK]"),
    ("eot", "<|user|>"),
    ("unk", "<|endoftext|>"),
    ("eom", "<|observation|>"),
];

fn nextn_layers(cfg: &Config) -> Result<usize> {
    Ok(cfg.u64_of(&["num_nextn_predict_layers"])?.unwrap_or(0) as usize)
}

/// `partial_rotary_factor` as the converter finds it: in `rope_parameters` (or `rope_scaling`),
/// else at the top level, else 0.5.
fn partial_rotary_factor(cfg: &Config) -> Result<f64> {
    let in_rope = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"))
        .and_then(|r| r.get("partial_rotary_factor"))
        .and_then(|v| v.as_f64());
    Ok(match in_rope {
        Some(f) => f,
        None => cfg
            .f64_of(&["partial_rotary_factor", "rope_pct", "rope_percent"])?
            .unwrap_or(0.5),
    })
}

impl Arch for Glm4Moe {
    fn gguf_arch(&self) -> &'static str {
        "glm4moe"
    }
    fn generic_overrides(&self, cfg: &Config) -> Result<Overrides> {
        let n_layer = cfg.req_u64(&["num_hidden_layers"])?;
        Ok(Overrides {
            expert_count: cfg.u64_of(&["n_routed_experts"])?,
            block_count: Some(n_layer + nextn_layers(cfg)? as u64),
            ..Overrides::default()
        })
    }
    fn extra_params(&self, cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
        let u = |v: u64| Value::U32(v as u32);
        let k = |s: &str| format!("glm4moe.{s}");
        let head_dim = cfg
            .u64_of(&["head_dim"])?
            .unwrap_or((p.n_embd / p.n_head.max(1)) as u64);
        let rope_dim = (head_dim as f64 * partial_rotary_factor(cfg)?) as u64;
        md.set(k("rope.dimension_count"), u(rope_dim));
        if let Some(v) = cfg.u64_of(&["moe_intermediate_size"])? {
            md.set(k("expert_feed_forward_length"), u(v));
        }
        if let Some(v) = cfg.u64_of(&["n_shared_experts"])? {
            md.set(k("expert_shared_count"), u(v));
        }
        if let Some(v) = cfg.u64_of(&["first_k_dense_replace"])? {
            md.set(k("leading_dense_block_count"), u(v));
        }
        // Sigmoid whatever config.json says; the converter overwrites the key in place.
        md.replace(&k("expert_gating_func"), Value::U32(2));
        if let Some(v) = cfg.f64_of(&["routed_scaling_factor"])? {
            md.set(k("expert_weights_scale"), Value::F32(v as f32));
        }
        if let Some(v) = cfg.bool_of("norm_topk_prob") {
            md.set(k("expert_weights_norm"), Value::Bool(v));
        }
        if let Some(v) = cfg.u64_of(&["num_nextn_predict_layers"])? {
            md.set(k("nextn_predict_layers"), u(v));
        }
        Ok(())
    }
    fn map(&self, name: &str, layer: Option<usize>, cfg: &Config) -> Result<Mapped> {
        if name.ends_with("rotary_emb.inv_freq") {
            return Ok(Mapped::Skip);
        }
        if let Some(m) = mlp_expert(name, layer) {
            return m;
        }
        let unmapped = || HfError::UnmappedTensor(name.into());
        if let Some(l) = layer {
            let part = name
                .strip_prefix(&format!("model.layers.{l}."))
                .ok_or_else(unmapped)?;
            if part == "mlp.gate.e_score_correction_bias" {
                return Ok(Mapped::Tensor(
                    format!("blk.{l}.exp_probs_b.bias"),
                    Transform::None,
                ));
            }
            let (stem, suffix) = part.rsplit_once('.').ok_or_else(unmapped)?;
            let n_layer = cfg.req_u64(&["num_hidden_layers"])? as usize;
            if l >= n_layer {
                if let Some((_, g)) = NEXTN.iter().find(|(hf, _)| *hf == stem) {
                    return Ok(Mapped::Tensor(
                        format!("blk.{l}.{g}.{suffix}"),
                        Transform::None,
                    ));
                }
            }
            if stem == "post_attention_layernorm" {
                return Ok(Mapped::Tensor(
                    format!("blk.{l}.post_attention_norm.{suffix}"),
                    Transform::None,
                ));
            }
        }
        let g = common_name(name).ok_or_else(unmapped)?;
        Ok(Mapped::Tensor(g, Transform::None))
    }
    fn expert_projs(&self) -> &'static [(&'static str, &'static str)] {
        MLP_EXPERT_PROJS
    }
    fn n_experts(&self, cfg: &Config) -> Result<usize> {
        Ok(cfg.req_u64(&["n_routed_experts"])? as usize)
    }
    fn named_special_tokens(&self) -> &'static [(&'static str, &'static str)] {
        GLM_SPECIALS
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        let d = Dims::of(cfg)?;
        let req = |k: &str| -> Result<usize> { Ok(cfg.req_u64(&[k])? as usize) };
        let n_exp = req("n_routed_experts")?;
        let first_dense = cfg.u64_of(&["first_k_dense_replace"])?.unwrap_or(1) as usize;
        let n_shared = cfg.u64_of(&["n_shared_experts"])?.unwrap_or(1) as usize;
        // Glm4MoeAttention: biases on q, k and v when `attention_bias`, never on o.
        let parts = AttnParts {
            qkv_bias: cfg.bool_of("attention_bias").unwrap_or(false),
            o_bias: false,
            qk_norm: cfg.bool_of("use_qk_norm").unwrap_or(false),
        };
        let mut out = TensorList::default();
        embeddings(cfg, &d, &mut out);
        let n_blocks = d.n_layer + nextn_layers(cfg)?;
        for l in 0..n_blocks {
            attention(l, &d, parts, &mut out);
            let mlp = format!("model.layers.{l}.mlp");
            if l < first_dense {
                gated_mlp(&mlp, d.hidden, req("intermediate_size")?, false, &mut out);
            } else {
                let ff = req("moe_intermediate_size")?;
                out.add(format!("{mlp}.gate.weight"), &[n_exp, d.hidden]);
                out.add(format!("{mlp}.gate.e_score_correction_bias"), &[n_exp]);
                for e in 0..n_exp {
                    gated_mlp(&format!("{mlp}.experts.{e}"), d.hidden, ff, false, &mut out);
                }
                let shared = format!("{mlp}.shared_experts");
                gated_mlp(&shared, d.hidden, ff * n_shared, false, &mut out);
            }
            if l >= d.n_layer {
                let p = format!("model.layers.{l}");
                out.add(format!("{p}.eh_proj.weight"), &[d.hidden, 2 * d.hidden]);
                out.add(format!("{p}.enorm.weight"), &[d.hidden]);
                out.add(format!("{p}.hnorm.weight"), &[d.hidden]);
                out.add(format!("{p}.embed_tokens.weight"), &[d.vocab, d.hidden]);
                out.add(format!("{p}.shared_head.head.weight"), &[d.vocab, d.hidden]);
                out.add(format!("{p}.shared_head.norm.weight"), &[d.hidden]);
            }
        }
        Ok(out.0)
    }
}
