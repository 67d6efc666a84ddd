//! Mixture-of-experts blocks beyond distribution matching (tests/llamacpp.rs does that):
//!
//! * `smollm2-768-moe` is `smollm2-768` with each FFN split into 6 experts that every token
//!   uses (zero router, softmax, renormalized weights of 1/6, expert `ffn_down` times 6): the
//!   same function, so the same perplexity, and its per-expert imatrix is the dense imatrix
//!   split by expert (`dynquant_testkit::smollm2` for the column mapping).
//! * Per-expert imatrix entries, including experts that saw no token, read back by our reader
//!   (what `dynquant quantize` uses) and by llama.cpp's `load_imatrix` (libgguf) identically.
//! * Results do not depend on the thread count.

use std::collections::BTreeMap;
use std::path::Path;

use dynquant_engine::imatrix::Collector;
use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model, Numerics};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::{Access, GgufModel, WriteOptions};
use dynquant_testkit::oracle::{shared_dir, Oracle};
use dynquant_testkit::smollm2::{EXPERT_FF, N_EXPERT, N_FF};
use dynquant_tokenizer::Tokenizer;

const CTX: usize = 512;

/// The first `CTX` tokens of wiki.test.raw (its first 16 KiB tokenized).
fn wiki_tokens(gguf: &GgufModel) -> Vec<u32> {
    let text = std::fs::read(shared_dir().join("data/text/wiki.test.raw")).expect("text");
    let text = String::from_utf8_lossy(&text[..16 * 1024]).into_owned();
    let tok = Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let mut t = tok.encode(&text, false, false).expect("tokenize");
    assert!(t.len() >= CTX, "{} tokens", t.len());
    t.truncate(CTX);
    t
}

/// One chunk of `ctx` tokens as llama-perplexity scores it (second half), with an imatrix
/// collector watching: (perplexity, imatrix).
fn ppl_and_imatrix(path: &Path, numerics: Numerics, ctx: usize) -> (f64, Imatrix) {
    let gguf = GgufModel::open(path, Access::Mmap).expect("open");
    let mut model = Model::load(&gguf).expect("load");
    model.numerics = numerics;
    let tokens = &wiki_tokens(&gguf)[..ctx];
    let collector = Collector::new(vec!["output.weight".into(), "token_embd.weight".into()]);
    let first = ctx / 2;
    let mut s = model.session(ctx);
    let logits = s
        .eval(tokens, Logits::From(first), Some(&collector))
        .expect("eval");
    let nv = model.n_vocab;
    let mut nll = 0.0;
    for j in first..ctx - 1 {
        let lp = log_softmax(&logits[(j - first) * nv..(j - first + 1) * nv]);
        nll -= lp[tokens[j + 1] as usize];
    }
    let ppl = (nll / (ctx - 1 - first) as f64).exp();
    (
        ppl,
        collector.to_imatrix(vec!["wiki".into()], 1, ctx as u32),
    )
}

/// Largest relative difference between `a` and `b`, each column's difference taken relative
/// to `|b| + floor * mean(b)` (exact zeros must match exactly).
fn max_rel_diff(a: &[f32], b: &[f32], floor: f64, what: &str) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let mean = b.iter().map(|&v| f64::from(v)).sum::<f64>() / b.len() as f64;
    let mut worst = 0f64;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if y == 0.0 {
            assert_eq!(x, 0.0, "{what}[{i}]: {x} where the dense imatrix has 0");
            continue;
        }
        let d = (f64::from(x) - f64::from(y)).abs() / (f64::from(y).abs() + floor * mean);
        worst = worst.max(d);
    }
    worst
}

/// llama.cpp's `load_imatrix` (via libgguf) of `path`: name -> per-column weights (bits).
fn libgguf_weights(o: &Oracle, path: &Path) -> BTreeMap<String, Vec<u32>> {
    let script = r#"
import sys, json, numpy as np, libgguf
d = libgguf.load_imatrix(sys.argv[1])
print(json.dumps({k: np.asarray(v, dtype=np.float32).view(np.uint32).tolist() for k, v in d.items()}))
"#;
    let out = std::process::Command::new(&o.python)
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Writes `im`, reads it back with our reader and with llama.cpp's: same entries, and
/// llama-quantize's weights equal ours bit for bit.
fn check_readable(o: &Oracle, im: &Imatrix) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("moe.imatrix.gguf");
    im.write(&path, &WriteOptions::default()).expect("write");
    let back = Imatrix::read(&path).expect("our reader");
    assert_eq!(&back, im);
    let theirs = libgguf_weights(o, &path);
    assert_eq!(
        theirs.keys().collect::<Vec<_>>(),
        im.entries.iter().map(|e| &e.name).collect::<Vec<_>>()
    );
    for e in &im.entries {
        let ours: Vec<u32> = (0..e.n_mat())
            .flat_map(|m| e.weights(m))
            .map(f32::to_bits)
            .collect();
        assert!(ours == theirs[&e.name], "{}: weights differ", e.name);
    }
}

/// (max rel. diff of the router and expert entries, of the attention entries) between the
/// MoE imatrix and the dense one split by expert; also checks names, shapes and counts.
fn split_diff(dense: &Imatrix, moe: &Imatrix) -> (f64, f64) {
    let get = |im: &Imatrix, n: &str| im.get(n).unwrap_or_else(|| panic!("{n}")).clone();
    // The expert entries column by column; the others (attention inputs) relative to 1e-3 of
    // their mean column, since the attention output's smallest columns (1e-5 of the mean)
    // carry the f16 KV cache's rounding.
    let (mut worst, mut worst_attn) = (0f64, 0f64);
    let n_layer = 30;
    for il in 0..n_layer {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        for role in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            let (a, b) = (get(moe, &n(role)), get(dense, &n(role)));
            assert_eq!(a.counts, b.counts, "{}", n(role));
            worst_attn = worst_attn.max(max_rel_diff(&a.in_sum2, &b.in_sum2, 1e-3, &n(role)));
        }
        let gate = get(dense, &n("ffn_gate"));
        let down = get(dense, &n("ffn_down"));
        assert_eq!((gate.n_per_mat, down.n_per_mat), (768, N_FF));
        assert_eq!(get(dense, &n("ffn_up")).in_sum2, gate.in_sum2);
        // The router reads what the dense gate reads.
        let router = get(moe, &n("ffn_gate_inp"));
        assert_eq!(router.counts, gate.counts);
        worst = worst.max(max_rel_diff(&router.in_sum2, &gate.in_sum2, 0.0, "router"));
        for exps in ["ffn_gate_exps", "ffn_up_exps"] {
            let e = get(moe, &n(exps));
            assert_eq!((e.n_per_mat, e.n_mat()), (768, N_EXPERT), "{exps}");
            // Every expert sees every token, with the dense weight's input.
            assert_eq!(e.counts, vec![gate.counts[0]; N_EXPERT], "{exps}");
            for x in 0..N_EXPERT {
                let row = &e.in_sum2[x * 768..(x + 1) * 768];
                worst = worst.max(max_rel_diff(row, &gate.in_sum2, 0.0, exps));
            }
        }
        // Expert x's down inputs are dense units [256x, 256x + 256).
        let e = get(moe, &n("ffn_down_exps"));
        assert_eq!((e.n_per_mat, e.n_mat()), (EXPERT_FF, N_EXPERT));
        assert_eq!(e.counts, vec![down.counts[0]; N_EXPERT]);
        worst = worst.max(max_rel_diff(
            &e.in_sum2,
            &down.in_sum2,
            0.0,
            "ffn_down_exps",
        ));
    }
    assert_eq!(moe.entries.len(), n_layer * 8);
    (worst, worst_attn)
}

/// llama.cpp's numerics over 512 tokens: the same perplexity within 0.1%, the imatrix split
/// by expert within the f16 rounding of the dense model's F16 gate/up inputs (its
/// `vec_dot_type`; the MoE's F32 experts keep f32 inputs). Exact f32 activations over 128
/// tokens: the same function up to summation order, the split within 1e-4.
#[test]
fn smollm2_768_moe_equals_the_dense_model_with_imatrix_split_by_expert() {
    let Some(o) = Oracle::get() else { return };
    let dir = o.test_models().dir;
    let (dense_path, moe_path) = (
        dir.join("smollm2-768.gguf"),
        dir.join("smollm2-768-moe.gguf"),
    );
    let (ppl_dense, dense) = ppl_and_imatrix(&dense_path, Numerics::Llama, CTX);
    let (ppl_moe, moe) = ppl_and_imatrix(&moe_path, Numerics::Llama, CTX);
    let rel = ppl_moe / ppl_dense - 1.0;
    let (worst, worst_attn) = split_diff(&dense, &moe);
    eprintln!(
        "llama.cpp numerics, 1 x {CTX}: PPL dense {ppl_dense:.6}, MoE {ppl_moe:.6} ({:+.4}%); \
         imatrix split max rel. diff {worst:.3e} (router, experts), {worst_attn:.3e} \
         (attention, floor 1e-3 of the mean)",
        100.0 * rel
    );
    assert!(rel.abs() < 1e-3, "PPL {ppl_moe} vs dense {ppl_dense}");
    assert!(worst < 1e-2, "experts: max relative difference {worst}");
    assert!(
        worst_attn < 1e-2,
        "attention: max relative difference {worst_attn}"
    );
    check_readable(&o, &moe);

    let (ppl_dense, dense) = ppl_and_imatrix(&dense_path, Numerics::Exact, 128);
    let (ppl_moe, moe) = ppl_and_imatrix(&moe_path, Numerics::Exact, 128);
    let rel = ppl_moe / ppl_dense - 1.0;
    let (worst, worst_attn) = split_diff(&dense, &moe);
    eprintln!(
        "exact f32, 1 x 128: PPL {:+.2e} relative; imatrix split max rel. diff {worst:.3e}, \
         {worst_attn:.3e} (attention)",
        rel
    );
    assert!(rel.abs() < 1e-5, "PPL {ppl_moe} vs dense {ppl_dense}");
    assert!(worst < 1e-4 && worst_attn < 1e-4, "{worst} {worst_attn}");
}

/// Two tokens route to at most 8 of synth-qwen3moe's 16 experts: the others are reported, and
/// stored with zero counts that llama.cpp reads as unit weights, as we do.
#[test]
fn experts_without_tokens_are_reported_and_read_back_as_llama_cpp_does() {
    let Some(o) = Oracle::get() else { return };
    let path = o.test_models().dir.join("synth-qwen3moe.gguf");
    let gguf = GgufModel::open(&path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let tokens = &wiki_tokens(&gguf)[..2];
    let collector = Collector::new(vec!["output.weight".into()]);
    let mut s = model.session(2);
    s.eval(tokens, Logits::None, Some(&collector))
        .expect("eval");
    let unused = collector.unused_experts();
    let im = collector.to_imatrix(vec!["wiki".into()], 1, 2);
    let moe = model.config.moe.as_ref().expect("moe");
    let exps: Vec<_> = im
        .entries
        .iter()
        .filter(|e| e.name.contains("_exps"))
        .collect();
    assert_eq!(exps.len(), 4 * 3);
    for e in &exps {
        assert_eq!(e.n_mat(), moe.n_expert);
        let total: f32 = e.counts.iter().sum();
        assert_eq!(total as usize, 2 * moe.n_expert_used, "{}", e.name);
        let zero: Vec<usize> = (0..e.n_mat()).filter(|&m| e.counts[m] == 0.0).collect();
        assert!(zero.len() >= moe.n_expert - 2 * moe.n_expert_used);
        let u = unused
            .iter()
            .find(|u| u.name == e.name)
            .unwrap_or_else(|| panic!("{} not reported", e.name));
        assert_eq!(u.experts, zero);
        assert_eq!(u.n_expert, moe.n_expert);
        for &m in &zero {
            assert!(e.in_sum2[m * e.n_per_mat..(m + 1) * e.n_per_mat]
                .iter()
                .all(|&v| v == 0.0));
            assert!(e.weights(m).iter().all(|&w| w == 1.0));
        }
    }
    assert_eq!(unused.len(), exps.len());
    check_readable(&o, &im);
}

#[test]
fn moe_results_do_not_depend_on_the_thread_count() {
    let Some(o) = Oracle::get() else { return };
    let path = o.test_models().dir.join("synth-qwen3moe.gguf");
    let gguf = GgufModel::open(&path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let tokens = &wiki_tokens(&gguf)[..48];
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            let collector = Collector::new(Vec::new());
            let mut s = model.session(tokens.len());
            let logits = s
                .eval(tokens, Logits::From(0), Some(&collector))
                .expect("eval");
            (logits, collector.to_imatrix(Vec::new(), 1, 48))
        })
    };
    let (l1, i1) = run(1);
    let (l2, i2) = run(2);
    let (l3, i3) = run(3);
    assert!(l1 == l2 && l1 == l3, "logits differ between thread counts");
    assert!(
        i1 == i2 && i1 == i3,
        "imatrix differs between thread counts"
    );
}

/// gpt-oss (the repository's fixture, MXFP4 experts): the imatrix has one entry per expert
/// tensor with a row of sums per expert (`n_expert_used` tokens' worth per token), the
/// attention projections, and llama.cpp's quantizer (its `load_imatrix`) reads it as we do.
#[test]
fn gpt_oss_imatrix_covers_the_mxfp4_experts_and_llama_cpp_reads_it() {
    let Some(o) = Oracle::get() else { return };
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/gpt-oss.llamacpp.gguf");
    let ctx = 128;
    let (ppl, im) = ppl_and_imatrix(&path, Numerics::Llama, ctx);
    assert!(ppl.is_finite() && ppl > 1.0, "perplexity {ppl}");
    for l in 0..2 {
        for t in ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
            let name = format!("blk.{l}.{t}.weight");
            let e = im
                .entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("no entry for {name}"));
            assert_eq!(e.n_mat(), 4, "{name}");
            let total: f32 = e.counts.iter().sum();
            assert_eq!(total as usize, 2 * ctx, "{name}: 2 experts per token");
        }
        for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp"] {
            let name = format!("blk.{l}.{t}.weight");
            assert!(
                im.entries.iter().any(|e| e.name == name),
                "no entry for {name}"
            );
        }
    }
    check_readable(&o, &im);
}
