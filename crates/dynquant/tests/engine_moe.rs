//! The evaluation commands on a mixture-of-experts model (`synth-qwen3moe`: 16 experts, 4 used
//! per token), unchanged: `imatrix` writes per-expert entries and warns about experts that saw
//! no tokens, `perplexity` follows llama.cpp's, `kld` of the model against its own base is 0, and
//! `run` generates llama.cpp's greedy tokens.

mod common;

use common::{dynquant, ok, oracle};
use dynquant_gguf::imatrix::Imatrix;
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

    // perplexity vs llama.cpp, with a KL-divergence base; greedy generation as llama.cpp's
    common::check_perplexity_and_self_kld(&o, &model, &text, &dir.path().join("moe.kldbase"));
    common::check_greedy_run(&o, &model);
}
