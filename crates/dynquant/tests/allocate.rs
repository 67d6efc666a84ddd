//! `plan`/`quantize` with a target (`--target-size`, `--target-bpw`, `--target-kld`): the
//! allocation's promises about the file, its constraints, exports and bad input.

mod common;

use common::{clean_failure, dynquant, ok, oracle, repo_root};

fn r1_config() -> std::path::PathBuf {
    repo_root().join("../shared/data/configs/deepseek-r1/config.json")
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn r1_config_to_131_gib_with_priors() {
    let v = json(&ok(
        dynquant(args![
            "plan",
            r1_config(),
            "--target-size",
            "131GiB",
            "--json"
        ]),
        "plan",
    ));
    let target = 131u64 << 30;
    let a = &v["allocation"];
    let bytes = a["file_bytes"].as_u64().unwrap();
    assert!(bytes <= target, "{bytes} over {target}");
    assert!(
        bytes as f64 >= 0.995 * target as f64,
        "{bytes} too far under"
    );
    assert!(a["lower_bound"].as_f64().unwrap() <= a["objective"].as_f64().unwrap() + 1e-12);
    assert!(a["gap"].as_f64().unwrap() < 0.01, "{a}");
    for t in v["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.contains("ffn_gate_inp") || name.contains("norm") {
            assert_eq!(t["type"], "f32", "{name}");
            assert_eq!(t["rule"], "keep");
        } else if t["rule"] == "alloc" {
            assert!(t["predicted_kld"].as_f64().is_some(), "{t}");
            assert!(t["why"].as_str().unwrap().starts_with("allocated"));
        }
    }
}

#[test]
fn recipes_constrain_and_exports_reproduce_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("constraints.toml");
    std::fs::write(
        &recipe,
        "name = \"floors\"\n\
         [[rules]]\nroles = [\"attn_q\", \"attn_k\", \"attn_v\", \"attn_output\", \"attn_q_a\", \"attn_q_b\", \"attn_kv_a_mqa\", \"attn_k_b\", \"attn_v_b\", \"attn_kv_b\"]\nmin = \"q4_K\"\nwhy = \"attention never below Q4_K\"\n\
         [[rules]]\nroles = [\"ffn_gate_shexp\", \"ffn_up_shexp\", \"ffn_down_shexp\"]\ntype = \"q6_K\"\nwhy = \"shared experts pinned\"\n",
    )
    .unwrap();
    let exported = dir.path().join("alloc.toml");
    let types = dir.path().join("types.txt");
    let v = json(&ok(
        dynquant(args![
            "plan",
            r1_config(),
            "--target-bpw",
            "1.9",
            "--recipe",
            recipe,
            "--json",
            "--export-recipe",
            exported,
            "--export-tensor-types",
            types
        ]),
        "plan",
    ));
    assert!(v["bpw"].as_f64().unwrap() <= 1.9);
    let bpw_of = |ty: &str| match ty {
        "q4_K" => 4.5,
        "q5_K" => 5.5,
        "q6_K" => 6.5625,
        "q8_0" => 8.5,
        "iq4_xs" => 4.25,
        other => panic!("attention at {other}"),
    };
    let tensors = v["tensors"].as_array().unwrap();
    for t in tensors {
        let (role, ty) = (t["role"].as_str().unwrap(), t["type"].as_str().unwrap());
        if role.starts_with("attn_") && t["rule"] != "keep" {
            assert!(bpw_of(ty) >= 4.5, "{} at {ty}", t["name"]);
        }
        if role.ends_with("_shexp") {
            assert_eq!(ty, "q6_K");
        }
    }
    // The exported recipe, planned without a target, gives the same types.
    let again = json(&ok(
        dynquant(args!["plan", r1_config(), "--recipe", exported, "--json"]),
        "plan exported",
    ));
    let names = |v: &serde_json::Value| {
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&again), names(&v));
    let replayed = json(&ok(
        dynquant(args![
            "plan",
            r1_config(),
            "--recipe",
            "basic-q8_0",
            "--tensor-type-file",
            types,
            "--json"
        ]),
        "plan replayed",
    ));
    assert_eq!(names(&replayed), names(&v));
}

#[test]
fn bad_targets_and_constraints_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = clean_failure(
        dynquant(args!["plan", r1_config(), "--target-size", "10GiB"]),
        "too small",
    );
    assert!(
        e.contains("below the smallest possible file") && e.contains("GiB"),
        "{e}"
    );
    let e = clean_failure(
        dynquant(args![
            "plan",
            r1_config(),
            "--target-size",
            "131GiB",
            "--candidates",
            "iq1_s,q9_k"
        ]),
        "unknown candidate",
    );
    assert!(e.contains("q9_k"), "{e}");
    let e = clean_failure(
        dynquant(args![
            "plan",
            r1_config(),
            "--target-size",
            "131GiB",
            "--recipe",
            "q4_k_m"
        ]),
        "mix as constraints",
    );
    assert!(e.contains("mix"), "{e}");
    let bounds = dir.path().join("bounds.toml");
    std::fs::write(&bounds, "name = \"b\"\ndefault = \"q4_K\"\n[[rules]]\nroles = [\"attn_q_a\"]\nmin = \"q4_K\"\nwhy = \"w\"\n").unwrap();
    let e = clean_failure(
        dynquant(args!["plan", r1_config(), "--recipe", bounds]),
        "bounds without a target",
    );
    assert!(e.contains("target"), "{e}");
    let e = clean_failure(dynquant(args!["plan", r1_config()]), "no recipe, no target");
    assert!(e.contains("--recipe"), "{e}");
    // A sensitivity file is checked against the weights it was measured on.
    let sens = dir.path().join("m.sens");
    std::fs::write(&sens, "{}").unwrap();
    let e = clean_failure(
        dynquant(args![
            "plan",
            r1_config(),
            "--target-size",
            "131GiB",
            "--sensitivity",
            sens
        ]),
        "config with a scan",
    );
    assert!(e.contains("needs the model's weights"), "{e}");
}

#[test]
fn quantize_to_a_size_is_never_over_and_close_under() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alloc.gguf");
    let target: u64 = 90_000_000;
    // K-quant candidates only: they quantize fast, and the promise is the same.
    let v = json(&ok(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            out,
            "--target-size",
            target.to_string(),
            "--candidates",
            "q2_K,q3_K,q4_K,q5_K,q6_K,q8_0",
            "--imatrix",
            m.smollm2_768_imatrix(),
            "--imatrix-fallback",
            "--json"
        ]),
        "quantize",
    ));
    let written = std::fs::metadata(&out).unwrap().len();
    assert_eq!(
        v["allocation"]["file_bytes"].as_u64().unwrap(),
        written,
        "predicted size is the file's"
    );
    assert!(
        written <= target && written as f64 >= 0.995 * target as f64,
        "{written}"
    );
    // Below the smallest possible file: nothing written.
    let small = dir.path().join("small.gguf");
    let e = clean_failure(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            small,
            "--target-size",
            "20M",
            "--imatrix",
            m.smollm2_768_imatrix()
        ]),
        "too small",
    );
    assert!(e.contains("smallest possible file"), "{e}");
    assert!(!small.exists());

    // Sensitivity files of another version or another model: refused (another imatrix: the
    // unit tests of `Sensitivity::check_for`).
    let sens = dir.path().join("m.sens");
    let mut s = serde_json::json!({
        "format": "dynquant-sensitivity/1", "dynquant_version": "0.0.0",
        "key": {"model_sha256": "00", "imatrix_sha256": "11", "text_sha256": "22"},
        "candidates": ["IQ1_S"], "tensors": [], "groups": []
    });
    let plan = |sens: &std::path::Path| {
        dynquant(args![
            "plan",
            m.smollm2_768(),
            "--target-size",
            "80M",
            "--sensitivity",
            sens,
            "--imatrix",
            m.smollm2_768_imatrix()
        ])
    };
    std::fs::write(&sens, s.to_string()).unwrap();
    let e = clean_failure(plan(&sens), "old version");
    assert!(e.contains("dynquant 0.0.0"), "{e}");
    s["dynquant_version"] = env!("CARGO_PKG_VERSION").into();
    std::fs::write(&sens, s.to_string()).unwrap();
    let e = clean_failure(plan(&sens), "other model");
    assert!(e.contains("another model"), "{e}");
}
