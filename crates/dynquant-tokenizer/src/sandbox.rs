//! Out-of-process rendering of untrusted chat templates (Linux).
//!
//! minijinja's fuel counts template instructions, not the items a filter walks or the bytes an
//! operator builds, so one instruction can run without end or allocate without bound
//! (`([0] * 100000000) | list`, `(n * ()) | list`, `s ~ s` or `seq + seq` doubled in a loop).
//! No setting of the engine stops those; an operating-system limit does. [`run`] forks the
//! current process (no exec: a library cannot assume which binary it runs in; glibc's malloc is
//! fork-safe, so the child can allocate), and the child, before it renders:
//!
//! * resets every signal handler to the default and unblocks all signals (the parent's handlers,
//!   e.g. libFuzzer's, must not run in it), dies with its parent (`PR_SET_PDEATHSIG`);
//! * points stdin/stdout/stderr at `/dev/null` and closes every other descriptor but its pipe;
//! * sets `RLIMIT_AS` to its current address-space size plus [`MEMORY_BUDGET`] (the parent may
//!   have large model mappings, which the child shares but must not count against the
//!   template), `RLIMIT_CPU` to [`CPU_SECONDS`], and `RLIMIT_FSIZE`, `RLIMIT_NOFILE`,
//!   `RLIMIT_NPROC` and `RLIMIT_CORE` to 0 (no file written, none opened, no process made, no
//!   core dump);
//!
//! then runs the job, writes its results over the pipe and `_exit`s. The parent reads with a
//! wall-clock deadline ([`WALL_SECONDS`]), SIGKILLs and reaps the child when it passes, and maps
//! every way the child can end to a [`SandboxError`] naming the limit.

use std::time::{Duration, Instant};

/// Memory a sandboxed render may add to the address space it inherits.
pub const MEMORY_BUDGET: u64 = 512 << 20;
/// CPU seconds a sandboxed render (one batch) may use; SIGXCPU then, SIGKILL one second later.
/// The fuel limit stops an instruction loop in under a second, so only a template that spends
/// its time inside single instructions gets here.
pub const CPU_SECONDS: u64 = 5;
/// Wall-clock seconds the parent waits for a sandboxed render (one batch) before it kills it;
/// above [`CPU_SECONDS`] so that a render on a busy machine is stopped by its CPU limit first.
pub const WALL_SECONDS: u64 = 20;
/// Bytes the parent accepts from one sandboxed batch (the child caps each render at
/// [`crate::MAX_TEMPLATE_OUTPUT`]).
pub const MAX_BATCH_REPLY: usize = 64 << 20;

/// How a sandboxed chat-template render ended when it did not end with a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The child could not be started (pipe or fork failed).
    #[error("cannot start the sandboxed renderer: {0}")]
    Start(String),
    /// The child ran out of its address-space budget (an allocation failed and it aborted).
    #[error("the template exceeds the renderer's memory budget of {} MiB", MEMORY_BUDGET >> 20)]
    Memory,
    /// The child used up its CPU time limit.
    #[error("the template exceeds the renderer's CPU time limit of {CPU_SECONDS} s")]
    CpuTime,
    /// The child did not finish in time and was killed.
    #[error("the template exceeds the renderer's wall-clock limit of {WALL_SECONDS} s")]
    WallTime,
    /// The child's reply was larger than the parent accepts.
    #[error("the rendered output exceeds the renderer's reply limit of {MAX_BATCH_REPLY} bytes")]
    ReplyTooLarge,
    /// The child died from another signal.
    #[error("the sandboxed renderer was killed by signal {0}")]
    Signal(i32),
    /// The child exited without a complete reply.
    #[error("the sandboxed renderer exited with status {0} without a complete reply")]
    Exit(i32),
}

fn os_error(what: &str) -> SandboxError {
    SandboxError::Start(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// One render's result as it crosses the pipe: the text, or the template error's message.
pub type Reply = Result<String, String>;

/// Runs `job` in a sandboxed child process and returns its replies (see the module docs).
pub fn run(job: impl FnOnce() -> Vec<Reply>) -> Result<Vec<Reply>, SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe"));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: plain syscall.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child runs only `child_main`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = os_error("fork");
        // SAFETY: both descriptors are ours.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(e);
    }
    if pid == 0 {
        child_main(parent, read_fd, write_fd, job);
    }
    // SAFETY: the write end is ours; the child has its own copy.
    unsafe { libc::close(write_fd) };
    let outcome = read_reply(read_fd, pid);
    // SAFETY: the read end is ours.
    unsafe { libc::close(read_fd) };
    let (status, cpu_seconds) = reap(pid);
    let bytes = outcome?;
    if libc::WIFSIGNALED(status) {
        return Err(match libc::WTERMSIG(status) {
            // SIGXCPU at the soft CPU limit, SIGKILL at the hard one (ours on timeout returned
            // above; one from elsewhere, e.g. the OOM killer, came before the CPU limit).
            libc::SIGXCPU => SandboxError::CpuTime,
            libc::SIGKILL if cpu_seconds >= CPU_SECONDS => SandboxError::CpuTime,
            // An allocation past RLIMIT_AS fails, and Rust aborts on a failed allocation.
            libc::SIGABRT => SandboxError::Memory,
            sig => SandboxError::Signal(sig),
        });
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    match (code, decode(&bytes)) {
        (0, Some(replies)) => Ok(replies),
        _ => Err(SandboxError::Exit(code)),
    }
}

/// Reads the child's whole reply until end of file, killing the child at the deadline or when
/// the reply grows past [`MAX_BATCH_REPLY`].
fn read_reply(fd: libc::c_int, pid: libc::pid_t) -> Result<Vec<u8>, SandboxError> {
    let deadline = Instant::now() + Duration::from_secs(WALL_SECONDS);
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let kill = || {
        // SAFETY: `pid` is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill();
            return Err(SandboxError::WallTime);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            kill();
            return Err(os_error("poll"));
        }
        if ready == 0 {
            continue; // the deadline check above decides
        }
        // SAFETY: `chunk` is writable for its length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            kill();
            return Err(os_error("read"));
        }
        if n == 0 {
            return Ok(bytes);
        }
        if bytes.len() + n as usize > MAX_BATCH_REPLY {
            kill();
            return Err(SandboxError::ReplyTooLarge);
        }
        bytes.extend_from_slice(&chunk[..n as usize]);
    }
}

/// Waits for the child to end (it has closed its pipe, or been killed) and returns its status
/// and the whole seconds of CPU time it used.
fn reap(pid: libc::pid_t) -> (libc::c_int, u64) {
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` and `usage` are writable.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            let secs = usage.ru_utime.tv_sec.max(0) + usage.ru_stime.tv_sec.max(0);
            return (status, secs as u64);
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return (status, 0);
        }
    }
}

/// The reply on the pipe: per render a tag byte (0 text, 1 error message), a u64 LE length and
/// the UTF-8 bytes; then the end byte 2.
fn encode(replies: &[Reply]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in replies {
        let (tag, text) = match r {
            Ok(t) => (0u8, t),
            Err(e) => (1u8, e),
        };
        out.push(tag);
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.push(2);
    out
}

fn decode(mut bytes: &[u8]) -> Option<Vec<Reply>> {
    let mut replies = Vec::new();
    loop {
        let (&tag, rest) = bytes.split_first()?;
        if tag == 2 {
            return rest.is_empty().then_some(replies);
        }
        let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let text = String::from_utf8(rest.get(8..8usize.checked_add(len)?)?.to_vec()).ok()?;
        replies.push(if tag == 0 { Ok(text) } else { Err(text) });
        bytes = &rest[8 + len..];
    }
}

/// The child: confine, render, reply, `_exit`. Never returns.
fn child_main(
    parent: libc::pid_t,
    read_fd: libc::c_int,
    write_fd: libc::c_int,
    job: impl FnOnce() -> Vec<Reply>,
) -> ! {
    // SAFETY: every call below is a plain syscall on our own process; `_exit` ends it without
    // running the parent's destructors or atexit handlers.
    unsafe {
        libc::close(read_fd);
        confine(parent, write_fd);
        // A panic is caught inside the job (an error reply); this catches one in the encoding.
        // The hook is silenced: the default one would lock stderr, which another thread of the
        // parent may have held at the fork.
        std::panic::set_hook(Box::new(|_| {}));
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encode(&job())));
        let Ok(reply) = reply else { libc::_exit(3) };
        let mut rest = &reply[..];
        while !rest.is_empty() {
            let n = libc::write(write_fd, rest.as_ptr().cast(), rest.len());
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(4);
            }
            rest = &rest[n as usize..];
        }
        libc::_exit(0);
    }
}

/// Sets the child's limits (see the module docs). Failures are not fatal: each limit is
/// defence in depth except `RLIMIT_AS` and `RLIMIT_CPU`, whose failure ends the child
/// (status 5), and the parent's deadline still holds.
unsafe fn confine(parent: libc::pid_t, write_fd: libc::c_int) {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if libc::getppid() != parent {
        libc::_exit(6);
    }
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut all);
    libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());

    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null >= 0 {
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
    }
    // Every descriptor but stdio and the pipe (close_range: Linux 5.9; older kernels keep them).
    if write_fd > 3 {
        libc::syscall(libc::SYS_close_range, 3u32, (write_fd - 1) as u32, 0u32);
    }
    libc::syscall(libc::SYS_close_range, (write_fd + 1) as u32, u32::MAX, 0u32);

    let set = |resource, soft: u64, hard: u64| {
        let lim = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        libc::setrlimit(resource, &lim) == 0
    };
    let Some(vm_size) = address_space_size() else {
        libc::_exit(5)
    };
    let mut current = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    libc::getrlimit(libc::RLIMIT_AS, &mut current);
    let as_limit = vm_size.saturating_add(MEMORY_BUDGET).min(current.rlim_max);
    if !set(libc::RLIMIT_AS, as_limit, as_limit)
        || !set(libc::RLIMIT_CPU, CPU_SECONDS, CPU_SECONDS + 1)
    {
        libc::_exit(5);
    }
    set(libc::RLIMIT_FSIZE, 0, 0);
    set(libc::RLIMIT_CORE, 0, 0);
    set(libc::RLIMIT_NOFILE, 0, 0);
    set(libc::RLIMIT_NPROC, 0, 0);
}

/// The process's address-space size in bytes (`/proc/self/statm`, first field, in pages), read
/// without allocating.
unsafe fn address_space_size() -> Option<u64> {
    let fd = libc::open(
        c"/proc/self/statm".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 128];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    if n <= 0 {
        return None;
    }
    let mut pages: u64 = 0;
    for &b in buf[..n as usize].iter().take_while(|b| b.is_ascii_digit()) {
        pages = pages.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let page = libc::sysconf(libc::_SC_PAGESIZE);
    (page > 0).then(|| pages.saturating_mul(page as u64))
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn reply_round_trip() {
        let replies = vec![
            Ok("a\u{e9}".to_string()),
            Err("bad".to_string()),
            Ok(String::new()),
        ];
        let bytes = encode(&replies);
        assert_eq!(decode(&bytes), Some(replies));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode(&[]), None);
    }
}
