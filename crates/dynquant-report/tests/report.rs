//! Rendering a report built by hand (no model needed): the JSON's fields, a self-contained
//! HTML page with its charts, the terminal and model-card tables; the detectors and the
//! functional checkers on answers whose verdict is known.

use dynquant_report::facts::{BitsCell, KeptRole, ModelFacts};
use dynquant_report::functional::{integers, passes, Check, FunctionalResult, TASKS};
use dynquant_report::report::{
    BaseEntry, ChecksInfo, CurvePoint, Evaluation, KldSummary, ModelChecks, QuantEntry,
    ReferencePoint, FORMAT,
};
use dynquant_report::sanity::{
    detect_loop, judge, Answer, Mode, Rates, SanitySettings, Thresholds, Validation, PROMPTS,
};
use dynquant_report::{charts, html, render, Report};

fn facts(file: &str, size: u64, main: &str, bpw: f64) -> ModelFacts {
    let mut bits = vec![BitsCell {
        layer: None,
        role: "token_embd".into(),
        bpw: 6.5625,
        types: "q6_K".into(),
    }];
    for l in 0..3 {
        for role in ["attn_q", "attn_v", "ffn_down"] {
            bits.push(BitsCell {
                layer: Some(l),
                role: role.into(),
                bpw,
                types: main.into(),
            });
        }
    }
    ModelFacts {
        file: file.into(),
        size_bytes: size,
        tensor_bytes: size - 1000,
        n_elements: 1000,
        bpw,
        main_type: main.into(),
        kept: vec![KeptRole {
            role: "token_embd".into(),
            types: "q6_K".into(),
        }],
        bits,
        load_bytes: size + 5000,
    }
}

fn answer(prompt: &str, text: &str, looping: bool) -> Answer {
    let th = Thresholds::default();
    let tokens: Vec<u32> = if looping {
        (0..40).map(|i| i % 4).collect()
    } else {
        (0..40).collect()
    };
    judge(
        prompt,
        Mode::Greedy,
        text.as_bytes(),
        40,
        &tokens,
        Some(2.0),
        &th,
    )
}

fn checks(pass: f64, looping: bool) -> ModelChecks {
    let answers = vec![
        answer(
            "chat-sky",
            "Because of <Rayleigh> scattering & more.",
            looping,
        ),
        answer("list-fruits", "apple, pear", false),
    ];
    ModelChecks {
        sanity: Rates::of(&answers),
        answers,
        functional: FunctionalResult {
            attempts: Vec::new(),
            pass_greedy: pass,
            pass_at_k: pass,
            k: 3,
            tasks: TASKS.len(),
        },
    }
}

fn quant(file: &str, size: u64, main: &str, bpw: f64, kld: f64) -> QuantEntry {
    QuantEntry {
        facts: facts(file, size, main, bpw),
        kld: KldSummary {
            mean: kld,
            mean_err: kld / 20.0,
            median: kld / 2.0,
            p90: kld * 2.0,
            p99: kld * 5.0,
            p999: kld * 9.0,
            max: kld * 12.0,
            top1: 0.9,
            rms_dp: 0.03,
            ppl: 21.0,
            ppl_err: Some(0.5),
        },
        kld_curve: (0..=100)
            .map(|p| CurvePoint {
                pct: p as f64,
                kld: kld * (1.0 + p as f64 / 10.0),
            })
            .collect(),
        checks: Some(checks(0.8, kld > 0.5)),
    }
}

fn sample_report() -> Report {
    Report {
        format: FORMAT.into(),
        dynquant_version: "0.0.0-test".into(),
        base: BaseEntry {
            file: "model-f16.gguf".into(),
            facts: Some(facts("model-f16.gguf", 400 << 20, "f16", 16.0)),
            ppl: 20.0,
            checks: Some(checks(0.9, false)),
        },
        evaluation: Evaluation {
            text_sha256: "ab".repeat(32),
            ctx: 512,
            chunks: 4,
            positions: 1020,
            top_k: 32,
        },
        quants: vec![
            quant("model-q2_k.gguf", 85 << 20, "q2_K", 3.7, 0.6),
            quant("model-basic-q2_k.gguf", 61 << 20, "q2_K", 2.6, 1.9),
            quant("model-q4_k_m.gguf", 117 << 20, "q4_K", 5.1, 0.017),
        ],
        references: vec![ReferencePoint {
            label: "llama.cpp q3_k_m".into(),
            size_bytes: 100 << 20,
            kld_mean: 0.2,
        }],
        checks: Some(ChecksInfo {
            sanity: SanitySettings::default(),
            functional: Default::default(),
            validation: Validation {
                synthetic_loops_flagged: 10,
                synthetic_loops: 10,
                random_flagged: 10,
                random: 10,
                base_flagged: 1,
                base_answers: 10,
            },
        }),
    }
}

#[test]
fn json_has_the_measurements_and_round_trips() {
    let r = sample_report();
    let json = r.to_json().expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
    assert_eq!(v["format"], FORMAT);
    let q = &v["quants"][0];
    for key in [
        "mean", "mean_err", "p90", "p99", "p999", "max", "top1", "rms_dp", "ppl",
    ] {
        assert!(q["kld"][key].is_number(), "kld.{key} missing: {q}");
    }
    for key in ["size_bytes", "bpw", "bits", "kept", "load_bytes"] {
        assert!(!q["facts"][key].is_null(), "facts.{key} missing");
    }
    assert!(q["checks"]["sanity"]["loops"].is_number());
    assert!(q["checks"]["functional"]["pass_at_k"].is_number());
    assert_eq!(v["checks"]["validation"]["base_answers"], 10);
    let back: Report = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back.quants.len(), r.quants.len());
    assert_eq!(r.to_json().expect("json"), json, "not stable");
}

#[test]
fn html_is_self_contained_with_every_chart() {
    let r = sample_report();
    let page = html::render_html(&r).expect("html");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external URL"
    );
    assert!(!page.to_lowercase().contains("<script"), "script");
    assert!(!page.contains(" src="), "external resource");
    // KLD vs size, percentiles, checks, one bits map per quant
    assert_eq!(page.matches("<svg").count(), 3 + r.quants.len());
    for id in [
        "chart-kld-size",
        "chart-kld-curves",
        "chart-checks",
        "chart-bits-1",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
    for q in &r.quants {
        assert!(
            page.contains(&q.facts.file),
            "{} not labelled",
            q.facts.file
        );
    }
    assert!(
        page.contains("llama.cpp q3_k_m"),
        "reference point not drawn"
    );
    // the answers are escaped, not injected
    assert!(page.contains("&lt;Rayleigh&gt;"));
    assert!(!page.contains("<Rayleigh>"));
}

#[test]
fn pareto_front_keeps_only_undominated_points() {
    // (size, kld): b is dominated by a (larger and worse)
    let pts = [(10.0, 1.0), (20.0, 2.0), (30.0, 0.1), (5.0, 3.0)];
    assert_eq!(charts::pareto_front(&pts), vec![3, 0, 2]);
}

#[test]
fn tables_have_a_row_per_file() {
    let r = sample_report();
    let t = render::terminal_table(&r);
    assert_eq!(t.lines().count(), 2 + 1 + r.quants.len());
    assert!(t.contains("0.60000 ± 0.03000"));
    let card = render::model_card(&r);
    let rows: Vec<&str> = card.lines().filter(|l| l.starts_with("| model")).collect();
    assert_eq!(rows.len(), 1 + r.quants.len());
    assert!(card.contains("token_embd (q6_K)"));
    assert!(card.contains("| 405.00 MiB |") || card.contains("MiB"));
}

#[test]
fn loop_detector_flags_repeated_tails_only() {
    let th = Thresholds::default();
    // 10 distinct tokens, then a 3-token span 8 times
    let mut t: Vec<u32> = (100..110).collect();
    for _ in 0..8 {
        t.extend([1, 2, 3]);
    }
    let l = detect_loop(&t, &th).expect("loop");
    assert_eq!(l.period, 3);
    assert_eq!(l.tail, 24);
    // one token over and over
    let same = vec![7u32; 30];
    assert_eq!(detect_loop(&same, &th).map(|l| l.period), Some(1));
    // distinct tokens, and a repetition that is too short or not at the end
    let distinct: Vec<u32> = (0..40).collect();
    assert!(detect_loop(&distinct, &th).is_none());
    let mut short: Vec<u32> = (0..40).collect();
    short.extend([1, 2, 1, 2]);
    assert!(detect_loop(&short, &th).is_none());
    let mut early = vec![5u32; 20];
    early.extend(100..130);
    assert!(detect_loop(&early, &th).is_none());
}

#[test]
fn judge_flags_gibberish_and_collapse() {
    let th = Thresholds::default();
    let toks: Vec<u32> = (0..20).collect();
    let fine = judge(
        "p",
        Mode::Greedy,
        b"A fine answer.",
        20,
        &toks,
        Some(2.0),
        &th,
    );
    assert!(!fine.flagged());
    let high = judge(
        "p",
        Mode::Greedy,
        b"zq xv",
        20,
        &toks,
        Some(th.gibberish_nll + 1.0),
        &th,
    );
    assert!(high.gibberish);
    let invalid = judge("p", Mode::Greedy, b"ok \xff\xfe", 20, &toks, Some(2.0), &th);
    assert!(invalid.gibberish && invalid.invalid_chars > 0);
    let empty = judge("p", Mode::Sampled(1), b"", 0, &[], None, &th);
    assert!(empty.collapsed);
    let blank = judge("p", Mode::Greedy, b" \n ", 3, &[1, 2, 3], Some(1.0), &th);
    assert!(blank.collapsed);
}

#[test]
fn functional_checkers_on_known_answers() {
    assert_eq!(integers("a -3, 4-5 and 10"), vec![-3, 4, 5, 10]);
    let count5 = Check::CountTo(5);
    assert!(passes(&count5, "1, 2, 3, 4, 5"));
    assert!(passes(&count5, "1. 1\n2. 2\n3. 3\n4. 4\n5. 5"));
    assert!(!passes(&count5, "1, 2, 3, 4"));
    assert!(!passes(&count5, "1, 2, 3, 4, 5, 6"));
    let rev = Check::WordsInOrder(&["blue", "green", "red"]);
    assert!(passes(&rev, "Reversed: Blue, green, red."));
    assert!(!passes(&rev, "red, green, blue"));
    assert!(!passes(&rev, "blue, greenish, red"));
    let sort = Check::NumbersInOrder(&[2, 4, 7, 9]);
    assert!(passes(&sort, "2, 4, 7, 9"));
    assert!(!passes(&sort, "7, 2, 9, 4"));
    let add = Check::Number(5, &[2, 3]);
    assert!(passes(&add, "5"));
    assert!(passes(&add, "2 + 3 = 5"));
    assert!(!passes(&add, "2 + 3 = 6"));
    assert!(!passes(&add, "5 or 6"));
    let json = Check::JsonKeys(&["name", "age"]);
    assert!(passes(&json, "Here: {\"name\": \"Tom\", \"age\": 30} done"));
    assert!(!passes(&json, "{\"name\": \"Tom\"}"));
    assert!(!passes(&json, "{name: Tom, age: 30}"));
    assert!(passes(&Check::Contains("Paris"), "It is Paris."));
    // every built-in task has a checker that a right answer passes and an empty one fails
    for t in &TASKS {
        assert!(!passes(&t.check, ""), "{} passes an empty answer", t.id);
    }
    assert!(PROMPTS.len() >= 20);
}

/// The page in a real browser (Debian's `chromium`, headless): it loads with no console errors
/// (a failed resource load would be one), and every chart is in the rendered DOM. Skipped, with a
/// note, where chromium is not installed (`apt-get install chromium`).
#[test]
fn html_renders_in_a_real_browser() {
    let Ok(browser) = which_chromium() else {
        eprintln!("chromium not installed: browser check skipped (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    let r = sample_report();
    std::fs::write(&page, html::render_html(&r).expect("html")).expect("write");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert_eq!(
        dom.matches("<svg").count(),
        3 + r.quants.len(),
        "charts missing"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
}

fn which_chromium() -> Result<std::path::PathBuf, ()> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(())
}
