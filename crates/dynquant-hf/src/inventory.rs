//! Planning a Hugging Face model from its `config.json` alone, before its weights are
//! downloaded: the tensors a checkpoint of that config holds go through the same name map,
//! shape checks and expert stacking as a real checkpoint's, so the inventory holds exactly the
//! tensors `convert` would write (its order is that of a single-file checkpoint).

use std::path::Path;

use dynquant_gguf::{Metadata, Value};
use dynquant_plan::{Inventory, MlaLayout};

use crate::arch::{arch_for, generic_params, plan_tensors, ConfigCheckpoint};
use crate::config::Config;
use crate::error::{HfError, Result};
use crate::model::{tensor_infos, OutType};

/// The matrices' type of a conversion of the checkpoint `config.json` describes:
/// `torch_dtype` (float32, float16; anything else, bfloat16 included, BF16).
fn outtype_of(cfg: &Config) -> OutType {
    match cfg.str_of("torch_dtype") {
        Some("float32") => OutType::F32,
        Some("float16") => OutType::F16,
        _ => OutType::Bf16,
    }
}

/// The most decoder blocks a config may claim: llama.cpp's `LLAMA_MAX_LAYERS`.
const MAX_CONFIG_LAYERS: u64 = 512;
/// The most routed experts per layer a config may claim (llama.cpp allows 512 today).
const MAX_CONFIG_EXPERTS: u64 = 1024;
/// The most per-expert tensors sets (layers x experts) a config may claim: the tensor list is
/// built from these counts alone (no file bounds it), so a 30-byte config claiming 10^9 layers
/// must fail before anything is allocated. DeepSeek-R1 has 58 x 256.
const MAX_CONFIG_LAYER_EXPERTS: u64 = 1 << 18;

/// Refuses layer and expert counts above the bounds, whatever key the architecture reads.
fn check_counts(cfg: &Config) -> Result<()> {
    let layers = cfg.u64_of(&["num_hidden_layers", "n_layer", "num_layers", "n_layers"])?;
    let experts = cfg.u64_of(&["n_routed_experts", "num_local_experts", "num_experts"])?;
    let too_many = |what: &str, n: u64, max: u64| {
        Err(HfError::json(
            cfg.path(),
            format!("{what} {n} is above the supported {max}"),
        ))
    };
    if let Some(n) = layers.filter(|&n| n > MAX_CONFIG_LAYERS) {
        return too_many("num_hidden_layers", n, MAX_CONFIG_LAYERS);
    }
    if let Some(n) = experts.filter(|&n| n > MAX_CONFIG_EXPERTS) {
        return too_many("the routed expert count", n, MAX_CONFIG_EXPERTS);
    }
    let product = layers.unwrap_or(0).saturating_mul(experts.unwrap_or(0));
    if product > MAX_CONFIG_LAYER_EXPERTS {
        return too_many("layers x routed experts", product, MAX_CONFIG_LAYER_EXPERTS);
    }
    Ok(())
}

/// The inventory of the model `config` describes (a `config.json`, or a folder holding one):
/// GGUF tensor names, shapes and types and the architecture keys, without any weights.
/// `layout` chooses deepseek2's attention tensors; other architectures ignore it.
pub fn config_inventory(config: &Path, layout: MlaLayout) -> Result<Inventory> {
    let path = if config.is_dir() {
        config.join("config.json")
    } else {
        config.to_path_buf()
    };
    let cfg = Config::read_file(&path)?;
    check_counts(&cfg)?;
    let arch = arch_for(&cfg, layout)?;
    let ckpt = ConfigCheckpoint::new(arch.checkpoint_tensors(&cfg)?);
    let plan = plan_tensors(&cfg, &ckpt, layout)?;
    let outtype = outtype_of(&cfg);
    let tensors = tensor_infos(&plan, outtype)?;
    let name = plan.arch.gguf_arch();
    let mut metadata = Metadata::new();
    metadata.set("general.architecture", Value::String(name.into()));
    let overrides = plan.arch.generic_overrides(&cfg)?;
    generic_params(name, &cfg, &overrides, outtype.file_type(), &mut metadata)?;
    plan.arch.extra_params(&cfg, &plan.params, &mut metadata)?;
    Ok(Inventory { metadata, tensors })
}
