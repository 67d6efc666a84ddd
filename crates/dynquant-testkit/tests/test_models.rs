//! The test models are what they claim: checked in real llama.cpp (node-llama-cpp, threads 1)
//! and against llama.cpp's own imatrix.

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::{shared_dir, Oracle};
use dynquant_testkit::smollm2::{head_map, EXPERT_FF, HEAD_DIM, NEW_EMBD, N_EXPERT, OLD_EMBD};

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
];

#[test]
fn smollm2_forms_are_the_same_function_in_llama_cpp() {
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let reference = o.greedy_tokens(&m.smollm2_f16(), 30, &PROMPTS);
    assert_eq!(reference.len(), 3);
    for model in [m.smollm2_768(), m.smollm2_768_moe()] {
        let got = o.greedy_tokens(&model, 30, &PROMPTS);
        assert_eq!(got, reference, "{}", model.display());
    }
    let text = shared_dir().join("data/text/wiki.test.raw");
    let ppl = |p: &std::path::Path| o.perplexity(p, &text, 4096, &[])["ppl"].as_f64().unwrap();
    // llama.cpp runs single-threaded: evaluate the three models side by side.
    let models = [m.smollm2_f16(), m.smollm2_768(), m.smollm2_768_moe()];
    let ppls: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = models.iter().map(|p| s.spawn(|| ppl(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let base = ppls[0];
    for (model, &p) in models[1..].iter().zip(&ppls[1..]) {
        let rel = (p / base - 1.0).abs();
        eprintln!(
            "{}: PPL {p:.4} vs {base:.4} ({:+.4}%)",
            model.display(),
            100.0 * (p / base - 1.0)
        );
        assert!(
            rel < 1e-3,
            "{}: PPL {p} vs reference {base}",
            model.display()
        );
    }
}

#[test]
fn smollm2_f16_equals_gguf_py_dequantization() {
    // An independent construction: gguf-py dequantizes the Q4_1 file and writes it with
    // GGUFWriter (tests/oracle/make_f16_smollm2.py). Ours must be the same file, byte for byte.
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("f16.gguf");
    let out = std::process::Command::new(&o.python)
        .arg(dynquant_testkit::oracle::repo_root().join("tests/oracle/make_f16_smollm2.py"))
        .arg(o.smollm2())
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&theirs).unwrap() == std::fs::read(m.smollm2_f16()).unwrap());
}

#[test]
fn synthetic_models_run_in_llama_cpp_with_peaked_distributions() {
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let mla = o.greedy_tokens(&m.deepseek2_mla(), 20, &PROMPTS[..2]);
    // The two deepseek2 layouts hold the same weights: llama.cpp generates the same tokens.
    assert_eq!(
        o.greedy_tokens(&m.deepseek2_legacy(), 20, &PROMPTS[..2]),
        mla
    );
    let qwen = o.greedy_tokens(&m.qwen3moe(), 20, &PROMPTS[..2]);
    for tokens in mla.iter().chain(&qwen) {
        assert_eq!(tokens.len(), 20);
    }
    let text = shared_dir().join("data/text/wiki.test.raw");
    let log_vocab = (49152f64).ln();
    for model in [m.deepseek2_mla(), m.qwen3moe()] {
        let r = o.perplexity(&model, &text, 512, &[]);
        let h = r["entropy_mean"].as_f64().expect("entropy_mean");
        eprintln!(
            "{}: mean next-token entropy {h:.3} nats (log V = {log_vocab:.3})",
            model.display()
        );
        assert!(
            h < 0.6 * log_vocab,
            "{}: entropy {h} is too close to flat",
            model.display()
        );
    }
}

#[test]
fn derived_imatrices_match_llama_cpp_and_the_models() {
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let original = Imatrix::read(shared_dir().join("golden/smollm2-135m.imatrix.gguf")).unwrap();
    let dense = Imatrix::read(m.smollm2_768_imatrix()).unwrap();
    let moe = Imatrix::read(m.smollm2_768_moe_imatrix()).unwrap();
    let map = head_map();
    for orig in &original.entries {
        let d = dense.get(&orig.name).unwrap();
        assert_eq!(d.counts, orig.counts);
        if orig.name.contains("attn_output") {
            for (h, src) in map.iter().enumerate() {
                let got = &d.in_sum2[h * HEAD_DIM..(h + 1) * HEAD_DIM];
                match src {
                    Some(s) => assert_eq!(got, &orig.in_sum2[s * HEAD_DIM..(s + 1) * HEAD_DIM]),
                    None => assert!(got.iter().all(|x| *x == 0.0)),
                }
            }
        } else if orig.n_per_mat == OLD_EMBD {
            assert_eq!(&d.in_sum2[..OLD_EMBD], &orig.in_sum2[..]);
            assert!(d.in_sum2[OLD_EMBD..].iter().all(|x| *x == 0.0));
            assert_eq!(d.n_per_mat, NEW_EMBD);
        } else {
            assert_eq!(d.in_sum2, orig.in_sum2);
        }
        // Per expert: each expert sees every token; down's experts split the dense vector.
        if let Some(base) = orig
            .name
            .strip_suffix(".weight")
            .filter(|n| n.contains("ffn_"))
        {
            let e = moe.get(&format!("{base}_exps.weight")).unwrap();
            assert_eq!(e.n_mat(), N_EXPERT);
            assert!(e.counts.iter().all(|c| *c == d.counts[0]));
            if base.ends_with("ffn_down") {
                assert_eq!(e.n_per_mat, EXPERT_FF);
                assert_eq!(e.in_sum2, d.in_sum2);
            } else {
                for k in 0..N_EXPERT {
                    assert_eq!(&e.in_sum2[k * NEW_EMBD..(k + 1) * NEW_EMBD], &d.in_sum2[..]);
                }
            }
        }
    }
    // Every imatrix entry fits its model tensor (ne0 and expert count).
    for (model, im) in [(m.smollm2_768(), &dense), (m.smollm2_768_moe(), &moe)] {
        let g = GgufModel::open(&model, Access::Mmap).unwrap();
        for e in &im.entries {
            let t = g.tensors().find(|t| t.info.name == e.name).unwrap();
            assert_eq!(e.n_per_mat as u64, t.info.shape[0], "{}", e.name);
            assert_eq!(
                e.n_mat() as u64,
                t.info.shape.get(2).copied().unwrap_or(1),
                "{}",
                e.name
            );
        }
    }
}

#[test]
fn build_is_cached_and_deterministic() {
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let imatrix = shared_dir().join("golden/smollm2-135m.imatrix.gguf");
    let mut log = Vec::new();
    let r = dynquant_testkit::build_all(&m.dir, &o.smollm2(), &imatrix, &mut |s| {
        log.push(s.to_string())
    })
    .unwrap();
    assert!(r.built.is_empty(), "a second build rebuilt {:?}", r.built);
    // The same spec writes byte-identical files.
    let src = GgufModel::open(o.smollm2(), Access::Mmap).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.gguf");
    dynquant_testkit::synth::write_qwen3moe(&Default::default(), src.metadata(), &a).unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(m.qwen3moe()).unwrap());
}
