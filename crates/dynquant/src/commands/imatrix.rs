//! `dynquant imatrix`: squared activations per input column of every matrix product.

use anyhow::{Context, Result};
use dynquant_engine::evaluation::Progress;
use dynquant_engine::imatrix::statistics;
use dynquant_gguf::imatrix::{merge as merge_parts, Imatrix};
use dynquant_gguf::WriteOptions;

use super::perplexity::{evaluator, open, pool};
use crate::args::{ImatrixAction, ImatrixArgs, ImatrixMergeArgs};

/// `A..B` with `A < B`.
fn parse_chunk_range(s: &str) -> Result<std::ops::Range<usize>> {
    let bad =
        || anyhow::anyhow!("chunk range '{s}': expected A..B with A < B (0-based, B excluded)");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (usize, usize) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok(a..b)
}

pub fn run(a: &ImatrixArgs) -> Result<()> {
    if let Some(ImatrixAction::Merge(m)) = &a.action {
        return merge(m);
    }
    let (Some(model), Some(text_path), Some(output)) = (&a.model, &a.text, &a.output) else {
        anyhow::bail!("give MODEL, --text and -o");
    };
    if output.exists() && !a.force {
        anyhow::bail!("{} exists (use --force to replace it)", output.display());
    }
    let range = a
        .chunk_range
        .as_deref()
        .map(parse_chunk_range)
        .transpose()?;
    let gguf = open(model)?;
    let ev = evaluator(&gguf, &a.engine, model)?;
    let mut text = ev.read_text(text_path)?;
    if let Some(r) = &range {
        // Chunk i of these tokens is chunk A + i of the whole text: the same tokens, the
        // same BOS substitution, each chunk from an empty cache.
        let have = text.tokens.len() / a.ctx.max(1);
        if r.end > have {
            anyhow::bail!(
                "chunk range {}..{}: the text gives {have} chunks of {}",
                r.start,
                r.end,
                a.ctx
            );
        }
        text.tokens = text.tokens[r.start * a.ctx..r.end * a.ctx].to_vec();
    }
    let chunking = ev.chunking(a.ctx, a.chunks);
    let t0 = std::time::Instant::now();
    if let Some(cov) = &a.covariance {
        if cov.exists() && !a.force {
            anyhow::bail!("{} exists (use --force to replace it)", cov.display());
        }
        let need = covariance_bytes(&gguf);
        eprintln!(
            "covariance: about {:.2} GiB of sums in memory, {:.2} GiB written",
            need as f64 / (1u64 << 30) as f64,
            need as f64 / 2.0 / (1u64 << 30) as f64
        );
        if let Some(avail) = available_memory() {
            if need > avail {
                anyhow::bail!(
                    "collecting the covariance needs about {:.1} GiB of memory, {:.1} GiB is available (it grows with n_expert x ne0² per weight: drop --covariance for this model)",
                    need as f64 / (1u64 << 30) as f64,
                    avail as f64 / (1u64 << 30) as f64
                );
            }
        }
    }
    let show = |p: Progress| match p {
        Progress::Start { n_tokens, n_chunks } => {
            eprintln!("imatrix: {n_tokens} tokens, {n_chunks} chunks of {}", a.ctx)
        }
        Progress::Chunk { chunk, .. } => eprint!("[{}]", chunk + 1),
    };
    let (collector, covariance) = pool(&a.engine)?.install(|| {
        if a.covariance.is_some() {
            ev.imatrix_and_covariance(&text.tokens, &chunking, show)
                .map(|(im, cov)| (im, Some(cov)))
        } else {
            ev.imatrix(&text.tokens, &chunking, show)
                .map(|im| (im, None))
        }
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
    let dataset = text_path
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let im = collector.to_imatrix(vec![dataset], n_chunks as u32, a.ctx as u32);
    im.write(
        output,
        &WriteOptions {
            overwrite: a.force,
            protected_inputs: vec![model.clone(), text_path.clone()],
        },
    )
    .with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {} ({} entries)", output.display(), im.entries.len());
    if let (Some(path), Some(cov)) = (&a.covariance, covariance) {
        let entries = cov.entries();
        dynquant_gguf::covariance::write(
            &dynquant_gguf::covariance::CovarianceInfo {
                model: dynquant_measure::gguf_identity(&gguf)?,
                datasets: im.datasets.clone(),
                chunk_count: im.chunk_count,
                chunk_size: im.chunk_size,
            },
            &entries,
            path,
            &WriteOptions {
                overwrite: a.force,
                protected_inputs: vec![model.clone(), text_path.clone(), output.clone()],
            },
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} ({} entries)", path.display(), entries.len());
    }
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

fn merge(m: &ImatrixMergeArgs) -> Result<()> {
    let parts: Vec<Imatrix> = m
        .parts
        .iter()
        .map(|p| Imatrix::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<_>>()?;
    let im = merge_parts(&parts)?;
    im.write(
        &m.output,
        &WriteOptions {
            overwrite: m.force,
            protected_inputs: m.parts.clone(),
        },
    )
    .with_context(|| format!("writing {}", m.output.display()))?;
    eprintln!(
        "imatrix merge: wrote {} from {} parts ({} chunks, {} entries)",
        m.output.display(),
        parts.len(),
        im.chunk_count,
        im.entries.len()
    );
    Ok(())
}

/// Bytes the covariance collection holds: one f64 `ne0 x ne0` sum per matrix of every weight
/// that takes part in a matrix product (not the token embeddings or output projection, which
/// the imatrix leaves out too).
fn covariance_bytes(gguf: &dynquant_gguf::GgufModel) -> u64 {
    gguf.tensors()
        .filter(|t| {
            let n = &t.info.name;
            t.info.shape.len() >= 2
                && n.ends_with(".weight")
                && n != "token_embd.weight"
                && n != "output.weight"
        })
        .map(|t| {
            let ne0 = t.info.shape[0];
            let mats: u64 = t.info.shape.iter().skip(2).product();
            ne0 * ne0 * mats * 8
        })
        .sum()
}

/// `MemAvailable` of /proc/meminfo, where there is one.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
