//! Fuzzes `config.json` -> inventory -> plan: `dynquant_hf::config_inventory` on the bytes, then
//! the planner with a basic Q4_K recipe. Any input must give Ok or a typed error.
#![no_main]

#[path = "common.rs"]
mod common;

use dynquant_gguf::GgmlType;
use dynquant_plan::{plan, MlaLayout, PlanOptions, Recipe};
use libfuzzer_sys::fuzz_target;

/// Inventories above this many tensors are not planned (see below).
const MAX_PLANNED_TENSORS: usize = 256;

/// Configs of more than this many layers x routed experts are skipped. The inventory's cost
/// grows with them (DeepSeek-R1's 58 x 256 builds 44k checkpoint tensors: ~0.3 s per input in
/// this instrumented build, so a corpus of R1 mutants ran at ~25 inputs/s) while its code paths
/// are the same as at 4 x 8: scale is tested by `config_inventory`'s own tests (R1's published
/// counts) and the count limits by `tests/bounded_memory.rs` in dynquant-hf.
const MAX_LAYER_EXPERTS: u64 = 512;

/// Whether the bytes are JSON claiming more than [`MAX_LAYER_EXPERTS`] layers x experts.
fn describes_a_large_model(json: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    let count = |keys: &[&str]| keys.iter().find_map(|k| v.get(k)?.as_u64()).unwrap_or(1);
    let layers = count(&["num_hidden_layers", "n_layer", "num_layers", "n_layers"]);
    let experts = count(&["n_routed_experts", "num_local_experts", "num_experts"]).max(1);
    layers.saturating_mul(experts) > MAX_LAYER_EXPERTS
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if describes_a_large_model(rest) {
        return;
    }
    let path = common::write_scratch("config.json", rest);
    let layout = if mode & 1 == 0 {
        MlaLayout::Mla
    } else {
        MlaLayout::Legacy
    };
    let Ok(inv) = dynquant_hf::config_inventory(&path, layout) else {
        return;
    };
    // Planning is the planner's work, fuzzed with every recipe rule by the `recipe` target;
    // here it only checks that what the config gives plans at all. A full-size config (R1:
    // 58 x 256 experts, 44k checkpoint tensors) costs milliseconds in config_inventory
    // already, so the plan runs on small inventories only: that keeps ~10x more executions
    // per second for the parser under test.
    if inv.tensors.len() > MAX_PLANNED_TENSORS {
        return;
    }
    let _ = plan(
        &inv,
        &Recipe::basic(GgmlType::Q4_K),
        &PlanOptions::default(),
    );
});
