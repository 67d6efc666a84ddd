//! `convert`: a Hugging Face safetensors folder to GGUF, streamed tensor by tensor.

use anyhow::{Context, Result};
use dynquant_hf::{ConvertOptions, HfModel, OutType};

use super::{human_bytes, write_options};
use crate::args::ConvertArgs;

pub fn run(a: &ConvertArgs) -> Result<()> {
    let outtype: OutType = a.outtype.parse().map_err(anyhow::Error::msg)?;
    let opts = ConvertOptions {
        outtype,
        tokenizer_pre: a.tokenizer_pre.clone(),
        name: a.name.clone(),
    };
    let model =
        HfModel::open(&a.input, &opts).with_context(|| format!("reading {}", a.input.display()))?;
    for w in model.warnings() {
        eprintln!("warning: {w}");
    }
    let target = a.shards.target(&a.output);
    let summary = model
        .write_gguf(&target, &write_options(a.force))
        .with_context(|| format!("converting {}", a.input.display()))?;
    for p in &summary.paths {
        println!("{}", p.display());
    }
    println!(
        "converted {} tensors, {}",
        model.tensor_infos().len(),
        human_bytes(summary.bytes)
    );
    Ok(())
}
