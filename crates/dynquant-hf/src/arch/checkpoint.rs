//! A checkpoint's tensor table (Hugging Face names and shapes), from its safetensors headers or,
//! for planning a model before downloading it, from `config.json` alone: the tensors the
//! Transformers model class of that config creates. Either table then goes through the same
//! name map ([`super::plan_tensors`]), so there is one place for Hugging Face to GGUF names.

use std::collections::HashMap;

use crate::config::Config;
use crate::error::Result;
use crate::safetensors::Checkpoint;

/// The tensor table [`super::plan_tensors`] reads.
pub(crate) trait CheckpointTensors {
    /// Tensor names in the converter's order.
    fn names(&self) -> &[String];
    /// A tensor's shape (PyTorch order), if present.
    fn shape(&self, name: &str) -> Option<&[usize]>;
}

impl CheckpointTensors for Checkpoint {
    fn names(&self) -> &[String] {
        Checkpoint::names(self)
    }
    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.get(name).map(|t| t.shape.as_slice())
    }
}

/// The tensor table a checkpoint of a config would have, held as one safetensors file holds
/// it: names sorted, as the converter reads them.
pub(crate) struct ConfigCheckpoint {
    order: Vec<String>,
    shapes: HashMap<String, Vec<usize>>,
}

impl ConfigCheckpoint {
    /// From `(name, shape)` pairs in any order.
    pub(crate) fn new(tensors: Vec<(String, Vec<usize>)>) -> Self {
        let mut order: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        order.sort();
        ConfigCheckpoint {
            order,
            shapes: tensors.into_iter().collect(),
        }
    }
}

impl CheckpointTensors for ConfigCheckpoint {
    fn names(&self) -> &[String] {
        &self.order
    }
    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }
}

/// Builds a checkpoint's tensor list.
#[derive(Default)]
pub(crate) struct TensorList(pub Vec<(String, Vec<usize>)>);

impl TensorList {
    /// Adds `name` with `shape`.
    pub(crate) fn add(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.0.push((name.into(), shape.to_vec()));
    }

    /// `prefix.{weight}` and, with `bias`, `prefix.bias` of a linear layer `[out, inp]`.
    pub(crate) fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) {
        self.add(format!("{prefix}.weight"), &[out, inp]);
        if bias {
            self.add(format!("{prefix}.bias"), &[out]);
        }
    }
}

/// Sizes every decoder config has.
pub(crate) struct Dims {
    /// `hidden_size`.
    pub hidden: usize,
    /// `num_hidden_layers`.
    pub n_layer: usize,
    /// `num_attention_heads`.
    pub n_head: usize,
    /// `num_key_value_heads` (default: `n_head`).
    pub n_head_kv: usize,
    /// `head_dim` (default: `hidden / n_head`).
    pub head_dim: usize,
    /// `vocab_size`.
    pub vocab: usize,
}

impl Dims {
    /// Reads them from `cfg`.
    pub(crate) fn of(cfg: &Config) -> Result<Dims> {
        let req = |k: &str| -> Result<usize> { Ok(cfg.req_u64(&[k])? as usize) };
        let hidden = req("hidden_size")?;
        let n_head = req("num_attention_heads")?;
        Ok(Dims {
            hidden,
            n_layer: req("num_hidden_layers")?,
            n_head,
            n_head_kv: cfg
                .u64_of(&["num_key_value_heads"])?
                .map_or(n_head, |v| v as usize),
            head_dim: cfg
                .u64_of(&["head_dim"])?
                .map_or(hidden / n_head.max(1), |v| v as usize),
            vocab: req("vocab_size")?,
        })
    }
}

/// The embedding, final norm and (unless tied) LM head.
pub(crate) fn embeddings(cfg: &Config, d: &Dims, out: &mut TensorList) {
    out.add("model.embed_tokens.weight", &[d.vocab, d.hidden]);
    out.add("model.norm.weight", &[d.hidden]);
    if !cfg.bool_of("tie_word_embeddings").unwrap_or(false) {
        out.add("lm_head.weight", &[d.vocab, d.hidden]);
    }
}

/// Optional parts of a standard attention block.
#[derive(Default, Clone, Copy)]
pub(crate) struct AttnParts {
    /// Biases on q, k and v.
    pub qkv_bias: bool,
    /// A bias on o.
    pub o_bias: bool,
    /// Per-head RMS norms of q and k (Qwen3).
    pub qk_norm: bool,
}

/// Layer `l`'s two norms and standard attention (`self_attn.{q,k,v,o}_proj`).
pub(crate) fn attention(l: usize, d: &Dims, parts: AttnParts, out: &mut TensorList) {
    let p = format!("model.layers.{l}");
    out.add(format!("{p}.input_layernorm.weight"), &[d.hidden]);
    out.add(format!("{p}.post_attention_layernorm.weight"), &[d.hidden]);
    let (q, kv) = (d.n_head * d.head_dim, d.n_head_kv * d.head_dim);
    out.linear(
        &format!("{p}.self_attn.q_proj"),
        q,
        d.hidden,
        parts.qkv_bias,
    );
    out.linear(
        &format!("{p}.self_attn.k_proj"),
        kv,
        d.hidden,
        parts.qkv_bias,
    );
    out.linear(
        &format!("{p}.self_attn.v_proj"),
        kv,
        d.hidden,
        parts.qkv_bias,
    );
    out.linear(&format!("{p}.self_attn.o_proj"), d.hidden, q, parts.o_bias);
    if parts.qk_norm {
        out.add(format!("{p}.self_attn.q_norm.weight"), &[d.head_dim]);
        out.add(format!("{p}.self_attn.k_norm.weight"), &[d.head_dim]);
    }
}

/// A gated MLP `prefix.{gate,up,down}_proj` of width `ff`.
pub(crate) fn gated_mlp(prefix: &str, hidden: usize, ff: usize, bias: bool, out: &mut TensorList) {
    out.linear(&format!("{prefix}.gate_proj"), ff, hidden, bias);
    out.linear(&format!("{prefix}.up_proj"), ff, hidden, bias);
    out.linear(&format!("{prefix}.down_proj"), hidden, ff, bias);
}

/// The llama-family decoder: embeddings, attention and a dense gated MLP per layer.
pub(crate) fn dense_decoder(cfg: &Config, parts: AttnParts, mlp_bias: bool) -> Result<TensorList> {
    let d = Dims::of(cfg)?;
    let ff = cfg.req_u64(&["intermediate_size"])? as usize;
    let mut out = TensorList::default();
    embeddings(cfg, &d, &mut out);
    for l in 0..d.n_layer {
        attention(l, &d, parts, &mut out);
        gated_mlp(
            &format!("model.layers.{l}.mlp"),
            d.hidden,
            ff,
            mlp_bias,
            &mut out,
        );
    }
    Ok(out)
}
