//! Malformed inputs give typed errors that name the problem, never panics: bad safetensors
//! headers, truncated data, missing shards, index/shard disagreements, shapes that contradict
//! config.json, unknown architectures, FP8 weights without (or with wrong) block scales.

use std::path::Path;

use dynquant_hf::{ConvertOptions, HfError, HfModel};
use safetensors::tensor::{serialize_to_file, TensorView};
use safetensors::{Dtype, SafeTensors};

fn golden(name: &str) -> std::path::PathBuf {
    dynquant_testkit::oracle::shared_dir()
        .join("golden/hf")
        .join(name)
}

/// A writable copy of a fixture folder.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(golden(name)).unwrap() {
        let e = e.unwrap();
        let dst = tmp.path().join(e.file_name());
        std::fs::copy(e.path(), &dst).unwrap();
        let mut p = std::fs::metadata(&dst).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        p.set_readonly(false);
        std::fs::set_permissions(&dst, p).unwrap();
    }
    tmp
}

fn open(dir: &Path) -> Result<HfModel, HfError> {
    HfModel::open(dir, &ConvertOptions::default())
}

fn err(dir: &Path) -> HfError {
    match open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e,
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites `model.safetensors` keeping the tensors `keep` accepts.
fn rewrite_weights(dir: &Path, keep: impl Fn(&str) -> bool) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| keep(n)).collect();
    std::fs::remove_file(&p).unwrap();
    serialize_to_file(views, None, &p).unwrap();
}

#[test]
fn bad_safetensors_headers_are_typed_errors() {
    let dir = copy_fixture("qwen3");
    let p = dir.path().join("model.safetensors");
    let good = std::fs::read(&p).unwrap();
    // Garbage, a header length past the end, a JSON header that is not safetensors, a file cut
    // inside its data, a header claiming offsets beyond the data.
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", b"abc".to_vec()),
        ("garbage", b"this is not a safetensors file at all".to_vec()),
        ("huge header length", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            b
        }),
        ("truncated data", good[..good.len() - 1000].to_vec()),
        ("not json", {
            let mut b = good.clone();
            b[8] = b'#';
            b
        }),
    ];
    let json = r#"{"x":{"dtype":"BF16","shape":[4,4],"data_offsets":[0,64]}}"#;
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.extend_from_slice(&[0u8; 16]);
    cases.push(("offsets past the data", b));
    for (what, bytes) in cases {
        std::fs::write(&p, &bytes).unwrap();
        let e = err(dir.path());
        assert!(matches!(e, HfError::BadSafetensors { .. }), "{what}: {e}");
        assert!(e.to_string().contains("model.safetensors"), "{what}: {e}");
    }
    assert!(n > 0);
}

#[test]
fn header_byte_flips_never_panic() {
    let dir = copy_fixture("llama-bpe");
    let p = dir.path().join("model.safetensors");
    let good = std::fs::read(&p).unwrap();
    let n = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut b = good.clone();
        let at = (state as usize) % n;
        b[at] = (state >> 32) as u8;
        std::fs::write(&p, &b).unwrap();
        // Any outcome but a panic: a flip may still leave a valid file.
        let _ = open(dir.path());
    }
}

#[test]
fn missing_shard_and_index_disagreements() {
    let dir = copy_fixture("deepseek-v3");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = err(dir.path());
    assert!(
        matches!(&e, HfError::MissingShard { shard, .. } if shard == "model-00002-of-00002.safetensors"),
        "{e}"
    );

    let dir = copy_fixture("deepseek-v3");
    let idx = dir.path().join("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    v["weight_map"]["model.layers.9.mlp.gate.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&idx, v.to_string()).unwrap();
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::IndexMismatch(ref m) if m.contains("model.layers.9.mlp.gate.weight")),
        "{e}"
    );

    let dir = copy_fixture("deepseek-v3");
    std::fs::write(
        idx_of(dir.path()),
        r#"{"weight_map": {"a": "../x.safetensors"}}"#,
    )
    .unwrap();
    assert!(matches!(err(dir.path()), HfError::BadJson { .. }));

    let dir = copy_fixture("qwen2");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(matches!(err(dir.path()), HfError::NoWeights(_)));
}

fn idx_of(d: &Path) -> std::path::PathBuf {
    d.join("model.safetensors.index.json")
}

#[test]
fn config_that_contradicts_the_weights() {
    let dir = copy_fixture("llama-bpe");
    edit_config(dir.path(), |c| c["hidden_size"] = 512.into());
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::ShapeMismatch { ref name, .. } if name == "lm_head.weight"),
        "{e}"
    );

    let dir = copy_fixture("llama-bpe");
    edit_config(dir.path(), |c| c["num_hidden_layers"] = 1.into());
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::IndexMismatch(ref m) if m.contains("layer 1")),
        "{e}"
    );

    let dir = copy_fixture("llama-bpe");
    edit_config(dir.path(), |c| c["num_attention_heads"] = 3.into());
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::ShapeMismatch { ref name, .. } if name.ends_with("q_proj.weight")),
        "{e}"
    );

    let dir = copy_fixture("qwen3moe");
    edit_config(dir.path(), |c| c["num_experts"] = 4.into());
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::IndexMismatch(ref m) if m.contains("expert")),
        "{e}"
    );

    let dir = copy_fixture("qwen3moe");
    rewrite_weights(dir.path(), |n| {
        n != "model.layers.1.mlp.experts.5.up_proj.weight"
    });
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::IndexMismatch(ref m) if m.contains("layer 1 has 23 of its 24")),
        "{e}"
    );

    let dir = copy_fixture("deepseek-v3-fp8");
    edit_config(dir.path(), |c| c["v_head_dim"] = 16.into());
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::ShapeMismatch { ref name, .. } if name.ends_with("kv_b_proj.weight")),
        "{e}"
    );

    let dir = copy_fixture("qwen2");
    edit_config(dir.path(), |c| c["vocab_size"] = 999.into());
    assert!(matches!(err(dir.path()), HfError::ShapeMismatch { .. }));
}

#[test]
fn unknown_architecture_and_bad_config() {
    let dir = copy_fixture("qwen2");
    edit_config(dir.path(), |c| {
        c["architectures"] = serde_json::json!(["FalconH9ForCausalLM"]);
        c["model_type"] = "falcon_h9".into();
    });
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::UnknownArchitecture(ref a) if a == "FalconH9ForCausalLM"),
        "{e}"
    );

    let dir = copy_fixture("qwen2");
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert!(matches!(err(dir.path()), HfError::BadJson { .. }));

    let dir = copy_fixture("qwen2");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(matches!(err(dir.path()), HfError::BadJson { .. }));

    let dir = copy_fixture("qwen2");
    edit_config(dir.path(), |c| c["num_attention_heads"] = "four".into());
    assert!(
        matches!(err(dir.path()), HfError::BadJson { ref reason, .. } if reason.contains("num_attention_heads"))
    );

    let dir = copy_fixture("qwen2");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert!(matches!(err(dir.path()), HfError::Tokenizer(_)));

    let dir = copy_fixture("llama-spm");
    std::fs::write(dir.path().join("tokenizer.model"), [0x0a, 0x7f, 1, 2]).unwrap();
    assert!(matches!(err(dir.path()), HfError::Tokenizer(ref m) if m.contains("SentencePiece")));
}

#[test]
fn fp8_without_or_with_wrong_block_scales() {
    let dir = copy_fixture("deepseek-v3-fp8");
    let w = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
    rewrite_weights(dir.path(), |n| n != format!("{w}_scale_inv"));
    let e = err(dir.path());
    assert!(matches!(e, HfError::MissingScale(ref n) if n == w), "{e}");

    // A scale of the wrong shape (the block size config.json declares does not fit).
    let dir = copy_fixture("deepseek-v3-fp8");
    edit_config(dir.path(), |c| {
        c["quantization_config"]["weight_block_size"] = serde_json::json!([64, 64])
    });
    assert!(matches!(err(dir.path()), HfError::BadScale { .. }));

    // A scale without its weight.
    let dir = copy_fixture("deepseek-v3-fp8");
    rewrite_weights(dir.path(), |n| n != w);
    assert!(matches!(err(dir.path()), HfError::MissingTensor(ref n) if n == w));

    // Other quantization methods are refused by name.
    let dir = copy_fixture("deepseek-v3-fp8");
    edit_config(dir.path(), |c| {
        c["quantization_config"]["quant_method"] = "gptq".into()
    });
    assert!(
        matches!(err(dir.path()), HfError::BadJson { ref reason, .. } if reason.contains("gptq"))
    );
}

#[test]
fn unsupported_dtypes_are_named() {
    let dir = copy_fixture("qwen3");
    let p = dir.path().join("model.safetensors");
    let data = [0u8; 8 * 4 * 4];
    let view = TensorView::new(Dtype::I32, vec![8, 4], &data[..]).unwrap();
    std::fs::remove_file(&p).unwrap();
    serialize_to_file(
        vec![("model.embed_tokens.weight".to_string(), view)],
        None,
        &p,
    )
    .unwrap();
    let e = err(dir.path());
    assert!(
        matches!(e, HfError::UnsupportedDtype { ref dtype, .. } if dtype.contains("I32")),
        "{e}"
    );
}
