//! Conversion against llama.cpp's own converter: every fixture in `../shared/golden/hf`
//! (tiny checkpoints with random weights and the GGUF that `convert_hf_to_gguf.py` made from
//! each, see its README) converts to the same file, byte for byte; the FP8 checkpoint
//! dequantizes to the stored f32 reference bit for bit.

use std::path::{Path, PathBuf};

use dynquant_gguf::{Access, GgufFile, OutputTarget, Value, WriteOptions};
use dynquant_hf::safetensors::Checkpoint;
use dynquant_hf::{ConvertOptions, HfModel, OutType};

fn golden() -> PathBuf {
    dynquant_testkit::oracle::shared_dir().join("golden/hf")
}

fn convert(dir: &Path, out: &Path) -> HfModel {
    let m = HfModel::open(dir, &ConvertOptions::default()).expect("open");
    m.write_gguf(
        &OutputTarget::Single(out.to_path_buf()),
        &WriteOptions::default(),
    )
    .expect("write");
    m
}

fn value_eq(a: &Value, b: &Value) -> bool {
    a == b && a.value_type() == b.value_type()
}

/// Structural differences (keys, values, tensor names/shapes/types/bytes), for a readable
/// failure before the byte comparison.
fn differences(ours: &Path, theirs: &Path, skip_keys: &[&str]) -> Vec<String> {
    let a = GgufFile::open(ours, Access::Pread).expect("our output parses");
    let b = GgufFile::open(theirs, Access::Pread).expect("golden parses");
    let mut d = Vec::new();
    let (ma, mb) = (&a.header().metadata, &b.header().metadata);
    let keys = |m: &dynquant_gguf::Metadata| {
        m.entries()
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !skip_keys.contains(&k.as_str()))
            .collect::<Vec<_>>()
    };
    if keys(ma) != keys(mb) {
        d.push(format!(
            "keys differ:\n ours   {:?}\n theirs {:?}",
            keys(ma),
            keys(mb)
        ));
    }
    for (k, v) in mb.entries() {
        if skip_keys.contains(&k.as_str()) {
            continue;
        }
        match ma.get(k) {
            Some(w) if value_eq(v, w) => {}
            other => d.push(format!(
                "{k}: ours {:?}, theirs {:?}",
                other.map(|x| format!("{x:?}").chars().take(80).collect::<String>()),
                format!("{v:?}").chars().take(80).collect::<String>()
            )),
        }
    }
    let (ta, tb) = (&a.header().tensors, &b.header().tensors);
    let names =
        |t: &[dynquant_gguf::TensorInfo]| t.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(ta) != names(tb) {
        d.push(format!(
            "tensor order differs:\n ours   {:?}\n theirs {:?}",
            names(ta),
            names(tb)
        ));
    }
    for (j, t) in tb.iter().enumerate() {
        let Some(i) = a.header().tensor_index(&t.name) else {
            d.push(format!("missing tensor {}", t.name));
            continue;
        };
        let o = &ta[i];
        if o.shape != t.shape || o.ggml_type != t.ggml_type {
            d.push(format!(
                "{}: ours {:?} {}, theirs {:?} {}",
                t.name, o.shape, o.ggml_type, t.shape, t.ggml_type
            ));
            continue;
        }
        if a.tensor_data(i).unwrap() != b.tensor_data(j).unwrap() {
            d.push(format!("{}: data differs", t.name));
        }
    }
    d
}

#[test]
fn every_fixture_converts_byte_identical_to_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = [
        "llama-bpe",
        "llama-spm",
        "qwen2",
        "qwen3",
        "qwen3moe",
        "mixtral",
        "deepseek-v3-fp8",
    ];
    for f in fixtures {
        let out = tmp.path().join(format!("{f}.gguf"));
        let m = convert(&golden().join(f), &out);
        let reference = golden().join(format!("{f}.llamacpp.gguf"));
        let diffs = differences(&out, &reference, &[]);
        assert!(diffs.is_empty(), "{f}:\n{}", diffs.join("\n"));
        let (ours, theirs) = (
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap(),
        );
        assert!(ours == theirs, "{f}: same content but not the same bytes");
        // The folder's tokenizer decides the path: SentencePiece only for llama-spm.
        let spm = f == "llama-spm";
        assert_eq!(
            m.vocab_kind() == dynquant_hf::tokenizer::VocabKind::SentencePiece,
            spm,
            "{f}"
        );
        assert_eq!(
            m.warnings().is_empty(),
            spm,
            "{f}: the BPE pre-tokenizer fallback warns"
        );
    }
}

#[test]
fn sharded_bf16_deepseek_matches_the_fp8_conversion_except_its_name() {
    // Tensor data identical to the FP8 conversion (README), only the name keys differ.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds.gguf");
    let m = convert(&golden().join("deepseek-v3"), &out);
    assert_eq!(m.input_paths().len(), 2);
    let reference = golden().join("deepseek-v3-fp8.llamacpp.gguf");
    let mut diffs = differences(
        &out,
        &reference,
        &["general.name", "general.basename", "general.version"],
    );
    // Shard order: shard 1's tensors (sorted), then shard 2's, as the converter iterates.
    diffs.retain(|d| !d.starts_with("tensor order differs"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let a = GgufFile::open(&out, Access::Pread).unwrap();
    let md = &a.header().metadata;
    let get = |k: &str| md.get(k).and_then(Value::as_str);
    assert_eq!(get("general.name"), Some("Deepseek v3"));
    assert_eq!(get("general.basename"), Some("deepseek"));
    assert_eq!(get("general.version"), Some("v3"));
    let names: Vec<&str> = a.header().tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names[0], "token_embd.weight", "shard 1 holds embed_tokens");
    assert!(
        names.iter().all(|n| !n.starts_with("blk.3.")),
        "MTP layer dropped"
    );
}

#[test]
fn sharded_bf16_deepseek_is_byte_identical_to_llama_cpp() {
    // llama.cpp's output for the two-shard folder is not stored, but the README records its size
    // and sha256: every byte must agree (metadata, shard-by-shard tensor order, data).
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("deepseek-v3.gguf");
    convert(&golden().join("deepseek-v3"), &out);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), 9_978_176);
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sha,
        "4f2f0fd3b3bd66bae67eece3a959da3a2218ea373b437216e07c39b1d6c7ff5c"
    );
}

fn read_all(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ck.get(name).unwrap_or_else(|| panic!("{name}"));
    let mut v = vec![0f32; t.numel()];
    ck.read_rows(name, 0, &mut v).unwrap();
    v
}

#[test]
fn fp8_dequantizes_bit_exact_to_the_f32_reference_and_its_bf16_sibling() {
    let fp8 = Checkpoint::open(&golden().join("deepseek-v3-fp8"), Some([128, 128])).unwrap();
    fp8.check_fp8().unwrap();
    // The reference file sits next to the folder; read it as a one-file checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        golden().join("deepseek-v3-fp8.dequant-ref.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let reference = Checkpoint::open(tmp.path(), None).unwrap();
    assert_eq!(reference.names().len(), 7);
    for name in reference.names() {
        let want = read_all(&reference, name);
        let got = read_all(&fp8, name);
        let bad = want
            .iter()
            .zip(&got)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(bad, 0, "{name}: {bad} of {} values differ", want.len());
    }
    // Partial edge blocks: kv_a_proj_with_mqa is [160, 256], its scale [2, 2].
    let mtp = "model.layers.3.self_attn.kv_a_proj_with_mqa.weight";
    assert!(reference.get(mtp).is_some());
    // All 105 FP8 tensors: RNE-bf16 of the dequantized values is the bf16 checkpoint, and row
    // windows that start inside a block read the same values as whole reads.
    let bf16 = Checkpoint::open(&golden().join("deepseek-v3"), None).unwrap();
    let mut n_fp8 = 0;
    for name in fp8.names() {
        let t = fp8.get(name).unwrap();
        if t.dtype != dynquant_hf::safetensors::StDtype::F8E4M3 {
            continue;
        }
        n_fp8 += 1;
        let x = read_all(&fp8, name);
        let y = read_all(&bf16, name);
        let rounded: Vec<f32> = x
            .iter()
            .map(|v| dynquant_quants::bf16_to_f32(dynquant_quants::f32_to_bf16(*v)))
            .collect();
        assert!(
            rounded
                .iter()
                .zip(&y)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
        let row = t.row_len();
        let (first, n) = (t.n_rows() / 3, (t.n_rows() / 2).max(1));
        let n = n.min(t.n_rows() - first);
        let mut part = vec![0f32; n * row];
        fp8.read_rows(name, first, &mut part).unwrap();
        assert_eq!(
            part,
            x[first * row..(first + n) * row],
            "{name} rows {first}.."
        );
    }
    assert_eq!(n_fp8, 105);
}

#[test]
fn f32_f16_and_q8_0_outputs_hold_the_same_values() {
    // Other output types: F32 keeps the bf16 values exactly; F16 is their RNE rounding; Q8_0
    // matrices dequantize close to them. Read back with our GGUF reader.
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden().join("qwen3");
    let mut outs = Vec::new();
    for (ty, name) in [
        (OutType::F32, "f32"),
        (OutType::F16, "f16"),
        (OutType::Q8_0, "q8_0"),
    ] {
        let out = tmp.path().join(format!("{name}.gguf"));
        let m = HfModel::open(
            &dir,
            &ConvertOptions {
                outtype: ty,
                ..Default::default()
            },
        )
        .unwrap();
        m.write_gguf(&OutputTarget::Single(out.clone()), &WriteOptions::default())
            .unwrap();
        outs.push((ty, GgufFile::open(&out, Access::Pread).unwrap()));
    }
    let golden_file = GgufFile::open(golden().join("qwen3.llamacpp.gguf"), Access::Pread).unwrap();
    for (i, t) in golden_file.header().tensors.iter().enumerate() {
        let mut want = vec![0f32; t.n_elements() as usize];
        dynquant_quants::dequantize(t.ggml_type, &golden_file.tensor_data(i).unwrap(), &mut want)
            .unwrap();
        for (ty, f) in &outs {
            let j = f.header().tensor_index(&t.name).unwrap();
            let o = &f.header().tensors[j];
            let mut got = vec![0f32; want.len()];
            dynquant_quants::dequantize(o.ggml_type, &f.tensor_data(j).unwrap(), &mut got).unwrap();
            let max_abs = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in want.iter().zip(&got) {
                let ok = match ty {
                    OutType::F32 => a.to_bits() == b.to_bits(),
                    OutType::F16 => half::f16::from_f32(*a).to_f32().to_bits() == b.to_bits(),
                    _ => (a - b).abs() <= max_abs / 127.0 + 1e-6,
                };
                assert!(ok, "{} as {ty:?}: {a} vs {b}", t.name);
            }
        }
    }
}

#[test]
fn a_real_tokenizer_hashes_to_its_llama_cpp_pre_tokenizer() {
    // SmolLM2-135M's byte-level BPE (49,152 tokens, 48,900 merges), rebuilt as a tokenizer.json
    // from the oracle GGUF's vocabulary, merges and control tokens with SmolLM's pre-tokenizer
    // (Digits + ByteLevel): its chkhsh is the table's "smollm" entry, which that GGUF names.
    let Some(o) = dynquant_testkit::oracle::Oracle::get() else {
        return;
    };
    let f = GgufFile::open(o.smollm2(), Access::Pread).unwrap();
    let md = &f.header().metadata;
    let strings = |k: &str| match md.get(k) {
        Some(Value::Array(dynquant_gguf::Array::String(v))) => v.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let merges = strings("tokenizer.ggml.merges");
    let Some(Value::Array(dynquant_gguf::Array::I32(types))) = md.get("tokenizer.ggml.token_type")
    else {
        panic!("token types")
    };
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, ty))| **ty == 3)
        .map(|(i, (t, _))| serde_json::json!({"id": i, "content": t, "special": true}))
        .collect();
    let tj = serde_json::json!({
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "model": {"type": "BPE", "vocab": vocab, "merges": merges}
    });
    let h = dynquant_hf::pre_tokenizer_hash::chkhsh(&tj, None).unwrap();
    assert_eq!(
        h,
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
    );
    let name = dynquant_hf::pre_tokenizer_hash::name_for_hash(&h);
    assert_eq!(name, Some("smollm"));
    assert_eq!(md.get("tokenizer.ggml.pre").and_then(Value::as_str), name);
}

#[test]
fn model_id_heuristic_agrees_with_gguf_py() {
    // general.basename / finetune / version / size_label / organization from a model id, as
    // gguf-py's Metadata.get_model_id_components (the converter's) derives them.
    let Some(o) = dynquant_testkit::oracle::Oracle::get() else {
        return;
    };
    let ids = [
        "deepseek-v3",
        "deepseek-v3-fp8",
        "llama-bpe",
        "qwen3moe",
        "Qwen2.5-0.5B-Instruct",
        "DeepSeek-R1",
        "Meta-Llama-3.1-8B-Instruct",
        "SmolLM2-135M-Instruct",
        "Mixtral-8x7B-v0.1",
        "meta-llama/Llama-2-7b-hf",
        "Qwen/Qwen3-30B-A3B",
        "bigscience/bloom-7b1",
        "gpt2-xl",
        "Phi-3-mini-4k-instruct",
        "gemma-2-9b-it",
        "Mistral-7B-Instruct-v0.3",
        "model-Q4_K_M",
        "x-BF16-fp16",
        "v1.5",
        "iter3-chat",
        "org/.hidden",
        "a--b",
        "Llama-3.2-1B",
        "t5-small-large",
    ];
    let totals = [2_200_000u64, 7_000_000_000];
    let script = format!(
        "import json\nfrom gguf.metadata import Metadata\nfor t in {totals:?}:\n for i in {ids:?}:\n  print(json.dumps(Metadata.get_model_id_components(i, t)))\n"
    );
    let out = std::process::Command::new(&o.python)
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len() * totals.len());
    let mut k = 0;
    for t in totals {
        for id in ids {
            let want = &lines[k];
            k += 1;
            let c = dynquant_hf::meta::model_id_components(id, t);
            let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
            // (full name, org, basename, finetune, version, size_label)
            assert_eq!(c.organization, s(&want[1]), "{id} ({t}): organization");
            assert_eq!(c.basename, s(&want[2]), "{id} ({t}): basename");
            assert_eq!(c.finetune, s(&want[3]), "{id} ({t}): finetune");
            assert_eq!(c.version, s(&want[4]), "{id} ({t}): version");
            assert_eq!(c.size_label, s(&want[5]), "{id} ({t}): size_label");
        }
    }
}
