//! Hostile safetensors headers and tokenizer files fail fast in little memory: every length,
//! shape and token id they claim is checked before anything is allocated from it. Each test runs
//! its body again in a child process whose address space is capped (`ulimit -v`), so an
//! allocation sized by the claim aborts the child and fails the test, even where the kernel
//! would overcommit.

use std::process::Command;

use dynquant_gguf::Metadata;
use dynquant_hf::safetensors::Checkpoint;
use dynquant_hf::tokenizer::{write_vocab, VocabOptions};
use dynquant_hf::HfError;

/// The child's address-space cap: far below any claimed size, far above what parsing needs.
const CAP_KIB: u64 = 512 * 1024;
const CHILD_ENV: &str = "DYNQUANT_BOUNDED_MEMORY_CHILD";

/// In the parent, runs test `name` alone in a capped child and returns true (the caller returns);
/// in the child, returns false (the caller runs its body).
fn ran_capped(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {CAP_KIB} && exec \"$0\" --exact {name} --test-threads=1"
        ))
        .arg(exe)
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the capped child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} under a {CAP_KIB} KiB address space: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn safetensors(header_len: u64, header: &str) -> Vec<u8> {
    let mut out = header_len.to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&[0; 64]);
    out
}

fn open_single(bytes: &[u8]) -> Result<Checkpoint, HfError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    Checkpoint::open(dir.path(), None)
}

#[test]
fn safetensors_header_claiming_2_60_bytes() {
    if ran_capped("safetensors_header_claiming_2_60_bytes") {
        return;
    }
    let err = open_single(&safetensors(1 << 60, "{}"))
        .err()
        .unwrap_or_else(|| panic!("a 2^60-byte header"));
    assert!(matches!(err, HfError::BadSafetensors { .. }), "{err:?}");
}

#[test]
fn safetensors_tensor_claiming_2_80_elements() {
    if ran_capped("safetensors_tensor_claiming_2_80_elements") {
        return;
    }
    // Shapes whose product is 2^80 (overflows) and 2^40 (does not), over 16 bytes of data.
    for shape in ["[1099511627776,1099511627776]", "[1099511627776]"] {
        let header = format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":[0,16]}}}}"#);
        let bytes = safetensors(header.len() as u64, &header);
        let err = open_single(&bytes[..bytes.len() - 48])
            .err()
            .unwrap_or_else(|| panic!("a huge shape"));
        assert!(
            matches!(err, HfError::BadSafetensors { .. }),
            "{shape}: {err:?}"
        );
    }
}

fn vocab_error(tokenizer_json: &str, vocab_size: Option<u64>) -> HfError {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer_json).unwrap();
    let opts = VocabOptions {
        pre: Some("smollm".into()),
        ..VocabOptions::default()
    };
    write_vocab(dir.path(), vocab_size, &opts, &mut Metadata::new())
        .err()
        .unwrap_or_else(|| panic!("a hostile vocabulary"))
}

#[test]
fn tokenizer_json_claiming_token_id_2_24() {
    if ran_capped("tokenizer_json_claiming_token_id_2_24") {
        return;
    }
    // One token with the largest id MAX_VOCAB allows: a table indexed by it would hold 2^24
    // entries (hundreds of MB) for a 60-byte file.
    for (vocab, added) in [
        (r#"{"a":16777215}"#, "[]"),
        (
            r#"{"a":0}"#,
            r#"[{"id":16777215,"content":"<x>","special":true}]"#,
        ),
    ] {
        let json = format!(
            r#"{{"model":{{"type":"BPE","vocab":{vocab},"merges":[]}},"added_tokens":{added}}}"#
        );
        let err = vocab_error(&json, None);
        assert!(
            matches!(&err, HfError::Tokenizer(m) if m.contains("token id 16777215 out of range")),
            "{err:?}"
        );
    }
}

#[test]
fn config_vocab_size_2_40() {
    if ran_capped("config_vocab_size_2_40") {
        return;
    }
    let json = r#"{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}"#;
    let err = vocab_error(json, Some(1 << 40));
    assert!(
        matches!(&err, HfError::Tokenizer(m) if m.contains("vocab_size")),
        "{err:?}"
    );
}

#[test]
fn config_json_claiming_a_billion_layers_or_experts() {
    if ran_capped("config_json_claiming_a_billion_layers_or_experts") {
        return;
    }
    // The tensor list of a bare config is built from its counts alone (no file bounds it): a
    // few hundred bytes claiming 10^9 layers, 10^9 experts, or 512 x 1024 (each allowed alone)
    // must fail before the list is made.
    let base = r#""architectures":["DeepseekV3ForCausalLM"],"model_type":"deepseek_v3","hidden_size":64,"intermediate_size":128,"moe_intermediate_size":32,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":256,"q_lora_rank":32,"kv_lora_rank":16,"qk_nope_head_dim":8,"qk_rope_head_dim":8,"v_head_dim":8,"n_shared_experts":1,"num_experts_per_tok":2,"first_k_dense_replace":1,"rms_norm_eps":1e-6"#;
    for (layers, experts, what) in [
        (1_000_000_000u64, 8u64, "num_hidden_layers"),
        (4, 1_000_000_000, "expert count"),
        (512, 1024, "layers x routed experts"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(r#"{{{base},"num_hidden_layers":{layers},"n_routed_experts":{experts}}}"#),
        )
        .unwrap();
        let err = dynquant_hf::config_inventory(&path, dynquant_plan::MlaLayout::Mla)
            .err()
            .unwrap_or_else(|| panic!("{layers} layers x {experts} experts"));
        assert!(
            matches!(&err, HfError::BadJson { reason, .. } if reason.contains(what)),
            "{err:?}"
        );
    }
}
