//! GLM-4.5's architecture (`glm4moe`) against real llama.cpp (node-llama-cpp, one thread), on
//! the repository fixture llama.cpp's converter made (`tests/fixtures/hf/glm4moe.llamacpp.gguf`:
//! 3 blocks, the first dense, then 8 experts with 2 used, sigmoid routing with `exp_probs_b`,
//! normalized and scaled weights, a shared expert; q/k/v biases, q/k norms, NeoX RoPE on half
//! of each head; one NextN block, which neither llama.cpp nor the engine runs): next-token
//! distributions over a 128-token context of wiki.test.raw, mean KLD < 1e-3 and top-1 > 99%
//! (near ties within [`TIE`] nats agree), and greedy generation in llama.cpp.

use std::path::{Path, PathBuf};

use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model, Numerics};
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::{shared_dir, Distributions, Oracle};

/// Nats within which the reference's second token counts as a tie with its first (random
/// weights give nearly flat distributions).
const TIE: f64 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/glm4moe.llamacpp.gguf")
}

/// (mean KLD, top-1 agreement) of `logits` against llama.cpp's distributions `r`.
fn score(r: &Distributions, logits: &[f32], nv: usize) -> (f64, f64) {
    let (mut kl, mut same) = (0.0, 0usize);
    for (j, p) in r.positions.iter().enumerate() {
        let lp = log_softmax(&logits[j * nv..(j + 1) * nv]);
        kl += p.kld(&lp);
        let ours = lp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32);
        let agrees = p
            .ids
            .iter()
            .zip(&p.logp)
            .any(|(&i, &l)| Some(i) == ours && f64::from(p.logp[0] - l) <= TIE);
        same += usize::from(agrees);
    }
    let n = r.positions.len() as f64;
    (kl / n, same as f64 / n)
}

#[test]
fn tiny_glm4moe_matches_llamacpp() {
    let Some(o) = Oracle::get() else { return };
    let path = fixture();
    let text = shared_dir().join("data/text/wiki.test.raw");
    let args: Vec<&std::ffi::OsStr> = vec![
        path.as_os_str(),
        text.as_os_str(),
        "--n-tokens".as_ref(),
        "128".as_ref(),
        "--top-k".as_ref(),
        "64".as_ref(),
        "--context-size".as_ref(),
        "1024".as_ref(),
    ];
    let r = Distributions::from_json(&o.node("distributions.mjs", &args));
    let gguf = GgufModel::open(&path, Access::Mmap).expect("open");
    let mut model = Model::load(&gguf).expect("load");
    assert_eq!(model.n_layer(), 3, "the NextN block is not run");
    let run = |model: &Model<'_>| {
        let mut s = model.session(r.tokens.len());
        let logits = s.eval(&r.tokens, Logits::From(0), None).expect("eval");
        score(&r, &logits, model.n_vocab)
    };
    let (kl, top1) = run(&model);
    model.numerics = Numerics::Exact;
    let (kl_exact, _) = run(&model);
    eprintln!(
        "glm4moe: {} positions, mean KLD {kl:.3e} (exact activations {kl_exact:.3e}), top-1 {:.2}%",
        r.positions.len(),
        100.0 * top1
    );
    assert!(kl < 1e-3, "mean KLD {kl}");
    assert!(top1 > 0.99, "top-1 {top1}");
    // llama.cpp's BF16 activation rounding reproduced: closer than exact activations.
    assert!(kl < kl_exact, "{kl} vs exact {kl_exact}");
}

#[test]
fn tiny_glm4moe_generates_in_llamacpp() {
    let Some(o) = Oracle::get() else { return };
    let out = o.greedy_tokens(&fixture(), 8, &["The capital of France is"]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 8, "{out:?}");
    assert!(out[0].iter().all(|&t| t < 1024), "{out:?}");
}

/// The same bits with 1 and 3 threads, for a batch then single-token decoding.
#[test]
fn glm4moe_logits_do_not_depend_on_the_thread_count() {
    let gguf = GgufModel::open(fixture(), Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 7919) % 1000).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            let mut s = model.session(tokens.len());
            let mut out = s.eval(&tokens[..37], Logits::From(30), None).expect("eval");
            for t in &tokens[37..] {
                out.extend(
                    s.eval(std::slice::from_ref(t), Logits::Last, None)
                        .expect("eval"),
                );
            }
            out
        })
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one.len(), 10 * model.n_vocab);
    let differ = one
        .iter()
        .zip(&three)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} logits differ", one.len());
}
