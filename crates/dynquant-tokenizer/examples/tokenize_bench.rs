//! Tokenizer speed: `cargo run --release -p dynquant-tokenizer --example tokenize_bench -- MODEL TEXT [RUNS]`.
//! Prints one JSON line: tokenizer build time (GGUF open included), token count, and the best
//! and median `encode(text, false, false)` time over RUNS (default 5). Used by
//! `scripts/bench-tokenize.sh`.

use std::time::Instant;

use dynquant_gguf::{Access, GgufModel};
use dynquant_tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tokenize_bench MODEL TEXT [RUNS]");
        std::process::exit(2);
    }
    let runs: usize = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5)
        .max(1);
    let t0 = Instant::now();
    let model = GgufModel::open(&args[1], Access::Mmap)?;
    let tok = Tokenizer::from_gguf(model.metadata())?;
    let build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let text = std::fs::read_to_string(&args[2])?;
    let mut times = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = tok.encode(&text, false, false)?.len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"build_ms\": {build_ms:.1}, \"tokens\": {n}, \"best_ms\": {:.1}, \"median_ms\": {:.1}}}",
        times[0],
        times[times.len() / 2]
    );
    Ok(())
}
