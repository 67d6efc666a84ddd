//! Compares two GGUF imatrix files entry by entry: for every tensor, the median over columns of
//! the relative difference of the per-column mean squared activation (in_sum2 / count).
//!
//! ```text
//! cargo run --release -p dynquant-engine --example imatrix_compare -- OURS.gguf REFERENCE.gguf
//! ```
use dynquant_gguf::imatrix::Imatrix;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: imatrix_compare OURS.gguf REFERENCE.gguf");
        std::process::exit(2);
    }
    let a = Imatrix::read(&args[1]).expect("reading the first imatrix");
    let b = Imatrix::read(&args[2]).expect("reading the second imatrix");
    let mut worst = (0f64, String::new());
    let mut medians = Vec::new();
    for e in &b.entries {
        let Some(o) = a.get(&e.name) else {
            println!("{}: missing", e.name);
            continue;
        };
        let mut rel: Vec<f64> = (0..e.n_mat())
            .flat_map(|m| o.weights(m).into_iter().zip(e.weights(m)))
            .map(|(x, y)| ((x as f64 - y as f64) / y as f64).abs())
            .collect();
        rel.sort_by(f64::total_cmp);
        let med = rel[rel.len() / 2];
        medians.push(med);
        if med > worst.0 {
            worst = (med, e.name.clone());
        }
    }
    medians.sort_by(f64::total_cmp);
    println!(
        "{} tensors compared (ours {} entries, {} chunks; reference {} chunks)",
        medians.len(),
        a.entries.len(),
        a.chunk_count,
        b.chunk_count
    );
    println!(
        "per-tensor median relative difference: median {:.4}%, max {:.4}% ({})",
        100.0 * medians[medians.len() / 2],
        100.0 * worst.0,
        worst.1
    );
}
