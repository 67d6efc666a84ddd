//! `dynquant convert`, and `plan` / `quantize` of a Hugging Face folder, end to end: the
//! outputs equal llama.cpp's converter output, load and generate in real llama.cpp, and
//! planning or quantizing the folder equals doing it on the converted GGUF.

mod common;

use common::{clean_failure, dynquant, ok, oracle};
use dynquant_testkit::oracle::shared_dir;

fn golden() -> std::path::PathBuf {
    shared_dir().join("golden/hf")
}

const FIXTURES: [&str; 8] = [
    "llama-bpe",
    "llama-spm",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "mixtral",
    "deepseek-v3",
    "deepseek-v3-fp8",
];

/// Fixtures whose architecture the evaluation engine runs (deepseek-v3: deepseek2 with MLA,
/// YaRN and sigmoid group-limited routing; its FP8 conversion equals llama.cpp's byte for byte).
const ENGINE_FIXTURES: [&str; 8] = [
    "llama-bpe",
    "llama-spm",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "mixtral",
    "deepseek-v3",
    "deepseek-v3-fp8",
];

/// Our engine's perplexity of `model` (2 chunks of 512 on wiki.test.raw) against real
/// llama.cpp's: within 0.5%.
fn check_perplexity(o: &common::Oracle, model: &std::path::Path, f: &str) {
    let text = shared_dir().join("data/text/wiki.test.raw");
    let reference = o.perplexity(model, &text, 1024, &[])["ppl"]
        .as_f64()
        .expect("ppl");
    let out = ok(
        dynquant(args![
            "perplexity",
            model,
            "--text",
            text,
            "--chunks",
            "2",
            "--json"
        ]),
        &format!("perplexity {f}"),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let ours = v["ppl"].as_f64().expect("ppl");
    eprintln!("{f}: PPL ours {ours:.4}, llama.cpp {reference:.4}");
    assert!(
        (ours / reference - 1.0).abs() < 0.005,
        "{f}: PPL {ours} vs llama.cpp {reference}"
    );
}

#[test]
fn converted_fixtures_match_llama_cpp_and_generate_in_llama_cpp() {
    let Some(o) = oracle() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for f in FIXTURES {
        let out = tmp.path().join(format!("{f}.gguf"));
        let stdout = ok(
            dynquant(args!["convert", golden().join(f), out, "--outtype", "bf16"]),
            &format!("convert {f}"),
        );
        assert!(stdout.contains("converted"), "{stdout}");
        let reference = golden().join(format!("{f}.llamacpp.gguf"));
        if reference.exists() {
            assert!(
                std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
                "{f}: not byte-identical to llama.cpp's converter output"
            );
        }
        // Real llama.cpp loads it and generates (random weights: the tokens are meaningless,
        // but they must come from a model llama.cpp accepted).
        let toks = o.greedy_tokens(&out, 4, &["The quick brown fox"]);
        assert_eq!(toks.len(), 1, "{f}");
        assert!(!toks[0].is_empty() && toks[0].len() <= 4, "{f}: {toks:?}");
        assert!(toks[0].iter().all(|&t| t < 1000), "{f}: {toks:?}");
        // Our engine evaluates it as llama.cpp does.
        if ENGINE_FIXTURES.contains(&f) {
            check_perplexity(&o, &out, f);
        }
    }
}

fn plan_json(model: &std::path::Path, recipe: &str) -> String {
    ok(
        dynquant(args![
            "plan",
            model,
            "--recipe",
            recipe,
            "--json",
            "--tensors"
        ]),
        "plan",
    )
}

#[test]
fn plan_and_quantize_of_a_folder_equal_those_of_its_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    for (f, recipe) in [
        ("deepseek-v3-fp8", "ud-iq1_s"),
        ("qwen3moe", "q4_k_m"),
        ("llama-spm", "basic-q4_k"),
    ] {
        let dir = golden().join(f);
        let gguf = tmp.path().join(format!("{f}.gguf"));
        ok(dynquant(args!["convert", dir, gguf]), "convert");
        assert_eq!(
            plan_json(&dir, recipe),
            plan_json(&gguf, recipe),
            "{f}: plans differ"
        );
        let (a, b) = (
            tmp.path().join(format!("{f}-a.gguf")),
            tmp.path().join(format!("{f}-b.gguf")),
        );
        for (input, out) in [(&dir, &a), (&gguf, &b)] {
            ok(
                dynquant(args![
                    "quantize",
                    input,
                    out,
                    "--recipe",
                    recipe,
                    "--imatrix-fallback",
                    "--quiet",
                    "--threads",
                    "2"
                ]),
                &format!("quantize {}", input.display()),
            );
        }
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{f}: quantizing the folder differs from quantizing its conversion"
        );
    }
}

#[test]
fn bad_folders_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    // Not a model folder at all.
    let e = clean_failure(dynquant(args!["convert", tmp.path(), out]), "empty folder");
    assert!(e.contains("config.json"), "{e}");
    // An unknown architecture.
    let d = tmp.path().join("m");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("config.json"),
        r#"{"architectures": ["RwkvForCausalLM"]}"#,
    )
    .unwrap();
    let e = clean_failure(dynquant(args!["convert", d, out]), "unknown arch");
    assert!(
        e.contains("RwkvForCausalLM")
            && e.contains("not supported (supported: llama,")
            && e.contains("gemma3_text")
            && e.trim_end().lines().count() == 1,
        "{e}"
    );
    // A bad outtype.
    let e = clean_failure(
        dynquant(args![
            "convert",
            golden().join("qwen2"),
            out,
            "--outtype",
            "q4_0"
        ]),
        "bad outtype",
    );
    assert!(e.contains("q4_0"), "{e}");
    assert!(!out.exists());
}

#[test]
fn llama3_rope_scaling_writes_rope_freqs_that_llama_cpp_loads() {
    let Some(o) = oracle() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama3-rope");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(golden().join("llama-bpe")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["rope_scaling"] = serde_json::json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256
    });
    let mut p = std::fs::metadata(&cfg_path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    p.set_readonly(false);
    std::fs::set_permissions(&cfg_path, p).unwrap();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = tmp.path().join("l3.gguf");
    ok(dynquant(args!["convert", dir, out]), "convert");
    let f = dynquant_gguf::GgufFile::open(&out, dynquant_gguf::Access::Pread).unwrap();
    let t = &f.header().tensors[0];
    assert_eq!(
        (t.name.as_str(), t.shape.as_slice()),
        ("rope_freqs.weight", &[32u64][..])
    );
    assert_eq!(t.ggml_type, dynquant_gguf::GgmlType::F32);
    let toks = o.greedy_tokens(&out, 3, &["Hello"]);
    assert!(!toks[0].is_empty());
}

/// A model folder `parent/name` with llama-bpe's tokenizer files and a `model.safetensors` of a
/// BF16 embedding (`vocab` x `hidden`) and norm, written sparse: the header only, no data.
/// The caller writes `config.json`.
fn sparse_embedding_folder(
    parent: &std::path::Path,
    name: &str,
    vocab: u64,
    hidden: u64,
) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(golden().join("llama-bpe").join(f), dir.join(f)).unwrap();
    }
    let big = vocab * hidden * 2;
    let header = serde_json::json!({
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [vocab, hidden], "data_offsets": [0, big]},
        "model.norm.weight": {"dtype": "BF16", "shape": [hidden], "data_offsets": [big, big + hidden * 2]},
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let st = dir.join("model.safetensors");
    std::fs::write(&st, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(bytes.len() as u64 + big + hidden * 2).unwrap(); // sparse: no data written
    dir
}

#[test]
fn plan_of_a_folder_reads_headers_only() {
    // A 64 GiB BF16 embedding in a sparse file: planning (and opening for quantize --dry-run)
    // must not touch its data, so this finishes at once and allocates nothing of that size.
    let tmp = tempfile::tempdir().unwrap();
    let (vocab, hidden) = (65_536u64, 524_288u64);
    let dir = sparse_embedding_folder(tmp.path(), "huge", vocab, hidden);
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": 8,
        "num_hidden_layers": 0, "num_attention_heads": 4096, "num_key_value_heads": 4096,
        "vocab_size": vocab, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
        "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let out = ok(
        dynquant(args!["plan", dir, "--recipe", "basic-q4_k", "--json"]),
        "plan of a sparse 64 GiB folder",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 2);
    assert_eq!(tensors[0]["name"], "token_embd.weight");
    let params = v["total_params"].as_u64().unwrap();
    assert_eq!(params, vocab * hidden + hidden);
    ok(
        dynquant(args![
            "quantize",
            dir,
            tmp.path().join("q.gguf"),
            "--recipe",
            "basic-q4_k",
            "--dry-run"
        ]),
        "quantize --dry-run of the sparse folder",
    );
}

#[test]
fn converting_a_512_mib_tensor_stays_far_below_its_size() {
    // A sparse 512 MiB BF16 embedding (1 GiB as f32): peak RSS of `convert` must stay under a
    // quarter of its f32 size, i.e. tensors are streamed, never materialised whole
    // (scripts/hf-rss.sh measures the 1 GiB case; docs/benchmarks.md).
    assert!(
        std::path::Path::new("/usr/bin/time").exists(),
        "/usr/bin/time is needed to measure peak RSS"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (vocab, hidden) = (131_072u64, 2048u64);
    let dir = sparse_embedding_folder(tmp.path(), "big", vocab, hidden);
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": 8,
        "num_hidden_layers": 0, "num_attention_heads": 16, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let out = tmp.path().join("big.gguf");
    let timing = tmp.path().join("time");
    let status = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&timing)
        .arg(env!("CARGO_BIN_EXE_dynquant"))
        .args(["convert".as_ref(), dir.as_os_str(), out.as_os_str()])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let peak_kib: u64 = std::fs::read_to_string(&timing)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let f32_kib = vocab * hidden * 4 / 1024;
    assert!(
        peak_kib < f32_kib / 4,
        "peak RSS {peak_kib} KiB for a tensor of {f32_kib} KiB as f32"
    );
    eprintln!("convert peak RSS {peak_kib} KiB (tensor as f32: {f32_kib} KiB)");
    assert!(std::fs::metadata(&out).unwrap().len() > vocab * hidden * 2);
}
