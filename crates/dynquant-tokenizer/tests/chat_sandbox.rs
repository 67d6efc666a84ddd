//! Chat templates come from model files and are rendered sandboxed: a template that loops
//! forever runs out of fuel, one that recurses forever hits the recursion limit, one that writes
//! without end hits the output cap, and none can read files. No oracle needed.

use dynquant_gguf::{Array, Metadata, Value};
use dynquant_tokenizer::{ChatMessage, Tokenizer, TokenizerError, MAX_TEMPLATE_OUTPUT};

fn tokenizer() -> Tokenizer {
    let mut m = Metadata::new();
    m.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    let tokens = ["<|endoftext|>", "a", "b"].map(String::from).to_vec();
    m.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    m.set("tokenizer.ggml.merges", Value::Array(Array::String(vec![])));
    m.set("tokenizer.ggml.eos_token_id", Value::U32(0));
    Tokenizer::from_gguf(&m).expect("a valid vocabulary")
}

fn template_error(template: &str) -> String {
    let msgs = [ChatMessage::new("user", "hi")];
    match tokenizer().render_chat_template(template, &msgs, true) {
        Err(TokenizerError::Template(msg)) => msg,
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn a_template_that_loops_forever_runs_out_of_fuel() {
    // 10^15 iterations: without a bound this would not finish.
    let msg = template_error(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}\
         {% endfor %}{% endfor %}{% endfor %}",
    );
    assert!(msg.contains("fuel"), "{msg}");
}

#[test]
fn a_template_that_recurses_forever_is_stopped() {
    let msg = template_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(msg.contains("recursion"), "{msg}");
    let msg = template_error("{% for x in [[1]] recursive %}{{ loop([x]) }}{% endfor %}");
    assert!(msg.contains("recursion"), "{msg}");
}

#[test]
fn a_template_with_huge_output_is_capped() {
    // 100 MB of output in 100,000 writes of 1,000 bytes (well within the fuel), then in one
    // write of a 100 MB string.
    for template in [
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{{ 'x' * 100000000 }}",
    ] {
        let msg = template_error(template);
        assert!(
            msg.contains(&format!("exceeds {MAX_TEMPLATE_OUTPUT} bytes")),
            "{template}: {msg}"
        );
    }
    // Output just under the cap renders.
    let msgs = [ChatMessage::new("user", "hi")];
    let ok = tokenizer()
        .render_chat_template("{{ 'y' * 1000000 }}", &msgs, false)
        .expect("1 MB of output");
    assert_eq!(ok.len(), 1_000_000);
}

#[test]
fn a_template_cannot_read_files_or_the_environment() {
    for template in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/passwd' as p %}",
        "{% extends '/etc/hostname' %}",
    ] {
        template_error(template);
    }
    // No `env`, `os` or `open` in scope: undefined names render empty, calling them fails.
    template_error("{{ open('/etc/passwd') }}");
    let msgs = [ChatMessage::new("user", "hi")];
    let out = tokenizer()
        .render_chat_template("[{{ env }}{{ environ }}{{ os }}]", &msgs, false)
        .expect("undefined names render empty");
    assert_eq!(out, "[]");
}

/// Found by the `chat_template` fuzz target: `messages * 8888888888888888 * …` makes
/// minijinja 2.24 multiply the sequence's length unchecked, a panic ("attempt to multiply with
/// overflow") wherever overflow checks are on (debug builds, the fuzz build). The render must
/// end in a typed error, never a panic. (In a release build the product wraps and the template
/// fails later, on its `-`.)
#[test]
fn fuzz_crash_sequence_repeat_overflow_is_an_error() {
    let template = include_str!("data/fuzz/chat_template-seq-repeat-overflow.jinja");
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello"),
        ChatMessage::new("assistant", "Hi."),
    ];
    let r = tokenizer().render_chat_template(template, &msgs, true);
    assert!(matches!(r, Err(TokenizerError::Template(_))), "{r:?}");
    // The same overflow alone, where a debug build panics inside minijinja.
    let r = tokenizer().render_chat_template(
        "{{ (messages * 8888888888888888888) | length }}",
        &msgs,
        true,
    );
    assert!(
        r.is_ok() || matches!(r, Err(TokenizerError::Template(_))),
        "{r:?}"
    );
}
