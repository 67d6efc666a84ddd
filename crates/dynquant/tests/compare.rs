//! `dynquant compare` end to end on the real test model (a report from one small chunk and a
//! few generation checks, the same bytes for any thread count), its refusals of bad input (one
//! line, nothing written), the base model's batched scoring against scoring each answer alone,
//! and the generation detectors and functional checks on a real instruct model.

mod common;

use std::path::{Path, PathBuf};

use common::{clean_failure, dynquant, ok, oracle};
use dynquant_engine::evaluation::Evaluator;
use dynquant_engine::Model;
use dynquant_gguf::{Access, GgufModel};
use dynquant_report::functional::{run_tasks, FunctionalSettings, TASKS};
use dynquant_report::sanity::{run_suite, validate, BaseScorer, SanitySettings, PROMPTS};
use dynquant_tokenizer::Tokenizer;

fn write_text(dir: &Path) -> PathBuf {
    let wiki = dynquant_testkit::oracle::shared_dir().join("data/text/wiki.test.raw");
    let text = std::fs::read_to_string(wiki).expect("wiki.test.raw");
    let p = dir.join("text.txt");
    std::fs::write(&p, &text[..20_000]).expect("write text");
    p
}

fn outputs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "text.txt" && n != "other.txt" && !n.ends_with(".kldbase"))
        .collect();
    v.sort();
    v
}

#[test]
fn compare_writes_the_same_report_for_any_thread_count() {
    let Some(o) = oracle() else { return };
    let model = o.test_models().smollm2_768();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = write_text(dir.path());
    let mut jsons = Vec::new();
    for threads in ["1", "2"] {
        let html = dir.path().join(format!("r{threads}.html"));
        let card = dir.path().join(format!("card{threads}.md"));
        let stdout = ok(
            dynquant(args![
                "compare",
                &model,
                &model,
                "--text",
                &text,
                "--ctx",
                "64",
                "--chunks",
                "2",
                "--prompts",
                "4",
                "--gen-tokens",
                "8",
                "--out",
                &html,
                "--card",
                &card,
                "-t",
                threads
            ]),
            "compare",
        );
        assert!(stdout.contains("smollm2-768.gguf (base)"), "{stdout}");
        let page = std::fs::read_to_string(&html).expect("html");
        assert!(page.matches("<svg").count() >= 3);
        assert!(!page.contains("http://") && !page.contains("https://"));
        let card = std::fs::read_to_string(&card).expect("card");
        assert!(card.starts_with("| file |"), "{card}");
        jsons.push(std::fs::read(html.with_extension("json")).expect("json"));
    }
    assert_eq!(
        jsons[0], jsons[1],
        "report.json depends on the thread count"
    );
    let v: serde_json::Value = serde_json::from_slice(&jsons[0]).expect("json");
    // the checks ran (batched generation and scoring), for the base and the quant alike
    let answers = v["quants"][0]["checks"]["answers"]
        .as_array()
        .expect("answers");
    assert_eq!(answers.len(), 4 * 2, "{}", v["quants"][0]["checks"]);
    assert_eq!(
        v["base"]["checks"]["answers"],
        v["quants"][0]["checks"]["answers"]
    );
    assert!(answers.iter().all(|a| a["base_nll"].as_f64().is_some()));
    // the model against itself: no divergence, same top token everywhere
    let k = &v["quants"][0]["kld"];
    assert!(k["max"].as_f64().expect("max") < 1e-6, "{k}");
    assert_eq!(k["top1"].as_f64(), Some(1.0));
    assert_eq!(v["evaluation"]["positions"].as_u64(), Some(2 * 31));
    assert!(
        v["quants"][0]["facts"]["bits"]
            .as_array()
            .expect("bits")
            .len()
            > 30 * 7
    );
}

#[test]
fn compare_refuses_bad_input_and_writes_nothing() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = write_text(dir.path());
    let out = dir.path().join("report.html");
    let base = m.smollm2_768();
    let cases: Vec<(Vec<PathBuf>, &str)> = vec![
        (vec![dir.path().join("missing.gguf")], "no such file"),
        (vec![m.smollm2_768_moe()], "is not a quant of"),
        (vec![m.dir.join("synth-qwen3moe.gguf")], "is not a quant of"),
    ];
    for (quants, why) in cases {
        let mut a: Vec<std::ffi::OsString> = vec!["compare".into(), base.clone().into()];
        a.extend(quants.iter().map(|q| q.clone().into_os_string()));
        a.extend([
            "--text".into(),
            text.clone().into(),
            "--out".into(),
            out.clone().into(),
        ]);
        a.extend(["--ctx".into(), "64".into(), "--chunks".into(), "1".into()]);
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        let msg = clean_failure(dynquant(&refs), why);
        assert!(msg.contains(why), "{msg}");
        assert!(outputs(dir.path()).is_empty(), "{:?}", outputs(dir.path()));
    }
    // a base file made from another text than the one given
    let kbase = dir.path().join("base.kldbase");
    ok(
        dynquant(args![
            "perplexity",
            &base,
            "--text",
            &text,
            "--ctx",
            "64",
            "--chunks",
            "1",
            "--save-logits",
            &kbase
        ]),
        "perplexity",
    );
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "Another text entirely, long enough to matter.").expect("write");
    let msg = clean_failure(
        dynquant(args![
            "compare", &kbase, &base, "--text", &other, "--out", &out
        ]),
        "other text",
    );
    assert!(msg.contains("another text"), "{msg}");
    assert!(outputs(dir.path()).is_empty(), "{:?}", outputs(dir.path()));
}

#[test]
fn detectors_and_functional_checks_on_the_instruct_model() {
    let Some(o) = oracle() else { return };
    let path = o.smollm2();
    let gguf = GgufModel::open(&path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let tok = Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let ev = Evaluator::new(&gguf, model, tok);
    let settings = SanitySettings {
        n_predict: 24,
        seeds: Vec::new(),
        ..SanitySettings::default()
    };
    // one prompt of each kind
    let prompts: Vec<_> = ["chat-sky", "code-reverse", "list-fruits", "story-robot"]
        .iter()
        .map(|id| *PROMPTS.iter().find(|p| p.id == *id).expect("prompt"))
        .collect();
    let scorer = BaseScorer::new(&ev);
    let answers = run_suite(&ev, &scorer, &prompts, &settings, |_, _| {}).expect("suite");
    for a in &answers {
        eprintln!(
            "{}: {:?} nll {:?} flagged {}",
            a.prompt,
            a.text,
            a.base_nll,
            a.flagged()
        );
    }
    let v = validate(&scorer, &prompts, &answers, &settings, 7).expect("validate");
    eprintln!("{v:?}");
    assert_eq!(
        v.synthetic_loops_flagged, v.synthetic_loops,
        "a synthetic loop missed"
    );
    assert_eq!(
        v.random_flagged, v.random,
        "random tokens not judged gibberish"
    );
    assert_eq!(v.base_flagged, 0, "the base's own answers flagged");
    // the model's greedy answer passes the counting task
    let count = [TASKS[0]];
    let r = run_tasks(
        &ev,
        &count,
        &FunctionalSettings {
            seeds: Vec::new(),
            ..FunctionalSettings::default()
        },
        |_, _| {},
    )
    .expect("tasks");
    eprintln!("{:?}", r.attempts);
    assert_eq!(r.pass_greedy, 1.0);
}

/// The scorer (prompts evaluated once, answers batched) gives each answer's mean NLL as
/// evaluating the prompt and answer as one sequence does, up to the products' rounding.
#[test]
fn base_scorer_matches_scoring_each_answer_alone() {
    let Some(o) = oracle() else { return };
    let path = o.smollm2();
    let gguf = GgufModel::open(&path, Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let tok = Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let ev = Evaluator::new(&gguf, model, tok);
    let enc = |t: &str| ev.tokenizer().encode(t, false, false).expect("encode");
    let prompts = [
        enc("The capital of France is"),
        enc("Count to five: one, two,"),
    ];
    let answers = [
        enc(" Paris, a city on the Seine."),
        enc(" banana helicopter seventeen purple"),
        enc(" three, four, five."),
    ];
    let pairs: Vec<(&[u32], &[u32])> = vec![
        (&prompts[0], &answers[0]),
        (&prompts[0], &answers[1]),
        (&prompts[1], &answers[2]),
        (&prompts[1], &[]),
        (&prompts[1], &answers[1]),
    ];
    let scorer = BaseScorer::new(&ev);
    let got = scorer.nll(&pairs).expect("nll");
    // the cached prompts give the same scores again
    assert_eq!(got, scorer.nll(&pairs).expect("nll again"));
    let nv = ev.model().n_vocab;
    for (i, (p, a)) in pairs.iter().enumerate() {
        if a.is_empty() {
            assert_eq!(got[i], None);
            continue;
        }
        let all = [*p, *a].concat();
        let mut s = ev.model().session(all.len());
        let l = s
            .eval(&all, dynquant_engine::Logits::From(p.len() - 1), None)
            .expect("eval");
        let nll = a
            .iter()
            .enumerate()
            .map(|(k, &t)| -dynquant_engine::ops::log_softmax(&l[k * nv..(k + 1) * nv])[t as usize])
            .sum::<f64>()
            / a.len() as f64;
        let ours = got[i].expect("scored");
        assert!((ours - nll).abs() < 1e-3, "pair {i}: {ours} vs {nll}");
    }
    // nonsense scores far worse than the sensible answers
    assert!(got[1].unwrap() > got[0].unwrap() + 2.0, "{got:?}");
}
