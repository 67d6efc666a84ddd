//! The evaluation commands on deepseek2 (`synth-deepseek2-mla`: multi-head latent attention with
//! per-head `attn_k_b` / `attn_v_b`, YaRN, a leading dense block, sigmoid group-limited MoE),
//! unchanged: `imatrix` writes llama-imatrix's entries for the batched per-head products (one
//! entry of `ne0 * n_head` sums with a single count) that llama.cpp's quantizer takes,
//! `perplexity` follows llama.cpp's, `kld` of the model against its own base is 0, and `run`
//! generates llama.cpp's greedy tokens.

mod common;

use common::{dynquant, ok, oracle};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::llama_quantize::LlamaLib;
use dynquant_testkit::oracle::shared_dir;

/// `LLAMA_FTYPE_MOSTLY_Q4_K_M` (llama.h).
const Q4_K_M: i32 = 15;

/// The stored bytes of tensor `name` in the GGUF at `path`.
fn tensor_bytes(path: &std::path::Path, name: &str) -> Vec<u8> {
    let g = GgufModel::open(path, Access::Mmap).expect("open");
    let t = g.tensors().find(|t| t.info.name == name).expect("tensor");
    g.tensor_data(&t).expect("data").into_owned()
}

#[test]
fn every_evaluation_command_runs_deepseek2() {
    let Some(o) = oracle() else { return };
    let model = o.test_models().dir.join("synth-deepseek2-mla.gguf");
    let text = shared_dir().join("data/text/wiki.test.raw");
    let dir = tempfile::tempdir().expect("tempdir");

    // imatrix over one chunk of 64 tokens
    let im_path = dir.path().join("ds2.imatrix.gguf");
    ok(
        dynquant(args![
            "imatrix", model, "--text", text, "-o", im_path, "--ctx", "64", "--chunks", "1"
        ]),
        "imatrix",
    );
    let im = Imatrix::read(&im_path).expect("imatrix");
    // attn_k_b: 4 heads of {128 nope -> 256 latent}; attn_v_b: 4 heads of {256 -> 128}
    for (name, ne0) in [("attn_k_b", 128), ("attn_v_b", 256)] {
        for il in 0..4 {
            let e = im
                .get(&format!("blk.{il}.{name}.weight"))
                .unwrap_or_else(|| panic!("blk.{il}.{name}"));
            assert_eq!((e.n_per_mat, e.counts.clone()), (ne0 * 4, vec![64.0]));
            // every head saw activations of its own
            let per: Vec<f32> = e
                .in_sum2
                .chunks_exact(ne0)
                .map(|h| h.iter().sum())
                .collect();
            assert!(per.iter().all(|&s| s > 0.0), "{name} {il}: {per:?}");
            assert!(per.windows(2).any(|w| w[0] != w[1]), "{name} {il}: {per:?}");
        }
    }
    for name in [
        "blk.0.attn_q_a.weight",
        "blk.0.attn_q_b.weight",
        "blk.0.attn_kv_a_mqa.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_up.weight",
        "blk.1.ffn_gate_inp.weight",
        "blk.1.ffn_up_shexp.weight",
    ] {
        assert_eq!(im.get(name).expect(name).counts, vec![64.0], "{name}");
    }
    assert_eq!(
        im.get("blk.1.ffn_up_exps.weight").expect("exps").n_mat(),
        16
    );

    // llama.cpp's quantizer takes it (a wrong size is an error there) and uses the per-head
    // vectors: attn_k_b comes out different from a quantization without imatrix.
    if std::env::var_os("LLAMA_LIB").is_some() {
        let lib = LlamaLib::from_env().expect("libllama");
        let mut p = lib.default_params().expect("params");
        p.nthread = 1;
        p.ftype = Q4_K_M;
        let (with, without) = (
            dir.path().join("with.gguf"),
            dir.path().join("without.gguf"),
        );
        lib.quantize(&model, &with, p, Some(&im))
            .expect("llama.cpp quantize with our imatrix");
        lib.quantize(&model, &without, p, None)
            .expect("llama.cpp quantize");
        let k = "blk.1.attn_k_b.weight";
        assert_ne!(tensor_bytes(&with, k), tensor_bytes(&without, k));
    }

    // perplexity vs llama.cpp, with a KL-divergence base; greedy generation as llama.cpp's
    common::check_perplexity_and_self_kld(&o, &model, &text, &dir.path().join("ds2.kldbase"));
    common::check_greedy_run(&o, &model);
}
