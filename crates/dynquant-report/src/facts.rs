//! What a GGUF file is, read from its header alone: size, bits per weight, the types of its
//! tensors by layer and role (the "bits map"), what it keeps at higher precision than most of
//! its weights, and whether two files are the same model.

use std::collections::BTreeMap;

use dynquant_engine::config::Config;
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{GgufModel, Value};
use dynquant_plan::role::{parse_name, Role};
use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};

/// Context length at which [`ModelFacts::load_bytes`] counts the KV cache.
pub const LOAD_CTX: u64 = 4096;

/// A file's facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// File name (the first shard's for a split set).
    pub file: String,
    /// Bytes on disk, every shard together.
    pub size_bytes: u64,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Elements of every tensor.
    pub n_elements: u64,
    /// Bits per weight over every tensor (tensor bits / elements).
    pub bpw: f64,
    /// The type holding most of the weights.
    pub main_type: String,
    /// Roles stored (somewhere) at more bits per weight than the main type, with their types.
    pub kept: Vec<KeptRole>,
    /// Bits per weight by layer and role (matrices only; norms and biases left out).
    pub bits: Vec<BitsCell>,
    /// Memory to load it: tensor bytes plus an f16 KV cache of [`LOAD_CTX`] tokens.
    pub load_bytes: u64,
}

/// A role kept at higher precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptRole {
    /// The role's name (`output`, `attn_v`, ...).
    pub role: String,
    /// Its types, comma-separated, most elements first.
    pub types: String,
}

/// One cell of the bits map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BitsCell {
    /// Block index; `None` for tensors outside the blocks (embeddings, output).
    pub layer: Option<u32>,
    /// Role name.
    pub role: String,
    /// Bits per weight of the role's tensors in that layer.
    pub bpw: f64,
    /// Their types, comma-separated.
    pub types: String,
}

fn type_bpw(t: GgmlType) -> f64 {
    t.type_size() as f64 * 8.0 / t.block_size() as f64
}

/// Bytes of an f16 KV cache per token for a configuration (llama.cpp's layout: K and V per KV
/// head; for multi-head latent attention, the latent and the RoPE part).
pub fn kv_bytes_per_token(c: &Config) -> u64 {
    let per_layer = match &c.mla {
        Some(m) => (m.kv_lora_rank + m.qk_rope) as u64,
        None => (c.n_head_kv * (c.head_dim_k + c.head_dim_v)) as u64,
    };
    per_layer * c.n_layer as u64 * 2
}

impl ModelFacts {
    /// The facts of `model`, named `file`; `kv_per_token` from [`kv_bytes_per_token`].
    pub fn of(model: &GgufModel, file: &str, kv_per_token: u64) -> Result<ModelFacts> {
        let mut size_bytes = 0u64;
        for p in model.paths() {
            size_bytes += std::fs::metadata(&p)
                .map_err(|e| ReportError::Invalid(format!("{}: {e}", p.display())))?
                .len();
        }
        let mut n_elements = 0u64;
        let mut tensor_bytes = 0u64;
        let mut by_type: BTreeMap<GgmlType, u64> = BTreeMap::new();
        // (layer, role) -> (bits, elements, type -> elements)
        type Cell = (u64, u64, BTreeMap<GgmlType, u64>);
        let mut cells: BTreeMap<(Option<u32>, String), Cell> = BTreeMap::new();
        let mut roles: BTreeMap<String, BTreeMap<GgmlType, u64>> = BTreeMap::new();
        for t in model.tensors() {
            let i = t.info;
            let n = i.n_elements();
            n_elements += n;
            tensor_bytes += i.n_bytes;
            let (role, layer) = parse_name(&i.name);
            if matches!(role, Role::Norm | Role::Bias | Role::RouterBias) || i.shape.len() < 2 {
                continue;
            }
            *by_type.entry(i.ggml_type).or_default() += n;
            let c = cells
                .entry((layer, role.name().to_string()))
                .or_insert_with(|| (0, 0, BTreeMap::new()));
            c.0 += i.n_bytes * 8;
            c.1 += n;
            *c.2.entry(i.ggml_type).or_default() += n;
            *roles
                .entry(role.name().to_string())
                .or_default()
                .entry(i.ggml_type)
                .or_default() += n;
        }
        let types_of = |m: &BTreeMap<GgmlType, u64>| {
            let mut v: Vec<(&GgmlType, &u64)> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.name().cmp(b.0.name())));
            v.iter()
                .map(|(t, _)| t.name().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let main = by_type
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.name().cmp(a.0.name())))
            .map(|(t, _)| *t);
        let kept = match main {
            None => Vec::new(),
            Some(main) => roles
                .iter()
                .filter(|(_, m)| m.keys().any(|t| type_bpw(*t) > type_bpw(main) + 1e-9))
                .map(|(r, m)| KeptRole {
                    role: r.clone(),
                    types: types_of(m),
                })
                .collect(),
        };
        let bits = cells
            .into_iter()
            .map(|((layer, role), (bits, n, types))| BitsCell {
                layer,
                role,
                bpw: if n == 0 { 0.0 } else { bits as f64 / n as f64 },
                types: types_of(&types),
            })
            .collect();
        Ok(ModelFacts {
            file: file.to_string(),
            size_bytes,
            tensor_bytes,
            n_elements,
            bpw: if n_elements == 0 {
                0.0
            } else {
                tensor_bytes as f64 * 8.0 / n_elements as f64
            },
            main_type: main.map_or("none".into(), |t| t.name().to_string()),
            kept,
            bits,
            load_bytes: tensor_bytes + kv_per_token * LOAD_CTX,
        })
    }
}

fn arch(model: &GgufModel) -> String {
    model
        .metadata()
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// Refuses `quant` unless it is a quantization of `base`: the same architecture, the same
/// tensors (names and shapes) and the same tokenizer.
pub fn check_same_model(
    base: &GgufModel,
    base_file: &str,
    quant: &GgufModel,
    quant_file: &str,
) -> Result<()> {
    let fail = |why: String| ReportError::NotSameModel {
        quant: quant_file.to_string(),
        base: base_file.to_string(),
        why,
    };
    let (ab, aq) = (arch(base), arch(quant));
    if ab != aq {
        return Err(fail(format!("architecture {aq}, the base's is {ab}")));
    }
    if dynquant_engine::kld::tokenizer_sha256(base) != dynquant_engine::kld::tokenizer_sha256(quant)
    {
        return Err(fail("the tokenizer (vocabulary) differs".into()));
    }
    let shapes = |m: &GgufModel| -> BTreeMap<String, Vec<u64>> {
        m.tensors()
            .map(|t| (t.info.name.clone(), t.info.shape.clone()))
            .collect()
    };
    let (sb, sq) = (shapes(base), shapes(quant));
    if let Some((name, _)) = sb.iter().find(|(n, _)| !sq.contains_key(*n)) {
        return Err(fail(format!("it has no tensor {name}")));
    }
    if let Some((name, _)) = sq.iter().find(|(n, _)| !sb.contains_key(*n)) {
        return Err(fail(format!("the base has no tensor {name}")));
    }
    if let Some((name, shape)) = sb.iter().find(|(n, s)| sq[*n] != **s) {
        return Err(fail(format!(
            "tensor {name} has shape {:?}, the base's is {shape:?}",
            sq[name]
        )));
    }
    Ok(())
}
