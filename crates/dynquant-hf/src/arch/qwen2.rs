//! `Qwen2ForCausalLM` -> `qwen2`: the shared names, q/k/v biases kept (as F32), no
//! permutation, no extra keys.

use dynquant_gguf::Metadata;

use super::checkpoint::{dense_decoder, AttnParts};
use super::{common_name, Arch, Mapped, Params, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Qwen2;

/// The Qwen map: shared names, unpermuted.
pub(crate) fn qwen_map(name: &str) -> Result<Mapped> {
    if name.ends_with("rotary_emb.inv_freq") {
        return Ok(Mapped::Skip);
    }
    let g = common_name(name).ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
    Ok(Mapped::Tensor(g, Transform::None))
}

impl Arch for Qwen2 {
    fn gguf_arch(&self) -> &'static str {
        "qwen2"
    }
    fn extra_params(&self, _cfg: &Config, _p: &Params, _md: &mut Metadata) -> Result<()> {
        Ok(())
    }
    fn map(&self, name: &str, _layer: Option<usize>, _cfg: &Config) -> Result<Mapped> {
        qwen_map(name)
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        // Qwen2Attention: q, k and v have biases, o has none.
        let parts = AttnParts {
            qkv_bias: true,
            ..AttnParts::default()
        };
        Ok(dense_decoder(cfg, parts, false)?.0)
    }
}
