//! The evaluation commands on a mixture-of-experts model (`synth-qwen3moe`: 16 experts, 4 used
//! per token), unchanged: `imatrix` writes per-expert entries and warns about experts that saw
//! no tokens, `perplexity` follows llama.cpp's, `kld` of the model against its own base is 0, and
//! `run` generates llama.cpp's greedy tokens.

mod common;

use common::{dynquant, ok, oracle};
use dynquant_core::imatrix::Imatrix;
use dynquant_testkit::oracle::shared_dir;

#[test]
fn every_evaluation_command_runs_a_moe_model() {
    let Some(o) = oracle() else { return };
    let model = o.test_models().dir.join("synth-qwen3moe.gguf");
    let text = shared_dir().join("data/text/wiki.test.raw");
    let dir = tempfile::tempdir().expect("tempdir");

    // imatrix over 16 tokens: 64 routed slots cannot reach all 16 experts of every layer.
    let im_path = dir.path().join("moe.imatrix.gguf");
    let out = dynquant(args![
        "imatrix", model, "--text", text, "-o", im_path, "--ctx", "16", "--chunks", "1"
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "imatrix");
    let im = Imatrix::read(&im_path).expect("imatrix");
    let up = im
        .get("blk.0.ffn_up_exps.weight")
        .expect("per-expert entry");
    assert_eq!((up.n_per_mat, up.n_mat()), (512, 16));
    assert_eq!(up.counts.iter().sum::<f32>(), 16.0 * 4.0);
    let router = im.get("blk.0.ffn_gate_inp.weight").expect("router entry");
    assert_eq!(router.counts, vec![16.0]);
    let unseen = im
        .entries
        .iter()
        .filter(|e| e.counts.contains(&0.0))
        .count();
    let warnings = stderr
        .lines()
        .filter(|l| l.starts_with("warning:") && l.contains("saw no tokens"))
        .count();
    assert!(
        unseen > 0 && warnings == unseen,
        "{unseen} entries, {stderr}"
    );

    // perplexity vs llama.cpp, with a KL-divergence base
    let base = dir.path().join("moe.kldbase");
    let reference = o.perplexity(&model, &text, 512, &[])["ppl"]
        .as_f64()
        .expect("ppl");
    let out = ok(
        dynquant(args![
            "perplexity",
            model,
            "--text",
            text,
            "--chunks",
            "1",
            "--save-logits",
            base,
            "--json"
        ]),
        "perplexity",
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let ours = v["ppl"].as_f64().expect("ppl");
    eprintln!("synth-qwen3moe PPL: ours {ours}, llama.cpp {reference}");
    assert!((ours / reference - 1.0).abs() < 0.005);

    let out = ok(
        dynquant(args!["kld", model, "--base", base, "--json"]),
        "kld",
    );
    let k: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert!(k["kld_max"].as_f64().expect("max") < 1e-6, "{k}");
    assert_eq!(k["same_top"].as_f64(), Some(1.0));

    // greedy generation as llama.cpp's
    let prompt = "The capital of France is";
    let theirs = o.greedy_tokens(&model, 8, &[prompt]);
    let out = ok(
        dynquant(args!["run", model, "-p", prompt, "-n", "8", "--temp", "0"]),
        "run",
    );
    let gguf = dynquant_core::gguf::GgufModel::open(&model, dynquant_core::gguf::Access::Mmap)
        .expect("open");
    let tok = dynquant_tokenizer::Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let ids: Vec<u32> = theirs[0].iter().map(|&t| t as u32).collect();
    let expected = tok.decode(&ids);
    eprintln!("ours: {out:?}, llama.cpp: {expected:?}");
    assert_eq!(out.trim_end_matches('\n'), expected);
}
