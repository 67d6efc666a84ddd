//! The report as one self-contained HTML page: styles inline, charts as inline SVG, no scripts,
//! no links to anything outside the file.

use minijinja::{context, Environment, Value};

use crate::charts;
use crate::error::Result;
use crate::functional::TASKS;
use crate::render::human_bytes;
use crate::report::{ModelChecks, Report};
use crate::sanity::{suite, Mode};

const TEMPLATE: &str = include_str!("../templates/report.html");

fn pct(v: f64) -> String {
    format!("{:.0} %", 100.0 * v)
}

fn checks_rows(r: &Report) -> Vec<Value> {
    let mut rows: Vec<(String, &ModelChecks)> = Vec::new();
    if let Some(c) = &r.base.checks {
        rows.push((format!("{} (base)", r.base.file), c));
    }
    for q in &r.quants {
        if let Some(c) = &q.checks {
            rows.push((q.facts.file.clone(), c));
        }
    }
    rows.into_iter()
        .map(|(name, c)| {
            let samples: Vec<Value> = c
                .answers
                .iter()
                .filter(|a| a.mode == Mode::Greedy)
                .map(|a| {
                    let mut flags = Vec::new();
                    if let Some(l) = a.looping {
                        flags.push(format!("loop (period {}, {} tokens)", l.period, l.tail));
                    }
                    if a.gibberish {
                        flags.push("gibberish".to_string());
                    }
                    if a.collapsed {
                        flags.push("collapse".to_string());
                    }
                    context! {
                        prompt => a.prompt,
                        text => a.text,
                        flags => flags.join(", "),
                    }
                })
                .collect();
            context! {
                name => name,
                answers => c.sanity.answers,
                loops => pct(c.sanity.loops),
                gibberish => pct(c.sanity.gibberish),
                collapse => pct(c.sanity.collapse),
                flagged => pct(c.sanity.flagged),
                nll => format!("{:.2}", c.sanity.mean_base_nll),
                greedy => pct(c.functional.pass_greedy),
                pass_k => pct(c.functional.pass_at_k),
                samples => samples,
            }
        })
        .collect()
}

/// An SVG for inline use: HTML5 places `<svg>` in the SVG namespace itself, so the namespace
/// URL (which no browser fetches, but which reads like a link) is left out.
fn inline(svg: String) -> Value {
    Value::from_safe_string(svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", ""))
}

/// Renders `r` as HTML.
pub fn render_html(r: &Report) -> Result<String> {
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
                bits_svg => inline(charts::bits_map(f)?),
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
    let checks = match (&r.checks, charts::checks_chart(r)?) {
        (Some(info), Some(chart)) => Some(context! {
            chart => inline(chart),
            rows => checks_rows(r),
            k => 1 + info.functional.seeds.len(),
            k_minus => info.functional.seeds.len(),
            n_prompts => suite(info.sanity.prompts).len(),
            n_tasks => TASKS.len(),
            n_seeds => info.sanity.seeds.len(),
            temp => info.sanity.temp,
            n_predict => info.sanity.n_predict,
            th => info.sanity.thresholds,
            val => info.validation,
            fp => format!("{:.1} %", 100.0 * info.validation.false_positive_rate()),
        }),
        _ => None,
    };
    let tmpl = env.get_template("report.html")?;
    let html = tmpl.render(context! {
        base_file => r.base.file,
        version => r.dynquant_version,
        format => r.format,
        ev => r.evaluation,
        base => base,
        quants => quants,
        n_refs => r.references.len(),
        chart_kld_size => inline(charts::kld_vs_size(r)?),
        chart_kld_curves => inline(charts::kld_curves(r)?),
        checks => checks,
    })?;
    Ok(html)
}
