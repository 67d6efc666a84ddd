//! `split`, `merge` and `verify`.

use anyhow::{bail, Context, Result};
use dynquant_gguf::{copy_model, verify_set, GgufModel, OutputTarget};

use super::{human_bytes, write_options};
use crate::args::{MergeArgs, SplitArgs, VerifyArgs};

pub fn split(a: &SplitArgs) -> Result<()> {
    let spec = a.shards.spec();
    if !spec.is_active() {
        bail!("give --split-max-size and/or --split-max-tensors");
    }
    let model = GgufModel::open(&a.input, a.read.access())
        .with_context(|| format!("reading {}", a.input.display()))?;
    let target = OutputTarget::Split {
        prefix: a.out_prefix.clone(),
        spec,
    };
    let summary = copy_model(&model, &target, &write_options(a.force))
        .with_context(|| format!("splitting {}", a.input.display()))?;
    for p in &summary.paths {
        println!("{}", p.display());
    }
    println!(
        "wrote {} shards, {} tensors, {}",
        summary.paths.len(),
        model.n_tensors(),
        human_bytes(summary.bytes)
    );
    Ok(())
}

pub fn merge(a: &MergeArgs) -> Result<()> {
    let model = GgufModel::open(&a.first_part, a.read.access())
        .with_context(|| format!("reading {}", a.first_part.display()))?;
    let target = OutputTarget::Single(a.output.clone());
    let summary = copy_model(&model, &target, &write_options(a.force))
        .with_context(|| format!("merging into {}", a.output.display()))?;
    println!(
        "merged {} shards into {} ({} tensors, {})",
        model.parts().len(),
        a.output.display(),
        model.n_tensors(),
        human_bytes(summary.bytes)
    );
    Ok(())
}

pub fn verify(a: &VerifyArgs) -> Result<()> {
    let s = verify_set(&a.first_shard)?;
    let checks = if s.checksummed_files == s.files.len() {
        "every tensor matches its checksum".to_string()
    } else if s.checksummed_files == 0 {
        "no checksums recorded: structure checked only".to_string()
    } else {
        format!(
            "checksums in {} of {} files checked; the others structure only",
            s.checksummed_files,
            s.files.len()
        )
    };
    println!(
        "ok: {} files, {} tensors, {}; {checks}",
        s.files.len(),
        s.tensors,
        human_bytes(s.bytes)
    );
    Ok(())
}
