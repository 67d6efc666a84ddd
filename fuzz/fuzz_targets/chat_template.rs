//! Fuzzes chat template rendering (`Tokenizer::render_chat_template`, minijinja) with the bytes as
//! the template and a small real vocabulary. Any template must give Ok or a typed error: a
//! template error, or (Linux) one of the sandbox's limits, never a crash or a hang.
//!
//! On Linux the render runs in a forked child process (the library's sandbox), and a child's
//! coverage counters are its own copy-on-write pages: libFuzzer would see none of the engine's
//! coverage and fuzz blind. So before the first input the pages that hold nothing but the
//! inline 8-bit coverage counters (`__sancov_cntrs`) are remapped as shared memory, which forked
//! children write into and the parent's libFuzzer reads. The partial pages at the section's two
//! ends stay private (they may hold other globals, which must not be shared); their counters,
//! a few KiB of the section, are seen only for code run in the parent.
#![no_main]

use std::sync::OnceLock;

use dynquant_gguf::parse_header;
use dynquant_tokenizer::{ChatMessage, Tokenizer};
use libfuzzer_sys::fuzz_target;

/// SmolLM2's tokenizer keys, cut to its first 400 tokens (`fuzz/gguf_kv_seed.py`).
const VOCAB: &[u8] = include_bytes!("../seeds/tokenizer_gguf/smollm2-768.kv.gguf");

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        #[cfg(target_os = "linux")]
        share_coverage_counters_with_children();
        let header = parse_header(VOCAB, VOCAB.len() as u64).expect("the vocabulary seed parses");
        Tokenizer::from_gguf(&header.metadata).expect("the vocabulary seed builds")
    })
}

/// The run-time bounds of this executable's `__sancov_cntrs` section, from its ELF section
/// headers (`/proc/self/exe`) and its load bias (`AT_ENTRY` minus the header's entry point).
/// The linker's `__start___sancov_cntrs` symbols cannot be named from Rust here: declaring them
/// clashes with the coverage pass's own weak declarations, and the counters stop registering.
#[cfg(target_os = "linux")]
fn counters_section() -> Option<(usize, usize)> {
    let exe = std::fs::read("/proc/self/exe").ok()?;
    let bytes = |o: usize, n: usize| exe.get(o..o.checked_add(n)?);
    let u16_at = |o| Some(u16::from_le_bytes(bytes(o, 2)?.try_into().ok()?) as usize);
    let u32_at = |o| Some(u32::from_le_bytes(bytes(o, 4)?.try_into().ok()?) as usize);
    let u64_at = |o| Some(u64::from_le_bytes(bytes(o, 8)?.try_into().ok()?) as usize);
    if bytes(0, 5)? != b"\x7fELF\x02" {
        return None;
    }
    let (entry, shoff) = (u64_at(0x18)?, u64_at(0x28)?);
    let (shentsize, shnum, shstrndx) = (u16_at(0x3A)?, u16_at(0x3C)?, u16_at(0x3E)?);
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18)?;
    // SAFETY: plain getauxval.
    let bias = (unsafe { libc::getauxval(libc::AT_ENTRY) } as usize).wrapping_sub(entry);
    (0..shnum).find_map(|i| {
        let name = names + u32_at(header(i))?;
        let wanted = b"__sancov_cntrs\0";
        (bytes(name, wanted.len())? == wanted).then_some(())?;
        let (addr, size) = (u64_at(header(i) + 0x10)?, u64_at(header(i) + 0x20)?);
        Some((bias.wrapping_add(addr), bias.wrapping_add(addr + size)))
    })
}

#[cfg(target_os = "linux")]
fn share_coverage_counters_with_children() {
    let Some((start, stop)) = counters_section() else {
        panic!("no __sancov_cntrs section: the chat_template target needs a coverage build");
    };
    // SAFETY: plain sysconf.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let (lo, hi) = (start.next_multiple_of(page), stop / page * page);
    if hi <= lo {
        return;
    }
    let len = hi - lo;
    // SAFETY: [lo, hi) lies inside the counters section, mapped read-write; no instrumented
    // code runs on another thread while this one swaps the pages (libFuzzer's own threads are
    // not instrumented), and the counters are copied back before anything reads them.
    unsafe {
        let saved = std::slice::from_raw_parts(lo as *const u8, len).to_vec();
        let p = libc::mmap(
            lo as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
        assert_eq!(p as usize, lo, "remapping the coverage counters as shared");
        std::ptr::copy_nonoverlapping(saved.as_ptr(), lo as *mut u8, len);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello"),
        ChatMessage::new("assistant", "Hi."),
    ];
    let _ = tokenizer().render_chat_template(template, &messages, true);
});
