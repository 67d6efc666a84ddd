//! `dynquant plan` on DeepSeek-R1's config and on GGUF files.

mod common;

use common::{clean_failure, dynquant, ok, oracle, repo_root};

fn r1_config() -> std::path::PathBuf {
    repo_root().join("../shared/data/configs/deepseek-r1/config.json")
}

#[test]
fn r1_sizes_in_json_and_both_layouts() {
    let published = [
        ("ud-iq1_s", 131.0),
        ("ud-iq1_m", 158.0),
        ("ud-iq2_xxs", 183.0),
        ("ud-q2_k_xl", 212.0),
    ];
    for (recipe, gib) in published {
        let out = ok(
            dynquant(args!["plan", r1_config(), "--recipe", recipe, "--json"]),
            "plan",
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let got = v["total_gib"].as_f64().unwrap();
        assert!(
            (got / gib - 1.0).abs() < 0.03,
            "{recipe}: {got} GiB vs {gib}"
        );
        assert_eq!(v["tensors"].as_array().unwrap().len(), 1086);
        assert_eq!(v["total_params"], 671_026_419_200u64);
        assert!(v["bpw"].as_f64().unwrap() > 1.5);
        assert!(v["other_layout"]["total_gib"].as_f64().unwrap() > 0.0);
        let t = &v["tensors"][0];
        for key in ["name", "shape", "type", "bytes", "rule", "why", "role"] {
            assert!(!t[key].is_null(), "{key} missing in {t}");
        }
    }
    let out = ok(
        dynquant(args![
            "plan",
            r1_config(),
            "--recipe",
            "ud-iq1_s",
            "--layout",
            "legacy"
        ]),
        "plan",
    );
    assert!(out.contains("legacy layout"), "{out}");
    assert!(
        out.contains("warning: 171 tensors at iq1_s need an importance matrix"),
        "{out}"
    );
}

#[test]
fn overrides_and_fallbacks_on_a_gguf() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dynquant(args!["demo", "--out-dir", dir.path(), "--model-only"]),
        "demo",
    );
    let model = dir.path().join("demo-f32.gguf");
    let out = ok(
        dynquant(args![
            "plan",
            model,
            "--recipe",
            "basic-q4_k",
            "--tensor-type",
            "ffn_down=q8_0",
            "--output-tensor-type",
            "q6_k",
            "--json"
        ]),
        "plan",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for t in v["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let ty = t["type"].as_str().unwrap();
        match name {
            n if n.ends_with("_norm.weight") => assert_eq!(ty, "f32", "{n}"),
            n if n.contains("ffn_down") => assert_eq!(ty, "q8_0", "{n}"),
            "output.weight" => assert_eq!(ty, "q6_K"),
            n => assert_eq!(ty, "q4_K", "{n}"),
        }
    }
}

#[test]
fn malformed_recipes_point_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, "name = \"r\"\ndefault = \"q4_K\"\n\n[[rules]]\nroles = [\"ffn_down_exps\"]\ntype = \"q9_k\"\nwhy = \"x\"\n").unwrap();
    let msg = clean_failure(
        dynquant(args!["plan", r1_config(), "--recipe", recipe]),
        "bad type",
    );
    assert!(
        msg.contains("r.toml:6:") && msg.contains("unknown ggml type name 'q9_k'"),
        "{msg}"
    );
    std::fs::write(&recipe, "name = \"r\"\ndefault = \"q4_K\"\n[[rules]]\nroles = [\"attn_out\"]\ntype = \"q6_k\"\nwhy = \"x\"\n").unwrap();
    let msg = clean_failure(
        dynquant(args!["plan", r1_config(), "--recipe", recipe]),
        "bad role",
    );
    assert!(
        msg.contains("r.toml:4:") && msg.contains("unknown role 'attn_out'"),
        "{msg}"
    );
    clean_failure(
        dynquant(args!["plan", r1_config(), "--recipe", "no-such-recipe"]),
        "unknown recipe",
    );
    clean_failure(
        dynquant(args![
            "plan",
            r1_config(),
            "--recipe",
            "ud-iq1_s",
            "--tensor-type",
            "(=q4_0"
        ]),
        "bad regex",
    );
}

#[test]
fn exported_tensor_types_reproduce_the_plan_as_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("types.txt");
    let config = r1_config();
    let plan = |extra: &[&std::ffi::OsStr]| {
        let mut a: Vec<&std::ffi::OsStr> = args!["plan", config, "--json"].to_vec();
        a.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&ok(dynquant(&a), "plan")).unwrap();
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let dynamic = plan(args!["--recipe", "ud-iq1_s", "--export-tensor-types", file]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines()
            .any(|l| l == r"^blk\.3\.ffn_down_exps\.weight$=iq2_xxs"),
        "{text}"
    );
    // Feeding the file back as llama-quantize would read it, on top of a uniform recipe.
    let replayed = plan(args!["--recipe", "basic-q8_0", "--tensor-type-file", file]);
    assert_eq!(dynamic, replayed);
}

#[test]
fn hugging_face_folders_plan_without_weights() {
    for (name, tensors) in [("qwen3moe", 27), ("mixtral", 23), ("llama-spm", 20)] {
        let folder = repo_root().join("../shared/golden/hf").join(name);
        let out = ok(
            dynquant(args!["plan", folder, "--recipe", "basic-q8_0", "--json"]),
            name,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["tensors"].as_array().unwrap().len(), tensors, "{name}");
    }
}

#[test]
fn mixes_take_the_imatrix_into_account_as_llama_cpp_does() {
    // llama.cpp's IQ3_XXS mix raises ffn_down to Q4_K/Q3_K only without an imatrix
    // (`!qs.has_imatrix`); `plan` and `quantize` with --imatrix keep IQ3_XXS, as it does.
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let (model, imatrix) = (m.smollm2_768(), m.smollm2_768_imatrix());
    let down_types = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().contains("ffn_down"))
            .map(|t| t["type"].as_str().unwrap().to_string())
            .collect()
    };
    let plan = |extra: &[&std::ffi::OsStr]| -> serde_json::Value {
        let mut a: Vec<&std::ffi::OsStr> =
            args!["plan", model, "--recipe", "iq3_xxs", "--json"].to_vec();
        a.extend_from_slice(extra);
        serde_json::from_str(&ok(dynquant(&a), "plan")).unwrap()
    };
    let without = plan(&[]);
    let with = plan(args!["--imatrix", imatrix]);
    assert_eq!(
        down_types(&without),
        ["q3_K", "q4_K"].map(String::from).into()
    );
    assert_eq!(down_types(&with), ["iq3_xxs"].map(String::from).into());
    let dry = |extra: &[&std::ffi::OsStr]| -> serde_json::Value {
        let mut a: Vec<&std::ffi::OsStr> = args![
            "quantize",
            model,
            "unused.gguf",
            "--recipe",
            "iq3_xxs",
            "--dry-run",
            "--json",
            "--imatrix-fallback"
        ]
        .to_vec();
        a.extend_from_slice(extra);
        serde_json::from_str(&ok(dynquant(&a), "quantize --dry-run")).unwrap()
    };
    let with = dry(args!["--imatrix", imatrix]);
    assert_eq!(with["types"]["iq3_xxs"], 90, "{with}");
    assert!(with["types"].get("q3_K").is_none(), "{with}");
    assert_eq!(dry(&[])["types"]["q3_K"], 27);
}

/// gpt-oss (`tests/fixtures/hf/gpt-oss`): every tensor has a role (sinks, router bias, expert
/// and attention biases), the MXFP4 experts keep MXFP4 under a recipe that would take them to
/// IQ1_S, and `--requantize-mxfp4` lets the recipe's rules apply.
#[test]
fn gpt_oss_mxfp4_experts_keep_their_type_unless_asked() {
    let folder = repo_root().join("tests/fixtures/hf/gpt-oss");
    let plan = |extra: &[&str]| {
        let mut a = vec![
            folder.as_os_str(),
            "--recipe".as_ref(),
            "ud-iq1_s".as_ref(),
            "--json".as_ref(),
        ];
        a.insert(0, "plan".as_ref());
        a.extend(extra.iter().map(std::ffi::OsStr::new));
        let out = ok(dynquant(&a), "plan");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let v = plan(&[]);
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 41);
    for t in tensors {
        assert_ne!(t["role"], "other", "{t}");
        if t["name"].as_str().unwrap().contains("_exps.weight") {
            assert_eq!(t["type"], "mxfp4", "{t}");
            assert!(t["why"].as_str().unwrap().contains("MXFP4"), "{t}");
        }
    }
    let sinks = tensors
        .iter()
        .find(|t| t["name"] == "blk.1.attn_sinks.weight")
        .unwrap();
    assert_eq!(sinks["role"], "attn_sinks");
    let v = plan(&["--requantize-mxfp4"]);
    for t in v["tensors"].as_array().unwrap() {
        if t["name"].as_str().unwrap().contains("_exps.weight") {
            // IQ1_S/IQ2_XXS asked for; the 64-wide rows fall back as llama.cpp does.
            assert_ne!(t["type"], "mxfp4", "{t}");
            assert!(t["rule"].as_str().unwrap().starts_with("line"), "{t}");
        }
    }
}
