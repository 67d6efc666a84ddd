//! `dynquant compare`: quants against their base, rendered as a table, report.json, an HTML
//! report and optionally a model-card table. The measuring and rendering is `dynquant-report`;
//! this file opens the inputs, reports progress and writes the outputs.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dynquant_engine::evaluation::Evaluator;
use dynquant_engine::evaluation::{Progress, SaveLogits};
use dynquant_engine::kld::Base;
use dynquant_report::facts::{check_same_model, kv_bytes_per_token, ModelFacts};
use dynquant_report::functional::FunctionalSettings;
use dynquant_report::measure::measure_kld;
use dynquant_report::report::{
    BaseEntry, ChecksInfo, Evaluation, ModelChecks, QuantEntry, ReferencePoint, FORMAT,
};
use dynquant_report::sanity::{self, SanitySettings};
use dynquant_report::Report;

use super::perplexity::{evaluator, open, pool};
use crate::args::{CompareArgs, EngineArgs};

/// What a comparison needs, whichever command asks for it.
pub struct CompareInputs<'a> {
    /// GGUF base model or KLD base file.
    pub base: &'a Path,
    /// Quantized models.
    pub quants: &'a [PathBuf],
    /// Text (needed with a GGUF base).
    pub text: Option<&'a Path>,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks.
    pub chunks: usize,
    /// Tokens stored per position.
    pub top_k: usize,
    /// Reference points.
    pub references: Vec<ReferencePoint>,
    /// Run the generation checks (a GGUF base only): sanity prompts and tokens per answer.
    pub checks: Option<(usize, usize)>,
    /// Show progress on stderr.
    pub progress: bool,
    /// Engine options.
    pub engine: EngineArgs,
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn is_kld_base(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 8];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(n == 8 && &magic == b"DQKLDB1\0")
}

fn parse_reference(s: &str) -> Result<ReferencePoint> {
    let bad =
        || anyhow::anyhow!("--reference '{s}': expected LABEL=SIZE:KLD, e.g. q4_k_m=95M:0.012");
    let (label, rest) = s.rsplit_once('=').ok_or_else(bad)?;
    let (size, kld) = rest.split_once(':').ok_or_else(bad)?;
    let size_bytes = dynquant_gguf::parse_size(size).ok_or_else(bad)?;
    let kld_mean: f64 = kld.parse().map_err(|_| bad())?;
    if label.is_empty() || !kld_mean.is_finite() || kld_mean < 0.0 {
        return Err(bad());
    }
    Ok(ReferencePoint {
        label: label.to_string(),
        size_bytes,
        kld_mean,
    })
}

/// Writes `bytes` to a temporary name beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = file_name(path);
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Removes a file when dropped (the temporary base file).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `eprint!` when `$on`.
macro_rules! say {
    ($on:expr, $($arg:tt)*) => {
        if $on {
            eprint!($($arg)*);
        }
    };
}

/// Measures every quant against the base; progress goes to stderr when asked.
pub fn measure(inp: &CompareInputs<'_>, tmp_dir: &Path) -> Result<Report> {
    let on = inp.progress;
    for p in std::iter::once(inp.base).chain(inp.quants.iter().map(PathBuf::as_path)) {
        if !p.is_file() {
            bail!("{}: no such file", p.display());
        }
    }
    let pool = pool(&inp.engine)?;
    let base_is_file = is_kld_base(inp.base)?;
    let base_gguf = if base_is_file {
        None
    } else {
        Some(open(inp.base)?)
    };
    let mut _tmp_guard = None;
    let base_ev = match &base_gguf {
        Some(g) => Some(evaluator(g, &inp.engine, inp.base)?),
        None => None,
    };
    let (base, base_facts) = match (&base_gguf, &base_ev) {
        (None, _) | (_, None) => {
            let base =
                Base::read(inp.base).with_context(|| format!("reading {}", inp.base.display()))?;
            if let Some(text) = inp.text {
                let bytes =
                    std::fs::read(text).with_context(|| format!("reading {}", text.display()))?;
                if dynquant_engine::kld::sha256_hex(&bytes) != base.header.text_sha256 {
                    bail!(
                        "{} was made from another text than {}",
                        inp.base.display(),
                        text.display()
                    );
                }
            }
            (base, None)
        }
        (Some(gguf), Some(ev)) => {
            let Some(text_path) = inp.text else {
                bail!("--text is needed to compare with a GGUF base (or give a KLD base file)");
            };
            let facts = ModelFacts::of(
                gguf,
                &file_name(inp.base),
                kv_bytes_per_token(&ev.model().config),
            )?;
            // check every quant before the long work starts
            for q in inp.quants {
                let qg = open(q)?;
                check_same_model(gguf, &file_name(inp.base), &qg, &file_name(q))?;
            }
            let text = ev.read_text(text_path)?;
            let chunking = ev.chunking(inp.ctx, Some(inp.chunks));
            let tmp = tmp_dir.join(format!(".dynquant-compare-{}.kldbase", std::process::id()));
            _tmp_guard = Some(RemoveOnDrop(tmp.clone()));
            let save = SaveLogits {
                path: &tmp,
                top_k: inp.top_k,
                model_name: file_name(inp.base),
            };
            pool.install(|| {
                ev.perplexity(&text, &chunking, Some(&save), |p| match p {
                    Progress::Start { n_chunks, .. } => say!(
                        on,
                        "compare: base {} ({n_chunks} chunks of {}) ",
                        file_name(inp.base),
                        inp.ctx
                    ),
                    Progress::Chunk { .. } => say!(on, "."),
                })
            })?;
            say!(on, "\n");
            (Base::read(&tmp)?, Some(facts))
        }
    };
    let sanity = SanitySettings {
        prompts: inp.checks.map_or(0, |c| c.0),
        n_predict: inp.checks.map_or(0, |c| c.1),
        ..SanitySettings::default()
    };
    let functional = FunctionalSettings::default();
    // the base's prompt caches are shared by every model's scoring
    let scorer = base_ev.as_ref().map(sanity::BaseScorer::new);
    let run_checks = |ev: &Evaluator<'_>, name: &str| -> Result<Option<ModelChecks>> {
        let (Some(_), Some(scorer)) = (inp.checks, &scorer) else {
            return Ok(None);
        };
        let c = pool.install(|| {
            sanity::run_checks(ev, scorer, &sanity, &functional, |k, n| {
                say!(on, "\rcompare: checks of {name}: {:3}%", 100 * k / n.max(1))
            })
        })?;
        say!(
            on,
            " (loops {:.0} %, flagged {:.0} %, functional pass@{} {:.0} %)\n",
            100.0 * c.sanity.loops,
            100.0 * c.sanity.flagged,
            c.functional.k,
            100.0 * c.functional.pass_at_k
        );
        Ok(Some(c))
    };
    let (base_checks, checks_info) = match (&scorer, inp.checks) {
        (Some(scorer), Some(_)) => {
            let c = run_checks(scorer.base(), &file_name(inp.base))?
                .expect("checks run for a GGUF base");
            let validation = pool.install(|| {
                sanity::validate(scorer, &sanity::PROMPTS, &c.answers, &sanity, 0x5eed)
            })?;
            say!(on, "compare: thresholds: {}/{} synthetic loops and {}/{} random answers flagged, {}/{} of the base's answers\n",
                validation.synthetic_loops_flagged,
                validation.synthetic_loops,
                validation.random_flagged,
                validation.random,
                validation.base_flagged,
                validation.base_answers
            );
            (
                Some(c),
                Some(ChecksInfo {
                    sanity: sanity.clone(),
                    functional: functional.clone(),
                    validation,
                }),
            )
        }
        _ => (None, None),
    };
    let mut quants = Vec::new();
    let mut ppl_base = f64::NAN;
    for (i, q) in inp.quants.iter().enumerate() {
        let qg = open(q)?;
        let ev = evaluator(&qg, &inp.engine, q)?;
        let facts = ModelFacts::of(&qg, &file_name(q), kv_bytes_per_token(&ev.model().config))?;
        let m = pool
            .install(|| {
                measure_kld(&ev, &qg, &base, |p| match p {
                    Progress::Start { .. } => {
                        say!(
                            on,
                            "compare: [{}/{}] {} ",
                            i + 1,
                            inp.quants.len(),
                            facts.file
                        )
                    }
                    Progress::Chunk { .. } => say!(on, "."),
                })
            })
            .with_context(|| format!("comparing {}", q.display()))?;
        say!(on, " KLD {:.5}\n", m.summary.mean);
        ppl_base = m.ppl_base;
        let checks = run_checks(&ev, &facts.file)?;
        quants.push(QuantEntry {
            facts,
            kld: m.summary,
            kld_curve: m.curve,
            checks,
        });
    }
    let h = &base.header;
    Ok(Report {
        format: FORMAT.to_string(),
        dynquant_version: env!("CARGO_PKG_VERSION").to_string(),
        base: BaseEntry {
            file: file_name(inp.base),
            facts: base_facts,
            ppl: ppl_base,
            checks: base_checks,
        },
        evaluation: Evaluation {
            text_sha256: h.text_sha256.clone(),
            ctx: h.ctx,
            chunks: h.chunks,
            positions: h.positions,
            top_k: h.top_k,
        },
        quants,
        references: inp.references.clone(),
        checks: checks_info,
    })
}

/// The outputs of a report: report.html, report.json beside it, the card when asked.
pub struct Outputs {
    /// The HTML page.
    pub html: PathBuf,
    /// The JSON beside it.
    pub json: PathBuf,
    /// The model card.
    pub card: Option<PathBuf>,
}

impl Outputs {
    /// Output paths for `html`; refuses to replace an input.
    pub fn new(html: &Path, card: Option<&Path>, inputs: &[&Path]) -> Result<Outputs> {
        let o = Outputs {
            html: html.to_path_buf(),
            json: html.with_extension("json"),
            card: card.map(Path::to_path_buf),
        };
        for out in [Some(&o.html), Some(&o.json), o.card.as_ref()]
            .into_iter()
            .flatten()
        {
            for i in inputs {
                if same_file(out, i) {
                    bail!("{} is an input; choose another output name", out.display());
                }
            }
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    bail!("{}: no such folder for the output", dir.display());
                }
            }
        }
        Ok(o)
    }

    /// Renders and writes every output.
    pub fn write(&self, r: &Report) -> Result<()> {
        let json = r.to_json()?;
        let html = dynquant_report::html::render_html(r)?;
        let card = dynquant_report::render::model_card(r);
        write_atomic(&self.json, json.as_bytes())?;
        write_atomic(&self.html, html.as_bytes())?;
        if let Some(c) = &self.card {
            write_atomic(c, card.as_bytes())?;
        }
        Ok(())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub fn run(a: &CompareArgs) -> Result<()> {
    if !a.no_checks && (a.prompts == 0 || a.gen_tokens == 0) {
        bail!("--prompts and --gen-tokens must be at least 1 (--no-checks skips the checks)");
    }
    let references = a
        .references
        .iter()
        .map(|s| parse_reference(s))
        .collect::<Result<Vec<_>>>()?;
    let mut inputs: Vec<&Path> = vec![a.base.as_path()];
    inputs.extend(a.quants.iter().map(PathBuf::as_path));
    inputs.extend(a.text.as_deref());
    let outputs = Outputs::new(&a.out, a.card.as_deref(), &inputs)?;
    let tmp_dir = a
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let report = measure(
        &CompareInputs {
            base: &a.base,
            quants: &a.quants,
            text: a.text.as_deref(),
            ctx: a.ctx,
            chunks: a.chunks,
            top_k: a.top_k,
            references,
            checks: (!a.no_checks).then_some((a.prompts, a.gen_tokens)),
            progress: true,
            engine: a.engine,
        },
        &tmp_dir,
    )?;
    outputs.write(&report)?;
    if a.json {
        print!("{}", report.to_json()?);
    } else {
        print!("{}", dynquant_report::render::terminal_table(&report));
    }
    eprintln!(
        "compare: wrote {} and {}{}",
        outputs.html.display(),
        outputs.json.display(),
        outputs
            .card
            .as_ref()
            .map_or(String::new(), |c| format!(" and {}", c.display()))
    );
    Ok(())
}
