//! `dynquant run`: streaming generation.

use std::io::Write;

use anyhow::{Context, Result};
use dynquant_engine::sample::{Sampler, SamplerParams};
use dynquant_engine::Logits;
use dynquant_tokenizer::{ChatMessage, Tokenizer};

use super::perplexity::{load, open, pool};
use crate::args::RunArgs;

pub fn run(a: &RunArgs) -> Result<()> {
    let gguf = open(&a.model)?;
    let model = load(&gguf, &a.engine, &a.model)?;
    let tok = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    let (text, parse_special) = if a.chat {
        let t = tok
            .apply_chat_template(&[ChatMessage::new("user", a.prompt.clone())], true)
            .context("applying the chat template")?;
        (t, true)
    } else {
        (a.prompt.clone(), false)
    };
    let mut prompt = tok.encode(&text, true, parse_special)?;
    if a.chat && tok.add_bos() && prompt.len() >= 2 && prompt[0] == prompt[1] {
        prompt.remove(0); // the template already wrote BOS
    }
    if prompt.is_empty() {
        anyhow::bail!("the prompt gives no tokens");
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut sampler = Sampler::new(SamplerParams {
        temp: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        seed,
    });
    let ctx = a.ctx.max(prompt.len() + 1);
    let t0 = std::time::Instant::now();
    let mut generated = 0usize;
    let mut t_prompt = 0.0;
    pool(&a.engine)?.install(|| -> Result<()> {
        let mut s = model.session(ctx);
        let mut logits = s.eval(&prompt, Logits::Last, None)?;
        t_prompt = t0.elapsed().as_secs_f64();
        let mut out = std::io::stdout().lock();
        let mut pending: Vec<u8> = Vec::new();
        while generated < a.n_predict && s.n_past() < ctx {
            let next = sampler.sample(&logits);
            if tok.is_eog(next) {
                break;
            }
            generated += 1;
            pending.extend(tok.token_to_piece(next));
            // print whole UTF-8 characters only
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            out.write_all(&pending[..valid])?;
            out.flush()?;
            pending.drain(..valid);
            if s.n_past() >= ctx {
                break;
            }
            logits = s.eval(&[next], Logits::Last, None)?;
        }
        out.write_all(&pending)?;
        writeln!(out)?;
        Ok(())
    })?;
    let total = t0.elapsed().as_secs_f64();
    eprintln!(
        "run: prompt {} tokens in {:.2} s, generated {generated} tokens at {:.1} tokens/s (seed {seed})",
        prompt.len(),
        t_prompt,
        generated as f64 / (total - t_prompt).max(1e-9)
    );
    Ok(())
}
