//! The repository's Hugging Face fixtures (`tests/fixtures/hf`, converted by llama.cpp's own
//! converter) through the rest of the pipeline, against real llama.cpp: `dynquant imatrix` of
//! each is accepted by llama.cpp's quantizer (`llama_model_quantize`, which refuses an entry of
//! the wrong size) and changes what it writes (kimi-k2's text split by its `kimi-k2`
//! pre-tokenizer); for glm4moe, `dynquant run` generates llama.cpp's
//! greedy tokens and the `ud-iq1_s` quantization of the folder (planned with that imatrix)
//! loads and generates in llama.cpp.

mod common;

use std::path::{Path, PathBuf};

use common::{dynquant, ok, oracle};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::llama_quantize::LlamaLib;
use dynquant_testkit::oracle::shared_dir;

/// `LLAMA_FTYPE_MOSTLY_Q4_K_M` (llama.h).
const Q4_K_M: i32 = 15;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf")
}

fn tensor_bytes(path: &Path, name: &str) -> Vec<u8> {
    let g = GgufModel::open(path, Access::Mmap).expect("open");
    let t = g.tensors().find(|t| t.info.name == name).expect("tensor");
    g.tensor_data(&t).expect("data").into_owned()
}

/// `dynquant imatrix` of fixture `name` (4 chunks of 128 tokens of groups_merged.txt), then
/// llama.cpp's Q4_K_M quantization with and without it: accepted, and `changed` comes out
/// different. Every tensor llama.cpp finds no entry for must be `token_embd` (a row lookup),
/// `output` (llama-imatrix skips it by default, and so do we) or one `uncovered` accepts.
/// Returns the imatrix path.
fn imatrix_is_accepted(
    dir: &Path,
    name: &str,
    changed: &str,
    uncovered: impl Fn(&str) -> bool,
) -> PathBuf {
    let model = fixtures().join(format!("{name}.llamacpp.gguf"));
    let text = shared_dir().join("data/text/groups_merged.txt");
    let im_path = dir.join(format!("{name}.imatrix.gguf"));
    ok(
        dynquant(args![
            "imatrix", model, "--text", text, "-o", im_path, "--ctx", "128", "--chunks", "4"
        ]),
        "imatrix",
    );
    let im = Imatrix::read(&im_path).expect("imatrix");
    let lib = LlamaLib::from_env().expect("libllama");
    let mut p = lib.default_params().expect("params");
    p.nthread = 1;
    p.ftype = Q4_K_M;
    // gpt-oss's MXFP4 experts: llama.cpp refuses to requantize them unless asked
    p.allow_requantize = true;
    let (with, without) = (dir.join("with.gguf"), dir.join("without.gguf"));
    let log = lib
        .quantize(&model, &with, p, Some(&im))
        .unwrap_or_else(|e| panic!("{name}: llama.cpp refuses our imatrix: {e}"));
    lib.quantize(&model, &without, p, None)
        .expect("llama.cpp quantize");
    assert_ne!(
        tensor_bytes(&with, changed),
        tensor_bytes(&without, changed),
        "{name}: {changed} ignores the imatrix"
    );
    let missing: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("did not find weights for ").nth(1))
        .map(str::trim)
        .filter(|&t| t != "token_embd.weight" && t != "output.weight" && !uncovered(t))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: no imatrix entry for {missing:?}"
    );
    im_path
}

#[test]
fn glm4moe_imatrix_quantize_and_run_agree_with_llamacpp() {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // The NextN block (blk.3) never runs, in llama.cpp as here: no entries for it.
    let im = imatrix_is_accepted(dir.path(), "glm4moe", "blk.1.ffn_up_exps.weight", |t| {
        t.starts_with("blk.3.")
    });
    let model = fixtures().join("glm4moe.llamacpp.gguf");
    common::check_greedy_run(&o, &model);
    // ud-iq1_s from the safetensors folder with that imatrix: loads and generates in llama.cpp.
    let out = dir.path().join("glm4moe-ud-iq1_s.gguf");
    ok(
        dynquant(args![
            "quantize",
            fixtures().join("glm4moe"),
            out,
            "--recipe",
            "ud-iq1_s",
            "--imatrix",
            im
        ]),
        "quantize",
    );
    let tokens = o.greedy_tokens(&out, 8, &["The capital of France is"]);
    assert_eq!(tokens[0].len(), 8, "{tokens:?}");
}

#[test]
fn gemma3_imatrix_is_accepted_by_llamacpp() {
    if oracle().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    imatrix_is_accepted(dir.path(), "gemma3", "blk.0.ffn_down.weight", |_| false);
}

#[test]
fn kimi_k2_imatrix_is_accepted_by_llamacpp() {
    if oracle().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    imatrix_is_accepted(dir.path(), "kimi-k2", "blk.1.ffn_up_exps.weight", |_| false);
}

/// gpt-oss: the imatrix of its MXFP4 experts and biased attention is accepted too.
#[test]
fn gpt_oss_imatrix_is_accepted_by_llamacpp() {
    if oracle().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    imatrix_is_accepted(dir.path(), "gpt-oss", "blk.0.attn_q.weight", |_| false);
}

/// GLM-4.5's own pre-tokenizer name, `glm4` (real GLM tokenizers hash to it): the fixture
/// converted with `--tokenizer-pre glm4` tokenizes text as llama.cpp does, special tokens
/// included, and adds no BOS.
#[test]
fn glm4_pre_tokenizer_tokenizes_as_llamacpp() {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("glm4moe-glm4.gguf");
    ok(
        dynquant(args![
            "convert",
            fixtures().join("glm4moe"),
            model,
            "--tokenizer-pre",
            "glm4"
        ]),
        "convert",
    );
    let wiki = std::fs::read_to_string(shared_dir().join("data/text/wiki.test.raw")).expect("text");
    let cut = wiki
        .char_indices()
        .nth(30_000)
        .map_or(wiki.len(), |(i, _)| i);
    let text = format!(
        "[gMASK]<sop><|user|>\nIt's 2024: don't   stop...\r\n{}<|assistant|>",
        &wiki[..cut]
    );
    let text_path = dir.path().join("text.txt");
    std::fs::write(&text_path, &text).expect("write");
    let theirs: serde_json::Value = serde_json::from_str(&o.node(
        "tokenize.mjs",
        &[
            model.as_os_str(),
            text_path.as_os_str(),
            "--special".as_ref(),
        ],
    ))
    .expect("json");
    let theirs: Vec<u32> = theirs["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("id") as u32)
        .collect();
    let gguf = GgufModel::open(&model, Access::Mmap).expect("open");
    let tok = dynquant_tokenizer::Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let ours = tok.encode(&text, true, true).expect("encode");
    assert!(theirs.len() > 5000, "{}", theirs.len());
    assert_eq!(
        ours[..3],
        [1002, 1004, 1007],
        "specials split out, no BOS added"
    );
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!(
            "first difference at token {i}: ours {:?}, llama.cpp {:?}",
            &ours[i..(i + 5).min(ours.len())],
            &theirs[i..(i + 5).min(theirs.len())]
        );
    }
    assert_eq!(ours.len(), theirs.len());
}
