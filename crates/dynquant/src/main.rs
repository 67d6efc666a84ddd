//! `dynquant`: a thin command line over the dynquant libraries.
//!
//! Argument definitions live in [`args`], one module per subcommand in [`commands`]. Every
//! failure ends the process with exit code 1 and a one-line cause on stderr.

mod args;
mod commands;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    // Ctrl-C: remove the temporary outputs being written (final names are only ever given to
    // complete files), then exit as interrupted processes do.
    let _ = ctrlc::set_handler(|| {
        dynquant_gguf::remove_temporary_outputs_and_exit(130, |written| {
            eprintln!("error: {}", dynquant_gguf::interrupted_message(written))
        });
    });
    // A file-size limit (`ulimit -f`) must surface as a write error ("File too large") that
    // removes the temporary output, not as a signal that kills the process mid-write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if let Err(err) = commands::run(cli) {
        // One line, whatever the causes print (regex errors, for one, span several lines).
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
