//! Conversion against llama.cpp's own converter, for the fixtures stored in the repository
//! (`tests/fixtures/hf`, made by `scripts/make-hf-fixtures.py`; versions and hashes in its
//! `PROVENANCE.md`): each converts to the same file, byte for byte.

use std::path::PathBuf;

use dynquant_gguf::{Access, GgufFile, OutputTarget, Value, WriteOptions};
use dynquant_hf::tokenizer::VocabKind;
use dynquant_hf::{ConvertOptions, HfModel};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf")
}

/// Converts fixture `name`, checks it equals llama.cpp's output byte for byte (naming the
/// first differing key or tensor when not), returns the model.
fn converts_like_llama_cpp(name: &str) -> HfModel {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("{name}.gguf"));
    let m = HfModel::open(&fixtures().join(name), &ConvertOptions::default()).expect("open");
    m.write_gguf(&OutputTarget::Single(out.clone()), &WriteOptions::default())
        .expect("write");
    let reference = fixtures().join(format!("{name}.llamacpp.gguf"));
    let a = GgufFile::open(&out, Access::Pread).unwrap();
    let b = GgufFile::open(&reference, Access::Pread).unwrap();
    let keys = |f: &GgufFile| {
        f.header()
            .metadata
            .entries()
            .iter()
            .map(|(k, v)| format!("{k} = {:.80}", format!("{v:?}")))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&a), keys(&b), "{name}: metadata");
    let (ta, tb) = (&a.header().tensors, &b.header().tensors);
    let desc = |t: &dynquant_gguf::TensorInfo| format!("{} {:?} {}", t.name, t.shape, t.ggml_type);
    assert_eq!(
        ta.iter().map(desc).collect::<Vec<_>>(),
        tb.iter().map(desc).collect::<Vec<_>>(),
        "{name}: tensors"
    );
    for (i, t) in ta.iter().enumerate() {
        assert!(
            a.tensor_data(i).unwrap() == b.tensor_data(i).unwrap(),
            "{name}: {} data differs",
            t.name
        );
    }
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
        "{name}: same content but not the same bytes"
    );
    m
}

#[test]
fn gemma3_converts_byte_identical_to_llama_cpp() {
    let m = converts_like_llama_cpp("gemma3");
    assert_eq!(m.vocab_kind(), VocabKind::SentencePiece);
    let md = m.metadata();
    assert_eq!(
        md.get("general.architecture").and_then(Value::as_str),
        Some("gemma3")
    );
    // The norms are stored as offsets from 1; the converter writes 1 + w.
    let i = m
        .tensor_infos()
        .iter()
        .position(|t| t.name == "blk.0.attn_norm.weight")
        .unwrap();
    let mut w = vec![0f32; 64];
    m.read_rows(i, 0, &mut w).unwrap();
    let mean = w.iter().sum::<f32>() / 64.0;
    assert!((0.9..1.1).contains(&mean), "mean norm weight {mean}");
}

/// Planning from `config.json` alone gives the tensors llama.cpp's converter wrote.
#[test]
fn gemma3_config_inventory_matches_llama_cpp() {
    use std::collections::BTreeMap;
    let inv =
        dynquant_hf::config_inventory(&fixtures().join("gemma3"), dynquant_plan::MlaLayout::Mla)
            .unwrap();
    let ours: BTreeMap<_, _> = inv
        .tensors
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
        .collect();
    let gguf = GgufFile::open(fixtures().join("gemma3.llamacpp.gguf"), Access::Pread).unwrap();
    let theirs: BTreeMap<_, _> = gguf
        .header()
        .tensors
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
        .collect();
    assert_eq!(ours, theirs);
}

/// Kimi-K2's tokenizer (`tiktoken.model`, special ids from `tokenizer_config.json`, no
/// tokenizer.json) on the deepseek2 path: pre-tokenizer `kimi-k2`, merges recovered from the
/// ranks, named, reserved and padding ids.
#[test]
fn kimi_k2_tiktoken_converts_byte_identical_to_llama_cpp() {
    let m = converts_like_llama_cpp("kimi-k2");
    let md = m.metadata();
    assert_eq!(
        md.get("tokenizer.ggml.pre").and_then(Value::as_str),
        Some("kimi-k2")
    );
    assert!(md.get("tokenizer.ggml.add_bos_token").is_none());
}

/// Gemma 3 with `tokenizer.json` only: the vocabulary is padded to `vocab_size` (1024) while the
/// embedding keeps the tokenizer's 1000 + 4 rows, as the converter trims it.
#[test]
fn gemma3_bpe_converts_byte_identical_to_llama_cpp() {
    let m = converts_like_llama_cpp("gemma3-bpe");
    assert_eq!(m.vocab_kind(), VocabKind::Bpe);
    let embd = m
        .tensor_infos()
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(embd.shape, vec![64, 1004]);
}

/// gpt-oss: the MXFP4 expert blocks and scales are repacked into ggml MXFP4 (not dequantized)
/// and written first, gate and up split from their interleaved rows and bias columns, sinks
/// and biases F32, `general.file_type` MXFP4_MOE.
#[test]
fn gpt_oss_mxfp4_converts_byte_identical_to_llama_cpp() {
    let m = converts_like_llama_cpp("gpt-oss");
    let md = m.metadata();
    assert_eq!(
        md.get("general.file_type").and_then(Value::as_u64),
        Some(38)
    );
    let infos = m.tensor_infos();
    assert_eq!(infos[0].name, "blk.0.ffn_down_exps.weight");
    assert_eq!(infos[0].ggml_type, dynquant_gguf::GgmlType::MXFP4);
    // The f32 view of a repacked tensor is its MXFP4 values: finite, on the E2M1 grid times a
    // power of two, not all zero.
    let i = infos
        .iter()
        .position(|t| t.name == "blk.1.ffn_up_exps.weight")
        .unwrap();
    let mut w = vec![0f32; 64 * 64];
    m.read_rows(i, 64, &mut w).unwrap();
    assert!(w.iter().all(|v| v.is_finite()) && w.iter().any(|&v| v != 0.0));
}

/// Planning gpt-oss from `config.json` alone gives the tensors llama.cpp's converter wrote.
#[test]
fn gpt_oss_config_inventory_matches_llama_cpp() {
    use std::collections::BTreeMap;
    let inv =
        dynquant_hf::config_inventory(&fixtures().join("gpt-oss"), dynquant_plan::MlaLayout::Mla)
            .unwrap();
    let ours: BTreeMap<_, _> = inv
        .tensors
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
        .collect();
    let gguf = GgufFile::open(fixtures().join("gpt-oss.llamacpp.gguf"), Access::Pread).unwrap();
    let theirs: BTreeMap<_, _> = gguf
        .header()
        .tensors
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
        .collect();
    assert_eq!(ours, theirs);
}
