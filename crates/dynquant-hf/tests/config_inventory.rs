//! Inventories planned from a Hugging Face `config.json` alone: they match the GGUF files
//! llama.cpp's own converter made from the same checkpoints (`../shared/golden/hf/`, every
//! tensor name, shape and type), the conversion of the checkpoint itself, and DeepSeek-R1's
//! published tensor counts and dynamic-quant sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dynquant_gguf::{Access, GgufModel};
use dynquant_hf::{config_inventory, ConvertOptions, HfModel};
use dynquant_plan::{Inventory, MlaLayout, PlanOptions, Preset};

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden/hf")
}

fn r1(layout: MlaLayout) -> Inventory {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/configs/deepseek-r1/config.json");
    config_inventory(&p, layout).unwrap()
}

#[test]
fn config_inventories_match_llama_cpp_conversions() {
    for name in [
        "llama-bpe",
        "llama-spm",
        "qwen2",
        "qwen3",
        "qwen3moe",
        "mixtral",
        "deepseek-v3-fp8",
    ] {
        let inv = config_inventory(&golden().join(name), MlaLayout::Mla).unwrap();
        let ours: BTreeMap<_, _> = inv
            .tensors
            .iter()
            .map(|t| (t.name.clone(), (t.shape.clone(), t.ggml_type)))
            .collect();
        let gguf = GgufModel::open(
            golden().join(format!("{name}.llamacpp.gguf")),
            Access::Pread,
        )
        .unwrap();
        let theirs: BTreeMap<_, _> = gguf
            .tensors()
            .map(|t| {
                (
                    t.info.name.clone(),
                    (t.info.shape.clone(), t.info.ggml_type),
                )
            })
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}: tensor count");
        for (n, v) in &theirs {
            assert_eq!(ours.get(n), Some(v), "{name}: {n}");
        }
    }
}

#[test]
fn config_inventories_are_the_checkpoints_conversions() {
    for name in [
        "llama-bpe",
        "llama-spm",
        "qwen2",
        "qwen3",
        "qwen3moe",
        "mixtral",
        "deepseek-v3",
        "deepseek-v3-fp8",
    ] {
        let from_config = config_inventory(&golden().join(name), MlaLayout::Mla).unwrap();
        let opened = HfModel::open(&golden().join(name), &ConvertOptions::default())
            .unwrap()
            .inventory();
        let rows = |inv: &Inventory| {
            let mut v: Vec<_> = inv
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone(), t.ggml_type))
                .collect();
            // A sharded checkpoint is read shard by shard; compare as sets there.
            if name == "deepseek-v3" {
                v.sort();
            }
            v
        };
        assert_eq!(rows(&from_config), rows(&opened), "{name}");
        for key in [
            "block_count",
            "attention.head_count",
            "attention.head_count_kv",
            "expert_count",
        ] {
            let arch = opened.architecture().unwrap();
            let k = format!("{arch}.{key}");
            assert_eq!(
                from_config.metadata.get(&k),
                opened.metadata.get(&k),
                "{name}: {k}"
            );
        }
    }
}

#[test]
fn r1_inventory_matches_published_counts_and_parameters() {
    let legacy = r1(MlaLayout::Legacy);
    let mla = r1(MlaLayout::Mla);
    // llama.cpp issues #13305/#13916: 1025 tensors (legacy) and 1086 (MLA).
    assert_eq!(legacy.tensors.len(), 1025);
    assert_eq!(mla.tensors.len(), 1086);
    // docs/dynamic-quants.md §8.3: 671.03B parameters; both layouts hold the same count.
    let n = legacy.n_params();
    assert!((n as f64 / 1e9 - 671.03).abs() < 0.01, "{n}");
    assert_eq!(n, mla.n_params());
    let k_b = mla
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_k_b.weight")
        .unwrap();
    assert_eq!(k_b.shape, vec![128, 512, 128]);
}

#[test]
fn deepseek_r1_dynamic_sizes_match_the_published_ones() {
    // Published sizes (GiB) of Unsloth's DeepSeek-R1 dynamic quants; within 3%.
    let published = [
        ("ud-iq1_s", 131.0),
        ("ud-iq1_m", 158.0),
        ("ud-iq2_xxs", 183.0),
        ("ud-q2_k_xl", 212.0),
    ];
    for layout in [MlaLayout::Mla, MlaLayout::Legacy] {
        let inv = r1(layout);
        for (name, gib) in published {
            let preset = Preset::named(name).unwrap().unwrap();
            let p = preset.plan(&inv, &PlanOptions::default()).unwrap();
            let got = p.total_bytes as f64 / (1u64 << 30) as f64;
            assert!(
                (got / gib - 1.0).abs() < 0.03,
                "{name} {layout:?}: {got:.1} GiB vs {gib}"
            );
            assert!(
                p.unused_rules.is_empty(),
                "{name}: unused rules {:?}",
                p.unused_rules
            );
        }
    }
}
