//! Fuzzes recipe TOML (`dynquant_plan::Recipe::parse`, regex rules included), then plans a small
//! DeepSeek-style MoE inventory with the recipe. Any input must give Ok or a typed error.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use dynquant_plan::{plan, Inventory, MlaLayout, PlanOptions, Recipe};
use libfuzzer_sys::fuzz_target;

/// A 4-layer DeepSeek-V3-style config (1 dense layer, 8 routed experts).
const CONFIG: &str = include_str!("../seeds/small-deepseek-config.json");

fn inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| {
        let path = common::write_scratch("recipe-inventory-config.json", CONFIG.as_bytes());
        dynquant_hf::config_inventory(&path, MlaLayout::Mla).expect("the inventory config reads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(recipe) = Recipe::parse(text, "fuzz") else {
        return;
    };
    let _ = plan(inventory(), &recipe, &PlanOptions::default());
});
