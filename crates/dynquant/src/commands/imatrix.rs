//! `dynquant imatrix`: squared activations per input column of every matrix product.

use anyhow::{Context, Result};
use dynquant_engine::imatrix::{statistics, Collector};
use dynquant_engine::Logits;
use dynquant_gguf::WriteOptions;
use dynquant_tokenizer::Tokenizer;

use super::perplexity::{chunk_options, load, open, pool, tokenize_text};
use crate::args::ImatrixArgs;

pub fn run(a: &ImatrixArgs) -> Result<()> {
    if a.output.exists() && !a.force {
        anyhow::bail!("{} exists (use --force to replace it)", a.output.display());
    }
    let gguf = open(&a.model)?;
    let model = load(&gguf, &a.engine, &a.model)?;
    let tok = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    let (_, tokens) = tokenize_text(&tok, &a.text)?;
    let opts = chunk_options(&tok, a.ctx, a.chunks);
    let n_chunks = opts.n_chunks(tokens.len());
    if n_chunks == 0 {
        anyhow::bail!(
            "the text gives {} tokens, fewer than one chunk of {}",
            tokens.len(),
            a.ctx
        );
    }
    eprintln!(
        "imatrix: {} tokens, {n_chunks} chunks of {}",
        tokens.len(),
        a.ctx
    );
    // llama-imatrix leaves the output projection out unless asked (--process-output).
    let collector = Collector::new(vec!["output.weight".into(), "token_embd.weight".into()]);
    let t0 = std::time::Instant::now();
    pool(&a.engine)?.install(|| -> Result<()> {
        let mut s = model.session(a.ctx);
        for i in 0..n_chunks {
            s.clear();
            s.eval(&opts.chunk(&tokens, i), Logits::None, Some(&collector))?;
            eprint!("[{}]", i + 1);
        }
        Ok(())
    })?;
    eprintln!(" {:.1} s", t0.elapsed().as_secs_f64());
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
