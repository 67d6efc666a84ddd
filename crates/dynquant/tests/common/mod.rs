//! Shared helpers for the CLI and oracle tests.
#![allow(dead_code)]

use std::process::{Command, Output};

#[allow(unused_imports)]
pub use dynquant_testkit::oracle::{repo_root, Oracle};

/// The oracle environment (see `dynquant_testkit::oracle`).
pub fn oracle() -> Option<Oracle> {
    Oracle::get()
}

/// Runs the dynquant binary.
pub fn dynquant(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynquant"))
        .args(args)
        .output()
        .expect("running dynquant")
}

/// Asserts a command succeeded, showing its output otherwise; returns stdout.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Asserts the CLI failed the way it must on bad input: exit code 1, a one-line
/// `error: ...` cause, and no panic. Returns the message.
pub fn clean_failure(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit {}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    stderr
}

/// `OsStr` arguments from anything path-like.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

/// `dynquant perplexity` of `model` (1 chunk of 512 of `text`, the base saved to `base`) within
/// 0.5% of llama.cpp's, then `dynquant kld` of the model against its own base: zero.
pub fn check_perplexity_and_self_kld(
    o: &Oracle,
    model: &std::path::Path,
    text: &std::path::Path,
    base: &std::path::Path,
) {
    let reference = o.perplexity(model, text, 512, &[])["ppl"]
        .as_f64()
        .expect("ppl");
    let out = ok(
        dynquant(args![
            "perplexity",
            model,
            "--text",
            text,
            "--chunks",
            "1",
            "--save-logits",
            base,
            "--json"
        ]),
        "perplexity",
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let ours = v["ppl"].as_f64().expect("ppl");
    eprintln!(
        "{} PPL: ours {ours}, llama.cpp {reference}",
        model.display()
    );
    assert!((ours / reference - 1.0).abs() < 0.005);

    let out = ok(
        dynquant(args!["kld", model, "--base", base, "--json"]),
        "kld",
    );
    let k: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert!(k["kld_max"].as_f64().expect("max") < 1e-6, "{k}");
    assert_eq!(k["same_top"].as_f64(), Some(1.0));
}

/// `dynquant run --temp 0` generates llama.cpp's 8 greedy tokens after a fixed prompt.
pub fn check_greedy_run(o: &Oracle, model: &std::path::Path) {
    let prompt = "The capital of France is";
    let theirs = o.greedy_tokens(model, 8, &[prompt]);
    let out = ok(
        dynquant(args!["run", model, "-p", prompt, "-n", "8", "--temp", "0"]),
        "run",
    );
    let gguf = dynquant_gguf::GgufModel::open(model, dynquant_gguf::Access::Mmap).expect("open");
    let tok = dynquant_tokenizer::Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
    let ids: Vec<u32> = theirs[0].iter().map(|&t| t as u32).collect();
    let expected = tok.decode(&ids);
    eprintln!("ours: {out:?}, llama.cpp: {expected:?}");
    assert_eq!(out.trim_end_matches('\n'), expected);
}
