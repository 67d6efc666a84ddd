//! llama.cpp's own imatrix of SmolLM2 (`../shared/golden/smollm2-135m.imatrix.gguf`) reads
//! and writes back byte for byte.

use std::path::PathBuf;

use dynquant_gguf::imatrix::{ExpertPrior, Imatrix};
use dynquant_gguf::WriteOptions;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden/smollm2-135m.imatrix.gguf")
}

#[test]
fn golden_imatrix_round_trips_byte_for_byte() {
    let im = Imatrix::read(golden()).unwrap();
    assert_eq!(im.entries.len(), 210);
    assert_eq!(im.chunk_size, 512);
    let e = im.get("blk.0.ffn_down.weight").unwrap();
    assert_eq!((e.n_per_mat, e.n_mat()), (1536, 1));
    assert!(e.counts[0] > 0.0);
    let w = e.weights(0);
    assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.imatrix.gguf");
    im.write(&out, &WriteOptions::default()).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(golden()).unwrap());
}

/// libgguf's `load_imatrix` (the averaging llama-quantize does, for GGUF and legacy `.dat`)
/// of `path`, as name -> f32 values; `None` when the oracle environment is not set up.
fn libgguf_vectors(path: &std::path::Path) -> Option<std::collections::BTreeMap<String, Vec<f32>>> {
    let python = match std::env::var_os("DYNQUANT_PYTHON") {
        Some(p) => p,
        None if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") => return None,
        None => panic!("DYNQUANT_PYTHON is not set: source .oracle/env.sh"),
    };
    // f32 -> bits, so the comparison is exact.
    let script = r#"
import sys, json, numpy as np, libgguf
d = libgguf.load_imatrix(sys.argv[1])
print(json.dumps({k: np.asarray(v, dtype=np.float32).view(np.uint32).tolist() for k, v in d.items()}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bits: std::collections::BTreeMap<String, Vec<u32>> =
        serde_json_lite(&String::from_utf8(out.stdout).unwrap());
    Some(
        bits.into_iter()
            .map(|(k, v)| (k, v.into_iter().map(f32::from_bits).collect()))
            .collect(),
    )
}

/// A tiny parser for `{"name": [u32, ...], ...}` (the core crate has no JSON dependency).
fn serde_json_lite(s: &str) -> std::collections::BTreeMap<String, Vec<u32>> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = s.trim().trim_start_matches('{');
    while let Some(q) = rest.find('"') {
        let after = &rest[q + 1..];
        let end = after.find('"').unwrap();
        let name = after[..end].to_string();
        let open = after.find('[').unwrap();
        let close = after.find(']').unwrap();
        let values = after[open + 1..close]
            .split(',')
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().parse().unwrap())
            .collect();
        out.insert(name, values);
        rest = &after[close + 1..];
    }
    out
}

/// Our weights for every entry, flattened per matrix, as llama-quantize's vectors.
fn our_vectors(im: &Imatrix) -> std::collections::BTreeMap<String, Vec<f32>> {
    im.entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                (0..e.n_mat()).flat_map(|m| e.weights(m)).collect(),
            )
        })
        .collect()
}

fn assert_same_vectors(
    ours: &std::collections::BTreeMap<String, Vec<f32>>,
    theirs: &std::collections::BTreeMap<String, Vec<f32>>,
    what: &str,
) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{what}: entry names"
    );
    for (name, v) in ours {
        let t = &theirs[name];
        assert_eq!(v.len(), t.len(), "{what}: {name} length");
        for (i, (a, b)) in v.iter().zip(t).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{what}: {name}[{i}] ours {a} libgguf {b}"
            );
        }
    }
}

fn test_models_dir() -> Option<PathBuf> {
    std::env::var_os("DYNQUANT_TEST_MODELS").map(PathBuf::from)
}

#[test]
fn gguf_and_legacy_dat_weights_match_libgguf_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = vec![golden()];
    if let Some(m) = test_models_dir() {
        // Per-expert entries (32 experts per MoE tensor).
        inputs.push(m.join("smollm2-768-moe.imatrix.gguf"));
    }
    for (i, path) in inputs.iter().enumerate() {
        let im = Imatrix::read(path).unwrap();
        let Some(reference) = libgguf_vectors(path) else {
            return;
        };
        assert_same_vectors(&our_vectors(&im), &reference, "gguf");
        // The legacy file llama.cpp's writer would make, read by libgguf and by us.
        let dat = dir.path().join(format!("im{i}.dat"));
        std::fs::write(&dat, im.to_legacy_bytes()).unwrap();
        let legacy = Imatrix::read(&dat).unwrap();
        assert_eq!(legacy.entries.len(), im.entries.len());
        assert_eq!(legacy.chunk_count, im.chunk_count);
        assert_eq!(legacy.datasets.first(), im.datasets.first());
        assert_same_vectors(
            &our_vectors(&legacy),
            &libgguf_vectors(&dat).unwrap(),
            "dat",
        );
        // A legacy MoE entry is one flat vector; cut per expert it gives the GGUF weights up
        // to the rounding of `value / ncall` (a legacy entry has no per-expert counts, so the
        // expert prior leaves it alone).
        for e in &im.entries {
            let l = legacy.get(&e.name).unwrap();
            let per_mat = l
                .weights_for(e.n_per_mat, e.n_mat(), ExpertPrior::DEFAULT)
                .unwrap();
            for (m, w) in per_mat.iter().enumerate() {
                for (a, b) in w.iter().zip(e.weights(m)) {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1e-30),
                        "{} {a} {b}",
                        e.name
                    );
                }
            }
        }
    }
}

#[test]
fn malformed_legacy_files_are_errors_never_panics() {
    let im = Imatrix::read(golden()).unwrap();
    let small = Imatrix {
        entries: im.entries[..3].to_vec(),
        ..im
    };
    let bytes = small.to_legacy_bytes();
    assert!(Imatrix::parse_legacy(&bytes).is_ok());
    // Every truncation that cuts into an entry fails cleanly (cuts between the entries and
    // the optional trailer are complete files).
    let entries_end = bytes.len() - 8 - small.datasets[0].len();
    for cut in 0..bytes.len() {
        let r = Imatrix::parse_legacy(&bytes[..cut]);
        if cut < entries_end {
            assert!(r.is_err(), "cut at {cut} parsed");
        }
    }
    // Absurd counts and lengths.
    for (offset, value) in [(0usize, i32::MAX), (0, -1), (4, -5), (4, i32::MAX)] {
        let mut b = bytes.clone();
        b[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        assert!(Imatrix::parse_legacy(&b).is_err(), "{offset} {value}");
    }
    // A NaN value.
    let mut b = bytes.clone();
    let name_len = i32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
    let first_value = 8 + name_len + 8;
    b[first_value..first_value + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = Imatrix::parse_legacy(&b).unwrap_err().to_string();
    assert!(err.contains("invalid value"), "{err}");
}
