//! Functional checks, the small-model counterpart of "does it write a working program": short
//! tasks whose answers a program checks (counting, repeating or reversing a list, sorting,
//! arithmetic, JSON with given keys), each tried greedily and with seeded samples; pass@k per
//! model.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sanity::{job, Mode};
use dynquant_engine::evaluation::Evaluator;

/// What a task's answer must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The distinct integers, in order of first appearance, are exactly 1..=n.
    CountTo(i64),
    /// These words all appear, first occurrences in this order (case-insensitive).
    WordsInOrder(&'static [&'static str]),
    /// These numbers all appear, first occurrences in this order.
    NumbersInOrder(&'static [i64]),
    /// The number appears, and no integer other than it and `allowed` does.
    Number(i64, &'static [i64]),
    /// A JSON object (the first `{` to the last `}`) that parses and has these keys.
    JsonKeys(&'static [&'static str]),
    /// The text contains this (case-sensitive).
    Contains(&'static str),
}

/// A task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// Short stable name.
    pub id: &'static str,
    /// The user's message (sent through the chat template).
    pub prompt: &'static str,
    /// The check.
    pub check: Check,
}

const fn t(id: &'static str, prompt: &'static str, check: Check) -> Task {
    Task { id, prompt, check }
}

/// The built-in tasks.
pub const TASKS: [Task; 10] = [
    t("count-5", "Count from 1 to 5. Reply with the numbers separated by commas.", Check::CountTo(5)),
    t("count-10", "Count from 1 to 10. Reply with the numbers separated by commas.", Check::CountTo(10)),
    t("repeat-list", "Repeat this list exactly: apple, banana, cherry", Check::WordsInOrder(&["apple", "banana", "cherry"])),
    t("reverse-list", "Reverse the order of this list: red, green, blue", Check::WordsInOrder(&["blue", "green", "red"])),
    t("sort-numbers", "Sort these numbers from smallest to largest: 7, 2, 9, 4", Check::NumbersInOrder(&[2, 4, 7, 9])),
    t("add", "What is 2 + 3? Reply with just the number.", Check::Number(5, &[2, 3])),
    t("capital", "What is the capital of France? Reply with one word.", Check::Contains("Paris")),
    t("multiply", "What is 3 * 4? Reply with just the number.", Check::Number(12, &[3, 4])),
    t("json-keys", "Reply with a JSON object with the keys \"name\" and \"age\" for a person named Tom who is 30 years old.", Check::JsonKeys(&["name", "age"])),
    t("days", "List the days of the week, separated by commas.", Check::WordsInOrder(&["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])),
];

/// The integers written in `s` (a minus sign directly before digits counts).
pub fn integers(s: &str) -> Vec<i64> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let neg = start > 0
                && b[start - 1] == b'-'
                && (start < 2 || !b[start - 2].is_ascii_alphanumeric());
            if let Ok(v) = s[start..i].parse::<i64>() {
                out.push(if neg { -v } else { v });
            }
        } else {
            i += 1;
        }
    }
    out
}

fn first_word_at(hay: &str, word: &str) -> Option<usize> {
    let hay = hay.to_lowercase();
    let b = hay.as_bytes();
    let mut from = 0;
    while let Some(i) = hay[from..].find(word) {
        let at = from + i;
        let end = at + word.len();
        let before = at == 0 || !b[at - 1].is_ascii_alphanumeric();
        let after = end >= b.len() || !b[end].is_ascii_alphanumeric();
        if before && after {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Whether `answer` passes `check`.
pub fn passes(check: &Check, answer: &str) -> bool {
    match *check {
        Check::CountTo(n) => {
            let mut seen: Vec<i64> = Vec::new();
            for v in integers(answer) {
                if !seen.contains(&v) {
                    seen.push(v);
                }
            }
            seen == (1..=n).collect::<Vec<_>>()
        }
        Check::WordsInOrder(words) => {
            let at: Vec<Option<usize>> = words.iter().map(|w| first_word_at(answer, w)).collect();
            at.iter().all(Option::is_some) && at.windows(2).all(|w| w[0] < w[1])
        }
        Check::NumbersInOrder(nums) => {
            let ints = integers(answer);
            let at: Vec<Option<usize>> = nums
                .iter()
                .map(|n| ints.iter().position(|v| v == n))
                .collect();
            at.iter().all(Option::is_some) && at.windows(2).all(|w| w[0] < w[1])
        }
        Check::Number(n, allowed) => {
            let ints = integers(answer);
            ints.contains(&n) && ints.iter().all(|v| *v == n || allowed.contains(v))
        }
        Check::JsonKeys(keys) => {
            let (Some(a), Some(b)) = (answer.find('{'), answer.rfind('}')) else {
                return false;
            };
            if b < a {
                return false;
            }
            match serde_json::from_str::<serde_json::Value>(&answer[a..=b]) {
                Ok(serde_json::Value::Object(m)) => keys.iter().all(|k| m.contains_key(*k)),
                _ => false,
            }
        }
        Check::Contains(s) => answer.contains(s),
    }
}

/// How the tasks are run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionalSettings {
    /// Tokens per answer at most.
    pub n_predict: usize,
    /// Seeds of the sampled attempts (besides the greedy one): k = 1 + seeds.
    pub seeds: Vec<u64>,
    /// Temperature of the sampled attempts.
    pub temp: f32,
}

impl Default for FunctionalSettings {
    fn default() -> Self {
        FunctionalSettings {
            n_predict: 40,
            seeds: vec![1],
            temp: 0.7,
        }
    }
}

/// One attempt at a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The task's id.
    pub task: String,
    /// How it was generated.
    pub mode: Mode,
    /// The answer.
    pub text: String,
    /// Whether it passed.
    pub passed: bool,
}

/// A model's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionalResult {
    /// Every attempt, task by task, greedy first.
    pub attempts: Vec<Attempt>,
    /// Share of tasks whose greedy answer passed.
    pub pass_greedy: f64,
    /// Share of tasks with at least one passing attempt among the k made.
    pub pass_at_k: f64,
    /// Attempts per task.
    pub k: usize,
    /// Tasks.
    pub tasks: usize,
}

/// Runs `tasks` on `ev`; `progress(done, total)` after each generation step, in tokens of the
/// attempts' budgets.
pub fn run_tasks(
    ev: &Evaluator<'_>,
    tasks: &[Task],
    s: &FunctionalSettings,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<FunctionalResult> {
    let modes: Vec<Mode> = std::iter::once(Mode::Greedy)
        .chain(s.seeds.iter().map(|&seed| Mode::Sampled(seed)))
        .collect();
    let jobs: Vec<(Task, Mode)> = tasks
        .iter()
        .flat_map(|t| modes.iter().map(move |m| (*t, *m)))
        .collect();
    let chat = ev.tokenizer().chat_template().is_some();
    let requests: Vec<(&str, bool)> = jobs.iter().map(|(t, _)| (t.prompt, chat)).collect();
    let gen_jobs: Vec<_> = ev
        .prompts(&requests)?
        .into_iter()
        .zip(&jobs)
        .map(|(prompt, (_, mode))| job(prompt, s.n_predict, *mode, s.temp))
        .collect();
    let total = gen_jobs.iter().map(|j| j.n_predict).sum();
    let answers = ev.generate_batch(&gen_jobs, |k| progress(k, total))?;
    let attempts: Vec<Attempt> = jobs
        .iter()
        .zip(answers)
        .map(|((t, mode), g)| {
            let text = String::from_utf8_lossy(&g.bytes).into_owned();
            Attempt {
                task: t.id.to_string(),
                mode: *mode,
                passed: passes(&t.check, &text),
                text,
            }
        })
        .collect();
    let n = tasks.len().max(1) as f64;
    let greedy = attempts
        .iter()
        .filter(|a| a.mode == Mode::Greedy && a.passed)
        .count();
    let any = tasks
        .iter()
        .filter(|t| attempts.iter().any(|a| a.task == t.id && a.passed))
        .count();
    Ok(FunctionalResult {
        pass_greedy: greedy as f64 / n,
        pass_at_k: any as f64 / n,
        k: modes.len(),
        tasks: tasks.len(),
        attempts,
    })
}
