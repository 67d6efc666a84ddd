//! `dynquant-dev`: developer tools (test models, llama.cpp's quantizer, models for memory
//! measurements). A binary of its own so the shipped `dynquant` does not link the test kit
//! (llama.cpp's library loader, oracle paths, the SmolLM2-derived test models).
//!
//! Every failure ends the process with exit code 1 and a one-line cause on stderr.

mod args;
mod commands;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    // Ctrl-C: remove the temporary outputs being written, as `dynquant` does.
    let _ = ctrlc::set_handler(|| {
        dynquant_gguf::remove_temporary_outputs_and_exit(130, |written| {
            eprintln!("error: {}", dynquant_gguf::interrupted_message(written))
        });
    });
    if let Err(err) = commands::run(&cli.command) {
        let msg = format!("{err:#}");
        let one_line: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        eprintln!("error: {}", one_line.join(" "));
        std::process::exit(1);
    }
}
