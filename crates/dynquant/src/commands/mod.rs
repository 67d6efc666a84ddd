//! One module per subcommand; each makes thin calls into the libraries.

mod compare;
mod convert;
mod demo;
mod imatrix;
mod inspect;
mod kld;
mod overrides;
mod perplexity;
mod plan;
mod quantize;
mod run;
mod split;

use anyhow::Result;
use dynquant_gguf::{Access, WriteOptions};

use crate::args::{Cli, Command, ReadArgs};

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Split(a) => split::split(&a),
        Command::Merge(a) => split::merge(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Perplexity(a) => perplexity::run(&a),
        Command::Kld(a) => kld::run(&a),
        Command::Imatrix(a) => imatrix::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Plan(a) => plan::run(&a),
        Command::Quantize(a) => quantize::run(&a),
    }
}

impl ReadArgs {
    /// The access method these flags select.
    pub fn access(&self) -> Access {
        if self.no_mmap {
            Access::Pread
        } else {
            Access::Mmap
        }
    }
}

fn write_options(force: bool) -> WriteOptions {
    WriteOptions {
        overwrite: force,
        protected_inputs: Vec::new(),
    }
}

/// Human-readable byte count (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
