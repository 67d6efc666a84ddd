//! Hostile headers fail fast in little memory: every count, length and shape a GGUF header, a
//! GGUF imatrix or a legacy `.dat` imatrix claims is checked against the file length before
//! anything is allocated from it. Each test runs its body again in a child process whose address
//! space is capped (`ulimit -v`), so an allocation sized by the claim (2^40 items, a 2^60-byte
//! string) aborts the child and fails the test, even where the kernel would overcommit.

use std::path::Path;
use std::process::Command;

use dynquant_gguf::imatrix::{Imatrix, ImatrixError};
use dynquant_gguf::{parse_header, GgufError};

/// The child's address-space cap: far below any claimed size, far above what parsing needs.
const CAP_KIB: u64 = 512 * 1024;
const CHILD_ENV: &str = "DYNQUANT_BOUNDED_MEMORY_CHILD";

/// In the parent, runs test `name` alone in a capped child and returns true (the caller returns);
/// in the child, returns false (the caller runs its body).
fn ran_capped(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {CAP_KIB} && exec \"$0\" --exact {name} --test-threads=1"
        ))
        .arg(exe)
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the capped child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} under a {CAP_KIB} KiB address space: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn header(n_tensors: u64, n_kv: u64) -> Self {
        Bytes::default()
            .raw(b"GGUF")
            .u32(3)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn i32(self, v: i32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn parse(&self) -> Result<dynquant_gguf::GgufHeader, GgufError> {
        parse_header(&self.0[..], self.0.len() as u64)
    }
}

fn too_large(r: Result<dynquant_gguf::GgufHeader, GgufError>, what: &str) {
    match r {
        Err(GgufError::TooLarge { what: w, .. }) if w == what => {}
        other => panic!("expected TooLarge({what}), got {other:?}"),
    }
}

#[test]
fn gguf_header_claiming_2_40_tensors_or_kvs() {
    if ran_capped("gguf_header_claiming_2_40_tensors_or_kvs") {
        return;
    }
    too_large(
        Bytes::header(1 << 40, 0).raw(&[0; 64]).parse(),
        "tensor count",
    );
    too_large(
        Bytes::header(0, 1 << 40).raw(&[0; 64]).parse(),
        "metadata entry count",
    );
}

#[test]
fn gguf_header_claiming_a_2_60_byte_string() {
    if ran_capped("gguf_header_claiming_a_2_60_byte_string") {
        return;
    }
    // As a key, and as a string value.
    too_large(
        Bytes::header(0, 1).u64(1 << 60).raw(&[b'k'; 64]).parse(),
        "string length",
    );
    let value = Bytes::header(0, 1)
        .str("k")
        .u32(8)
        .u64(1 << 60)
        .raw(&[b'v'; 64]);
    too_large(value.parse(), "string length");
}

#[test]
fn gguf_header_claiming_2_40_array_elements() {
    if ran_capped("gguf_header_claiming_2_40_array_elements") {
        return;
    }
    // Fixed-size elements (u32), strings, and arrays of arrays: each claims 2^40 elements.
    for elem in [4u32, 8, 9] {
        let r = Bytes::header(0, 1).str("k").u32(9).u32(elem).u64(1 << 40);
        let r = if elem == 9 { r.u32(4).u64(1 << 40) } else { r };
        let err = r.raw(&[0; 64]).parse().expect_err("a 2^40-element array");
        assert!(
            matches!(
                err,
                GgufError::TooLarge { .. } | GgufError::Truncated { .. }
            ),
            "element type {elem}: {err:?}"
        );
    }
}

#[test]
fn gguf_tensor_claiming_2_60_bytes_of_data() {
    if ran_capped("gguf_tensor_claiming_2_60_bytes_of_data") {
        return;
    }
    // One F32 tensor of 2^58 elements: its data cannot be in a 100-byte file.
    let r = Bytes::header(1, 0)
        .str("t")
        .u32(1)
        .u64(1 << 58)
        .u32(0)
        .u64(0)
        .raw(&[0; 64]);
    assert!(r.parse().is_err());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn gguf_imatrix_claiming_2_40_tensors_or_a_2_60_byte_dataset() {
    if ran_capped("gguf_imatrix_claiming_2_40_tensors_or_a_2_60_byte_dataset") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tensors = write(
        dir.path(),
        "tensors.imatrix.gguf",
        &Bytes::header(1 << 40, 0).raw(&[0; 64]).0,
    );
    let err = Imatrix::read(&tensors).expect_err("2^40 tensors");
    assert!(
        matches!(
            err,
            ImatrixError::Gguf(GgufError::TooLarge {
                what: "tensor count",
                ..
            })
        ),
        "{err:?}"
    );
    // imatrix.datasets, an array of one string claiming 2^60 bytes.
    let dataset = Bytes::header(0, 1)
        .str("imatrix.datasets")
        .u32(9)
        .u32(8)
        .u64(1)
        .u64(1 << 60)
        .raw(&[b'x'; 64]);
    let dataset = write(dir.path(), "dataset.imatrix.gguf", &dataset.0);
    let err = Imatrix::read(&dataset).expect_err("a 2^60-byte dataset name");
    assert!(
        matches!(
            err,
            ImatrixError::Gguf(GgufError::TooLarge {
                what: "string length",
                ..
            })
        ),
        "{err:?}"
    );
}

fn legacy_error(bytes: &Bytes, needle: &str) {
    match Imatrix::parse_legacy(&bytes.0) {
        Err(ImatrixError::Legacy(msg)) if msg.contains(needle) => {}
        other => panic!("expected a legacy error about {needle}, got {other:?}"),
    }
}

#[test]
fn legacy_imatrix_claiming_huge_counts() {
    if ran_capped("legacy_imatrix_claiming_huge_counts") {
        return;
    }
    // The format's counts are i32: the largest claims are 2^31 - 1 entries, bytes and values.
    legacy_error(&Bytes::default().i32(i32::MAX).raw(&[0; 64]), "entry count");
    legacy_error(
        &Bytes::default().i32(1).i32(i32::MAX).raw(&[0; 64]),
        "name length",
    );
    let values = Bytes::default()
        .i32(1)
        .i32(1)
        .raw(b"w")
        .i32(1)
        .i32(i32::MAX)
        .raw(&[0; 64]);
    legacy_error(&values, "value count");
    let dataset = Bytes::default().i32(0).i32(1).i32(i32::MAX).raw(&[0; 64]);
    legacy_error(&dataset, "dataset name length");
    // The same files through `Imatrix::read`.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "huge.dat",
        &Bytes::default().i32(i32::MAX).raw(&[0; 64]).0,
    );
    assert!(matches!(Imatrix::read(&path), Err(ImatrixError::Legacy(_))));
}
