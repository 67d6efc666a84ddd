//! deepseek2 (DeepSeek-V2/V3/R1, Kimi-K2, GLM-4.7-lite...): multi-head latent attention
//! ([`crate::config::MlaConfig`], in either weight layout), adjacent-pair RoPE on the
//! `rope.dimension_count` trailing dimensions of each head with YaRN scaling, leading dense
//! feed-forward blocks then mixture-of-experts blocks. Hyper-parameters and scales as llama.cpp
//! (80fb11ac) reads and uses them: src/models/deepseek2.cpp (`load_arch_hparams` and the graph)
//! and llama-context.cpp (`yarn_attn_factor`).

use crate::config::{Config, Hparams, MlaConfig, MoeRules};
use crate::error::{EngineError, Result};
use crate::ops::{Activation, RopeKind};

/// DeepSeek's YaRN magnitude scale: 1 for factors up to 1, else `0.1 * m * ln(factor) + 1`
/// (llama-context.cpp `get_mscale`).
fn get_mscale(factor: f32, m: f32) -> f32 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Normal, Activation::SwiGlu)?;
    let bad = |key: &str, reason: String| EngineError::BadHparam {
        key: format!("{}.{key}", c.arch),
        reason,
    };
    let q_lora_rank = hp.usize_opt("attention.q_lora_rank")?.filter(|&r| r > 0);
    let kv_lora_rank = hp.usize("attention.kv_lora_rank")?;
    let k_mla = hp.usize_opt("attention.key_length_mla")?;
    let v_mla = hp.usize_opt("attention.value_length_mla")?;
    // llama_hparams::is_mla: both keys present and non-zero
    let absorbed = matches!((k_mla, v_mla), (Some(k), Some(v)) if k > 0 && v > 0);
    let (head_k, v_head) = if absorbed {
        (k_mla.unwrap_or(0), v_mla.unwrap_or(0))
    } else {
        (c.head_dim_k, c.head_dim_v)
    };
    let qk_rope = c.n_rot;
    if kv_lora_rank == 0 || head_k <= qk_rope {
        return Err(bad(
            "attention.kv_lora_rank",
            format!("kv_lora_rank {kv_lora_rank}, key head {head_k}, RoPE part {qk_rope}"),
        ));
    }
    // Every size the loader forms from these must fit.
    let nh = c.n_head;
    let sizes_fit = kv_lora_rank.checked_add(qk_rope).is_some()
        && head_k.checked_mul(nh).is_some()
        && v_head.checked_mul(nh).is_some()
        && (head_k - qk_rope)
            .checked_add(v_head)
            .and_then(|d| d.checked_mul(nh))
            .is_some();
    if !sizes_fit {
        return Err(bad("attention.kv_lora_rank", "sizes overflow".into()));
    }
    if absorbed {
        // The cache holds the latent and the RoPE part as one key head shared by every query
        // head (MQA); the value is the latent.
        if c.n_head_kv != 1
            || c.head_dim_k != kv_lora_rank + qk_rope
            || c.head_dim_v != kv_lora_rank
        {
            return Err(bad(
                "attention.key_length",
                format!(
                    "MLA layout needs head_count_kv 1, key_length {} and value_length {} (has {}, {}, {})",
                    kv_lora_rank + qk_rope,
                    kv_lora_rank,
                    c.n_head_kv,
                    c.head_dim_k,
                    c.head_dim_v
                ),
            ));
        }
    } else if c.n_head_kv != c.n_head {
        return Err(bad(
            "attention.head_count_kv",
            format!(
                "the legacy kv_b layout is multi-head ({} != {})",
                c.n_head_kv, c.n_head
            ),
        ));
    }
    c.mla = Some(MlaConfig {
        q_lora_rank,
        kv_lora_rank,
        qk_nope: head_k - qk_rope,
        qk_rope,
        v_head,
        absorbed,
    });

    // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: the converter stores 0.1 * mscale_all_dim.
    let log_mul = hp
        .f32_opt("rope.scaling.yarn_log_multiplier")?
        .map_or(0.0, |m| m / 0.1);
    let freq_scale = c.rope_scale;
    let factor = 1.0 / freq_scale;
    if let Some(y) = c.yarn.as_mut() {
        if log_mul != 0.0 {
            // llama-context.cpp: mscale 1, except deepseek2 takes mscale = mscale_all_dim when
            // that is not 1; the ratio is then cancelled by rope_yarn's own factor.
            let mscale = if log_mul != 1.0 { log_mul } else { 1.0 };
            y.attn_factor = get_mscale(factor, mscale) / get_mscale(factor, log_mul)
                * (1.0 / (1.0 + 0.1 * factor.ln()))
                * hp.f32_opt("rope.scaling.attn_factor")?.unwrap_or(1.0);
        }
    }
    // deepseek2.cpp: undo the cancellation to get the original attn_factor, then scale the
    // attention logits by mscale^2 / sqrt(key head).
    let attn_factor = c.yarn.as_ref().map_or(1.0, |y| y.attn_factor);
    let attn_factor_org = attn_factor * (1.0 + 0.1 * (1.0 / freq_scale).ln());
    let mscale = attn_factor_org * (1.0 + 0.1 * log_mul * (1.0 / freq_scale).ln());
    c.kq_scale = 1.0 * mscale * mscale / (head_k as f32).sqrt();
    // Experts of expert_feed_forward_length units, gating, normalization and scale as the
    // checkpoint says, leading_dense_block_count dense blocks first.
    c.moe = hp.moe(
        c.n_ff,
        MoeRules {
            expert_ff_is_ff: false,
            fixed_norm: None,
        },
    )?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use dynquant_gguf::{Metadata, Value};

    use crate::error::EngineError;

    /// The synthetic MLA file's hyper-parameters, with `edit` applied.
    fn md(edit: &[(&str, Value)]) -> Metadata {
        let mut m = Metadata::new();
        m.set("general.architecture", Value::String("deepseek2".into()));
        let u = |v: u32| Value::U32(v);
        for (k, v) in [
            ("block_count", u(4)),
            ("embedding_length", u(512)),
            ("feed_forward_length", u(1536)),
            ("attention.head_count", u(4)),
            ("attention.head_count_kv", u(1)),
            ("attention.key_length", u(320)),
            ("attention.value_length", u(256)),
            ("attention.key_length_mla", u(192)),
            ("attention.value_length_mla", u(128)),
            ("attention.q_lora_rank", u(256)),
            ("attention.kv_lora_rank", u(256)),
            ("rope.dimension_count", u(64)),
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
            ("rope.scaling.original_context_length", u(1024)),
            ("rope.scaling.yarn_log_multiplier", Value::F32(0.1)),
        ] {
            m.set(format!("deepseek2.{k}"), v);
        }
        for (k, v) in edit {
            m.set(format!("deepseek2.{k}"), v.clone());
        }
        m
    }

    #[test]
    fn mla_shapes_and_yarn() {
        let c = crate::arch::config(&md(&[])).unwrap();
        let m = c.mla.as_ref().unwrap();
        assert!(m.absorbed);
        assert_eq!((m.qk_nope, m.qk_rope, m.v_head), (128, 64, 128));
        let y = c.yarn.as_ref().unwrap();
        assert_eq!((y.n_ctx_orig, y.ext_factor), (1024, 1.0));
        // YaRN's own 1 + 0.1 ln(4) is cancelled: cos/sin keep their magnitude
        assert!((y.attn_factor * (1.0 + 0.1 * 4f32.ln()) - 1.0).abs() < 1e-6);
        // logits scaled by mscale^2 / sqrt(192) with mscale = 1 + 0.1 ln(4)
        let ms = 1.0 + 0.1 * 4f32.ln();
        assert!((c.kq_scale - ms * ms / 192f32.sqrt()).abs() < 1e-6);
        // legacy layout: no *_mla keys, multi-head cache
        let legacy = md(&[
            ("attention.head_count_kv", Value::U32(4)),
            ("attention.key_length", Value::U32(192)),
            ("attention.value_length", Value::U32(128)),
            ("attention.key_length_mla", Value::U32(0)),
        ]);
        let c = crate::arch::config(&legacy).unwrap();
        assert!(!c.mla.unwrap().absorbed);
    }

    #[test]
    fn inconsistent_shapes_are_errors() {
        for edit in [
            ("attention.head_count_kv", Value::U32(4)),
            ("attention.key_length", Value::U32(300)),
            ("attention.kv_lora_rank", Value::U32(0)),
            ("rope.dimension_count", Value::U32(192)),
        ] {
            let e = crate::arch::config(&md(std::slice::from_ref(&edit))).unwrap_err();
            assert!(matches!(e, EngineError::BadHparam { .. }), "{edit:?}: {e}");
        }
    }
}
