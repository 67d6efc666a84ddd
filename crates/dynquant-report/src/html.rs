//! The report as one self-contained HTML page: styles inline, charts as inline SVG, no scripts,
//! no links to anything outside the file.

use minijinja::{context, Environment, Value};

use crate::charts;
use crate::error::Result;
use crate::render::human_bytes;
use crate::report::Report;

const TEMPLATE: &str = include_str!("../templates/report.html");

/// Renders `r` as HTML; `sections` are extra HTML fragments (already escaped) placed after the
/// KLD charts.
pub fn render_html(r: &Report, sections: &[String]) -> Result<String> {
    let mut env = Environment::new();
    env.add_template("report.html", TEMPLATE)?;
    let quants: Vec<Value> = r
        .quants
        .iter()
        .enumerate()
        .map(|(i, q)| -> Result<Value> {
            let k = &q.kld;
            let f = &q.facts;
            let kept = if f.kept.is_empty() {
                f.main_type.clone()
            } else {
                format!(
                    "{}; {}",
                    f.main_type,
                    f.kept
                        .iter()
                        .map(|k| format!("{} ({})", k.role, k.types))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Ok(context! {
                file => f.file,
                color => charts::series_hex(i),
                size => human_bytes(f.size_bytes),
                bpw => format!("{:.3}", f.bpw),
                ppl => format!("{:.4}", k.ppl),
                kld => format!("{:.5} ± {:.5}", k.mean, k.mean_err),
                p90 => format!("{:.4}", k.p90),
                p99 => format!("{:.4}", k.p99),
                p999 => format!("{:.4}", k.p999),
                max => format!("{:.3}", k.max),
                top1 => format!("{:.2} %", 100.0 * k.top1),
                rms_dp => format!("{:.2} %", 100.0 * k.rms_dp),
                kept => kept,
                bits_svg => Value::from_safe_string(charts::bits_map(f)?),
            })
        })
        .collect::<Result<_>>()?;
    let base = r.base.facts.as_ref().map(|f| {
        context! {
            file => f.file,
            size => human_bytes(f.size_bytes),
            bpw => format!("{:.3}", f.bpw),
            ppl => format!("{:.4}", r.base.ppl),
            main_type => f.main_type,
        }
    });
    let tmpl = env.get_template("report.html")?;
    let html = tmpl.render(context! {
        base_file => r.base.file,
        version => r.dynquant_version,
        format => r.format,
        ev => r.evaluation,
        base => base,
        quants => quants,
        n_refs => r.references.len(),
        chart_kld_size => Value::from_safe_string(charts::kld_vs_size(r)?),
        chart_kld_curves => Value::from_safe_string(charts::kld_curves(r)?),
        sections => sections.iter().map(|s| Value::from_safe_string(s.clone())).collect::<Vec<_>>(),
    })?;
    Ok(html)
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}
