//! GLM-4.5-style `Glm4MoeForCausalLM` against llama.cpp's own converter (the repository fixture
//! `tests/fixtures/hf/glm4moe`, made by `scripts/make-hf-fixtures.py`; see its `PROVENANCE.md`):
//! byte-identical output, NextN layer kept, GLM's named special tokens; planning from
//! `config.json` alone gives the same tensors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dynquant_gguf::{Access, GgufFile, OutputTarget, Value, WriteOptions};
use dynquant_hf::{ConvertOptions, HfError, HfModel};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf")
}

#[test]
fn glm4moe_converts_byte_identical_to_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("glm4moe.gguf");
    let m = HfModel::open(&fixtures().join("glm4moe"), &ConvertOptions::default()).expect("open");
    m.write_gguf(&OutputTarget::Single(out.clone()), &WriteOptions::default())
        .expect("write");
    let reference = fixtures().join("glm4moe.llamacpp.gguf");
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
    assert_eq!(keys(&a), keys(&b), "metadata");
    let desc = |t: &dynquant_gguf::TensorInfo| format!("{} {:?} {}", t.name, t.shape, t.ggml_type);
    let (ta, tb) = (&a.header().tensors, &b.header().tensors);
    assert_eq!(
        ta.iter().map(desc).collect::<Vec<_>>(),
        tb.iter().map(desc).collect::<Vec<_>>(),
        "tensors"
    );
    for (i, t) in ta.iter().enumerate() {
        assert!(
            a.tensor_data(i).unwrap() == b.tensor_data(i).unwrap(),
            "{} data differs",
            t.name
        );
    }
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
        "same content but not the same bytes"
    );
    let md = m.metadata();
    let u = |k: &str| md.get(k).and_then(Value::as_u64);
    assert_eq!(u("glm4moe.block_count"), Some(4), "3 layers + 1 NextN");
    assert_eq!(u("glm4moe.nextn_predict_layers"), Some(1));
    assert_eq!(u("glm4moe.rope.dimension_count"), Some(16));
    assert_eq!(u("tokenizer.ggml.bos_token_id"), Some(1002), "[gMASK]");
    assert_eq!(u("tokenizer.ggml.eot_token_id"), Some(1007), "<|user|>");
    assert_eq!(
        u("tokenizer.ggml.eom_token_id"),
        Some(1009),
        "<|observation|>"
    );
    assert!(m
        .tensor_infos()
        .iter()
        .any(|t| t.name == "blk.3.nextn.shared_head_head.weight"));
}

#[test]
fn glm4moe_config_inventory_matches_llama_cpp() {
    let inv =
        dynquant_hf::config_inventory(&fixtures().join("glm4moe"), dynquant_plan::MlaLayout::Mla)
            .unwrap();
    let ours: BTreeMap<_, _> = inv
        .tensors
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
        .collect();
    let gguf = GgufFile::open(fixtures().join("glm4moe.llamacpp.gguf"), Access::Pread).unwrap();
    let theirs: BTreeMap<_, _> = gguf
        .header()
        .tensors
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
        .collect();
    assert_eq!(ours, theirs);
}

/// A GLM tokenizer without `[gMASK]` cannot be converted (the converter fails on the lookup).
#[test]
fn glm4moe_without_its_special_tokens_is_a_tokenizer_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("glm4moe");
    std::fs::create_dir(&dir).unwrap();
    for f in std::fs::read_dir(fixtures().join("glm4moe")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let tj = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj).unwrap();
    std::fs::write(&tj, text.replace("[gMASK]", "[gMASK_gone]")).unwrap();
    let Err(e) = HfModel::open(&dir, &ConvertOptions::default()) else {
        panic!("a GLM tokenizer without [gMASK] converted");
    };
    assert!(
        matches!(e, HfError::Tokenizer(ref m) if m.contains("[gMASK]")),
        "{e}"
    );
}

/// `ud-iq1_s` gives every tensor a role: the leading dense layer's FFN, the shared expert and
/// the expert bias have theirs, and the NextN block is `nextn` throughout, so none of its
/// matrices takes a type that needs importance data (llama.cpp never runs that block).
#[test]
fn glm4moe_plans_with_a_role_for_every_tensor() {
    use dynquant_gguf::types::{GgmlType, ImatrixNeed};
    use dynquant_plan::preset::Preset;
    use dynquant_plan::{PlanOptions, Role};
    let m = HfModel::open(&fixtures().join("glm4moe"), &ConvertOptions::default()).unwrap();
    let preset = Preset::named("ud-iq1_s").unwrap().unwrap();
    let p = preset
        .plan(&m.inventory(), &PlanOptions::default())
        .unwrap();
    let role = |n: &str| p.tensors.iter().find(|t| t.name == n).unwrap().role;
    assert_eq!(role("blk.0.ffn_down.weight"), Role::FfnDown);
    assert_eq!(role("blk.1.ffn_up_shexp.weight"), Role::SharedUp);
    assert_eq!(role("blk.2.exp_probs_b.bias"), Role::RouterBias);
    assert_eq!(role("blk.2.ffn_gate_exps.weight"), Role::ExpertGate);
    for t in &p.tensors {
        assert_ne!(t.role, Role::Other, "{} has no role", t.name);
        if t.layer == Some(3) && t.shape.len() >= 2 && t.role != Role::Router {
            assert_eq!(t.role, Role::Nextn, "{}", t.name);
        }
        if t.role == Role::Nextn {
            for ty in [t.requested, t.target] {
                assert_ne!(
                    ty.info().imatrix,
                    ImatrixNeed::Required,
                    "{} planned as {ty}",
                    t.name
                );
            }
        }
    }
    // The main MoE layers do get the 1.58-bit experts (their rows fit IQ1_S's 256 blocks only
    // after llama.cpp's shape fallback, so the request is what the recipe says).
    let gate = p
        .tensors
        .iter()
        .find(|t| t.name == "blk.1.ffn_gate_exps.weight")
        .unwrap();
    assert_eq!(gate.requested, GgmlType::IQ1_S);
}
