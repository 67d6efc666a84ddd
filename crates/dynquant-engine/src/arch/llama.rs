//! llama (and SmolLM2): RMSNorm, adjacent-pair RoPE, GQA, SwiGLU, optionally tied embeddings.
//! With `expert_count`, llama.cpp's Mixtral layout: layers with a router use experts of
//! `feed_forward_length` units each, softmax routing, selected weights renormalized
//! (src/models/llama.cpp).

use crate::config::{Config, Hparams, MoeRules};
use crate::error::Result;
use crate::ops::{Activation, RopeKind};

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Normal, Activation::SwiGlu)?;
    c.moe = hp.moe(
        c.n_ff,
        MoeRules {
            expert_ff_is_ff: true,
            fixed_norm: Some(true),
        },
    )?;
    Ok(c)
}
