//! Planning a Hugging Face model from its `config.json` alone, before its weights are
//! downloaded: the tensors a checkpoint of that config holds go through the same name map,
//! shape checks and expert stacking as a real checkpoint's, so the inventory holds exactly the
//! tensors `convert` would write (its order is that of a single-file checkpoint).

use std::path::Path;

use dynquant_gguf::{Metadata, Value};
use dynquant_plan::{Inventory, MlaLayout};

use crate::arch::{arch_for, generic_params, plan_tensors, ConfigCheckpoint};
use crate::config::Config;
use crate::error::Result;
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
