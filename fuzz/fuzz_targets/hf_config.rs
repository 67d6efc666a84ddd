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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
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
