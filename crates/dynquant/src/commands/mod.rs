//! One module per subcommand; each makes thin calls into the libraries.

mod allocation;
mod compare;
mod convert;
mod demo;
mod imatrix;
mod inspect;
mod kld;
mod measure;
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
        Command::Verify(a) => split::verify(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Perplexity(a) => perplexity::run(&a),
        Command::Kld(a) => kld::run(&a),
        Command::Imatrix(a) => imatrix::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Plan(a) => plan::run(&a),
        Command::Quantize(a) => quantize::run(&a),
        Command::Measure(a) => measure::run(&a),
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

/// Human-readable byte count (binary units), as the report prints it.
pub use dynquant_report::render::human_bytes;

/// SHA-256 of a file's bytes, hex (streamed): how sensitivity files name their imatrix.
pub fn file_sha256(path: &std::path::Path) -> Result<String> {
    use anyhow::Context;
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to a temporary name beside `path`, then renames it into place.
pub fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
