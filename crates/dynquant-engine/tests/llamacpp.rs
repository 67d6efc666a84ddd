//! The engine's next-token distributions against real llama.cpp's (node-llama-cpp,
//! `controlledEvaluate` probabilities, one thread) over the first 512 tokens of wiki.test.raw.

use std::path::Path;

use dynquant_core::gguf::{Access, GgufModel};
use dynquant_engine::eval::TopK;
use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model};
use dynquant_testkit::oracle::{shared_dir, Oracle};

struct Reference {
    tokens: Vec<u32>,
    positions: Vec<TopK>,
}

fn reference(o: &Oracle, model: &Path, n: usize) -> Reference {
    let text = shared_dir().join("data/text/wiki.test.raw");
    let n = n.to_string();
    let out = o.node(
        "distributions.mjs",
        &[
            model.as_os_str(),
            text.as_os_str(),
            "--n-tokens".as_ref(),
            n.as_ref(),
            "--top-k".as_ref(),
            "64".as_ref(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ids = |a: &serde_json::Value| -> Vec<u32> {
        a.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    Reference {
        tokens: ids(&v["tokens"]),
        positions: v["positions"]
            .as_array()
            .expect("positions")
            .iter()
            .map(|p| TopK {
                ids: ids(&p["ids"]),
                logp: p["logp"]
                    .as_array()
                    .expect("logp")
                    .iter()
                    .map(|x| x.as_f64().expect("f") as f32)
                    .collect(),
                tail: p["tail"].as_f64().expect("tail") as f32,
            })
            .collect(),
    }
}

/// (mean KLD, top-1 agreement) of our forward against llama.cpp's.
fn compare(o: &Oracle, path: &Path) -> (f64, f64) {
    let r = reference(o, path, 512);
    let gguf = GgufModel::open(path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let mut s = model.session(r.tokens.len());
    let logits = s.eval(&r.tokens, Logits::From(0), None).expect("eval");
    let nv = model.n_vocab;
    let (mut kl, mut same, mut max_kl) = (0.0, 0usize, 0f64);
    for (j, p) in r.positions.iter().enumerate() {
        let lp = log_softmax(&logits[j * nv..(j + 1) * nv]);
        let k = p.kld(&lp);
        max_kl = max_kl.max(k);
        kl += k;
        let ours = lp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32);
        same += usize::from(ours == Some(p.ids[0]));
    }
    let n = r.positions.len() as f64;
    let (kl, top1) = (kl / n, same as f64 / n);
    eprintln!(
        "{}: mean KLD {kl:.3e} (max {max_kl:.3e}), top-1 {:.2}% over {n} positions",
        path.display(),
        100.0 * top1
    );
    (kl, top1)
}

fn check(path: &Path) {
    let Some(o) = Oracle::get() else { return };
    let (kl, top1) = compare(&o, path);
    assert!(kl < 1e-3, "mean KLD {kl}");
    assert!(top1 > 0.99, "top-1 agreement {top1}");
}

#[test]
fn smollm2_q4_1_matches_llamacpp() {
    let Some(o) = Oracle::get() else { return };
    check(&o.smollm2());
}

#[test]
fn smollm2_f16_matches_llamacpp() {
    let Some(o) = Oracle::get() else { return };
    check(&o.test_models().dir.join("smollm2-f16.gguf"));
}

#[test]
fn smollm2_768_matches_llamacpp() {
    let Some(o) = Oracle::get() else { return };
    check(&o.test_models().dir.join("smollm2-768.gguf"));
}

#[test]
fn gemma3_matches_llamacpp() {
    let Some(o) = Oracle::get() else { return };
    check(&o.gemma());
}
