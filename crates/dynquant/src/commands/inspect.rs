//! `inspect`: metadata, architecture summary, tensor table, per-type totals.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use dynquant_gguf::types::{file_type_by_id, GgmlType};
use dynquant_gguf::{keys, Array, GgufModel, Metadata, Value};
use serde_json::{json, Map, Number, Value as Json};

use super::human_bytes;
use crate::args::InspectArgs;

pub fn run(a: &InspectArgs) -> Result<()> {
    let model = GgufModel::open(&a.file, a.read.access())
        .with_context(|| format!("reading {}", a.file.display()))?;
    let out = if a.json {
        let mut s = serde_json::to_string_pretty(&to_json(&model))?;
        s.push('\n');
        s
    } else {
        to_text(&model, a.tensors)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Totals for one tensor type.
#[derive(Default)]
struct TypeTotal {
    count: usize,
    elements: u64,
    bytes: u64,
}

fn type_totals(model: &GgufModel) -> BTreeMap<GgmlType, TypeTotal> {
    let mut totals: BTreeMap<GgmlType, TypeTotal> = BTreeMap::new();
    for t in model.tensors() {
        let e = totals.entry(t.info.ggml_type).or_default();
        e.count += 1;
        e.elements += t.info.n_elements();
        e.bytes += t.info.n_bytes;
    }
    totals
}

fn bpw(bytes: u64, elements: u64) -> f64 {
    if elements == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / elements as f64
    }
}

/// A few headline facts read from the `{arch}.*` keys.
fn arch_summary(md: &Metadata) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let arch = md
        .get(keys::general::ARCHITECTURE)
        .and_then(Value::as_str)
        .unwrap_or("?");
    out.push(("architecture", arch.to_string()));
    if let Some(name) = md.get(keys::general::NAME).and_then(Value::as_str) {
        out.push(("name", name.to_string()));
    }
    if let Some(ft) = md.get(keys::general::FILE_TYPE).and_then(Value::as_u64) {
        let name = u32::try_from(ft)
            .ok()
            .and_then(file_type_by_id)
            .map_or("unknown", |f| f.name);
        out.push(("file type", format!("{name} ({ft})")));
    }
    let arch_keys = [
        ("layers", keys::arch::BLOCK_COUNT),
        ("embedding", keys::arch::EMBEDDING_LENGTH),
        ("feed-forward", keys::arch::FEED_FORWARD_LENGTH),
        ("heads", keys::arch::HEAD_COUNT),
        ("kv heads", keys::arch::HEAD_COUNT_KV),
        ("context", keys::arch::CONTEXT_LENGTH),
        ("experts", keys::arch::EXPERT_COUNT),
        ("experts used", keys::arch::EXPERT_USED_COUNT),
        ("shared experts", keys::arch::EXPERT_SHARED_COUNT),
        (
            "expert feed-forward",
            keys::arch::EXPERT_FEED_FORWARD_LENGTH,
        ),
        (
            "leading dense layers",
            keys::arch::LEADING_DENSE_BLOCK_COUNT,
        ),
    ];
    for (label, suffix) in arch_keys {
        if let Some(v) = md.get(&format!("{arch}.{suffix}")) {
            out.push((label, short_value(v)));
        }
    }
    if let Some(tokens) = md.get(keys::tokenizer::TOKENS).and_then(Value::as_array) {
        let model = md
            .get(keys::tokenizer::MODEL)
            .and_then(Value::as_str)
            .unwrap_or("?");
        out.push(("vocabulary", format!("{} ({model})", tokens.len())));
    }
    out
}

fn escape_short(s: &str, max: usize) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() > max {
        let cut: String = escaped.chars().take(max).collect();
        format!("\"{cut}\"… ({} bytes)", s.len())
    } else {
        format!("\"{escaped}\"")
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => escape_short(s, 60),
        Value::Array(a) => array_text(a),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
    }
}

/// Arrays are summarised: type, length and the first few elements.
fn array_text(a: &Array) -> String {
    const SHOWN: usize = 5;
    let items: Vec<String> = (0..a.len().min(SHOWN))
        .filter_map(|i| a.get(i))
        .map(|v| match v {
            Value::String(s) => escape_short(&s, 20),
            other => scalar_text(&other),
        })
        .collect();
    let more = if a.len() > SHOWN { ", …" } else { "" };
    format!(
        "[{}; {}] [{}{more}]",
        a.element_type(),
        a.len(),
        items.join(", ")
    )
}

fn short_value(v: &Value) -> String {
    scalar_text(v)
}

fn type_label(v: &Value) -> String {
    v.type_path()
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join("/")
}

fn to_text(model: &GgufModel, with_tensors: bool) -> String {
    let mut s = String::new();
    let first = &model.parts()[0];
    let file_bytes: u64 = model.parts().iter().map(|p| p.file_len()).sum();
    let _ = writeln!(
        s,
        "{}: GGUF v{}, {} ({} bytes){}",
        first.path().display(),
        first.header().version,
        human_bytes(file_bytes),
        file_bytes,
        if model.is_split() {
            format!(", {} shards", model.parts().len())
        } else {
            String::new()
        }
    );
    for (label, value) in arch_summary(model.metadata()) {
        let _ = writeln!(s, "  {label:<21} {value}");
    }
    if !first.header().layout_is_canonical() {
        let _ = writeln!(
            s,
            "  warning: tensor data is not laid out contiguously in header order; llama.cpp will reject this file"
        );
    }

    let md = model.metadata();
    let _ = writeln!(s, "\nmetadata ({} keys):", md.len());
    let key_w = md.entries().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in md.entries() {
        let _ = writeln!(s, "  {k:<key_w$}  {:<12} {}", type_label(v), scalar_text(v));
    }

    let totals = type_totals(model);
    let all_elements: u64 = totals.values().map(|t| t.elements).sum();
    let all_bytes: u64 = totals.values().map(|t| t.bytes).sum();
    if with_tensors {
        let _ = writeln!(s, "\ntensors ({}):", model.n_tensors());
        let name_w = model
            .tensors()
            .map(|t| t.info.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            s,
            "  {:<name_w$}  {:<8} {:<22} {:>12} {:>7}{}",
            "name",
            "type",
            "shape",
            "bytes",
            "bpw",
            if model.is_split() { "  shard" } else { "" }
        );
        for t in model.tensors() {
            let shape = format!("{:?}", t.info.shape);
            let _ = writeln!(
                s,
                "  {:<name_w$}  {:<8} {:<22} {:>12} {:>7.3}{}",
                t.info.name,
                t.info.ggml_type.name(),
                shape,
                t.info.n_bytes,
                t.info.bpw(),
                if model.is_split() {
                    format!("  {}", t.part + 1)
                } else {
                    String::new()
                }
            );
        }
    }
    let _ = writeln!(s, "\ntensor types ({} tensors):", model.n_tensors());
    let _ = writeln!(
        s,
        "  {:<8} {:>6} {:>14} {:>12} {:>7} {:>7}",
        "type", "count", "elements", "bytes", "share", "bpw"
    );
    for (ty, t) in &totals {
        let share = if all_bytes == 0 {
            0.0
        } else {
            100.0 * t.bytes as f64 / all_bytes as f64
        };
        let _ = writeln!(
            s,
            "  {:<8} {:>6} {:>14} {:>12} {:>6.2}% {:>7.3}",
            ty.name(),
            t.count,
            t.elements,
            human_bytes(t.bytes),
            share,
            bpw(t.bytes, t.elements)
        );
    }
    let _ = writeln!(
        s,
        "  total    {:>6} {:>14} {:>12} {:>7} {:>7.3}",
        model.n_tensors(),
        all_elements,
        human_bytes(all_bytes),
        "",
        bpw(all_bytes, all_elements)
    );
    s
}

fn float_json(x: f64) -> Json {
    match Number::from_f64(x) {
        Some(n) => Json::Number(n),
        None if x.is_nan() => Json::String("NaN".into()),
        None if x > 0.0 => Json::String("inf".into()),
        None => Json::String("-inf".into()),
    }
}

fn array_json(a: &Array) -> Json {
    match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::F32(v) => Json::Array(v.iter().map(|&x| float_json(x.into())).collect()),
        Array::F64(v) => Json::Array(v.iter().map(|&x| float_json(x)).collect()),
        Array::Array(v) => Json::Array(v.iter().map(array_json).collect()),
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(x) => json!(x),
        Value::F32(x) => float_json((*x).into()),
        Value::F64(x) => float_json(*x),
        Value::Array(a) => array_json(a),
    }
}

fn to_json(model: &GgufModel) -> Json {
    let first = &model.parts()[0];
    let h = first.header();
    let metadata: Vec<Json> = model
        .metadata()
        .entries()
        .iter()
        .map(|(k, v)| {
            json!({
                "key": k,
                "type": v.type_path().iter().map(|t| t.name()).collect::<Vec<_>>(),
                "value": value_json(v),
            })
        })
        .collect();
    let tensors: Vec<Json> = model
        .tensors()
        .map(|t| {
            let part = &model.parts()[t.part];
            json!({
                "name": t.info.name,
                "type": t.info.ggml_type.name(),
                "type_id": t.info.ggml_type.id(),
                "shape": t.info.shape,
                "offset": t.info.offset,
                "data_offset": part.header().data_offset + t.info.offset,
                "part": t.part,
                "n_elements": t.info.n_elements(),
                "n_bytes": t.info.n_bytes,
                "bpw": t.info.bpw(),
            })
        })
        .collect();
    let totals = type_totals(model);
    let mut types = Map::new();
    for (ty, t) in &totals {
        types.insert(
            ty.name().to_string(),
            json!({"count": t.count, "elements": t.elements, "bytes": t.bytes, "bpw": bpw(t.bytes, t.elements)}),
        );
    }
    let elements: u64 = totals.values().map(|t| t.elements).sum();
    let bytes: u64 = totals.values().map(|t| t.bytes).sum();
    let summary: Map<String, Json> = arch_summary(model.metadata())
        .into_iter()
        .map(|(k, v)| (k.to_string(), Json::String(v)))
        .collect();
    json!({
        "path": first.path().display().to_string(),
        "parts": model.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "file_size": first.file_len(),
        "layout_canonical": h.layout_is_canonical(),
        "summary": summary,
        "metadata": metadata,
        "tensors": tensors,
        "types": types,
        "n_tensors": model.n_tensors(),
        "n_elements": elements,
        "tensor_bytes": bytes,
        "bpw": bpw(bytes, elements),
    })
}
