//! Templates that grow without bound inside one minijinja instruction, where fuel cannot stop
//! them, end in the out-of-process renderer's limits (Linux): each known class returns a
//! `TemplateSandbox` error naming the limit, and this process's own memory stays small. Normal
//! templates render the same in a batch, one by one, and while many threads are busy.
#![cfg(target_os = "linux")]

use dynquant_gguf::{Array, Metadata, Value};
use dynquant_tokenizer::sandbox::SandboxError;
use dynquant_tokenizer::{ChatMessage, Tokenizer, TokenizerError};
use rayon::prelude::*;

fn tokenizer() -> Tokenizer {
    let mut m = Metadata::new();
    m.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    let tokens = ["<|endoftext|>", "<bos>", "a", "b"]
        .map(String::from)
        .to_vec();
    m.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    m.set("tokenizer.ggml.merges", Value::Array(Array::String(vec![])));
    m.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    m.set("tokenizer.ggml.eos_token_id", Value::U32(0));
    Tokenizer::from_gguf(&m).expect("a valid vocabulary")
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello"),
        ChatMessage::new("assistant", "Hi."),
    ]
}

/// The peak resident memory of this test process (all its threads), from /proc.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in kB");
    kib * 1024
}

/// Renders `template` and returns the sandbox limit it ran into; checks that the memory went
/// to the child, not to this process (which would hold gigabytes had it rendered in process).
fn limit_error(template: &str) -> SandboxError {
    let r = tokenizer().render_chat_template(template, &conversation(), true);
    let peak = peak_rss_bytes();
    assert!(peak < 512 << 20, "this process peaked at {peak} bytes");
    match r {
        Err(TokenizerError::TemplateSandbox(e)) => {
            let msg = TokenizerError::TemplateSandbox(e.clone()).to_string();
            assert!(
                msg.starts_with("chat template: ") && !msg.contains('\n'),
                "{msg}"
            );
            // One message, not repeated by an error chain.
            let err = TokenizerError::TemplateSandbox(e.clone());
            assert!(std::error::Error::source(&err).is_none(), "{msg}");
            e
        }
        other => panic!("{template:?}: expected a sandbox limit, got {other:?}"),
    }
}

#[test]
fn sequence_repetition_exceeds_the_memory_budget() {
    // 10^8 items of 24 bytes materialized by one filter call.
    let e = limit_error("{{ ([0] * 100000000) | list }}");
    assert_eq!(e, SandboxError::Memory);
    assert!(e.to_string().contains("memory budget of 512 MiB"), "{e}");
}

/// A template that only spends time ends at the CPU limit (5 s of CPU), or at the wall-clock
/// limit (20 s) first when the machine is so busy that the child gets less than a quarter of a
/// core; which one depends on the load, both are time limits.
fn assert_time_limit(e: &SandboxError) {
    match e {
        SandboxError::CpuTime => assert!(e.to_string().contains("CPU time limit of 5 s"), "{e}"),
        SandboxError::WallTime => {
            assert!(e.to_string().contains("wall-clock limit of 20 s"), "{e}")
        }
        other => panic!("expected a time limit, got {other:?}"),
    }
}

#[test]
fn repeating_an_empty_sequence_exceeds_the_cpu_limit() {
    // 10^11 empty repetitions walked inside one instruction: no memory, no output, no fuel.
    assert_time_limit(&limit_error("{{ (100000000000 * ()) | list }}"));
}

#[test]
fn repeating_the_messages_without_end_exceeds_the_cpu_limit() {
    // A loop the fuel never sees: the 3 messages repeated 8.9 x 10^18 times, walked item by
    // item inside one instruction while the sequence is formatted.
    assert_time_limit(&limit_error("{{ messages * 8888888888888888888 }}"));
}

#[test]
fn lazy_sequence_doubling_in_a_loop_exceeds_the_memory_budget() {
    // `seq + seq` is lazy, so the loop itself is cheap; 2^100 items are walked at the end.
    for template in [
        "{% set ns = namespace(v=[1]) %}{% for i in range(100) %}{% set ns.v = ns.v + ns.v %}\
         {% endfor %}{{ ns.v | length }}",
        "{% set ns = namespace(v=messages) %}{% for i in range(100) %}\
         {% set ns.v = ns.v + ns.v %}{% endfor %}{% for m in ns.v %}{% endfor %}",
    ] {
        let e = limit_error(template);
        if e != SandboxError::Memory {
            assert_time_limit(&e);
        }
    }
}

#[test]
fn string_doubling_in_a_loop_exceeds_the_memory_budget() {
    // 2^64 bytes by 64 concatenations, none of them written out (so no output cap either).
    let e = limit_error(
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}{{ ns.s | length }}",
    );
    assert_eq!(e, SandboxError::Memory);
}

/// Found by the `chat_template` fuzz target (a libFuzzer timeout before the sandbox): an empty
/// tuple repeated 8.9 x 10^11 times and joined into a string.
#[test]
fn fuzz_hang_empty_tuple_repetition_is_a_limit_error() {
    let template = include_str!("data/fuzz/chat_template-timeout-empty-tuple-repeat.jinja");
    let e = limit_error(template);
    if e != SandboxError::Memory {
        assert_time_limit(&e);
    }
}

/// The fuzz crash input (sequence repetition by 8.9 x 10^15 then arithmetic) ends in a template
/// error or a limit, never a panic or a hang.
#[test]
fn fuzz_crash_sequence_repeat_overflow_is_an_error_in_the_sandbox() {
    let template = include_str!("data/fuzz/chat_template-seq-repeat-overflow.jinja");
    let r = tokenizer().render_chat_template(template, &conversation(), true);
    assert!(
        matches!(
            r,
            Err(TokenizerError::Template(_) | TokenizerError::TemplateSandbox(_))
        ),
        "{r:?}"
    );
}

const GEMMA3: &str = include_str!("data/gemma3-chat-template.jinja");

fn conversations() -> Vec<Vec<ChatMessage>> {
    (0..24)
        .map(|i| {
            let mut c = vec![ChatMessage::new("user", format!("Question {i}: why?"))];
            if i % 3 == 0 {
                c.insert(0, ChatMessage::new("system", format!("System {i}.")));
            }
            if i % 4 == 1 {
                c.push(ChatMessage::new("assistant", "Because."));
                c.push(ChatMessage::new("user", "And then?"));
            }
            c
        })
        .collect()
}

#[test]
fn a_batch_renders_like_single_renders_in_order() {
    let tok = tokenizer();
    let convs = conversations();
    let refs: Vec<&[ChatMessage]> = convs.iter().map(|c| c.as_slice()).collect();
    let batch = tok
        .render_chat_template_batch(GEMMA3, &refs, true)
        .expect("gemma3 renders");
    assert_eq!(batch.len(), convs.len());
    for (c, b) in convs.iter().zip(&batch) {
        let single = tok.render_chat_template(GEMMA3, c, true).expect("renders");
        assert_eq!(&single, b);
        assert!(single.starts_with("<bos>"), "{single}");
        let last = &c.last().expect("a message").content;
        assert!(single.contains(last.as_str()), "{single}");
    }
    assert_eq!(
        tok.render_chat_template_batch(GEMMA3, &[], true)
            .expect("empty"),
        Vec::<String>::new()
    );
    // One conversation the template rejects (gemma3 requires user/assistant alternation)
    // fails the batch with the template's own error.
    let bad = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
    let mut with_bad = refs.clone();
    with_bad.insert(5, &bad);
    let r = tok.render_chat_template_batch(GEMMA3, &with_bad, true);
    assert!(matches!(r, Err(TokenizerError::Template(_))), "{r:?}");
}

#[test]
fn renders_while_many_threads_allocate() {
    let tok = tokenizer();
    let convs = conversations();
    let expected: Vec<String> = convs
        .iter()
        .map(|c| tok.render_chat_template(GEMMA3, c, true).expect("renders"))
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(16)
        .build()
        .expect("a thread pool");
    std::thread::scope(|s| {
        // Threads that hold the allocator's and stderr's locks often, as a busy program does
        // while another thread forks.
        for t in 0..4 {
            let stop = &stop;
            s.spawn(move || {
                let mut keep = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    keep.push(vec![t as u8; 1 + keep.len() % 4096]);
                    if keep.len() > 512 {
                        keep.clear();
                    }
                    let _guard = std::io::stderr().lock();
                }
            });
        }
        let rendered: Vec<String> = pool.install(|| {
            (0..96)
                .into_par_iter()
                .map(|i| {
                    tok.render_chat_template(GEMMA3, &convs[i % convs.len()], true)
                        .expect("renders under load")
                })
                .collect()
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (i, r) in rendered.iter().enumerate() {
            assert_eq!(r, &expected[i % convs.len()], "render {i}");
        }
    });
}
