//! qwen2: llama with NeoX RoPE and biases on the q, k, v projections.

use crate::config::{Config, Hparams};
use crate::error::Result;
use crate::ops::{Activation, RopeKind};

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Neox, Activation::SwiGlu)?;
    c.qkv_bias = true;
    Ok(c)
}
