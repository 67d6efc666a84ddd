//! Faults while the writing commands run: `convert`, `quantize`, `split`, `merge` and `imatrix`
//! are SIGKILLed at seeded pseudo-random points, run out of file size (`RLIMIT_FSIZE`: the
//! write fails with EFBIG, as on a full disk), and read truncated, mangled or missing inputs.
//! Whatever happens, a file under a final output name is complete and byte-identical to an
//! undisturbed run's, the inputs keep their bytes, and a rerun gives the reference output.
//!
//! Inputs are small (the qwen3moe Hugging Face fixture of `../shared/golden/hf`, its F32
//! conversion, a 20 kB text), so each run takes well under a second and the kills cover
//! start-up, reading, writing and the final renames alike.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{clean_failure, dynquant, ok, oracle};
use dynquant_testkit::oracle::shared_dir;
use sha2::{Digest, Sha256};

/// Kills per command (5 commands): 60 in all.
const KILLS_PER_COMMAND: usize = 12;
/// The schedule's seed: the same kill points (as fractions of a reference run) every time.
const SEED: u64 = 0x2121_d15c_0ffe_e000;

/// xorshift64*: the fractions of the kill schedule.
struct Schedule(u64);

impl Schedule {
    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sha256(path: &Path) -> [u8; 32] {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(&bytes).into()
}

/// Every file under `dir` (not recursive) by name, with its hash.
fn listing(dir: &Path) -> BTreeMap<String, [u8; 32]> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256(&e.path()),
            )
        })
        .collect()
}

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
}

/// A temporary of a writer: `.{final name}.{pid}.dynquant-tmp`. Returns (final name, pid).
fn temporary_of(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('.')?.strip_suffix(".dynquant-tmp")?;
    let (final_name, pid) = rest.rsplit_once('.')?;
    Some((final_name, pid.parse().ok()?))
}

/// The small inputs every command reads, in one folder.
struct Inputs {
    _dir: tempfile::TempDir,
    hf: PathBuf,
    model: PathBuf,
    set_first: PathBuf,
    text: PathBuf,
}

impl Inputs {
    fn make() -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        for e in std::fs::read_dir(shared_dir().join("golden/hf/qwen3moe")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), hf.join(e.file_name())).unwrap();
        }
        let model = dir.path().join("model.gguf");
        ok(
            dynquant(args![
                "convert",
                hf,
                model,
                "--outtype",
                "f32",
                "--tokenizer-pre",
                "qwen2"
            ]),
            "convert the input model",
        );
        let set = dir.path().join("set");
        std::fs::create_dir(&set).unwrap();
        ok(
            dynquant(args![
                "split",
                model,
                set.join("in"),
                "--split-max-tensors",
                "8"
            ]),
            "split the input set",
        );
        let set_first = set.join("in-00001-of-00004.gguf");
        assert!(set_first.exists(), "{:?}", listing(&set));
        let text = dir.path().join("text.txt");
        let wiki = std::fs::read(shared_dir().join("data/text/wiki.test.raw")).unwrap();
        std::fs::write(&text, &wiki[..20_000]).unwrap();
        Inputs {
            _dir: dir,
            hf,
            model,
            set_first,
            text,
        }
    }

    /// Every input file (the HF folder, the model, the set, the text) with its hash.
    fn hashes(&self) -> BTreeMap<PathBuf, [u8; 32]> {
        let mut files = vec![self.model.clone(), self.text.clone()];
        for d in [&self.hf, &self.set_first.parent().unwrap().to_path_buf()] {
            for e in std::fs::read_dir(d).unwrap() {
                files.push(e.unwrap().path());
            }
        }
        files.into_iter().map(|p| (p.clone(), sha256(&p))).collect()
    }
}

/// One writing command: its arguments given the output folder.
struct Job {
    name: &'static str,
    args: ArgsFor,
}

/// A command's arguments given its output folder.
type ArgsFor = Box<dyn Fn(&Path) -> Vec<OsString>>;

/// A named way to damage an input file.
type Fault<'a> = (&'a str, &'a dyn Fn(&Path));

fn jobs(i: &Inputs) -> Vec<Job> {
    let os = |v: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
        v.iter().map(|a| a.as_ref().to_os_string()).collect()
    };
    let (hf, model, first, text) = (
        i.hf.clone(),
        i.model.clone(),
        i.set_first.clone(),
        i.text.clone(),
    );
    let (model2, model3) = (model.clone(), model.clone());
    vec![
        Job {
            name: "convert",
            // A split output: the set's shards are renamed into place together.
            args: Box::new(move |out| {
                os(&[
                    &"convert",
                    &hf,
                    &out.join("conv"),
                    &"--outtype",
                    &"bf16",
                    &"--tokenizer-pre",
                    &"qwen2",
                    &"--split-max-tensors",
                    &"12",
                ])
            }),
        },
        Job {
            name: "quantize",
            args: Box::new(move |out| {
                os(&[
                    &"quantize",
                    &model,
                    &out.join("q.gguf"),
                    &"--recipe",
                    &"q4_k_m",
                    &"--threads",
                    &"2",
                    &"--quiet",
                ])
            }),
        },
        Job {
            name: "split",
            args: Box::new(move |out| {
                os(&[
                    &"split",
                    &model2,
                    &out.join("sp"),
                    &"--split-max-tensors",
                    &"8",
                ])
            }),
        },
        Job {
            name: "merge",
            args: Box::new(move |out| os(&[&"merge", &first, &out.join("m.gguf")])),
        },
        Job {
            name: "imatrix",
            args: Box::new(move |out| {
                os(&[
                    &"imatrix",
                    &model3,
                    &"--text",
                    &text,
                    &"-o",
                    &out.join("im.gguf"),
                    &"--ctx",
                    &"64",
                    &"--chunks",
                    &"8",
                    &"--threads",
                    &"2",
                ])
            }),
        },
    ]
}

fn command(args: &[OsString]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dynquant"));
    c.args(args);
    c
}

/// What a kill left, checked against the reference outputs: every file under a final name is
/// byte-identical to the reference's, the first file of a set (the one readers open) only
/// appears with the whole set, and anything else is a temporary of the killed process
/// (hidden, named after its final name and the dead pid, so no later run takes it for
/// output). Returns whether a temporary and whether final files were left.
fn check_after_kill(
    what: &str,
    dir: &Path,
    reference: &BTreeMap<String, [u8; 32]>,
    pid: u32,
) -> (bool, bool) {
    let left = listing(dir);
    let (mut temporaries, mut finals) = (false, false);
    for (name, hash) in &left {
        if let Some(want) = reference.get(name) {
            assert_eq!(
                hash, want,
                "{what}: {name} differs from the reference run's"
            );
            finals = true;
        } else if let Some((final_name, tmp_pid)) = temporary_of(name) {
            assert!(
                reference.contains_key(final_name) && tmp_pid == pid,
                "{what}: a temporary {name} of another output or process"
            );
            temporaries = true;
        } else {
            panic!("{what}: unexpected file {name} after the kill: {left:?}");
        }
    }
    let first = reference.keys().next().unwrap();
    if left.contains_key(first) {
        for name in reference.keys() {
            assert!(
                left.contains_key(name),
                "{what}: {first} is in place without {name}"
            );
        }
    }
    (temporaries, finals)
}

#[test]
fn sigkill_at_random_points_leaves_no_partial_output_and_never_touches_the_input() {
    let Some(_o) = oracle() else { return };
    let inputs = Inputs::make();
    let input_hashes = inputs.hashes();
    let work = tempfile::tempdir().unwrap();
    let mut schedule = Schedule(SEED);
    let mut total = 0;
    for job in jobs(&inputs) {
        let out = work.path().join(job.name);
        std::fs::create_dir(&out).unwrap();
        let args = (job.args)(&out);
        let (took, writing_from) = reference_run(&args, &out, job.name);
        let reference = listing(&out);
        assert!(!reference.is_empty());
        assert!(reference.keys().all(|n| temporary_of(n).is_none()));
        clear(&out);
        let (mut mid_write, mut after_exit, mut with_finals) = (0, 0, 0);
        for k in 0..KILLS_PER_COMMAND {
            let what = format!("{} kill {k}", job.name);
            let fraction = schedule.next_fraction();
            let mut child = command(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let pid = child.id();
            if k % 2 == 0 {
                // Anywhere in the run, start-up included.
                std::thread::sleep(took.mul_f64(1.2 * fraction));
            } else {
                // Somewhere after the first temporary appeared: while writing or renaming.
                let deadline = Instant::now() + took * 4 + Duration::from_secs(2);
                while Instant::now() < deadline
                    && child.try_wait().unwrap().is_none()
                    && !listing_names(&out)
                        .iter()
                        .any(|n| temporary_of(n).is_some())
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                std::thread::sleep(took.saturating_sub(writing_from).mul_f64(1.2 * fraction));
            }
            let temporary_at_kill = listing_names(&out)
                .iter()
                .any(|n| temporary_of(n).is_some());
            let exited_before = child.try_wait().unwrap().is_some();
            let _ = child.kill();
            child.wait().unwrap();
            total += 1;
            after_exit += usize::from(exited_before);
            mid_write += usize::from(temporary_at_kill && !exited_before);
            let (_, finals) = check_after_kill(&what, &out, &reference, pid);
            with_finals += usize::from(finals && !exited_before);
            for (path, hash) in &input_hashes {
                assert_eq!(
                    &sha256(path),
                    hash,
                    "{what}: input {} changed",
                    path.display()
                );
            }
            // A rerun: leftovers neither block it nor survive it (`--force` only where a
            // complete output is already in place, as a user would need it).
            let mut rerun = args.clone();
            if reference.keys().any(|n| out.join(n).exists()) {
                rerun.push("--force".into());
            }
            ok(command(&rerun).output().unwrap(), &format!("{what}: rerun"));
            assert_eq!(listing(&out), reference, "{what}: rerun differs");
            clear(&out);
        }
        eprintln!(
            "{}: {KILLS_PER_COMMAND} kills over a {took:?} run: {mid_write} while a temporary \
             was being written, {with_finals} with final files in place, {after_exit} after it ended",
            job.name
        );
    }
    assert!(total >= 50);
}

/// Runs `args` undisturbed into the empty folder `out`: how long it took, and how long before
/// its first temporary output appeared (polled; the whole run if none was seen).
fn reference_run(args: &[OsString], out: &Path, what: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let mut child = command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writing_from = None;
    while child.try_wait().unwrap().is_none() {
        if writing_from.is_none() && listing_names(out).iter().any(|n| temporary_of(n).is_some()) {
            writing_from = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = start.elapsed();
    ok(child.wait_with_output().unwrap(), what);
    (took, writing_from.unwrap_or(took))
}

fn listing_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `args` with the file-size limit `limit` bytes (`RLIMIT_FSIZE`, set in the child before
/// exec; the binary itself ignores SIGXFSZ, so the write fails with EFBIG instead).
fn run_with_file_size_limit(args: &[OsString], limit: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = command(args);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

/// Exit code 1, no panic, and one `error: ...` line, the last one (imatrix prints its
/// progress before it: stderr is not a terminal here). Returns that line.
fn failed_with_one_error(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: {}, {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{what}: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{what}: {stderr}");
    last.to_string()
}

#[test]
fn file_size_limit_gives_one_clean_error_and_leaves_nothing() {
    let Some(_o) = oracle() else { return };
    let inputs = Inputs::make();
    let input_hashes = inputs.hashes();
    let work = tempfile::tempdir().unwrap();
    for job in jobs(&inputs) {
        let out = work.path().join(job.name);
        std::fs::create_dir(&out).unwrap();
        let args = (job.args)(&out);
        ok(command(&args).output().unwrap(), job.name);
        let largest = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .max()
            .unwrap();
        clear(&out);
        // Half the largest file: the limit is hit in the middle of the data (for a set, after
        // some shards may be complete).
        let msg = failed_with_one_error(
            run_with_file_size_limit(&args, largest / 2),
            &format!("{} under a file size limit", job.name),
        );
        assert!(msg.contains("File too large"), "{}: {msg}", job.name);
        assert!(
            listing_names(&out).is_empty(),
            "{}: left {:?}",
            job.name,
            listing_names(&out)
        );
    }
    assert_eq!(inputs.hashes(), input_hashes);
}

/// Copies `files` into a fresh folder `dir/name` and returns it.
fn copy_into(dir: &Path, name: &str, files: &[PathBuf]) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir(&to).unwrap();
    for f in files {
        std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
    }
    to
}

fn truncate_by(path: &Path, cut: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - cut).unwrap();
}

/// `args` fails cleanly (one line, exit 1) before writing anything into `out`; returns the
/// message.
fn refused_before_output(args: Vec<OsString>, out: &Path, what: &str) -> String {
    let msg = clean_failure(command(&args).output().unwrap(), what);
    assert!(
        listing_names(out).is_empty(),
        "{what}: left {:?}",
        listing_names(out)
    );
    msg
}

#[test]
fn truncated_mangled_and_missing_inputs_are_refused_before_any_output() {
    let Some(_o) = oracle() else { return };
    let inputs = Inputs::make();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let os = |v: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
        v.iter().map(|a| a.as_ref().to_os_string()).collect()
    };
    // Each GGUF reader on a file: quantize, split, imatrix.
    let gguf_commands = |model: &Path| -> Vec<(&'static str, Vec<OsString>)> {
        vec![
            (
                "quantize",
                os(&[
                    &"quantize",
                    &model,
                    &out.join("q.gguf"),
                    &"--recipe",
                    &"q4_k_m",
                ]),
            ),
            (
                "split",
                os(&[
                    &"split",
                    &model,
                    &out.join("sp"),
                    &"--split-max-tensors",
                    &"8",
                ]),
            ),
            (
                "imatrix",
                os(&[
                    &"imatrix",
                    &model,
                    &"--text",
                    &inputs.text,
                    &"-o",
                    &out.join("im.gguf"),
                    &"--ctx",
                    &"64",
                    &"--chunks",
                    &"2",
                ]),
            ),
        ]
    };

    // A GGUF shorter than its header says (data cut), and one cut inside its header.
    let short = work.path().join("short.gguf");
    std::fs::copy(&inputs.model, &short).unwrap();
    truncate_by(&short, 100_000);
    let cut_header = work.path().join("cut-header.gguf");
    let bytes = std::fs::read(&inputs.model).unwrap();
    std::fs::write(&cut_header, &bytes[..3000]).unwrap();
    for model in [&short, &cut_header] {
        for (name, args) in gguf_commands(model) {
            let what = format!("{name} of {}", model.display());
            let msg = refused_before_output(args, &out, &what);
            assert!(
                msg.contains(&*model.file_name().unwrap().to_string_lossy()),
                "{what}: {msg}"
            );
        }
    }

    // A safetensors file shorter than its header says: convert, and quantize of the folder.
    let hf_files: Vec<PathBuf> = std::fs::read_dir(&inputs.hf)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let hf = copy_into(work.path(), "hf-short", &hf_files);
    truncate_by(&hf.join("model.safetensors"), 1000);
    for args in [
        os(&[&"convert", &hf, &out.join("c.gguf")]),
        os(&[&"quantize", &hf, &out.join("q.gguf"), &"--recipe", &"q8_0"]),
    ] {
        let msg = refused_before_output(args, &out, "truncated safetensors");
        assert!(msg.contains("model.safetensors"), "{msg}");
    }

    // A sharded checkpoint (deepseek-v3: an index over two shards) with its second shard
    // missing, cut or with a mangled header: convert and quantize name the shard.
    let ds_files: Vec<PathBuf> = std::fs::read_dir(shared_dir().join("golden/hf/deepseek-v3"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let hf_faults: [Fault; 3] = [
        ("missing", &|p: &Path| std::fs::remove_file(p).unwrap()),
        ("truncated", &|p: &Path| truncate_by(p, 1000)),
        ("mangled", &|p: &Path| {
            let mut b = std::fs::read(p).unwrap();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            std::fs::write(p, b).unwrap();
        }),
    ];
    for (fault, apply) in hf_faults {
        let hf = copy_into(work.path(), &format!("ds-{fault}"), &ds_files);
        apply(&hf.join("model-00002-of-00002.safetensors"));
        for args in [
            os(&[&"convert", &hf, &out.join("c.gguf")]),
            os(&[&"quantize", &hf, &out.join("q.gguf"), &"--recipe", &"q8_0"]),
        ] {
            let what = format!("{:?} of a checkpoint with a {fault} shard", args[0]);
            let msg = failed_with_one_error(command(&args).output().unwrap(), &what);
            assert!(
                listing_names(&out).is_empty(),
                "{what}: {:?}",
                listing_names(&out)
            );
            assert!(
                msg.contains("model-00002-of-00002.safetensors"),
                "{what}: {msg}"
            );
        }
    }

    // A split set with a shard missing, truncated or mangled: every reader of the set.
    let set_files: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(inputs.set_first.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let faults: [Fault; 3] = [
        ("missing", &|p: &Path| std::fs::remove_file(p).unwrap()),
        ("truncated", &|p: &Path| truncate_by(p, 5000)),
        ("mangled", &|p: &Path| {
            let mut b = std::fs::read(p).unwrap();
            b[..4].copy_from_slice(b"XXXX");
            std::fs::write(p, b).unwrap();
        }),
    ];
    for (fault, apply) in faults {
        let set = copy_into(work.path(), &format!("set-{fault}"), &set_files);
        let bad = set.join("in-00002-of-00004.gguf");
        apply(&bad);
        let first = set.join("in-00001-of-00004.gguf");
        let mut runs = gguf_commands(&first);
        runs.push(("merge", os(&[&"merge", &first, &out.join("m.gguf")])));
        for (name, args) in runs {
            let what = format!("{name} of a set with a {fault} shard");
            let msg = refused_before_output(args, &out, &what);
            assert!(msg.contains("in-00002-of-00004.gguf"), "{what}: {msg}");
        }
    }
}

/// A read error the header cannot foresee: a shard cut after the set was opened (and checked)
/// fails the copy with the file, the tensor and the file's new length, and leaves no output.
/// Positioned reads (`--no-mmap`): under a memory map a file cut by someone else faults the
/// process (SIGBUS), as in llama.cpp, which is why `GgufFile::open_mmap` requires inputs that
/// nobody modifies.
#[test]
fn a_shard_cut_while_being_read_is_reported_with_the_tensor_name() {
    use dynquant_gguf::{copy_model, Access, GgufModel, OutputTarget, WriteOptions};
    let Some(_o) = oracle() else { return };
    let inputs = Inputs::make();
    let work = tempfile::tempdir().unwrap();
    let set_files: Vec<PathBuf> = std::fs::read_dir(inputs.set_first.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let set = copy_into(work.path(), "set", &set_files);
    let model = GgufModel::open(set.join("in-00001-of-00004.gguf"), Access::Pread).unwrap();
    let third = set.join("in-00003-of-00004.gguf");
    let names_of_third: Vec<String> = model.parts()[2]
        .header()
        .tensors
        .iter()
        .map(|t| format!("tensor '{}'", t.name))
        .collect();
    truncate_by(&third, 5000);
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = copy_model(
        &model,
        &OutputTarget::Single(out.join("m.gguf")),
        &WriteOptions::default(),
    )
    .expect_err("a cut shard");
    let chain = anyhow_like(&err);
    assert!(chain.contains("in-00003-of-00004.gguf"), "{chain}");
    assert!(names_of_third.iter().any(|n| chain.contains(n)), "{chain}");
    assert!(chain.contains("truncated"), "{chain}");
    assert!(listing_names(&out).is_empty(), "{:?}", listing_names(&out));
}

/// The error and its sources, joined as the CLI prints them.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
