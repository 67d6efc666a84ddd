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
