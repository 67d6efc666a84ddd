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
    // Merged back, the split output is the single-file output byte for byte.
    let merged = dir.path().join("merged.gguf");
    ok(dynquant(args!["merge", first, merged]), "merge");
    assert!(std::fs::read(&merged).unwrap() == std::fs::read(&a).unwrap());
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

/// A small synthetic F32 llama model (`dynquant-dev big-model`, 16 MiB FFN matrices).
fn small_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("small.gguf");
    dynquant_synth::big_llama::write_big_llama(&path, 16).expect("dynquant-dev big-model");
    path
}

/// Files left in `dir` besides `keep`.
fn leftovers(dir: &std::path::Path, keep: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.contains(&p.as_path()))
        .collect()
}

#[test]
fn bad_inputs_and_failing_outputs_are_clean_errors_without_partial_files() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("out.gguf");
    let keep = [model.as_path()];

    // An imatrix made for another model: same tensor names, other widths (576 vs 768).
    let golden = repo_root().join("../shared/golden/smollm2-135m.imatrix.gguf");
    let msg = clean_failure(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            out,
            "--recipe",
            "basic-iq2_xxs",
            "--imatrix",
            golden
        ]),
        "imatrix of another model",
    );
    assert!(
        msg.contains("imatrix entry for") && msg.contains("576"),
        "{msg}"
    );

    // NaN in the weights: the error names tensor, row and column.
    let nan_model = dir.path().join("nan.gguf");
    let mut bytes = std::fs::read(&model).unwrap();
    let file = dynquant_gguf::GgufFile::open(&model, dynquant_gguf::Access::Pread).unwrap();
    let h = file.header();
    let t = h
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_down.weight")
        .unwrap();
    // Row 3, column 5 of a row of ne0 f32 values.
    let at = (h.data_offset + t.offset) as usize + (3 * t.shape[0] as usize + 5) * 4;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&nan_model, bytes).unwrap();
    let msg = clean_failure(
        dynquant(args!["quantize", nan_model, out, "--recipe", "basic-q4_k"]),
        "NaN weights",
    );
    assert!(
        msg.contains("blk.0.ffn_down.weight") && msg.contains("row 3") && msg.contains("NaN"),
        "{msg}"
    );
    std::fs::remove_file(&nan_model).unwrap();

    // Unwritable output: its folder is a regular file.
    let msg = clean_failure(
        dynquant(args![
            "quantize",
            model,
            model.join("out.gguf"),
            "--recipe",
            "basic-q8_0"
        ]),
        "unwritable output",
    );
    assert!(msg.contains("small.gguf"), "{msg}");

    // A file-size limit hit in the middle of writing: a write error, no file left.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 2048 && exec '{}' quantize '{}' '{}' --recipe basic-q8_0 --quiet",
            env!("CARGO_BIN_EXE_dynquant"),
            model.display(),
            out.display()
        ))
        .output()
        .unwrap();
    let msg = clean_failure(status, "file size limit");
    assert!(msg.contains("File too large"), "{msg}");
    assert!(leftovers(dir.path(), &keep).is_empty());

    // A full disk, known before any work: a 4 MiB tmpfs in a private mount namespace.
    let tmpfs = dir.path().join("tiny");
    std::fs::create_dir(&tmpfs).unwrap();
    let probe = std::process::Command::new("unshare")
        .args(["-r", "-m", "true"])
        .output();
    if probe.map(|o| o.status.success()).unwrap_or(false) {
        let run = std::process::Command::new("unshare")
            .args(["-r", "-m", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size=4m tmpfs '{t}' && '{}' quantize '{}' '{t}/out.gguf' --recipe basic-q8_0; rc=$?; ls -A '{t}' >&2; exit $rc",
                env!("CARGO_BIN_EXE_dynquant"),
                model.display(),
                t = tmpfs.display()
            ))
            .output()
            .unwrap();
        let msg = clean_failure(run, "disk full");
        assert!(msg.contains("not enough disk space"), "{msg}");
    } else {
        eprintln!("unshare -r -m is not permitted here: the tmpfs disk-full case was not run");
    }
    std::fs::remove_dir(&tmpfs).unwrap();
    assert!(leftovers(dir.path(), &keep).is_empty());
}

#[test]
fn legacy_dat_imatrix_works_and_unseen_experts_are_warned_about() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let mut im = dynquant_gguf::imatrix::Imatrix::read(m.smollm2_768_moe_imatrix()).unwrap();
    // Experts 1 and 4 (of 6) of one tensor never saw a token.
    let e = im
        .entries
        .iter_mut()
        .find(|e| e.name == "blk.0.ffn_up_exps.weight")
        .unwrap();
    for x in [1, 4] {
        e.counts[x] = 0.0;
        e.in_sum2[x * e.n_per_mat..(x + 1) * e.n_per_mat].fill(0.0);
    }
    let gguf = dir.path().join("im.gguf");
    im.write(&gguf, &Default::default()).unwrap();
    let dat = dir.path().join("im.dat");
    std::fs::write(&dat, im.to_legacy_bytes()).unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let quantize = |imatrix: &std::path::Path, prior: &str| {
        let out = dir.path().join(format!(
            "out-{}-{prior}.gguf",
            imatrix.extension().unwrap().to_string_lossy()
        ));
        let run = dynquant(args![
            "quantize",
            m.smollm2_768_moe(),
            out,
            "--recipe",
            recipe,
            "--imatrix",
            imatrix,
            "--imatrix-expert-prior",
            prior,
            "--json"
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        let summary: serde_json::Value = serde_json::from_str(&ok(run, "quantize")).unwrap();
        (out, stderr, summary)
    };
    // llama-quantize's weights (prior 0): the GGUF imatrix keeps per-expert counts, so the two
    // unseen experts are named, and they get neutral weights, as in the .dat file.
    let (from_gguf, stderr, summary) = quantize(&gguf, "0");
    assert!(
        stderr.contains("warning: blk.0.ffn_up_exps.weight: 2 of 6 experts")
            && stderr.contains("neutral weights"),
        "{stderr}"
    );
    assert_eq!(summary["unseen_experts"][0]["unseen"], 2);
    let (from_dat, _, _) = quantize(&dat, "0");
    // The .dat weights equal the GGUF ones up to the rounding of value / ncall (llama.cpp's
    // format stores means times ncall), so nearly every block comes out the same.
    let (a, b) = (
        std::fs::read(&from_gguf).unwrap(),
        std::fs::read(&from_dat).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    let share = same as f64 / a.len() as f64;
    eprintln!("gguf vs dat imatrix: {:.4}% identical bytes", 100.0 * share);
    assert!(share > 0.95, "{share}");
    // And the .dat-made file runs in llama.cpp.
    let tokens = o.greedy_tokens(&from_dat, 10, &["The capital of France is"]);
    assert_eq!(tokens[0].len(), 10);
    // The default prior shrinks every expert toward its tensor's pooled importance: the unseen
    // experts get the others' mean, and the routed tensors' bytes change (dense ones do not).
    let (shrunk, stderr, _) = quantize(&gguf, "16");
    assert!(
        stderr.contains("the mean importance of the others"),
        "{stderr}"
    );
    let open = |p: &std::path::Path| {
        dynquant_gguf::GgufModel::open(p, dynquant_gguf::Access::Mmap).unwrap()
    };
    let (llama_weights, shrunk_weights) = (open(&from_gguf), open(&shrunk));
    let (mut experts_changed, mut dense_changed) = (0, 0);
    for (t0, t1) in llama_weights.tensors().zip(shrunk_weights.tensors()) {
        assert_eq!(t0.info.name, t1.info.name);
        if llama_weights.tensor_data(&t0).unwrap() != shrunk_weights.tensor_data(&t1).unwrap() {
            if t0.info.name.contains("_exps") {
                experts_changed += 1;
            } else {
                dense_changed += 1;
            }
        }
    }
    assert_eq!(dense_changed, 0);
    assert!(experts_changed > 0);
    // A negative prior is refused.
    let bad = dynquant(args![
        "quantize",
        m.smollm2_768_moe(),
        dir.path().join("bad.gguf"),
        "--recipe",
        recipe,
        "--imatrix",
        gguf,
        "--imatrix-expert-prior",
        "-1"
    ]);
    assert!(!bad.status.success());
    assert!(!dir.path().join("bad.gguf").exists());
}

#[test]
fn peak_memory_stays_within_the_bound_on_a_model_larger_than_it() {
    if oracle().is_none() {
        return;
    }
    let out = std::process::Command::new(repo_root().join("scripts/measure-rss.sh"))
        .env("DYNQUANT_BIN", env!("CARGO_BIN_EXE_dynquant"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "measure-rss.sh failed");
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(" ok")).count(),
        2,
        "{stdout}"
    );
}

/// sha256 of every tensor's values dequantized by us, as little-endian f32.
fn our_dequant_digests(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let model = dynquant_gguf::GgufModel::open(path, dynquant_gguf::Access::Mmap).unwrap();
    model
        .tensors()
        .map(|t| {
            let data = model.tensor_data(&t).unwrap();
            let mut values = vec![0f32; t.info.n_elements() as usize];
            dynquant_quants::dequantize(t.info.ggml_type, &data, &mut values).unwrap();
            let mut h = Sha256::new();
            for v in &values {
                h.update(v.to_le_bytes());
            }
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            (t.info.name.clone(), hex)
        })
        .collect()
}

#[test]
fn ud_and_basic_iq1_s_of_every_moe_model_run_in_llama_cpp_and_dequantize_like_gguf_py() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let models = [
        ("synth-deepseek2-mla", m.deepseek2_mla(), None),
        ("synth-deepseek2-legacy", m.deepseek2_legacy(), None),
        ("synth-qwen3moe", m.qwen3moe(), None),
        (
            "smollm2-768-moe",
            m.smollm2_768_moe(),
            Some(m.smollm2_768_moe_imatrix()),
        ),
    ];
    for (name, input, imatrix) in &models {
        for recipe in ["ud-iq1_s", "basic-iq1_s"] {
            let out = dir.path().join(format!("{name}-{recipe}.gguf"));
            let mut a: Vec<std::ffi::OsString> = vec![
                "quantize".into(),
                input.into(),
                (&out).into(),
                "--recipe".into(),
                recipe.into(),
                "--json".into(),
            ];
            if let Some(im) = imatrix {
                a.extend(["--imatrix".into(), im.into()]);
            }
            // No imatrix exists for the synthetic models yet (the engine computes one), and
            // none has token_embd (llama.cpp never collects it): the documented uniform-weight
            // fallback for what is missing.
            a.push("--imatrix-fallback".into());
            let args: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
            let summary: serde_json::Value =
                serde_json::from_str(&ok(dynquant(&args), &format!("{name} {recipe}"))).unwrap();
            assert!(summary["types"]["iq1_s"].as_u64().unwrap() > 0, "{summary}");
            // gguf-py's digests are computed while llama.cpp generates.
            let digests = Command::new(&o.python)
                .arg(repo_root().join("tests/oracle/dequant_digest.py"))
                .arg(&out)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let tokens = o.greedy_tokens(&out, 8, &["The capital of France is"]);
            assert_eq!(tokens[0].len(), 8, "{name} {recipe}");
            let py = ok(digests.wait_with_output().unwrap(), "dequant_digest.py");
            let theirs: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&py).unwrap();
            let ours = our_dequant_digests(&out);
            assert_eq!(ours.len(), theirs.len(), "{name} {recipe}");
            for (t, d) in &ours {
                assert_eq!(Some(d), theirs.get(t), "{name} {recipe}: {t}");
            }
            eprintln!(
                "{name} {recipe}: {} bytes, {:.3} bpw, runs in llama.cpp, gguf-py dequantizes all {} tensors identically",
                summary["bytes"], summary["bpw"].as_f64().unwrap(), ours.len()
            );
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn q4_k_m_perplexity_is_at_most_llama_cpp_quantization_of_the_same_input() {
    // The other mixes (q2_k, iq2_xxs, iq1_s, iq1_m) are measured by the same script into
    // docs/benchmarks.md; one runs here to keep CI short.
    if oracle().is_none() {
        return;
    }
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/quantize-vs-llama.py"))
        .args(["--mixes", "q4_k_m", "--no-write"])
        .env("DYNQUANT_BIN", env!("CARGO_BIN_EXE_dynquant"))
        .output()
        .unwrap();
    let stdout = ok(out, "quantize-vs-llama.py");
    eprintln!("{stdout}");
    let row: serde_json::Value = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a result row");
    let ratio = row["ppl_ratio"].as_f64().unwrap();
    assert!(ratio <= 1.005, "q4_k_m PPL ours/llama.cpp {ratio}: {row}");
}

/// gpt-oss straight from its Hugging Face folder (`tests/fixtures/hf/gpt-oss`) with `ud-iq1_s`:
/// by default the MXFP4 experts are copied (the bytes of llama.cpp's conversion), with
/// `--requantize-mxfp4` they follow the recipe; both files load and generate in llama.cpp.
#[test]
fn gpt_oss_experts_stay_mxfp4_unless_requantized_and_both_run_in_llama_cpp() {
    use dynquant_gguf::{Access, GgmlType, GgufFile};
    let folder = repo_root().join("tests/fixtures/hf/gpt-oss");
    let reference = repo_root().join("tests/fixtures/hf/gpt-oss.llamacpp.gguf");
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.gguf");
    let lower = dir.path().join("lower.gguf");
    ok(
        dynquant(args!["quantize", folder, kept, "--recipe", "ud-iq1_s"]),
        "quantize",
    );
    ok(
        dynquant(args![
            "quantize",
            folder,
            lower,
            "--recipe",
            "ud-iq1_s",
            "--requantize-mxfp4"
        ]),
        "quantize --requantize-mxfp4",
    );
    let r = GgufFile::open(&reference, Access::Pread).unwrap();
    let (k, l) = (
        GgufFile::open(&kept, Access::Pread).unwrap(),
        GgufFile::open(&lower, Access::Pread).unwrap(),
    );
    let mut n_exps = 0;
    for (i, t) in r.header().tensors.iter().enumerate() {
        if !t.name.contains("_exps.weight") {
            continue;
        }
        n_exps += 1;
        let ki = k.header().tensor_index(&t.name).unwrap();
        assert_eq!(k.header().tensors[ki].ggml_type, GgmlType::MXFP4);
        assert!(
            k.tensor_data(ki).unwrap() == r.tensor_data(i).unwrap(),
            "{}",
            t.name
        );
        let li = l.header().tensor_index(&t.name).unwrap();
        assert_ne!(
            l.header().tensors[li].ggml_type,
            GgmlType::MXFP4,
            "{}",
            t.name
        );
    }
    assert_eq!(n_exps, 6);
    let Some(o) = oracle() else { return };
    for f in [&kept, &lower] {
        let tokens = o.greedy_tokens(f, 8, &["The capital of France is"]);
        assert_eq!(tokens[0].len(), 8, "{}", f.display());
    }
}
