//! `smollm2-moe-routed` is what it claims: SmolLM2's real weights in a mixture of experts whose
//! router sends real text (wiki.test.raw, never seen by the construction) unevenly, within twice
//! the dense model's perplexity, running in real llama.cpp (node-llama-cpp, one thread) as in
//! dynquant's engine, with a per-expert imatrix that llama.cpp's quantizer accepts.

use std::path::{Path, PathBuf};

use dynquant_engine::eval::{ChunkOptions, PplAccumulator};
use dynquant_engine::evaluation::EvalText;
use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model};
use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::file_type_by_name;
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::build::{calibration_text, sha256_file};
use dynquant_testkit::llama_quantize::LlamaLib;
use dynquant_testkit::moe_routed::{
    expert_shares, write_moe_routed, ExpertUsage, RoutedSpec, N_EXPERT, N_EXPERT_USED,
};
use dynquant_testkit::oracle::{shared_dir, Oracle};
use dynquant_tokenizer::Tokenizer;

const CTX: usize = 512;
/// Chunks of wiki.test.raw for the perplexity and routing measurements.
const CHUNKS: usize = 4;

fn wiki() -> PathBuf {
    shared_dir().join("data/text/wiki.test.raw")
}

/// wiki.test.raw tokenized whole as llama-perplexity does, and its chunking.
fn wiki_tokens(gguf: &GgufModel) -> (Vec<u32>, ChunkOptions) {
    let tok = Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let text = EvalText::read(&tok, &wiki()).expect("wiki.test.raw");
    (text.tokens, ChunkOptions::for_tokenizer(&tok, CTX, None))
}

/// Our perplexity after each of the first `chunks` chunks (llama-perplexity's method) and, for
/// a model with experts, each layer's expert shares over those chunks.
fn evaluate(path: &Path, chunks: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let gguf = GgufModel::open(path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let (tokens, opts) = wiki_tokens(&gguf);
    let usage = ExpertUsage::new(model.config.n_layer);
    let nv = model.n_vocab;
    let first = CTX / 2;
    let mut acc = PplAccumulator::default();
    let mut running = Vec::new();
    let mut s = model.session(CTX);
    for i in 0..chunks {
        let chunk = opts.chunk(&tokens, i);
        s.clear();
        let logits = s
            .eval(&chunk, Logits::From(first), Some(&usage))
            .expect("eval");
        for j in first..CTX - 1 {
            let lp = log_softmax(&logits[(j - first) * nv..(j - first + 1) * nv]);
            acc.add(lp[chunk[j + 1] as usize]);
        }
        running.push(acc.ppl());
    }
    (running, usage.shares())
}

/// A copy of `path` in `dir` whose routers are all zeros: every token goes to experts 0 and 1
/// with weight 1/2 each, whatever its input.
fn with_zero_routers(path: &Path, dir: &Path) -> PathBuf {
    use std::io::{Seek, SeekFrom, Write};
    let out = dir.join("zero-router.gguf");
    std::fs::copy(path, &out).expect("copy");
    let gguf = GgufModel::open(path, Access::Mmap).expect("open");
    let data_offset = gguf.parts()[0].header().data_offset;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("open copy");
    for t in gguf
        .tensors()
        .filter(|t| t.info.name.ends_with("ffn_gate_inp.weight"))
    {
        f.seek(SeekFrom::Start(data_offset + t.info.offset))
            .expect("seek");
        f.write_all(&vec![0u8; t.info.n_bytes as usize])
            .expect("write");
    }
    out
}

/// Per layer, the least-used expert's share over the mean share.
fn least_used_over_mean(shares: &[Vec<f64>]) -> Vec<f64> {
    shares
        .iter()
        .map(|s| s.iter().copied().fold(f64::INFINITY, f64::min) * s.len() as f64)
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Checks the routing of a text is real and uneven: every layer routes `N_EXPERT_USED` of
/// `N_EXPERT` experts per token, the least-used expert of a typical (median) layer gets well
/// under the mean share, and in nearly every layer at least three experts get a real share
/// (a router that ignores its input sends everything to one pair).
fn check_routing(what: &str, shares: &[Vec<f64>]) {
    for (il, s) in shares.iter().enumerate() {
        assert_eq!(s.len(), N_EXPERT, "{what}: layer {il}");
        assert!(
            (s.iter().sum::<f64>() - 1.0).abs() < 1e-9,
            "{what}: layer {il}"
        );
    }
    let low = least_used_over_mean(shares);
    let typical = median(&low);
    let busy_layers = shares
        .iter()
        .filter(|s| s.iter().filter(|&&x| x >= 0.01).count() >= 3)
        .count();
    eprintln!(
        "{what}: least-used expert / mean share: median layer {typical:.3}, min {:.4}; \
         layers with >= 3 experts at >= 1%: {busy_layers} of {}",
        low.iter().copied().fold(f64::INFINITY, f64::min),
        shares.len()
    );
    assert!(typical < 0.5, "{what}: routing too even ({typical})");
    assert!(
        busy_layers * 10 >= shares.len() * 9,
        "{what}: only {busy_layers} layers route to 3 or more experts"
    );
}

#[test]
fn routes_wiki_unevenly_within_twice_the_dense_perplexity_as_in_llama_cpp() {
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let routed = m.smollm2_moe_routed();
    let dir = tempfile::tempdir().unwrap();
    let text = wiki();
    // llama.cpp runs single-threaded: it evaluates while our engine does.
    let (ours, shares, dense, zero, theirs) = std::thread::scope(|s| {
        let theirs = s.spawn(|| o.perplexity(&routed, &text, CHUNKS * CTX, &[]));
        let (ours, shares) = evaluate(&routed, CHUNKS);
        let (dense, _) = evaluate(&m.smollm2_768(), CHUNKS);
        let (zero, _) = evaluate(&with_zero_routers(&routed, dir.path()), 2);
        let theirs = theirs.join().unwrap()["ppl"].as_f64().unwrap();
        (ours, shares, dense, zero, theirs)
    });
    let (ppl, dense_ppl) = (ours[CHUNKS - 1], dense[CHUNKS - 1]);
    eprintln!(
        "wiki.test.raw, {CHUNKS} x {CTX}: PPL {ppl:.4} (llama.cpp {theirs:.4}, {:+.4}%), dense \
         smollm2-768 {dense_ppl:.4} (x{:.3}); 2 chunks with zero routers {:.4} vs {:.4}",
        100.0 * (ppl / theirs - 1.0),
        ppl / dense_ppl,
        zero[1],
        ours[1]
    );
    for (il, s) in shares.iter().enumerate() {
        let v: Vec<String> = s.iter().map(|x| format!("{:5.1}%", 100.0 * x)).collect();
        eprintln!("  layer {il:2}: {}", v.join(" "));
    }
    assert!(ppl <= 2.0 * dense_ppl, "PPL {ppl} vs dense {dense_ppl}");
    assert!(
        (ppl / theirs - 1.0).abs() < 1e-3,
        "ours {ppl}, llama.cpp {theirs}"
    );
    // The router is used: sending every token to the same two experts costs perplexity.
    assert!(
        zero[1] > 1.1 * ours[1],
        "zero routers {} vs {}",
        zero[1],
        ours[1]
    );
    check_routing("wiki.test.raw", &shares);
}

/// (mean KLD, top-1 agreement) of our next-token distributions against llama.cpp's over one
/// 512-token context in one batch.
#[test]
fn next_token_distributions_match_llama_cpp_and_it_generates() {
    let Some(o) = Oracle::get() else { return };
    let path = o.test_models().smollm2_moe_routed();
    let r = o.next_token_distributions(&path, &wiki(), CTX, 64, 2 * CTX);
    let gguf = GgufModel::open(&path, Access::Mmap).unwrap();
    let model = Model::load(&gguf).unwrap();
    let mut s = model.session(r.tokens.len());
    let logits = s.eval(&r.tokens, Logits::From(0), None).unwrap();
    let nv = model.n_vocab;
    let (mut kl, mut same) = (0.0, 0usize);
    for (j, p) in r.positions.iter().enumerate() {
        let lp = log_softmax(&logits[j * nv..(j + 1) * nv]);
        kl += p.kld(&lp);
        let top = (0..nv).max_by(|&a, &b| lp[a].total_cmp(&lp[b])).unwrap() as u32;
        same += usize::from(top == p.ids[0]);
    }
    let n = r.positions.len() as f64;
    let (kl, top1) = (kl / n, same as f64 / n);
    eprintln!(
        "512-token context vs llama.cpp: mean KLD {kl:.3e}, top-1 {:.2}%",
        100.0 * top1
    );
    assert!(kl < 1e-3, "mean KLD {kl}");
    assert!(top1 > 0.99, "top-1 agreement {top1}");

    let prompts = ["The capital of France is", "Once upon a time"];
    let generated = o.greedy_tokens(&path, 30, &prompts);
    let tok = Tokenizer::from_gguf(gguf.metadata()).unwrap();
    for (p, g) in prompts.iter().zip(&generated) {
        assert_eq!(g.len(), 30, "{p}");
        let ids: Vec<u32> = g.iter().map(|&t| t as u32).collect();
        eprintln!("llama.cpp: {p}{:?}", tok.decode(&ids));
    }
}

#[test]
fn imatrix_is_per_expert_uneven_and_llama_cpp_quantizes_with_it() {
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let im = Imatrix::read(m.smollm2_moe_routed_imatrix()).unwrap();
    let gguf = GgufModel::open(m.smollm2_moe_routed(), Access::Mmap).unwrap();
    let spec = RoutedSpec::default();
    let tokens = (spec.chunks * spec.ctx) as f32;
    assert_eq!(im.chunk_count as usize, spec.chunks);
    assert_eq!(im.datasets, vec!["groups_merged.txt".to_string()]);
    let n_layer = gguf
        .tensors()
        .filter(|t| t.info.name.ends_with("ffn_gate_inp.weight"))
        .count();
    assert_eq!(n_layer, 30);
    for il in 0..n_layer {
        let router = im.get(&format!("blk.{il}.ffn_gate_inp.weight")).unwrap();
        assert_eq!(router.counts, vec![tokens]);
        let up = im.get(&format!("blk.{il}.ffn_up_exps.weight")).unwrap();
        assert_eq!(up.n_mat(), N_EXPERT);
        assert_eq!(up.counts.iter().sum::<f32>(), tokens * N_EXPERT_USED as f32);
        for role in ["ffn_gate_exps", "ffn_down_exps"] {
            let e = im.get(&format!("blk.{il}.{role}.weight")).unwrap();
            assert_eq!(e.counts, up.counts, "blk.{il}.{role}");
        }
    }
    // Every entry fits its tensor (columns and experts).
    for e in &im.entries {
        let t = gguf.tensors().find(|t| t.info.name == e.name).unwrap();
        assert_eq!(e.n_per_mat as u64, t.info.shape[0], "{}", e.name);
        assert_eq!(
            e.n_mat() as u64,
            t.info.shape.get(2).copied().unwrap_or(1),
            "{}",
            e.name
        );
    }
    check_routing("calibration imatrix", &expert_shares(&im, n_layer));

    // llama.cpp's quantizer takes it for IQ1_S, which refuses to run without importance data
    // for every expert tensor; the result runs in llama.cpp.
    let lib = LlamaLib::from_env().unwrap();
    let mut p = lib.default_params().unwrap();
    p.nthread = 2;
    p.ftype = file_type_by_name("iq1_s").unwrap().id as i32;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("iq1_s.gguf");
    let t0 = std::time::Instant::now();
    lib.quantize(&m.smollm2_moe_routed(), &out, p, Some(&im))
        .unwrap();
    let bytes = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "llama.cpp IQ1_S with the imatrix: {bytes} bytes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let tokens = o.greedy_tokens(&out, 8, &["The capital of France is"]);
    assert_eq!(tokens[0].len(), 8);
}

#[test]
fn rebuild_on_one_thread_is_byte_identical() {
    // The folder was built with every core: the engine's passes, the k-means and the refit
    // do not depend on the thread count.
    let Some(o) = Oracle::get() else { return };
    let m = o.test_models();
    let dense = GgufModel::open(m.smollm2_768(), Access::Mmap).unwrap();
    let text = std::fs::read_to_string(calibration_text()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (model, imatrix) = (dir.path().join("m.gguf"), dir.path().join("m.imatrix.gguf"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let t0 = std::time::Instant::now();
    let report = pool
        .install(|| {
            write_moe_routed(
                &dense,
                &text,
                "groups_merged.txt",
                &RoutedSpec::default(),
                &model,
                &imatrix,
                &mut |_| {},
            )
        })
        .unwrap();
    eprintln!(
        "rebuilt on one thread in {:.1} s (dense pass {:.1} s, write {:.1} s, imatrix {:.1} s)",
        t0.elapsed().as_secs_f64(),
        report.seconds[0],
        report.seconds[1],
        report.seconds[2]
    );
    assert_eq!(report.tokens, 1024);
    assert_eq!(
        sha256_file(&model).unwrap(),
        sha256_file(&m.smollm2_moe_routed()).unwrap()
    );
    assert_eq!(
        sha256_file(&imatrix).unwrap(),
        sha256_file(&m.smollm2_moe_routed_imatrix()).unwrap()
    );
}
