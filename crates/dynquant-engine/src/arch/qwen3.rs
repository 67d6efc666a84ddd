//! qwen3: llama with NeoX RoPE and per-head RMSNorm of queries and keys.

use crate::config::{Config, Hparams};
use crate::error::Result;
use crate::ops::{Activation, RopeKind};

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Neox, Activation::SwiGlu)?;
    c.qk_norm = true;
    Ok(c)
}
