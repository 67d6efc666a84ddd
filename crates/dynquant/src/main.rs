//! `dynquant`: a thin command line over the dynquant libraries.
//!
//! Argument definitions live in [`args`], one module per subcommand in [`commands`]. Every
//! failure ends the process with exit code 1 and a one-line cause on stderr.

mod args;
mod commands;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    if let Err(err) = commands::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
