//! The command line on good and bad input (no oracles needed).

mod common;

use common::{clean_failure, dynquant, ok};

/// Makes the demo model (a real GGUF written by dynquant) in `dir`.
fn demo_model(dir: &std::path::Path) -> std::path::PathBuf {
    let out = ok(
        dynquant(args!["demo", "--out-dir", dir, "--model-only"]),
        "demo",
    );
    assert!(out.contains("byte-identical"), "{out}");
    dir.join("demo-f32.gguf")
}

#[test]
fn demo_runs_and_inspect_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let text = ok(dynquant(args!["inspect", model, "--tensors"]), "inspect");
    assert!(text.contains("blk.3.ffn_down.weight"), "{text}");
    assert!(text.contains("llama"), "{text}");
    let json = ok(
        dynquant(args!["inspect", model, "--json"]),
        "inspect --json",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["n_tensors"], 39);
    assert_eq!(v["tensors"][0]["name"], "token_embd.weight");
    assert_eq!(v["tensors"][0]["shape"], serde_json::json!([256, 512]));
    assert_eq!(v["bpw"], 32.0);
}

#[test]
fn malformed_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let good = std::fs::read(&model).unwrap();
    let data_offset = {
        let v: serde_json::Value =
            serde_json::from_str(&ok(dynquant(args!["inspect", model, "--json"]), "inspect"))
                .unwrap();
        v["data_offset"].as_u64().unwrap() as usize
    };
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("bad magic", patch(0, b"GGUG")),
        ("version 1", patch(4, &1u32.to_le_bytes())),
        ("huge tensor count", patch(8, &u64::MAX.to_le_bytes())),
        ("huge kv count", patch(16, &(1u64 << 40).to_le_bytes())),
        (
            "huge first key length",
            patch(24, &(1u64 << 50).to_le_bytes()),
        ),
        ("truncated header", good[..data_offset / 2].to_vec()),
        ("truncated data", good[..good.len() - 100].to_vec()),
        (
            "not gguf",
            b"hello world, this is not a model file at all".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let p = dir.path().join("bad.gguf");
        std::fs::write(&p, &bytes).unwrap();
        for extra in ["--json", "--no-mmap"] {
            let msg = clean_failure(dynquant(args!["inspect", p, extra]), what);
            assert!(
                msg.contains("bad.gguf"),
                "{what}: message should name the file: {msg}"
            );
        }
    }
    clean_failure(
        dynquant(args!["inspect", dir.path().join("missing.gguf")]),
        "missing file",
    );
    // Hand-made headers for the tensor-table failures.
    let hand_made: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown type id",
            one_tensor_file(&[(b"t", 8, 4, 0)], 64),
            "unknown ggml type id 4",
        ),
        (
            "overlapping tensors",
            one_tensor_file(&[(b"a", 16, 0, 0), (b"b", 8, 0, 32)], 128),
            "overlap",
        ),
        (
            "misaligned offset",
            one_tensor_file(&[(b"t", 8, 0, 8)], 64),
            "not a multiple",
        ),
        (
            "offset past EOF",
            one_tensor_file(&[(b"t", 8, 0, 4096)], 64),
            "past the end",
        ),
    ];
    for (what, bytes, expect) in hand_made {
        let p = dir.path().join("bad.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let msg = clean_failure(dynquant(args!["inspect", p]), what);
        assert!(msg.contains(expect), "{what}: {msg}");
    }
}

/// A GGUF v3 file with no metadata and 1-D tensors `(name, elements, type id, offset)`,
/// followed by `data` bytes of (padded) data section.
fn one_tensor_file(tensors: &[(&[u8], u64, u32, u64)], data: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend(0u64.to_le_bytes());
    for (name, n, ty, offset) in tensors {
        b.extend((name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend(1u32.to_le_bytes());
        b.extend(n.to_le_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32 + data, 0);
    b
}

#[test]
fn split_and_merge_protect_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let prefix = dir.path().join("parts");
    let out = ok(
        dynquant(args!["split", model, prefix, "--split-max-size", "3M"]),
        "split",
    );
    assert!(out.contains("wrote 5 shards"), "{out}");
    let first = dir.path().join("parts-00001-of-00005.gguf");
    // Merging onto an input is refused, even with --force.
    let msg = clean_failure(
        dynquant(args!["merge", first, first, "--force"]),
        "merge onto input",
    );
    assert!(msg.contains("refusing to overwrite input"), "{msg}");
    // demo-f32.gguf is not an input of the merge, so --force may replace it (with itself).
    ok(
        dynquant(args!["merge", first, model, "--force"]),
        "merge --force",
    );
    assert!(
        std::fs::read(&model).unwrap()
            == std::fs::read(dir.path().join("demo-merged.gguf")).unwrap()
    );
    // Without --force an existing output is refused.
    let msg = clean_failure(
        dynquant(args!["split", model, prefix, "--split-max-size", "3M"]),
        "split over existing parts",
    );
    assert!(msg.contains("already exists"), "{msg}");
    // No limits given.
    clean_failure(
        dynquant(args!["split", model, prefix]),
        "split without limits",
    );
    // A shard that is not the first.
    let msg = clean_failure(
        dynquant(args![
            "inspect",
            dir.path().join("parts-00002-of-00005.gguf")
        ]),
        "inspect second shard",
    );
    assert!(msg.contains("open the first part"), "{msg}");
    // A missing shard.
    std::fs::remove_file(dir.path().join("parts-00004-of-00005.gguf")).unwrap();
    let msg = clean_failure(dynquant(args!["inspect", first]), "missing shard");
    assert!(msg.contains("missing"), "{msg}");
    // Nothing half-written is left behind by the failures.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("dynquant-tmp"), "{name}");
    }
}

/// The whole demo: the dynamic quant must drift less from the unquantized model than the
/// uniform ones, including the one of the same size.
#[test]
fn demo_measures_dynamic_against_uniform_quants() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(
        dynquant(args!["demo", "--out-dir", dir.path()]),
        "full demo",
    );
    // Rows of the quality table: name, size, unit, bpw, KLD, ±, err, top-1 (no perplexity:
    // the weights are random).
    let row = |name: &str| -> (f64, f64) {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name) && l.contains('±'))
            .unwrap_or_else(|| panic!("no quality row for {name}:\n{out}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let mib: f64 = f[1].parse().unwrap();
        let kld: f64 = f[4].parse().unwrap();
        assert!(kld.is_finite() && kld > 0.0, "{line}");
        (mib, kld)
    };
    let (ud_size, ud_kld) = row("ud-iq1_s");
    let (b1_size, b1_kld) = row("basic-iq1_s");
    let (b2_size, b2_kld) = row("basic-iq2_xxs");
    assert!(b1_size < ud_size, "{out}");
    assert!((b2_size / ud_size - 1.0).abs() < 0.05, "{out}");
    assert!(ud_kld < b1_kld && ud_kld < b2_kld, "{out}");
    assert!(
        !out.contains("PPL"),
        "a perplexity printed for random weights:\n{out}"
    );
    for f in [
        "synth-deepseek2-ud-iq1_s.gguf",
        "synth-deepseek2-basic-iq1_s.gguf",
        "synth-deepseek2-basic-iq2_xxs.gguf",
        "synth-deepseek2.imatrix.gguf",
        "report.html",
        "report.json",
        "card.md",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    // the demo ends by naming its report
    let report = dir.path().join("report.html");
    assert!(out.contains(&report.display().to_string()), "{out}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["quants"].as_array().map(Vec::len), Some(3));
}
