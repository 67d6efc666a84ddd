//! Plain-text renderings of a [`Report`]: the terminal table and the Markdown model-card table.

use std::fmt::Write;

use crate::report::Report;

/// Binary-unit byte count (`1.50 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn pad_table(rows: &[Vec<String>], right: &[bool]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if right.get(c).copied().unwrap_or(false) {
                    format!("{v:>w$}", w = widths[c])
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * n.saturating_sub(1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}

/// The comparison as an aligned text table, one row per quant (the base first when known).
pub fn terminal_table(r: &Report) -> String {
    let mut rows = vec![[
        "file",
        "size",
        "bpw",
        "PPL",
        "KLD mean ± SE",
        "p90",
        "p99",
        "p99.9",
        "max",
        "top-1",
        "RMS Δp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    if let Some(f) = &r.base.facts {
        rows.push(vec![
            format!("{} (base)", f.file),
            human_bytes(f.size_bytes),
            format!("{:.3}", f.bpw),
            format!("{:.4}", r.base.ppl),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    for q in &r.quants {
        let k = &q.kld;
        rows.push(vec![
            q.facts.file.clone(),
            human_bytes(q.facts.size_bytes),
            format!("{:.3}", q.facts.bpw),
            format!("{:.4}", k.ppl),
            format!("{:.5} ± {:.5}", k.mean, k.mean_err),
            format!("{:.4}", k.p90),
            format!("{:.4}", k.p99),
            format!("{:.4}", k.p999),
            format!("{:.3}", k.max),
            format!("{:.2} %", 100.0 * k.top1),
            format!("{:.2} %", 100.0 * k.rms_dp),
        ]);
    }
    let mut right = vec![true; 11];
    right[0] = false;
    pad_table(&rows, &right)
}

/// The Markdown table quant makers put on a model page: each file with its size, bits per
/// weight, KLD and PPL against the base, what it keeps at higher precision and the memory it
/// needs to load.
pub fn model_card(r: &Report) -> String {
    let mut s = String::new();
    let e = &r.evaluation;
    let _ = writeln!(
        s,
        "| file | size | bits/weight | mean KLD | 99% KLD | top-1 agreement | PPL | kept at higher precision | memory to load |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|---:|");
    if let Some(f) = &r.base.facts {
        let _ = writeln!(
            s,
            "| {} (base) | {} | {:.2} | – | – | – | {:.3} | – | {} |",
            f.file,
            human_bytes(f.size_bytes),
            f.bpw,
            r.base.ppl,
            human_bytes(f.load_bytes)
        );
    }
    for q in &r.quants {
        let f = &q.facts;
        let kept = if f.kept.is_empty() {
            "nothing".to_string()
        } else {
            f.kept
                .iter()
                .map(|k| format!("{} ({})", k.role, k.types))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.4} ± {:.4} | {:.3} | {:.1} % | {:.3} | most weights {}; {} | {} |",
            f.file,
            human_bytes(f.size_bytes),
            f.bpw,
            q.kld.mean,
            q.kld.mean_err,
            q.kld.p99,
            100.0 * q.kld.top1,
            q.kld.ppl,
            f.main_type,
            kept,
            human_bytes(f.load_bytes)
        );
    }
    let _ = writeln!(
        s,
        "\nKL divergence and perplexity against the base over {} positions ({} chunks of {} tokens, text sha256 {}…); memory to load = tensors + f16 KV cache of {} tokens. Measured with dynquant {}.",
        e.positions,
        e.chunks,
        e.ctx,
        &e.text_sha256[..e.text_sha256.len().min(12)],
        crate::facts::LOAD_CTX,
        r.dynquant_version
    );
    s
}
