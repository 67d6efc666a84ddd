//! Fuzzes `config.json` -> inventory -> plan: `dynquant_hf::config_inventory` on the bytes, then
//! the planner with a basic Q4_K recipe. Any input must give Ok or a typed error.
#![no_main]

#[path = "common.rs"]
mod common;

use dynquant_gguf::GgmlType;
use dynquant_plan::{plan, MlaLayout, PlanOptions, Recipe};
use libfuzzer_sys::fuzz_target;

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
    let _ = plan(
        &inv,
        &Recipe::basic(GgmlType::Q4_K),
        &PlanOptions::default(),
    );
});
