//! `dynquant imatrix`: squared activations per input column of every matrix product.

use anyhow::{Context, Result};
use dynquant_engine::evaluation::Progress;
use dynquant_engine::imatrix::statistics;
use dynquant_gguf::WriteOptions;

use super::perplexity::{evaluator, open, pool};
use crate::args::ImatrixArgs;

pub fn run(a: &ImatrixArgs) -> Result<()> {
    if a.output.exists() && !a.force {
        anyhow::bail!("{} exists (use --force to replace it)", a.output.display());
    }
    let gguf = open(&a.model)?;
    let ev = evaluator(&gguf, &a.engine, &a.model)?;
    let text = ev.read_text(&a.text)?;
    let chunking = ev.chunking(a.ctx, a.chunks);
    let t0 = std::time::Instant::now();
    let collector = pool(&a.engine)?.install(|| {
        ev.imatrix(&text.tokens, &chunking, |p| match p {
            Progress::Start { n_tokens, n_chunks } => {
                eprintln!("imatrix: {n_tokens} tokens, {n_chunks} chunks of {}", a.ctx)
            }
            Progress::Chunk { chunk, .. } => eprint!("[{}]", chunk + 1),
        })
    })?;
    eprintln!(" {:.1} s", t0.elapsed().as_secs_f64());
    let n_chunks = chunking.n_chunks(text.tokens.len());
    // As llama-imatrix's "partial data" warning: such experts are stored with zero sums and
    // counts, which llama-quantize (and ours) turn into unit weights.
    for u in collector.unused_experts() {
        eprintln!(
            "warning: {}: {} of {} experts saw no tokens ({:?}); they get unit weights",
            u.name,
            u.experts.len(),
            u.n_expert,
            u.experts
        );
    }
    let dataset = a
        .text
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let im = collector.to_imatrix(vec![dataset], n_chunks as u32, a.ctx as u32);
    im.write(
        &a.output,
        &WriteOptions {
            overwrite: a.force,
            protected_inputs: vec![a.model.clone(), a.text.clone()],
        },
    )
    .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({} entries)",
        a.output.display(),
        im.entries.len()
    );
    if a.show_statistics {
        println!(
            "{:<40} {:>12} {:>10} {:>12} {:>10} {:>10} {:>6}",
            "tensor", "sum", "min", "max", "mean", "std", "n"
        );
        for s in statistics(&im) {
            println!(
                "{:<40} {:>12.3} {:>10.4} {:>12.3} {:>10.4} {:>10.4} {:>6}",
                s.name, s.sum, s.min, s.max, s.mean, s.std, s.n
            );
        }
    }
    Ok(())
}
