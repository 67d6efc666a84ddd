//! `dynquant`: a thin command line over the dynquant libraries.
//!
//! Argument definitions live in [`args`], one module per subcommand in [`commands`]. Every
//! failure ends the process with exit code 1 and a one-line cause on stderr.

mod args;
mod commands;

use clap::Parser;

fn main() {
    keep_freed_memory_for_reuse();
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

/// glibc returns freed memory to the kernel eagerly: every block over its (adaptive) mmap threshold
/// is unmapped on free, and a free top of the heap over 128 KiB is trimmed. The engine frees and
/// reallocates its per-operation buffers (megabytes each) thousands of times per evaluation, so each
/// reuse came back as fresh zeroed pages: on smollm2-768 at q4_0, 268,000 page faults and 15-18% of
/// the time in the kernel over 2 x 512 tokens, and the faults of two threads serialize on the
/// process's memory map (1 -> 2 thread efficiency 0.8 instead of 0.95). Blocks up to 32 MiB now stay
/// in the heap and up to 256 MiB of free heap top is kept: the process's peak memory is unchanged,
/// it is just not handed back between operations. Measured in docs/benchmarks.md ("Issue 17: the
/// allocator, and the speed table after session 7").
fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two of the allocator's parameters; it is called before any thread
    // is started, and a refused value (it returns 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
