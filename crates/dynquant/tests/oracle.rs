//! Checks against independent oracles: gguf-py (PyPI `gguf==0.19.0`) and real llama.cpp
//! (npm `node-llama-cpp@3.21.1`), on the two real models from package registries.

mod common;

use std::process::Command;

use common::{clean_failure, dynquant, ok, oracle, repo_root, Oracle};
use dynquant_gguf::{copy_model, parse_header, Access, GgufModel, OutputTarget, WriteOptions};

fn compare_inspect_with_gguf_py(model: &std::path::Path, extra: &[&str]) {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("inspect.json");
    let mut args = vec![std::ffi::OsStr::new("inspect"), model.as_os_str()];
    args.push("--json".as_ref());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let json = ok(dynquant(&args), "inspect --json");
    std::fs::write(&json_path, json).unwrap();
    let out = Command::new(&o.python)
        .arg(repo_root().join("tests/oracle/compare_inspect.py"))
        .arg(&json_path)
        .arg(model)
        .output()
        .unwrap();
    let report = ok(out, "compare_inspect.py");
    assert!(report.starts_with("OK"), "{report}");
}

#[test]
fn inspect_json_matches_gguf_py_on_smollm2() {
    let Some(o) = oracle() else { return };
    compare_inspect_with_gguf_py(&o.smollm2(), &[]);
    compare_inspect_with_gguf_py(&o.smollm2(), &["--no-mmap"]);
}

#[test]
fn inspect_json_matches_gguf_py_on_gemma3() {
    let Some(o) = oracle() else { return };
    compare_inspect_with_gguf_py(&o.gemma(), &[]);
}

#[test]
fn rewrite_reproduces_real_models_byte_for_byte() {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (model, access) in [
        (o.smollm2(), Access::Mmap),
        (o.smollm2(), Access::Pread),
        (o.gemma(), Access::Mmap),
    ] {
        let m = GgufModel::open(&model, access).unwrap();
        let out = dir.path().join("rewritten.gguf");
        let opts = WriteOptions {
            overwrite: true,
            protected_inputs: vec![],
        };
        copy_model(&m, &OutputTarget::Single(out.clone()), &opts).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&model).unwrap(),
            "{} ({access:?}) not reproduced byte for byte",
            model.display()
        );
    }
}

/// Greedy tokens from real llama.cpp, one JSON line per prompt.
fn llama_cpp_greedy(o: &Oracle, model: &std::path::Path) -> Vec<String> {
    let out = Command::new("node")
        .env("DYNQUANT_NODE_DIR", &o.node_dir)
        .arg(repo_root().join("tests/oracle/generate.mjs"))
        .arg(model)
        .arg("20")
        .arg("The capital of France is")
        .arg("Once upon a time")
        .output()
        .unwrap();
    let lines: Vec<String> = ok(out, "generate.mjs").lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    lines
}

#[test]
fn split_then_merge_reproduces_smollm2_and_llama_cpp_loads_the_split_set() {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("smol");
    let out = dynquant(args![
        "split",
        o.smollm2(),
        prefix,
        "--split-max-size",
        "30M"
    ]);
    ok(out, "split");
    let mut parts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert!(parts.len() >= 4, "{parts:?}");
    assert!(parts[0]
        .to_string_lossy()
        .ends_with(&format!("smol-00001-of-{:05}.gguf", parts.len())));

    // gguf-py reads every part and sees llama.cpp's split keys.
    let out = Command::new(&o.python)
        .arg(repo_root().join("tests/oracle/read_parts.py"))
        .args(&parts)
        .output()
        .unwrap();
    let report = ok(out, "read_parts.py");
    let mut total = 0;
    for (i, line) in report.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["split_no"], i as u64, "{line}");
        assert_eq!(v["split_count"], parts.len() as u64, "{line}");
        assert_eq!(v["split_tensors_count"], 272, "{line}");
        total += v["tensors"].as_u64().unwrap();
    }
    assert_eq!(total, 272);

    // Merge gives the original bytes back.
    let merged = dir.path().join("merged.gguf");
    ok(
        dynquant(args!["merge", parts[0], merged, "--no-mmap"]),
        "merge",
    );
    assert!(std::fs::read(&merged).unwrap() == std::fs::read(o.smollm2()).unwrap());

    // Real llama.cpp loads the split set from its first part and generates as the original.
    let original = llama_cpp_greedy(&o, &o.smollm2());
    let from_split = llama_cpp_greedy(&o, &parts[0]);
    assert_eq!(original, from_split);
    for line in &original {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["tokens"].as_array().unwrap().len(), 20, "{line}");
    }
}

#[test]
fn truncated_real_model_is_a_clean_error_at_every_header_offset() {
    let Some(o) = oracle() else { return };
    let bytes = std::fs::read(o.smollm2()).unwrap();
    let full = parse_header(&bytes[..], bytes.len() as u64).unwrap();
    // 2000 cut points through the 1.7 MB header (plus the first 300 bytes one by one),
    // then 50 through the data section.
    let header_end = full.data_offset as usize;
    let header_points = (0..300).chain((0..header_end).step_by(header_end / 2000));
    let data_points = (1..50).map(|i| header_end + (bytes.len() - header_end) * i / 50);
    for len in header_points.chain(data_points) {
        let r = parse_header(&bytes[..len], len as u64);
        assert!(r.is_err(), "truncated at {len} must fail");
    }
    // Through the CLI: exit code 1 and one line, for cut points in header and data.
    let dir = tempfile::tempdir().unwrap();
    for len in [
        0usize,
        3,
        23,
        5000,
        900_000,
        header_end + 10,
        bytes.len() - 1,
    ] {
        let p = dir.path().join(format!("cut{len}.gguf"));
        std::fs::write(&p, &bytes[..len]).unwrap();
        for extra in ["--json", "--no-mmap"] {
            clean_failure(
                dynquant(args!["inspect", p, extra]),
                &format!("inspect cut at {len}"),
            );
        }
    }
}

#[test]
fn llama_cpp_rejects_what_we_reject() {
    // A sanity check that our "truncated" verdict agrees with real llama.cpp's.
    let Some(o) = oracle() else { return };
    let bytes = std::fs::read(o.smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    clean_failure(dynquant(args!["inspect", p]), "inspect");
    let out = Command::new("node")
        .env("DYNQUANT_NODE_DIR", &o.node_dir)
        .arg(repo_root().join("tests/oracle/generate.mjs"))
        .arg(&p)
        .arg("1")
        .arg("Hi")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "llama.cpp loaded a truncated file"
    );
}

#[test]
fn metadata_edge_cases_match_gguf_py_and_round_trip() {
    // NaN/inf/-0.0/denormal floats, integer extremes, empty and nested arrays, non-ASCII and
    // control characters, alignment 64: written by an independent stdlib-only script.
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().unwrap();
    let edge = dir.path().join("edge.gguf");
    let full = dir.path().join("edge-full.gguf");
    let script = repo_root().join("tests/oracle/make_edge_gguf.py");
    ok(
        Command::new(&o.python)
            .arg(&script)
            .arg(&edge)
            .arg("--utf8-only")
            .output()
            .unwrap(),
        "make_edge",
    );
    ok(
        Command::new(&o.python)
            .arg(&script)
            .arg(&full)
            .output()
            .unwrap(),
        "make_edge",
    );
    compare_inspect_with_gguf_py(&edge, &[]);
    let m = GgufModel::open(&edge, Access::Pread).unwrap();
    let out = dir.path().join("rewritten.gguf");
    copy_model(
        &m,
        &OutputTarget::Single(out.clone()),
        &WriteOptions::default(),
    )
    .unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&edge).unwrap());
    // Invalid UTF-8 in a string is a typed, located error.
    let msg = clean_failure(dynquant(args!["inspect", full]), "inspect invalid utf-8");
    assert!(
        msg.contains("edge.str_bad_utf8") && msg.contains("UTF-8"),
        "{msg}"
    );
}

#[test]
fn ctrl_c_leaves_neither_final_nor_temporary_files() {
    let Some(o) = oracle() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut interrupted = false;
    // The signal must land while the copy runs; retry with shorter delays if it finished.
    for delay_ms in [150u64, 60, 20, 5] {
        let prefix = dir.path().join("smol");
        let child = Command::new(env!("CARGO_BIN_EXE_dynquant"))
            .args(["split", "--no-mmap", "--split-max-size", "20M"])
            .arg(o.smollm2())
            .arg(&prefix)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(130) && stderr.contains("no output was written") {
            assert!(left.is_empty(), "interrupted split left {left:?}");
            interrupted = true;
            break;
        }
        // Interrupted after the whole set was renamed into place (a narrow window at the
        // end): then every shard must be there, never a part of the set.
        if out.status.code() == Some(130) {
            assert!(stderr.contains("output was complete"), "{stderr}");
            assert_eq!(left.len(), 5, "a partial split set was left: {left:?}");
        } else {
            assert!(out.status.success());
        }
        // It completed before the signal: start over in a clean folder.
        for f in left {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
    }
    assert!(
        interrupted,
        "the split always finished before Ctrl-C arrived"
    );
}
