//! `dynquant measure` on the synthetic MoE model (`synth-qwen3moe`: 4 layers, 16 experts) with
//! tiny settings: results independent of the thread count, shards merged equal to a whole run
//! byte for byte, a scan killed with SIGKILL resumes without redoing finished units and ends
//! with the same file, bad input fails with one line and writes nothing, the in-context scan
//! (`measure context`) does the same with its shards and kills, and the measurements
//! order as they must (a lower-bit probe costs more KLD, fewer bits give larger errors).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{clean_failure, dynquant, ok, oracle};
use dynquant_plan::Sensitivity;
use dynquant_testkit::oracle::shared_dir;

fn model(o: &common::Oracle) -> PathBuf {
    o.test_models().dir.join("synth-qwen3moe.gguf")
}

fn calib() -> PathBuf {
    shared_dir().join("data/text/groups_merged.txt")
}

/// The tiny scan's arguments after the model: 32 tokens, Q4_K and Q8_0, a Q8_0 probe, with
/// `set` replacing some of them.
fn tiny_with(text: &Path, out: &Path, set: &[(&str, &str)]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> =
        vec!["--text".into(), text.into(), "-o".into(), out.into()];
    let defaults = [
        ("--ctx", "32"),
        ("--chunks", "1"),
        ("--candidates", "q4_k,q8_0"),
        ("--probe", "q8_0"),
        ("--sample-rows", "16"),
    ];
    for (flag, value) in defaults {
        let value = set
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(value, |(_, v)| *v);
        v.push(flag.into());
        v.push(value.into());
    }
    for (flag, value) in set {
        if !defaults.iter().any(|(f, _)| f == flag) {
            v.push(flag.into());
            v.push(value.into());
        }
    }
    v.push("-q".into());
    v
}

fn tiny(text: &Path, out: &Path) -> Vec<std::ffi::OsString> {
    tiny_with(text, out, &[])
}

fn measure(model: &Path, extra: &[std::ffi::OsString], more: &[&str]) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> = vec!["measure".into(), model.into()];
    args.extend(extra.iter().cloned());
    args.extend(more.iter().map(|s| s.into()));
    run_args(&args)
}

/// Runs `dynquant ARGS` (a scan writing `out`) and kills it with SIGKILL once its journal holds
/// at least `units` finished units; returns how many it held (the output must not exist yet).
fn kill_after(args: &[std::ffi::OsString], out: &Path, units: usize) -> usize {
    let journal = dynquant_measure::partial_path(out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynquant"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // journal lines: the header, then one per finished unit
    let lines = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while lines(&journal) < units + 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the scan ended before it could be killed"
        );
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    child.wait().unwrap();
    assert!(!out.exists(), "no output before the scan ends");
    lines(&journal) - 1
}

/// Checks the run that resumed a killed scan: it succeeded, computed only the `left` units
/// the killed run had not finished (the number before `what` in its summary line, e.g.
/// `47 units computed`), wrote the uninterrupted run's bytes and removed its journal.
fn check_resumed(rerun: std::process::Output, what: &str, left: usize, out: &Path, whole: &Path) {
    let stderr = String::from_utf8_lossy(&rerun.stderr).into_owned();
    ok(rerun, "resumed run");
    let computed: usize = stderr
        .split(what)
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary line: {stderr}"));
    assert_eq!(computed, left, "finished units are not redone");
    assert_eq!(
        std::fs::read(out).unwrap(),
        std::fs::read(whole).unwrap(),
        "a killed and resumed scan writes the uninterrupted file"
    );
    assert!(!dynquant_measure::partial_path(out).exists());
}

#[test]
fn threads_and_shards_give_the_same_file() {
    let Some(o) = oracle() else { return };
    let m = model(&o);
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("whole.sens");
    ok(
        measure(&m, &tiny(&calib(), &whole), &["-t", "1"]),
        "whole run",
    );
    let s = Sensitivity::parse(&std::fs::read_to_string(&whole).unwrap()).expect("parses");
    assert_eq!(s.tensors.len(), 30, "quantizable tensors of the model");
    assert_eq!(
        s.groups.len(),
        22,
        "4 x (q, k, v, output, experts) + embd + output"
    );
    assert!(s
        .groups
        .iter()
        .any(|g| g.group == "blk.2.ffn_exps" && g.tensors.len() == 3));
    assert!(
        !dynquant_measure::partial_path(&whole).exists(),
        "journal removed"
    );

    // two shards, two threads, merged in reverse order
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("part{i}.sens"));
            let shard = format!("{i}/2");
            ok(
                measure(&m, &tiny(&calib(), &p), &["-t", "2", "--shard", &shard]),
                "shard",
            );
            p
        })
        .collect();
    let merged = dir.path().join("merged.sens");
    ok(
        dynquant(args!["measure", "merge", parts[1], parts[0], "-o", merged]),
        "merge",
    );
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&whole).unwrap(),
        "two shards on two threads merged == one whole run on one thread"
    );

    // a shard file is not a sensitivity file, and a shard alone does not merge
    assert!(Sensitivity::parse(&std::fs::read_to_string(&parts[0]).unwrap()).is_err());
    let lone = dir.path().join("lone.sens");
    let e = clean_failure(
        dynquant(args!["measure", "merge", parts[0], "-o", lone]),
        "merge of one of two shards",
    );
    assert!(e.contains("missing") && e.contains("1/2"), "{e}");
    let e = clean_failure(
        dynquant(args!["measure", "merge", parts[0], parts[0], "-o", lone]),
        "merge of a shard twice",
    );
    assert!(e.contains("both shard 0/2"), "{e}");
    // another setting
    let other = dir.path().join("other.sens");
    ok(
        measure(
            &m,
            &tiny_with(&calib(), &other, &[("--sample-rows", "8")]),
            &["--shard", "1/2"],
        ),
        "shard with other settings",
    );
    let e = clean_failure(
        dynquant(args!["measure", "merge", parts[0], other, "-o", lone]),
        "merge of shards with different settings",
    );
    assert!(e.contains("different"), "{e}");
    assert!(!lone.exists(), "a failed merge writes nothing");
}

#[test]
fn a_killed_scan_resumes_where_it_stopped() {
    let Some(o) = oracle() else { return };
    let m = model(&o);
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("whole.sens");
    ok(
        measure(&m, &tiny(&calib(), &whole), &[]),
        "uninterrupted run",
    );

    let out = dir.path().join("killed.sens");
    let mut args: Vec<std::ffi::OsString> = vec!["measure".into(), m.clone().into()];
    args.extend(tiny(&calib(), &out));
    args.extend(["-t", "1"].map(Into::into));
    let finished = kill_after(&args, &out, 5);

    let rerun = measure(&m, &tiny(&calib(), &out), &["-t", "1"]);
    check_resumed(rerun, " units computed", 52 - finished, &out, &whole);
}

#[test]
fn bad_input_fails_with_one_line_and_writes_nothing() {
    let Some(o) = oracle() else { return };
    let m = model(&o);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.sens");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--candidates", "q4_k,q9_z"],
            "unknown candidate type 'q9_z'",
        ),
        (vec!["--candidates", "f32"], "not a weight type"),
        (vec!["--probe", "i8"], "not a weight type"),
        (vec!["--shard", "2/2"], "out of range"),
        (vec!["--shard", "one/2"], "expected I/N"),
        (vec!["--ctx", "7"], "ctx must be even"),
        (vec!["--chunks", "100000"], "chunks of 32"),
    ];
    for (extra, want) in cases {
        let set: Vec<(&str, &str)> = extra.chunks(2).map(|c| (c[0], c[1])).collect();
        let e = clean_failure(
            measure(&m, &tiny_with(&calib(), &out, &set), &[]),
            &format!("{extra:?}"),
        );
        assert!(e.contains(want), "{extra:?}: {e}");
        assert!(!out.exists(), "{extra:?} wrote an output");
        assert!(
            !dynquant_measure::partial_path(&out).exists(),
            "{extra:?} wrote a journal"
        );
    }
    let t = tiny(&calib(), &out);
    let missing = dir.path().join("missing.gguf");
    clean_failure(measure(&missing, &t, &[]), "missing model");
    let e = clean_failure(
        measure(&m, &t, &["--imatrix", "/nonexistent/im.gguf"]),
        "missing imatrix",
    );
    assert!(e.contains("im.gguf"), "{e}");
    let no_text = vec!["-o".into(), out.clone().into_os_string()];
    let e = clean_failure(measure(&m, &no_text, &[]), "no text");
    assert!(e.contains("--text"), "{e}");
    assert!(!out.exists());
}

#[test]
fn measurements_order_by_bits() {
    let Some(o) = oracle() else { return };
    let m = model(&o);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bits.sens");
    let args = tiny_with(
        &calib(),
        &out,
        &[
            ("--candidates", "q2_k,q4_k,q6_k,q8_0"),
            ("--probe", "q2_k,q6_k"),
        ],
    );
    ok(measure(&m, &args, &[]), "scan");
    let s = Sensitivity::parse(&std::fs::read_to_string(&out).unwrap()).expect("parses");
    // without an imatrix every tensor's error falls with bits
    for t in &s.tensors {
        let e = |k: &str| t.errors[k];
        assert!(
            e("Q2_K") > e("Q4_K") && e("Q4_K") > e("Q6_K") && e("Q6_K") > e("Q8_0"),
            "{}: {:?}",
            t.name,
            t.errors
        );
        assert!(e("Q8_0") > 0.0);
    }
    // each group's probe at 2.6 bits costs more than at 6.6 bits, and so does the weight error
    let probe = |g: &str, p: &str| {
        s.groups
            .iter()
            .find(|x| x.group == g && x.probe == p)
            .unwrap_or_else(|| panic!("{g} @ {p}"))
    };
    let names: Vec<&str> = s
        .groups
        .iter()
        .filter(|g| g.probe == "Q2_K")
        .map(|g| g.group.as_str())
        .collect();
    assert_eq!(names.len(), 22);
    let mut wins = 0;
    for g in &names {
        let (lo, hi) = (probe(g, "Q2_K"), probe(g, "Q6_K"));
        assert!(lo.weight_error > hi.weight_error, "{g}");
        assert!(lo.delta_kld >= 0.0 && hi.delta_kld >= 0.0 && lo.stderr >= 0.0);
        wins += usize::from(lo.delta_kld > hi.delta_kld);
    }
    assert!(
        wins == names.len(),
        "Q2_K probes above Q6_K probes in {wins} of {} groups",
        names.len()
    );
}

/// A tiny scan of `m` (Q2_K probes) and a Q2_K file of it, in `dir`: the inputs of an
/// in-context scan.
fn scan_and_quant(m: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let sens = dir.join("m.sens");
    let args = tiny_with(
        &calib(),
        &sens,
        &[("--candidates", "q2_k,q4_k,q8_0"), ("--probe", "q2_k")],
    );
    ok(measure(m, &args, &[]), "scan");
    let quant = dir.join("q2_k.gguf");
    ok(
        dynquant(args!["quantize", m, quant, "--recipe", "q2_k", "--quiet"]),
        "quantize",
    );
    (sens, quant)
}

/// `measure context` of `quant` on top of `sens`, 64-token chunks, then `more`.
fn context_args(
    m: &Path,
    quant: &Path,
    sens: &Path,
    text: &Path,
    out: &Path,
    more: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["measure".into(), "context".into(), m.into()];
    v.extend([quant.into(), "--sensitivity".into(), sens.into()]);
    v.extend(["--text".into(), text.into(), "-o".into(), out.into()]);
    v.extend(["--ctx", "64", "-q"].map(Into::into));
    v.extend(more.iter().map(Into::into));
    v
}

/// `dynquant ARGS`.
fn run_args(args: &[std::ffi::OsString]) -> std::process::Output {
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    dynquant(&refs)
}

/// `measure context`: the groups' savings inside a Q2_K quant of the model, added to the scan
/// (every other part of it unchanged), the same whatever the thread count; the allocator then
/// says it uses them; bad input fails with one line and writes nothing.
#[test]
fn in_context_scan_of_a_quantized_file() {
    let Some(o) = oracle() else { return };
    let m = model(&o);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sens, quant) = scan_and_quant(&m, dir.path());
    let context = |out: &Path, quant: &Path, sens: &Path, text: &Path, threads: &str| {
        run_args(&context_args(&m, quant, sens, text, out, &["-t", threads]))
    };
    let one = dir.path().join("one.sens");
    let two = dir.path().join("two.sens");
    ok(
        context(&one, &quant, &sens, &calib(), "1"),
        "context, 1 thread",
    );
    ok(
        context(&two, &quant, &sens, &calib(), "2"),
        "context, 2 threads",
    );
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&two).unwrap(),
        "the same file on one and two threads"
    );
    assert!(
        !dynquant_measure::partial_path(&one).exists(),
        "journal removed"
    );

    let base = Sensitivity::parse(&std::fs::read_to_string(&sens).unwrap()).expect("parses");
    let mut with = Sensitivity::parse(&std::fs::read_to_string(&one).unwrap()).expect("parses");
    let scans = std::mem::take(&mut with.context);
    assert_eq!(with, base, "the rest of the scan is kept as it was");
    assert_eq!(scans.len(), 1);
    let c = &scans[0];
    let groups: Vec<&str> = c.probes.iter().map(|p| p.group.as_str()).collect();
    let mut scanned: Vec<&str> = base.groups.iter().map(|g| g.group.as_str()).collect();
    scanned.dedup();
    assert_eq!(
        groups, scanned,
        "one in-context probe per group, in scan order"
    );
    let experts = c
        .probes
        .iter()
        .find(|p| p.group == "blk.1.ffn_exps")
        .unwrap();
    assert_eq!(experts.tensors.len(), 3);
    assert!(
        experts.stored.iter().all(|t| t.starts_with('Q')),
        "{:?}",
        experts.stored
    );
    assert_eq!(c.ctx, 64);
    assert!(
        c.kld > 0.0 && c.stderr > 0.0,
        "the Q2_K file differs from the model"
    );
    // Setting a group back to the model's weights helps in most groups, and never by more
    // than the file's whole KLD.
    let helped = c.probes.iter().filter(|p| p.saved > 0.0).count();
    assert!(
        helped * 3 >= c.probes.len() * 2,
        "{helped} of {} groups",
        c.probes.len()
    );
    assert!(c.probes.iter().all(|p| p.saved < c.kld && p.stderr >= 0.0));

    let plan = dynquant(args![
        "plan",
        m,
        "--target-size",
        "40MiB",
        "--sensitivity",
        one,
        "--candidates",
        "q2_k,q4_k,q8_0"
    ]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    ok(plan, "plan with the in-context scan");
    assert!(text.contains("in-context factors of 22 groups"), "{text}");

    // Measuring the same file again on top replaces its scan; another file's is added.
    let again = dir.path().join("again.sens");
    ok(
        context(&again, &quant, &one, &calib(), "2"),
        "context on top of itself",
    );
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&one).unwrap());
    let q3 = dir.path().join("q3_k_m.gguf");
    ok(
        dynquant(args!["quantize", m, q3, "--recipe", "q3_k_m", "--quiet"]),
        "quantize q3_k_m",
    );
    let both = dir.path().join("both.sens");
    ok(
        context(&both, &q3, &one, &calib(), "2"),
        "context of a second file",
    );
    let both = Sensitivity::parse(&std::fs::read_to_string(&both).unwrap()).expect("parses");
    assert_eq!(both.context.len(), 2);
    assert_eq!(both.context[0], *c, "the first file's scan is kept");
    assert!(
        both.context[1].kld < c.kld,
        "Q3_K_M is closer to the model than Q2_K"
    );

    // Bad input: one line, nothing written.
    let out = dir.path().join("bad.sens");
    let other_model = o.test_models().dir.join("smollm2-768.gguf");
    let wiki = shared_dir().join("data/text/wiki.test.raw");
    for (q, s, t, want) in [
        (&quant, &quant, &calib(), "reading"),
        (&other_model, &sens, &calib(), "in the quantized file"),
        (&m, &sens, &calib(), "the model itself"),
        (&quant, &sens, &wiki, "another calibration text"),
    ] {
        let e = clean_failure(context(&out, q, s, t, "2"), want);
        assert!(e.contains(want), "{want}: {e}");
        assert!(!out.exists() && !dynquant_measure::partial_path(&out).exists());
    }
}

/// `measure context --shard`: shards merged equal one whole run byte for byte (and shards of
/// different bases do not join); a scan killed with SIGKILL resumes without redoing groups.
#[test]
fn in_context_shards_merge_and_a_killed_scan_resumes() {
    let Some(o) = oracle() else { return };
    let m = model(&o);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sens, quant) = scan_and_quant(&m, dir.path());
    let whole = dir.path().join("whole.sens");
    ok(
        run_args(&context_args(
            &m,
            &quant,
            &sens,
            &calib(),
            &whole,
            &["-t", "1"],
        )),
        "whole in-context scan",
    );

    // three shards on two threads, merged out of order
    let parts: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("part{i}.ctx"));
            let shard = format!("{i}/3");
            ok(
                run_args(&context_args(
                    &m,
                    &quant,
                    &sens,
                    &calib(),
                    &p,
                    &["-t", "2", "--shard", &shard],
                )),
                "in-context shard",
            );
            p
        })
        .collect();
    let merged = dir.path().join("merged.sens");
    ok(
        dynquant(args![
            "measure", "merge", parts[2], parts[0], parts[1], "-o", merged
        ]),
        "merge",
    );
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&whole).unwrap(),
        "three in-context shards merged == one whole run"
    );
    // a shard extending another sensitivity file (the same key and settings) does not join
    let other = dir.path().join("other.ctx");
    ok(
        run_args(&context_args(
            &m,
            &quant,
            &whole,
            &calib(),
            &other,
            &["--shard", "1/3"],
        )),
        "shard on top of another file",
    );
    let bad = dir.path().join("bad.sens");
    let e = clean_failure(
        dynquant(args![
            "measure", "merge", parts[0], other, parts[2], "-o", bad
        ]),
        "merge of shards extending different files",
    );
    assert!(e.contains("different sensitivity files"), "{e}");
    let e = clean_failure(
        dynquant(args!["measure", "merge", parts[0], parts[1], "-o", bad]),
        "merge of two of three shards",
    );
    assert!(e.contains("missing") && e.contains("2/3"), "{e}");
    assert!(!bad.exists(), "a failed merge writes nothing");

    // killed with SIGKILL after a few groups, then resumed
    let out = dir.path().join("killed.sens");
    let args = context_args(&m, &quant, &sens, &calib(), &out, &["-t", "1"]);
    let finished = kill_after(&args, &out, 3);
    assert!((3..22).contains(&finished), "{finished} groups finished");
    let rerun = run_args(&context_args(
        &m,
        &quant,
        &sens,
        &calib(),
        &out,
        &["-t", "2"],
    ));
    check_resumed(rerun, " groups computed", 22 - finished, &out, &whole);
}
