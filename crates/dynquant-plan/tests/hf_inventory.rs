//! Inventories derived from Hugging Face configs match the GGUF files llama.cpp's own
//! converter made from the same checkpoints (`../shared/golden/hf/`): every tensor name,
//! shape and type.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dynquant_gguf::{Access, GgufModel};
use dynquant_plan::inventory::from_hf_config;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden/hf")
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
        let inv = from_hf_config(&golden().join(name)).unwrap();
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
