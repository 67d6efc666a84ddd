//! smollm2-768 quantized uniformly (`--recipe basic-<type>`, token embedding and output
//! included) to each codebook i-quant, evaluated by the engine against real llama.cpp
//! (node-llama-cpp, one thread) on 512 tokens of wiki.test.raw: next-token distributions with
//! mean KLD < 1e-6 and top-1 100%, and `dynquant perplexity` equal to llama.cpp's to 4
//! significant digits. The engine's i-quant products are ggml-cpu's bit for bit
//! (`crates/dynquant-engine/tests/ggml_ops.rs`), so only the reference's float noise remains;
//! the bounds hold on the AVX-512 machines CI runs on, whose libggml-cpu variant (zen4) the
//! engine reproduces there.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{dynquant, ok, oracle, Oracle};
use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model};
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::shared_dir;

fn wiki() -> PathBuf {
    shared_dir().join("data/text/wiki.test.raw")
}

/// smollm2-768 at `ty` everywhere (`basic-<ty>`, its imatrix; the token embedding, which the
/// imatrix has no entry for, with uniform weights as llama-quantize gives it).
fn quantize(o: &Oracle, ty: &str, dir: &Path) -> PathBuf {
    let models = o.test_models().dir;
    let out = dir.join(format!("smollm2-768-{ty}.gguf"));
    let recipe = format!("basic-{ty}");
    ok(
        dynquant(&[
            OsStr::new("quantize"),
            OsStr::new("--recipe"),
            OsStr::new(&recipe),
            OsStr::new("--imatrix"),
            models.join("smollm2-768.imatrix.gguf").as_os_str(),
            OsStr::new("--imatrix-fallback"),
            OsStr::new("--quiet"),
            models.join("smollm2-768.gguf").as_os_str(),
            out.as_os_str(),
        ]),
        "quantize",
    );
    out
}

fn check(ty: &str) {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let model_path = quantize(&o, ty, dir.path());

    let reference = o.next_token_distributions(&model_path, &wiki(), 512, 64, 1024);
    let gguf = GgufModel::open(&model_path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let mut s = model.session(reference.tokens.len());
    let logits = s
        .eval(&reference.tokens, Logits::From(0), None)
        .expect("eval");
    let nv = model.n_vocab;
    let (mut kld, mut same) = (0.0, 0usize);
    for (j, p) in reference.positions.iter().enumerate() {
        let lp = log_softmax(&logits[j * nv..(j + 1) * nv]);
        kld += p.kld(&lp);
        let top = lp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32);
        same += usize::from(top == Some(p.ids[0]));
    }
    let n = reference.positions.len();
    let kld = kld / n as f64;

    let theirs = o.perplexity(&model_path, &wiki(), 512, &["--chunks", "1"]);
    let out = ok(
        dynquant(&[
            OsStr::new("perplexity"),
            model_path.as_os_str(),
            OsStr::new("--text"),
            wiki().as_os_str(),
            OsStr::new("--chunks"),
            OsStr::new("1"),
            OsStr::new("--json"),
        ]),
        "perplexity",
    );
    let ours: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let (a, b) = (
        ours["ppl"].as_f64().expect("ppl"),
        theirs["ppl"].as_f64().expect("ppl"),
    );
    eprintln!(
        "{ty}: 512 tokens: mean KLD {kld:.3e}, top-1 {same}/{n}; perplexity {a:.6} vs llama.cpp \
         {b:.6}"
    );
    assert!(kld < 1e-6, "{ty}: mean KLD {kld}");
    assert_eq!(same, n, "{ty}: top-1 agreement");
    assert_eq!(format!("{a:.4e}"), format!("{b:.4e}"), "{ty}: perplexity");
}

#[test]
fn iq2_xxs_matches_llamacpp() {
    check("iq2_xxs");
}

#[test]
fn iq2_xs_matches_llamacpp() {
    check("iq2_xs");
}

#[test]
fn iq2_s_matches_llamacpp() {
    check("iq2_s");
}

#[test]
fn iq3_xxs_matches_llamacpp() {
    check("iq3_xxs");
}

#[test]
fn iq3_s_matches_llamacpp() {
    check("iq3_s");
}

#[test]
fn iq1_s_matches_llamacpp() {
    check("iq1_s");
}

#[test]
fn iq1_m_matches_llamacpp() {
    check("iq1_m");
}
