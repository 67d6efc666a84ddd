//! `LlamaForCausalLM` / `MistralForCausalLM` -> `llama`: q/k rows permuted for llama.cpp's RoPE
//! layout, `vocab_size` and `rope.dimension_count` after the file type.

use dynquant_gguf::{Metadata, Value};

use super::checkpoint::{dense_decoder, AttnParts};
use super::{common_name, Arch, Mapped, OutTensor, Params, Transform};
use crate::config::Config;
use crate::error::{HfError, Result};

pub(crate) struct Llama;

/// The llama family's extra keys (shared with Mixtral).
pub(crate) fn llama_extra(cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
    if let Some(v) = p.n_vocab {
        md.set("llama.vocab_size", Value::U32(v as u32));
    }
    let rope_dim = match cfg.u64_of(&["head_dim"])? {
        Some(h) => h,
        None => (p.n_embd / p.n_head.max(1)) as u64,
    };
    md.set("llama.rope.dimension_count", Value::U32(rope_dim as u32));
    Ok(())
}

/// The llama family's tensor map: shared names, with q/k permuted.
pub(crate) fn llama_map(name: &str, cfg: &Config) -> Result<Mapped> {
    if name.ends_with("rotary_emb.inv_freq") {
        return Ok(Mapped::Skip);
    }
    let g = common_name(name).ok_or_else(|| HfError::UnmappedTensor(name.into()))?;
    let n_head = cfg.req_u64(&["num_attention_heads", "n_heads"])? as usize;
    let n_kv = cfg
        .u64_of(&["num_key_value_heads", "n_kv_heads"])?
        .map_or(n_head, |v| v as usize);
    let tr = if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
        Transform::RopePermute { n_head }
    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
        Transform::RopePermute { n_head: n_kv }
    } else {
        Transform::None
    };
    Ok(Mapped::Tensor(g, tr))
}

/// Llama 3.x's `rope_freqs` (rope scaling `rope_type: llama3`): one factor per rotary frequency,
/// computed in f32 as the converter's torch code (`LlamaModel.generate_extra_tensors`): 1 for
/// high frequencies, `factor` for low ones, a smooth blend between. Note that the converter takes
/// `original_max_position_embeddings` from the top level of config.json (default 8192).
pub(crate) fn llama3_rope_freqs(cfg: &Config) -> Result<Vec<OutTensor>> {
    let Some(r) = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"))
        .filter(|r| r.is_object())
    else {
        return Ok(Vec::new());
    };
    let ty = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(|t| t.as_str());
    if !ty.is_some_and(|t| t.eq_ignore_ascii_case("llama3")) {
        return Ok(Vec::new());
    }
    let num = |k: &str, d: f64| r.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    let base = r
        .get("rope_theta")
        .and_then(|v| v.as_f64())
        .or(cfg.f64_of(&["rope_theta"])?)
        .unwrap_or(10000.0) as f32;
    let dim = match cfg.u64_of(&["head_dim"])? {
        Some(h) => h as usize,
        None => {
            (cfg.req_u64(&["hidden_size"])? / cfg.req_u64(&["num_attention_heads"])?.max(1))
                as usize
        }
    };
    let factor = num("factor", 8.0) as f32;
    let low = num("low_freq_factor", 1.0) as f32;
    let high = num("high_freq_factor", 4.0) as f32;
    let old = cfg
        .f64_of(&["original_max_position_embeddings"])?
        .unwrap_or(8192.0) as f32;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let values: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
            let wavelen = two_pi / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    if values.is_empty() {
        return Err(HfError::json(
            cfg.path(),
            "llama3 rope scaling with a zero head dimension",
        ));
    }
    Ok(vec![OutTensor {
        name: "rope_freqs.weight".into(),
        sources: Vec::new(),
        transform: Transform::None,
        shape: vec![values.len()],
        values: Some(values),
    }])
}

impl Arch for Llama {
    fn generated(&self, cfg: &Config) -> Result<Vec<OutTensor>> {
        llama3_rope_freqs(cfg)
    }
    fn gguf_arch(&self) -> &'static str {
        "llama"
    }
    fn extra_params(&self, cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()> {
        llama_extra(cfg, p, md)
    }
    fn map(&self, name: &str, _layer: Option<usize>, cfg: &Config) -> Result<Mapped> {
        llama_map(name, cfg)
    }
    fn prefers_spm(&self) -> bool {
        true
    }
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>> {
        // LlamaAttention: every projection has a bias when `attention_bias` is set.
        let bias = cfg.bool_of("attention_bias").unwrap_or(false);
        let parts = AttnParts {
            qkv_bias: bias,
            o_bias: bias,
            qk_norm: false,
        };
        Ok(dense_decoder(cfg, parts, cfg.bool_of("mlp_bias").unwrap_or(false))?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_rope_factors() {
        // Llama 3.1's published rope scaling: factor 8, low 1, high 4, original context 8192,
        // theta 500000, head_dim 128. The highest frequencies keep factor 1, the lowest get 8,
        // and the smooth band lies in between, increasing.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
                "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#,
        )
        .unwrap();
        let cfg = Config::read(dir.path()).unwrap();
        let t = llama3_rope_freqs(&cfg).unwrap();
        let v = t[0].values.as_ref().unwrap();
        assert_eq!((t[0].name.as_str(), v.len()), ("rope_freqs.weight", 64));
        assert!(v[..29].iter().all(|&x| x == 1.0), "{v:?}");
        assert!(v[35..].iter().all(|&x| x == 8.0), "{v:?}");
        // The blended band, as numpy computes the same float32 expressions independently.
        let numpy: [f64; 6] = [
            1.2074838876724243,
            1.5534145832061768,
            2.026313066482544,
            2.6945300102233887,
            3.684253215789795,
            5.257327079772949,
        ];
        let numpy = numpy.map(|x| x as f32);
        assert_eq!(&v[29..35], &numpy);
    }
}
