//! `dynquant quantize` end to end: outputs that gguf-py reads identically and real llama.cpp
//! loads and runs; byte-identical for any thread count; clean refusals.

mod common;

use std::process::Command;

use common::{clean_failure, dynquant, ok, oracle, repo_root};

/// A small dynamic recipe over types quick to produce: i-quants on the first MoE layers'
/// experts (with the imatrix), IQ4_XS elsewhere, Q8_0 embedding.
const RECIPE: &str = r#"
name = "test-dynamic"
default = "iq4_xs"
[[rules]]
roles = ["ffn_down_exps"]
moe_layers = "0-1"
type = "iq2_xxs"
why = "early down_proj one step up"
[[rules]]
roles = ["ffn_gate_exps", "ffn_up_exps"]
moe_layers = "0-1"
type = "iq1_s"
why = "experts at 1.56 bpw"
[[rules]]
roles = ["token_embd"]
type = "q8_0"
why = "tied embedding/head"
"#;

#[test]
fn dynamic_quant_of_the_moe_model_reads_in_gguf_py_and_runs_in_llama_cpp() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out = dir.path().join("moe-dyn.gguf");
    let summary = ok(
        dynquant(args![
            "quantize",
            m.smollm2_768_moe(),
            out,
            "--recipe",
            recipe,
            "--imatrix",
            m.smollm2_768_moe_imatrix(),
            "--json"
        ]),
        "quantize",
    );
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["types"]["iq1_s"], 4);
    assert_eq!(v["types"]["iq2_xxs"], 2);
    // Metadata says how the file was made.
    let json = ok(dynquant(args!["inspect", out, "--json"]), "inspect");
    let i: serde_json::Value = serde_json::from_str(&json).unwrap();
    let md = |k: &str| {
        i["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == k)
            .map(|e| e["value"].clone())
    };
    assert_eq!(md("dynquant.recipe").unwrap(), "test-dynamic");
    assert_eq!(md("general.quantization_version").unwrap(), 2);
    assert_eq!(md("quantize.imatrix.entries_count").unwrap(), 210);
    // gguf-py reads the same file we describe.
    let json_path = dir.path().join("inspect.json");
    std::fs::write(&json_path, json).unwrap();
    let report = ok(
        Command::new(&o.python)
            .arg(repo_root().join("tests/oracle/compare_inspect.py"))
            .arg(&json_path)
            .arg(&out)
            .output()
            .unwrap(),
        "compare_inspect.py",
    );
    assert!(report.starts_with("OK"), "{report}");
    // Real llama.cpp loads it, generates, and its perplexity stays near the F16 model's.
    let tokens = o.greedy_tokens(&out, 20, &["The capital of France is"]);
    assert_eq!(tokens[0].len(), 20);
    let text = repo_root().join("../shared/data/text/wiki.test.raw");
    let ppl = o.perplexity(&out, &text, 512, &[])["ppl"].as_f64().unwrap();
    let base = o.perplexity(&m.smollm2_768_moe(), &text, 512, &[])["ppl"]
        .as_f64()
        .unwrap();
    eprintln!("PPL {ppl:.3} vs {base:.3} unquantized");
    // IQ1_S experts in the two most sensitive layers and 4.25-bit elsewhere cost a lot of
    // quality on a 135M model; a broken quantization would give PPL in the hundreds.
    assert!(ppl.is_finite() && ppl < 2.5 * base, "PPL {ppl} vs {base}");
}

#[test]
fn output_is_identical_for_any_thread_count_and_splits_load() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("t1.gguf"), dir.path().join("t2.gguf"));
    ok(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            a,
            "--recipe",
            "basic-q8_0",
            "--threads",
            "1",
            "--quiet"
        ]),
        "t1",
    );
    ok(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            b,
            "--recipe",
            "basic-q8_0",
            "--threads",
            "2",
            "--quiet"
        ]),
        "t2",
    );
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // A split output loads in llama.cpp from its first shard and matches the single file.
    let prefix = dir.path().join("split");
    ok(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            prefix,
            "--recipe",
            "basic-q8_0",
            "--split-max-size",
            "40M",
            "--quiet"
        ]),
        "split quantize",
    );
    let mut shards: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("split-0"))
        .collect();
    shards.sort();
    assert!(shards.len() >= 4, "{shards:?}");
    let first = shards[0].clone();
    assert!(first
        .to_string_lossy()
        .ends_with(&format!("split-00001-of-{:05}.gguf", shards.len())));
    let prompts = ["Once upon a time"];
    assert_eq!(
        o.greedy_tokens(&first, 10, &prompts),
        o.greedy_tokens(&a, 10, &prompts)
    );
}

#[test]
fn refusals_are_clean_and_write_nothing() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    // IQ1_S without an imatrix: refused before any work, naming the tensors.
    let msg = clean_failure(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            out,
            "--recipe",
            "basic-iq1_s"
        ]),
        "no imatrix",
    );
    assert!(
        msg.contains("need an importance matrix") && msg.contains("blk.0.attn_q.weight"),
        "{msg}"
    );
    // Quantized input without --allow-requantize.
    let msg = clean_failure(
        dynquant(args![
            "quantize",
            o.smollm2(),
            out,
            "--recipe",
            "basic-q8_0"
        ]),
        "requantize",
    );
    assert!(msg.contains("--allow-requantize"), "{msg}");
    // Output onto the input.
    let msg = clean_failure(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            m.smollm2_768(),
            "--recipe",
            "basic-q8_0",
            "--force"
        ]),
        "overwrite input",
    );
    assert!(msg.contains("refusing to overwrite input"), "{msg}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
