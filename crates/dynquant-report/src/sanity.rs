//! Generation sanity: a built-in prompt suite generated greedily and with seeded sampling at a
//! fixed length, each answer judged for
//!
//! * **loops**: a span of tokens repeated back to back until the end ([`detect_loop`]);
//! * **gibberish**: the answer scored by the *base* model (mean negative log-likelihood per
//!   token, given the prompt) above a threshold, or invalid UTF-8 (replacement characters);
//! * **collapse**: an empty answer or an immediate end of generation.
//!
//! [`validate`] checks the thresholds on data whose answer is known: synthetic looping text and
//! random tokens must be flagged, the base model's own generations should not be (their flag
//! rate is the false-positive rate the report shows).

use std::sync::Mutex;

use dynquant_engine::evaluation::{Evaluator, GenerationJob, MAX_BATCH_SEQUENCES};
use dynquant_engine::ops::log_softmax;
use dynquant_engine::sample::SamplerParams;
use dynquant_engine::{Logits, Session};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What kind of prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// A question or request to an assistant.
    Chat,
    /// Write or explain code.
    Code,
    /// Make a list.
    List,
    /// Continue a story (raw text, no chat template).
    Story,
}

/// One built-in prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prompt {
    /// Short stable name.
    pub id: &'static str,
    /// Its kind.
    pub kind: PromptKind,
    /// The text.
    pub text: &'static str,
}

const fn p(id: &'static str, kind: PromptKind, text: &'static str) -> Prompt {
    Prompt { id, kind, text }
}

/// The built-in suite: 24 prompts, six of each kind.
pub const PROMPTS: [Prompt; 24] = [
    p("chat-sky", PromptKind::Chat, "Why is the sky blue? Explain briefly."),
    p("chat-sleep", PromptKind::Chat, "Give me some advice for sleeping better."),
    p("chat-email", PromptKind::Chat, "Write a short email to a colleague thanking them for their help."),
    p("chat-rain", PromptKind::Chat, "What causes rain?"),
    p("chat-exercise", PromptKind::Chat, "Why is regular exercise good for you?"),
    p("chat-tea", PromptKind::Chat, "How do I make a good cup of tea?"),
    p("code-reverse", PromptKind::Code, "Write a Python function that reverses a string."),
    p("code-fizzbuzz", PromptKind::Code, "Write a Python program that prints FizzBuzz for the numbers 1 to 15."),
    p("code-sum", PromptKind::Code, "Write a JavaScript function that returns the sum of an array of numbers."),
    p("code-sql", PromptKind::Code, "Write an SQL query that selects all users older than 30 from a table named users."),
    p("code-explain", PromptKind::Code, "Explain what a for loop does in programming."),
    p("code-max", PromptKind::Code, "Write a C function that returns the larger of two integers."),
    p("list-fruits", PromptKind::List, "List five fruits."),
    p("list-planets", PromptKind::List, "List the planets of the solar system."),
    p("list-colors", PromptKind::List, "Name four colors of the rainbow."),
    p("list-tips", PromptKind::List, "Give three tips for studying for an exam."),
    p("list-animals", PromptKind::List, "List some animals that live in the ocean."),
    p("list-pack", PromptKind::List, "What should I pack for a weekend trip? Give a short list."),
    p("story-dragon", PromptKind::Story, "Once upon a time, in a small village at the foot of a mountain, there lived a young girl who"),
    p("story-robot", PromptKind::Story, "The robot opened its eyes for the first time and saw"),
    p("story-detective", PromptKind::Story, "It was a dark and stormy night. The detective lit a cigarette and"),
    p("story-ship", PromptKind::Story, "The old ship had been sailing for forty days when the captain finally"),
    p("story-forest", PromptKind::Story, "Deep in the forest, a fox and a rabbit became friends after"),
    p("story-city", PromptKind::Story, "The city never slept. Every night, at exactly midnight, the lights"),
];

/// The first `n` prompts of the suite taken by kind in turn (chat, code, list, story, chat...),
/// so that a shortened suite keeps every kind; `n` above the suite's size gives all of it.
pub fn suite(n: usize) -> Vec<Prompt> {
    let kinds = [
        PromptKind::Chat,
        PromptKind::Code,
        PromptKind::List,
        PromptKind::Story,
    ];
    let by_kind: Vec<Vec<Prompt>> = kinds
        .iter()
        .map(|k| PROMPTS.iter().filter(|p| p.kind == *k).copied().collect())
        .collect();
    let mut out = Vec::new();
    for i in 0..PROMPTS.len() {
        for k in &by_kind {
            if let Some(p) = k.get(i) {
                if out.len() < n {
                    out.push(*p);
                }
            }
        }
    }
    out
}

/// How the suite is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SanitySettings {
    /// Prompts of the suite used ([`suite`]).
    pub prompts: usize,
    /// Tokens generated per answer (at most; an end of generation stops earlier).
    pub n_predict: usize,
    /// Seeds of the sampled answers (one sampled answer per seed, besides the greedy one).
    pub seeds: Vec<u64>,
    /// Temperature of the sampled answers (llama.cpp's other defaults: top-k 40, top-p 0.95,
    /// min-p 0.05).
    pub temp: f32,
    /// Thresholds of the detectors.
    pub thresholds: Thresholds,
}

impl Default for SanitySettings {
    fn default() -> Self {
        SanitySettings {
            prompts: PROMPTS.len(),
            n_predict: 24,
            seeds: vec![1],
            temp: 0.8,
            thresholds: Thresholds::default(),
        }
    }
}

/// The detectors' thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A repeated tail must repeat at least this many times...
    pub loop_min_repeats: f64,
    /// ...cover at least this many tokens...
    pub loop_min_tokens: usize,
    /// ...and at least this share of the answer.
    pub loop_min_share: f64,
    /// Mean NLL per token (nats) under the base above which an answer is gibberish.
    pub gibberish_nll: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            loop_min_repeats: 3.0,
            loop_min_tokens: 12,
            loop_min_share: 0.3,
            gibberish_nll: 6.0,
        }
    }
}

/// A repeated tail.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoopInfo {
    /// Tokens in the repeated span.
    pub period: usize,
    /// Tokens the repetition covers at the end.
    pub tail: usize,
}

/// The shortest period whose back-to-back repetition at the end of `tokens` passes the
/// thresholds (at least `loop_min_repeats` times, `loop_min_tokens` tokens and
/// `loop_min_share` of the answer).
pub fn detect_loop(tokens: &[u32], th: &Thresholds) -> Option<LoopInfo> {
    let n = tokens.len();
    for period in 1..=n / 2 {
        // positions from the end that equal the token one period earlier
        let mut run = 0;
        while run + period < n && tokens[n - 1 - run] == tokens[n - 1 - run - period] {
            run += 1;
        }
        let tail = run + period;
        if run > 0
            && tail as f64 >= th.loop_min_repeats * period as f64
            && tail >= th.loop_min_tokens
            && tail as f64 >= th.loop_min_share * n as f64
        {
            return Some(LoopInfo { period, tail });
        }
    }
    None
}

/// Scores answers under the base model: the mean negative log-likelihood per token of an
/// answer given its prompt. Each distinct prompt is evaluated once and its KV cache kept, so
/// every answer to it (greedy, sampled, every quant's) evaluates only its own tokens; the
/// answers are evaluated side by side as batches of sequences.
pub struct BaseScorer<'e, 'g> {
    base: &'e Evaluator<'g>,
    /// Evaluated prompts: tokens, the session after them, the logits of their last token.
    prompts: Mutex<Vec<CachedPrompt<'e, 'g>>>,
}

struct CachedPrompt<'e, 'g> {
    tokens: Vec<u32>,
    session: Session<'e, 'g>,
    last_logits: Vec<f32>,
}

/// Answer positions scored per batch at most: bounds the logits held at once (rows x
/// vocabulary floats).
const SCORED_ROWS_PER_BATCH: usize = 512;

impl<'e, 'g> BaseScorer<'e, 'g> {
    /// A scorer with an empty prompt cache.
    pub fn new(base: &'e Evaluator<'g>) -> Self {
        BaseScorer {
            base,
            prompts: Mutex::new(Vec::new()),
        }
    }

    /// The base model.
    pub fn base(&self) -> &'e Evaluator<'g> {
        self.base
    }

    /// The mean NLL per token of each `(prompt, answer)` pair (none for an empty prompt or
    /// answer). Pairs are evaluated in order, a new batch when the next answer would pass
    /// [`SCORED_ROWS_PER_BATCH`] or the batch is full, so scores depend only on the pairs.
    pub fn nll(&self, pairs: &[(&[u32], &[u32])]) -> Result<Vec<Option<f64>>> {
        let model = self.base.model();
        let nv = model.n_vocab;
        let mut cache = self.prompts.lock().unwrap_or_else(|e| e.into_inner());
        let scored: Vec<usize> = (0..pairs.len())
            .filter(|&i| !pairs[i].0.is_empty() && !pairs[i].1.is_empty())
            .collect();
        // the prompts not seen yet, evaluated as batches of sequences
        let mut new: Vec<&[u32]> = Vec::new();
        for &i in &scored {
            let p = pairs[i].0;
            if !cache.iter().any(|c| c.tokens == p) && !new.contains(&p) {
                new.push(p);
            }
        }
        for group in new.chunks(MAX_BATCH_SEQUENCES) {
            let mut sessions: Vec<_> = group.iter().map(|p| model.session(p.len())).collect();
            let mut refs: Vec<_> = sessions.iter_mut().collect();
            let batch: Vec<(&[u32], Logits)> = group.iter().map(|p| (*p, Logits::Last)).collect();
            let logits = Session::eval_sequences(&mut refs, &batch)?;
            for ((p, session), last_logits) in group.iter().zip(sessions).zip(logits) {
                cache.push(CachedPrompt {
                    tokens: p.to_vec(),
                    session,
                    last_logits,
                });
            }
        }
        let mut out = vec![None; pairs.len()];
        let mut start = 0;
        while start < scored.len() {
            let mut end = start;
            let mut rows = 0;
            while end < scored.len()
                && end - start < MAX_BATCH_SEQUENCES
                && (end == start || rows + pairs[scored[end]].1.len() <= SCORED_ROWS_PER_BATCH)
            {
                rows += pairs[scored[end]].1.len();
                end += 1;
            }
            let group = &scored[start..end];
            let cached: Vec<&CachedPrompt<'_, '_>> = group
                .iter()
                .map(|&i| {
                    cache
                        .iter()
                        .find(|c| c.tokens == pairs[i].0)
                        .expect("every scored prompt was just cached")
                })
                .collect();
            // the answer's first token is scored by the prompt's last logits, the others by
            // the answer's own positions (its last token needs no evaluation)
            let mut sessions: Vec<Session<'_, '_>> = cached
                .iter()
                .zip(group)
                .map(|(c, &i)| {
                    let mut s = c.session.clone();
                    s.set_n_ctx(c.tokens.len() + pairs[i].1.len());
                    s
                })
                .collect();
            let mut refs: Vec<_> = sessions.iter_mut().collect();
            let batch: Vec<(&[u32], Logits)> = group
                .iter()
                .map(|&i| {
                    let a = pairs[i].1;
                    (&a[..a.len() - 1], Logits::From(0))
                })
                .collect();
            let logits = Session::eval_sequences(&mut refs, &batch)?;
            for ((&i, c), l) in group.iter().zip(&cached).zip(&logits) {
                let answer = pairs[i].1;
                let mut nll = -log_softmax(&c.last_logits)[answer[0] as usize];
                for (k, &t) in answer.iter().enumerate().skip(1) {
                    let lp = log_softmax(&l[(k - 1) * nv..k * nv]);
                    nll -= lp[t as usize];
                }
                out[i] = Some(nll / answer.len() as f64);
            }
            start = end;
        }
        Ok(out)
    }
}

/// How one answer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "seed")]
pub enum Mode {
    /// Most probable token each step.
    Greedy,
    /// Seeded sampling.
    Sampled(u64),
}

/// One judged answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The prompt's id.
    pub prompt: String,
    /// How it was generated.
    pub mode: Mode,
    /// The answer (invalid UTF-8 as replacement characters).
    pub text: String,
    /// Tokens generated.
    pub generated: usize,
    /// A repeated tail, when found.
    pub looping: Option<LoopInfo>,
    /// Mean NLL per token under the base (none for an empty answer).
    pub base_nll: Option<f64>,
    /// Replacement characters in the answer (invalid UTF-8).
    pub invalid_chars: usize,
    /// Judged gibberish (NLL above the threshold or invalid UTF-8).
    pub gibberish: bool,
    /// Empty or ended at once.
    pub collapsed: bool,
}

impl Answer {
    /// Any detector fired.
    pub fn flagged(&self) -> bool {
        self.looping.is_some() || self.gibberish || self.collapsed
    }
}

/// Rates over a set of answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Answers judged.
    pub answers: usize,
    /// Share looping.
    pub loops: f64,
    /// Share gibberish.
    pub gibberish: f64,
    /// Share collapsed.
    pub collapse: f64,
    /// Share with any flag.
    pub flagged: f64,
    /// Mean of the answers' base NLL per token.
    pub mean_base_nll: f64,
}

impl Rates {
    /// The rates of `answers`.
    pub fn of(answers: &[Answer]) -> Rates {
        let n = answers.len().max(1) as f64;
        let share =
            |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count() as f64 / n;
        let nlls: Vec<f64> = answers.iter().filter_map(|a| a.base_nll).collect();
        Rates {
            answers: answers.len(),
            loops: share(&|a| a.looping.is_some()),
            gibberish: share(&|a| a.gibberish),
            collapse: share(&|a| a.collapsed),
            flagged: share(&|a| a.flagged()),
            mean_base_nll: if nlls.is_empty() {
                0.0
            } else {
                nlls.iter().sum::<f64>() / nlls.len() as f64
            },
        }
    }
}

/// Judges an answer given its tokens (as the base's tokenizer reads its text).
pub fn judge(
    prompt: &str,
    mode: Mode,
    bytes: &[u8],
    generated: usize,
    tokens: &[u32],
    base_nll: Option<f64>,
    th: &Thresholds,
) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let invalid_chars = text
        .chars()
        .filter(|&c| c == char::REPLACEMENT_CHARACTER)
        .count();
    Answer {
        prompt: prompt.to_string(),
        mode,
        looping: detect_loop(tokens, th),
        gibberish: invalid_chars > 0 || base_nll.is_some_and(|v| v > th.gibberish_nll),
        collapsed: generated == 0 || text.trim().is_empty(),
        base_nll,
        invalid_chars,
        generated,
        text,
    }
}

/// Whether a prompt is sent through the chat template: everything but story continuations,
/// when the model has a template.
fn use_chat(ev: &Evaluator<'_>, kind: PromptKind) -> bool {
    kind != PromptKind::Story && ev.tokenizer().chat_template().is_some()
}

/// The generation job of one answer: `n_predict` tokens after `prompt`, greedy or sampled at
/// `temp` with the mode's seed (llama.cpp's other sampling defaults).
pub fn job(prompt: Vec<u32>, n_predict: usize, mode: Mode, temp: f32) -> GenerationJob {
    let sampler = match mode {
        Mode::Greedy => SamplerParams {
            temp: 0.0,
            ..SamplerParams::default()
        },
        Mode::Sampled(seed) => SamplerParams {
            temp,
            seed,
            ..SamplerParams::default()
        },
    };
    GenerationJob {
        prompt,
        n_predict,
        sampler,
    }
}

/// Runs the suite on `ev`, judging every answer with the base of `scorer` (which may be the
/// same model).
/// The answers are generated side by side ([`Evaluator::generate_batch`]), then scored by the
/// base the same way. `progress(done, total)` after each generation step, in tokens of the
/// answers' budgets (see [`Evaluator::generate_batch`]). Answers come in suite order,
/// greedy first.
pub fn run_suite(
    ev: &Evaluator<'_>,
    scorer: &BaseScorer<'_, '_>,
    prompts: &[Prompt],
    s: &SanitySettings,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Vec<Answer>> {
    let modes: Vec<Mode> = std::iter::once(Mode::Greedy)
        .chain(s.seeds.iter().map(|&seed| Mode::Sampled(seed)))
        .collect();
    let pairs: Vec<(Prompt, Mode)> = prompts
        .iter()
        .flat_map(|p| modes.iter().map(move |m| (*p, *m)))
        .collect();
    let requests: Vec<(&str, bool)> = pairs
        .iter()
        .map(|(p, _)| (p.text, use_chat(ev, p.kind)))
        .collect();
    let jobs: Vec<GenerationJob> = ev
        .prompts(&requests)?
        .into_iter()
        .zip(&pairs)
        .map(|(prompt, (_, mode))| job(prompt, s.n_predict, *mode, s.temp))
        .collect();
    let total = jobs.iter().map(|j| j.n_predict).sum();
    let generated = ev.generate_batch(&jobs, |k| progress(k, total))?;
    // the base scores each answer after the prompt as the base itself would read it
    let base = scorer.base();
    let base_requests: Vec<(&str, bool)> = pairs
        .iter()
        .map(|(p, _)| (p.text, use_chat(base, p.kind)))
        .collect();
    let base_prompts = base.prompts(&base_requests)?;
    let mut tokens = Vec::with_capacity(pairs.len());
    for g in &generated {
        let text = String::from_utf8_lossy(&g.bytes);
        tokens.push(base.tokenizer().encode(&text, false, false)?);
    }
    let scored: Vec<(&[u32], &[u32])> = base_prompts
        .iter()
        .zip(&tokens)
        .map(|(p, t)| (p.as_slice(), t.as_slice()))
        .collect();
    let nlls = scorer.nll(&scored)?;
    Ok(pairs
        .iter()
        .zip(generated)
        .zip(tokens.iter().zip(nlls))
        .map(|(((p, mode), g), (t, nll))| {
            judge(p.id, *mode, &g.bytes, g.generated, t, nll, &s.thresholds)
        })
        .collect())
}

/// How well the thresholds separate known cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Synthetic looping answers flagged as loops (of how many).
    pub synthetic_loops_flagged: usize,
    /// Synthetic looping answers made.
    pub synthetic_loops: usize,
    /// Random-token answers flagged as gibberish.
    pub random_flagged: usize,
    /// Random-token answers made.
    pub random: usize,
    /// The base's own answers flagged by any detector.
    pub base_flagged: usize,
    /// The base's own answers judged.
    pub base_answers: usize,
}

impl Validation {
    /// Share of the base's answers flagged: the false-positive rate.
    pub fn false_positive_rate(&self) -> f64 {
        self.base_flagged as f64 / self.base_answers.max(1) as f64
    }
}

/// splitmix64 for the synthetic cases.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks the thresholds: for each of the base's answers (`base_answers`, from [`run_suite`] on
/// the base), a synthetic looping answer (the start of the answer, then a span of it repeated
/// to the same length) and a random-token answer of the same length, both scored by the base.
pub fn validate(
    scorer: &BaseScorer<'_, '_>,
    prompts: &[Prompt],
    base_answers: &[Answer],
    s: &SanitySettings,
    seed: u64,
) -> Result<Validation> {
    let base = scorer.base();
    let tok = base.tokenizer();
    let n_vocab = base.model().n_vocab as u64;
    // one synthetic looping and one random-token answer per base answer, all scored at once
    struct Case {
        prompt_id: &'static str,
        mode: Mode,
        prompt: Vec<u32>,
        looping_text: String,
        looping: Vec<u32>,
        random_bytes: Vec<u8>,
        random: Vec<u32>,
    }
    let len = s.n_predict.max(16);
    let answer_prompts: Vec<Prompt> = base_answers
        .iter()
        .map(|a| {
            prompts
                .iter()
                .find(|p| p.id == a.prompt)
                .copied()
                .unwrap_or(prompts[0])
        })
        .collect();
    let requests: Vec<(&str, bool)> = answer_prompts
        .iter()
        .map(|p| (p.text, use_chat(base, p.kind)))
        .collect();
    let mut cases = Vec::with_capacity(base_answers.len());
    for (i, ((a, p), prompt)) in base_answers
        .iter()
        .zip(&answer_prompts)
        .zip(base.prompts(&requests)?)
        .enumerate()
    {
        // a looping answer: a few words of the answer, then a short span over and over
        let mut words = tok.encode(&a.text, false, false)?;
        words.truncate(len / 4);
        let mut rng = seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        let span_len = 2 + (mix(&mut rng) % 5) as usize;
        let span: Vec<u32> = if words.len() >= span_len {
            words[words.len() - span_len..].to_vec()
        } else {
            tok.encode(" and then it said the same thing", false, false)?
        };
        let mut looping = words.clone();
        while looping.len() < len {
            looping.extend_from_slice(&span);
        }
        looping.truncate(len);
        let looping_text = tok.decode(&looping);
        let looping = tok.encode(&looping_text, false, false)?;
        // random tokens (ordinary ones: no control tokens)
        let mut random = Vec::with_capacity(len);
        while random.len() < len {
            let t = (mix(&mut rng) % n_vocab) as u32;
            if !tok.is_eog(t) && tok.token_text(t).is_some_and(|s| !s.starts_with("<|")) {
                random.push(t);
            }
        }
        let random_bytes = tok.detokenize(&random, true, false);
        let random = tok.encode(&String::from_utf8_lossy(&random_bytes), false, false)?;
        cases.push(Case {
            prompt_id: p.id,
            mode: a.mode,
            prompt,
            looping_text,
            looping,
            random_bytes,
            random,
        });
    }
    let pairs: Vec<(&[u32], &[u32])> = cases
        .iter()
        .flat_map(|c| {
            [
                (&c.prompt[..], &c.looping[..]),
                (&c.prompt[..], &c.random[..]),
            ]
        })
        .collect();
    let nlls = scorer.nll(&pairs)?;
    let th = &s.thresholds;
    let results: Vec<(bool, bool)> = cases
        .iter()
        .zip(nlls.chunks_exact(2))
        .map(|(c, nll)| {
            let la = judge(
                c.prompt_id,
                c.mode,
                c.looping_text.as_bytes(),
                len,
                &c.looping,
                nll[0],
                th,
            );
            let ra = judge(
                c.prompt_id,
                c.mode,
                &c.random_bytes,
                len,
                &c.random,
                nll[1],
                th,
            );
            (la.looping.is_some(), ra.gibberish)
        })
        .collect();
    Ok(Validation {
        synthetic_loops_flagged: results.iter().filter(|r| r.0).count(),
        synthetic_loops: results.len(),
        random_flagged: results.iter().filter(|r| r.1).count(),
        random: results.len(),
        base_flagged: base_answers.iter().filter(|a| a.flagged()).count(),
        base_answers: base_answers.len(),
    })
}

/// Runs the sanity suite and the functional tasks on `ev` (judged by the base of `scorer`);
/// `progress(done, total)` in tokens of the answers' budgets.
pub fn run_checks(
    ev: &Evaluator<'_>,
    scorer: &BaseScorer<'_, '_>,
    sanity: &SanitySettings,
    functional: &crate::functional::FunctionalSettings,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<crate::report::ModelChecks> {
    let prompts = suite(sanity.prompts);
    // progress in tokens of the answers' budgets, both parts together
    let n_sanity = prompts.len() * (1 + sanity.seeds.len()) * sanity.n_predict;
    let n_func =
        crate::functional::TASKS.len() * (1 + functional.seeds.len()) * functional.n_predict;
    let total = n_sanity + n_func;
    let answers = run_suite(ev, scorer, &prompts, sanity, |k, _| progress(k, total))?;
    let f = crate::functional::run_tasks(ev, &crate::functional::TASKS, functional, |k, _| {
        progress(n_sanity + k, total)
    })?;
    Ok(crate::report::ModelChecks {
        sanity: Rates::of(&answers),
        answers,
        functional: f,
    })
}
