//! `Gemma3ForCausalLM` (text only) -> `gemma3`: four norms per block (`post_attention_norm`,
//! `ffn_norm` before the MLP, `post_ffw_norm` after it), per-head q/k norms, tied embeddings.
//! Gemma's RMSNorm multiplies by `1 + w`, so every `*norm.weight` is written with 1 added (as
//! the converter does, in f32); the embedding keeps only the tokenizer's rows. Hyper-parameters:
//! Gemma 3's defaults where config.json omits them, the sliding window unless every layer is
//! global, the final logit softcap when set.

use dynquant_gguf::{Metadata, Value};

use super::checkpoint::{attention, gated_mlp, AttnParts, Dims, TensorList};
use super::{common_name, Arch, Mapped, Params, SpacePrefix, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Gemma3;

impl Arch for Gemma3 {
    fn gguf_arch(&self) -> &'static str {
        "gemma3"
    }
    fn extra_params(&self, cfg: &Config, _p: &Params, md: &mut Metadata) -> Result<()> {
        let k = |s: &str| format!("gemma3.{s}");
        let u32v = |v: u64| -> Result<Value> {
            u32::try_from(v)
                .map(Value::U32)
                .map_err(|_| HfError::json(cfg.path(), format!("{v} does not fit a u32")))
        };
        // The converter sets these again with Gemma 3's defaults; a key already written keeps
        // its place.
        let ctx = cfg.u64_of(&["max_position_embeddings"])?.unwrap_or(131072);
        md.replace(&k("context_length"), u32v(ctx)?);
        let heads = cfg.u64_of(&["num_attention_heads"])?.unwrap_or(8);
        md.replace(&k("attention.head_count"), u32v(heads)?);
        let eps = cfg.f64_of(&["rms_norm_eps"])?.unwrap_or(1e-6);
        md.replace(
            &k("attention.layer_norm_rms_epsilon"),
            Value::F32(eps as f32),
        );
        let head_dim = cfg.u64_of(&["head_dim"])?.unwrap_or(256);
        md.replace(&k("attention.key_length"), u32v(head_dim)?);
        md.replace(&k("attention.value_length"), u32v(head_dim)?);
        let full = cfg
            .get("rope_parameters")
            .or_else(|| cfg.get("rope_scaling"))
            .filter(|r| r.is_object());
        let full = full.map(|r| r.get("full_attention").unwrap_or(r));
        let theta = match full
            .and_then(|r| r.get("rope_theta"))
            .and_then(|v| v.as_f64())
        {
            Some(t) => t,
            None => cfg
                .f64_of(&[
                    "global_rope_theta",
                    "rope_global_theta",
                    "rope_theta_global",
                    "rope_theta",
                    "rotary_emb_base",
                ])?
                .unwrap_or(1_000_000.0),
        };
        md.replace(&k("rope.freq_base"), Value::F32(theta as f32));
        if cfg
            .get("attn_logit_softcapping")
            .is_some_and(|v| !v.is_null())
        {
            return Err(HfError::json(
                cfg.path(),
                "Gemma 3 has no attention logit softcapping, but config.json sets attn_logit_softcapping",
            ));
        }
        if let Some(c) = cfg
            .f64_of(&["final_logit_softcapping"])?
            .filter(|&c| c != 0.0)
        {
            md.replace(&k("final_logit_softcapping"), Value::F32(c as f32));
        }
        if cfg.u64_of(&["sliding_window_pattern"])? != Some(1) {
            let w = cfg.req_u64(&["sliding_window"])?;
            md.replace(&k("attention.sliding_window"), u32v(w)?);
        }
        let kv = cfg.u64_of(&["num_key_value_heads"])?.unwrap_or(4);
        md.replace(&k("attention.head_count_kv"), u32v(kv)?);
        Ok(())
    }
    fn map(&self, name: &str, _layer: Option<usize>, _cfg: &Config) -> Result<Mapped> {
        if name.ends_with("rotary_emb.inv_freq") {
            return Ok(Mapped::Skip);
        }
        let g = gemma_name(name)
            .or_else(|| common_name(name))
            .ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
        let tr = if name.ends_with("norm.weight") {
            Transform::AddOne
        } else {
            Transform::None
        };
        Ok(Mapped::Tensor(g, tr))
    }
    fn prefers_spm(&self) -> bool {
        true
    }
    fn space_prefix(&self) -> SpacePrefix {
        SpacePrefix::OffAfterSpm
    }
    fn trims_embedding_to_vocab(&self) -> bool {
        true
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        let d = Dims::of(cfg)?;
        let ff = cfg.req_u64(&["intermediate_size"])? as usize;
        let mut out = TensorList::default();
        out.add("model.embed_tokens.weight", &[d.vocab, d.hidden]);
        out.add("model.norm.weight", &[d.hidden]);
        // Gemma3TextConfig ties the embeddings unless told otherwise.
        if !cfg.bool_of("tie_word_embeddings").unwrap_or(true) {
            out.add("lm_head.weight", &[d.vocab, d.hidden]);
        }
        let parts = AttnParts {
            qkv_bias: cfg.bool_of("attention_bias").unwrap_or(false),
            o_bias: cfg.bool_of("attention_bias").unwrap_or(false),
            qk_norm: true,
        };
        for l in 0..d.n_layer {
            attention(l, &d, parts, &mut out);
            let p = format!("model.layers.{l}");
            out.add(format!("{p}.pre_feedforward_layernorm.weight"), &[d.hidden]);
            out.add(
                format!("{p}.post_feedforward_layernorm.weight"),
                &[d.hidden],
            );
            gated_mlp(&format!("{p}.mlp"), d.hidden, ff, false, &mut out);
        }
        Ok(out.0)
    }
}

/// The names Gemma 2/3 use differently from the llama family (gguf-py `TensorNameMap`):
/// `post_attention_layernorm` is the norm after attention, not before the MLP.
fn gemma_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let g = match part {
        "post_attention_layernorm.weight" => "post_attention_norm",
        "pre_feedforward_layernorm.weight" => "ffn_norm",
        "post_feedforward_layernorm.weight" => "post_ffw_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.weight"))
}
