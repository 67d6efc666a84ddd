//! `GptOssForCausalLM` -> `gpt-oss`: biased q/k/v/o attention with per-head sinks, a biased
//! router, and experts stored already stacked, in MXFP4 (`mlp.experts.{gate_up,down}_proj_blocks`
//! and `_scales`), which the converter repacks into ggml MXFP4 without dequantizing; gate and
//! up are interleaved row by row (and their biases column by column) and split apart.

use dynquant_gguf::{Metadata, Value};

use super::checkpoint::{attention, embeddings, AttnParts, Dims, TensorList};
use super::{common_name, Arch, Mapped, Params, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct GptOss;

/// `general.file_type` the converter writes for an MXFP4 checkpoint converted to f32/f16/bf16
/// (`LlamaFileType.MOSTLY_MXFP4_MOE`).
const MOSTLY_MXFP4_MOE: u32 = 38;

fn is_mxfp4(cfg: &Config) -> bool {
    cfg.get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(|m| m.as_str())
        == Some("mxfp4")
}

impl Arch for GptOss {
    fn gguf_arch(&self) -> &'static str {
        "gpt-oss"
    }
    fn extra_params(&self, cfg: &Config, _p: &Params, md: &mut Metadata) -> Result<()> {
        if is_mxfp4(cfg) {
            // Only over the float file types, as the converter (Q8_0 keeps its own).
            if let Some(Value::U32(0 | 1 | 32)) = md.get("general.file_type") {
                md.replace("general.file_type", Value::U32(MOSTLY_MXFP4_MOE));
            }
        }
        let window = cfg.req_u64(&["sliding_window"])?;
        md.set(
            "gpt-oss.attention.sliding_window",
            Value::U32(window as u32),
        );
        let ff = cfg.req_u64(&["intermediate_size"])?;
        md.set("gpt-oss.expert_feed_forward_length", Value::U32(ff as u32));
        Ok(())
    }
    fn map(&self, name: &str, layer: Option<usize>, _cfg: &Config) -> Result<Mapped> {
        let unmapped = || HfError::UnmappedTensor(name.into());
        if let Some(rest) = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
            .map(|(_, p)| p)
        {
            let l = layer.ok_or_else(unmapped)?;
            let blk = |g: &str| format!("blk.{l}.{g}");
            return Ok(match rest {
                "self_attn.sinks" => Mapped::Tensor(blk("attn_sinks.weight"), Transform::None),
                "post_attention_layernorm.weight" => {
                    Mapped::Tensor(blk("post_attention_norm.weight"), Transform::None)
                }
                "mlp.router.weight" => Mapped::Tensor(blk("ffn_gate_inp.weight"), Transform::None),
                "mlp.router.bias" => Mapped::Tensor(blk("ffn_gate_inp.bias"), Transform::None),
                "mlp.experts.down_proj_bias" => {
                    Mapped::Tensor(blk("ffn_down_exps.bias"), Transform::None)
                }
                // Split into gate (even columns) and up (odd) by plan_tensors.
                "mlp.experts.gate_up_proj_bias" => Mapped::Tensor(
                    blk("ffn_gate_exps.bias"),
                    Transform::Deinterleave { parity: 0 },
                ),
                "mlp.experts.down_proj_blocks" | "mlp.experts.gate_up_proj_blocks" => Mapped::Skip,
                "mlp.experts.down_proj_scales" => {
                    Mapped::Mxfp4(vec![(blk("ffn_down_exps.weight"), None)])
                }
                "mlp.experts.gate_up_proj_scales" => Mapped::Mxfp4(vec![
                    (blk("ffn_gate_exps.weight"), Some(0)),
                    (blk("ffn_up_exps.weight"), Some(1)),
                ]),
                // Dequantized (BF16) expert checkpoints are not converted: the released ones
                // are MXFP4.
                "mlp.experts.down_proj" | "mlp.experts.gate_up_proj" => {
                    return Err(HfError::UnsupportedDtype {
                        name: name.into(),
                        dtype: "unquantized gpt-oss experts (only MXFP4 blocks/scales)".into(),
                    })
                }
                _ => Mapped::Tensor(common_name(name).ok_or_else(unmapped)?, Transform::None),
            });
        }
        Ok(Mapped::Tensor(
            common_name(name).ok_or_else(unmapped)?,
            Transform::None,
        ))
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        let d = Dims::of(cfg)?;
        let n_exp = cfg.req_u64(&["num_local_experts"])? as usize;
        let ff = cfg.req_u64(&["intermediate_size"])? as usize;
        let parts = AttnParts {
            qkv_bias: true,
            o_bias: true,
            qk_norm: false,
        };
        let mut out = TensorList::default();
        embeddings(cfg, &d, &mut out);
        for l in 0..d.n_layer {
            attention(l, &d, parts, &mut out);
            let p = format!("model.layers.{l}");
            out.add(format!("{p}.self_attn.sinks"), &[d.n_head]);
            out.linear(&format!("{p}.mlp.router"), n_exp, d.hidden, true);
            let e = format!("{p}.mlp.experts");
            let (hb, fb) = (d.hidden.div_ceil(32), ff.div_ceil(32));
            out.add(format!("{e}.gate_up_proj_blocks"), &[n_exp, 2 * ff, hb, 16]);
            out.add(format!("{e}.gate_up_proj_scales"), &[n_exp, 2 * ff, hb]);
            out.add(format!("{e}.gate_up_proj_bias"), &[n_exp, 2 * ff]);
            out.add(format!("{e}.down_proj_blocks"), &[n_exp, d.hidden, fb, 16]);
            out.add(format!("{e}.down_proj_scales"), &[n_exp, d.hidden, fb]);
            out.add(format!("{e}.down_proj_bias"), &[n_exp, d.hidden]);
        }
        Ok(out.0)
    }
}
