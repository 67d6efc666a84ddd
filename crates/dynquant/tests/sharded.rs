//! Sharded quantization: N workers as separate processes, the way a Slurm job array or a
//! Kubernetes Indexed Job runs them, write the same split set as one run, byte for byte; a
//! killed worker's rerun completes the set and keeps what was finished; `verify` finds a
//! flipped byte and a missing shard.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{clean_failure, dynquant, ok, oracle};

/// The shard files (final names only) under `dir` whose names start with `stem`, sorted.
fn shard_files(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(stem) && n.ends_with(".gguf") && n.contains("-of-")
        })
        .collect();
    v.sort();
    v
}

/// Every file under `dir`, by name, with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The worker command line the cluster recipes run (`deploy/`), minus the binary:
/// `quantize IN OUT_PREFIX <common> --shard I/N`.
fn worker_args(
    input: &Path,
    prefix: &Path,
    common: &[&str],
    shard: Option<(usize, usize)>,
) -> Vec<std::ffi::OsString> {
    worker_command(
        input,
        prefix,
        common,
        shard.map(|(i, n)| format!("{i}/{n}")),
    )
}

fn worker_command(
    input: &Path,
    prefix: &Path,
    common: &[&str],
    shard: Option<String>,
) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["quantize".into(), input.into(), prefix.into()];
    v.extend(common.iter().map(Into::into));
    match shard {
        Some(s) => {
            v.push("--shard".into());
            v.push(s.into());
        }
        None => v.push("--checksums".into()),
    }
    v
}

/// The flags after `IN OUT_PREFIX` of the smollm2 worker test, with the values the cluster
/// recipes take from their environment.
const RECIPE_FLAGS: [&str; 6] = [
    "--recipe",
    "$RECIPE",
    "--imatrix",
    "$IMATRIX",
    "--split-max-size",
    "$SPLIT_MAX_SIZE",
];

fn spawn(args: &[std::ffi::OsString]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dynquant"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dynquant")
}

/// One `--checksums` run into `one/`, N concurrent worker processes into `workers/`: the
/// two folders hold the same files, byte for byte, and the set verifies.
fn workers_equal_one_run(input: &Path, common: &[&str], workers: usize, min_shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (one, many) = (dir.path().join("one"), dir.path().join("workers"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&many).unwrap();
    let whole = worker_args(input, &one.join("m"), common, None);
    let whole: Vec<&std::ffi::OsStr> = whole.iter().map(|s| s.as_os_str()).collect();
    ok(dynquant(&whole), "one run");
    let children: Vec<Child> = (0..workers)
        .map(|i| {
            spawn(&worker_args(
                input,
                &many.join("m"),
                common,
                Some((i, workers)),
            ))
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        ok(
            c.wait_with_output().unwrap(),
            &format!("worker {i}/{workers}"),
        );
    }
    let (a, b) = (contents(&one), contents(&many));
    assert!(a.len() >= min_shards, "{} shards", a.len());
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "file names"
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between one run and the workers");
    }
    let first = shard_files(&many, "m")[0].clone();
    let out = ok(dynquant(args!["verify", first]), "verify");
    assert!(
        out.contains("every tensor matches its checksum"),
        "verify: {out}"
    );
}

#[test]
fn three_workers_write_smollm2_exactly_as_one_run() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let im = m.smollm2_768_imatrix();
    let im = im.to_str().unwrap();
    // The cluster recipes' command (see cluster_recipes_run_the_command_tested_here) with
    // this test's values.
    let flags: Vec<&str> = RECIPE_FLAGS
        .iter()
        .map(|f| match *f {
            "$RECIPE" => "q4_0",
            "$IMATRIX" => im,
            "$SPLIT_MAX_SIZE" => "20M",
            other => other,
        })
        .collect();
    workers_equal_one_run(&m.smollm2_768(), &flags, 3, 4);
}

#[test]
fn three_workers_write_synthetic_deepseek2_exactly_as_one_run() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    workers_equal_one_run(
        &m.deepseek2_mla(),
        &["--recipe", "q8_0", "--split-max-size", "12M"],
        3,
        4,
    );
}

#[test]
fn checksummed_split_set_loads_in_llama_cpp_like_the_plain_file() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.gguf");
    ok(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            plain,
            "--recipe",
            "q8_0",
            "--quiet"
        ]),
        "plain",
    );
    let prefix = dir.path().join("m");
    for i in 0..2 {
        ok(
            dynquant(args![
                "quantize",
                m.smollm2_768(),
                prefix,
                "--recipe",
                "q8_0",
                "--split-max-size",
                "40M",
                "--shard",
                format!("{i}/2"),
                "--quiet"
            ]),
            "worker",
        );
    }
    let first = shard_files(dir.path(), "m-")[0].clone();
    let prompts = ["Once upon a time"];
    assert_eq!(
        o.greedy_tokens(&first, 8, &prompts),
        o.greedy_tokens(&plain, 8, &prompts)
    );
    // Merged, the checksums go (they described the shards) and the plain file comes back.
    let merged = dir.path().join("merged.gguf");
    ok(dynquant(args!["merge", first, merged]), "merge");
    assert!(std::fs::read(&merged).unwrap() == std::fs::read(&plain).unwrap());
}

#[test]
fn a_killed_worker_reruns_to_a_correct_set_keeping_finished_shards() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let im = m.smollm2_768_imatrix();
    let common = [
        "--recipe",
        "q4_k_m",
        "--imatrix",
        im.to_str().unwrap(),
        "--split-max-size",
        "8M",
        "--threads",
        "1",
    ];
    let dir = tempfile::tempdir().unwrap();
    let (one, many) = (dir.path().join("one"), dir.path().join("workers"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&many).unwrap();
    let prefix = many.join("m");
    // Worker 0 of 2, killed (SIGKILL: no handler runs) once its first shard is in place.
    let mut child = spawn(&worker_args(
        &m.smollm2_768(),
        &prefix,
        &common,
        Some((0, 2)),
    ));
    for _ in 0..60_000 {
        if !shard_files(&many, "m-").is_empty() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed_mid_run = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    let finished_before_kill = shard_files(&many, "m-");
    assert!(!finished_before_kill.is_empty(), "no shard was finished");
    let kept: Vec<(PathBuf, std::time::SystemTime)> = finished_before_kill
        .iter()
        .map(|p| (p.clone(), std::fs::metadata(p).unwrap().modified().unwrap()))
        .collect();

    // Both workers run (again): the killed one skips what it had finished.
    let rerun = ok(
        Command::new(env!("CARGO_BIN_EXE_dynquant"))
            .args(
                worker_args(&m.smollm2_768(), &prefix, &common, Some((0, 2)))
                    .into_iter()
                    .filter(|a| a != "--quiet"),
            )
            .output()
            .unwrap(),
        "rerun of worker 0",
    );
    for (p, _) in &kept {
        assert!(
            rerun.contains(&format!("kept {}", p.display())),
            "{} not skipped: {rerun}",
            p.display()
        );
    }
    for (p, t) in &kept {
        assert_eq!(std::fs::metadata(p).unwrap().modified().unwrap(), *t);
    }
    let w1 = worker_args(&m.smollm2_768(), &prefix, &common, Some((1, 2)));
    let w1: Vec<&std::ffi::OsStr> = w1.iter().map(|s| s.as_os_str()).collect();
    ok(dynquant(&w1), "worker 1");
    let whole = worker_args(&m.smollm2_768(), &one.join("m"), &common, None);
    let whole: Vec<&std::ffi::OsStr> = whole.iter().map(|s| s.as_os_str()).collect();
    ok(dynquant(&whole), "one run");
    // No temporary of the killed run is left, and the set is the one run's.
    let (a, b) = (contents(&one), contents(&many));
    assert!(a.len() >= 4, "{} shards", a.len());
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs after the rerun");
    }
    eprintln!(
        "killed mid-run: {killed_mid_run}; {} shards were finished at the kill",
        kept.len()
    );
}

#[test]
fn verify_names_the_flipped_tensor_and_the_missing_shard() {
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("m");
    ok(
        dynquant(args![
            "quantize",
            m.smollm2_768(),
            prefix,
            "--recipe",
            "q8_0",
            "--split-max-size",
            "30M",
            "--checksums",
            "--quiet"
        ]),
        "quantize",
    );
    let shards = shard_files(dir.path(), "m-");
    assert!(shards.len() >= 4);
    ok(dynquant(args!["verify", shards[0]]), "verify intact");

    // One bit of a tensor of the third shard flipped: verify names that tensor.
    let victim = &shards[2];
    let file = dynquant_gguf::GgufFile::open_pread(victim).unwrap();
    let t = &file.header().tensors[1];
    let at = file.header().data_offset + t.offset + t.n_bytes / 2;
    let name = t.name.clone();
    drop(file);
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[at as usize] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    let err = clean_failure(dynquant(args!["verify", shards[0]]), "verify flipped");
    assert!(
        err.contains(&format!("tensor {name}:")) && err.contains(&*victim.to_string_lossy()),
        "{err}"
    );
    bytes[at as usize] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    ok(dynquant(args!["verify", shards[0]]), "verify restored");

    // A shard gone: verify names it.
    let gone = shards.last().unwrap();
    std::fs::remove_file(gone).unwrap();
    let err = clean_failure(dynquant(args!["verify", shards[0]]), "verify missing");
    assert!(
        err.contains("is missing") && err.contains(&*gone.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn imatrix_in_three_chunk_ranges_merges_to_one_run_and_llama_cpp_takes_it() {
    use dynquant_gguf::imatrix::Imatrix;
    let Some(o) = oracle() else { return };
    let m = o.test_models();
    let model = m.smollm2_768();
    let text = dynquant_testkit::build::calibration_text();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.gguf");
    let run = |out: &Path, range: Option<&str>| {
        let mut a: Vec<std::ffi::OsString> = vec![
            "imatrix".into(),
            model.clone().into(),
            "--text".into(),
            text.clone().into(),
            "-o".into(),
            out.into(),
            "--ctx".into(),
            "64".into(),
        ];
        match range {
            Some(r) => a.extend(["--chunk-range".into(), r.into()]),
            None => a.extend(["--chunks".into(), "20".into()]),
        }
        let a: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        ok(dynquant(&a), "imatrix");
    };
    run(&whole, None);
    let mut parts = Vec::new();
    for r in ["0..7", "7..13", "13..20"] {
        let p = dir.path().join(format!("part{r}.gguf"));
        run(&p, Some(r));
        parts.push(p);
    }
    let merged = dir.path().join("merged.gguf");
    let mut a: Vec<&std::ffi::OsStr> = vec!["imatrix".as_ref(), "merge".as_ref()];
    a.extend(parts.iter().map(|p| p.as_os_str()));
    a.extend(["-o".as_ref(), merged.as_os_str()]);
    ok(dynquant(&a), "imatrix merge");

    let (w, g) = (
        Imatrix::read(&whole).unwrap(),
        Imatrix::read(&merged).unwrap(),
    );
    assert_eq!((w.chunk_count, w.chunk_size), (g.chunk_count, g.chunk_size));
    assert_eq!(w.datasets, g.datasets);
    assert_eq!(w.entries.len(), g.entries.len());
    let (mut worst, mut exact) = (0f64, 0usize);
    for (x, y) in w.entries.iter().zip(&g.entries) {
        assert_eq!((&x.name, x.n_per_mat), (&y.name, y.n_per_mat));
        assert_eq!(x.counts, y.counts, "{}", x.name);
        for (&p, &q) in x.in_sum2.iter().zip(&y.in_sum2) {
            let rel = (f64::from(p) - f64::from(q)).abs() / f64::from(p).abs().max(1e-30);
            worst = worst.max(rel);
            exact += usize::from(p == q);
        }
    }
    let total: usize = w.entries.iter().map(|e| e.in_sum2.len()).sum();
    eprintln!(
        "merged vs whole: worst relative difference {worst:e}, {exact} of {total} sums exact"
    );
    assert!(worst <= 1e-6, "worst relative difference {worst:e}");

    // llama.cpp's quantizer accepts the merged imatrix (a wrong shape is an error there).
    if std::env::var_os("LLAMA_LIB").is_some() {
        let lib = dynquant_testkit::llama_quantize::LlamaLib::from_env().expect("libllama");
        let mut p = lib.default_params().expect("params");
        p.nthread = 2;
        p.ftype = 15; // LLAMA_FTYPE_MOSTLY_Q4_K_M
        lib.quantize(&model, &dir.path().join("q.gguf"), p, Some(&g))
            .expect("llama.cpp quantize with the merged imatrix");
    }
}

/// `bash -n` of the Slurm script; the Kubernetes Job parsed and checked against the
/// Indexed Job fields it relies on; and the dynquant command line of both, tokenized as the
/// shell does, equal to the worker command the tests above run (placeholders for values).
#[test]
fn cluster_recipes_run_the_command_tested_here() {
    let root = common::repo_root();
    let sbatch = root.join("deploy/slurm/quantize.sbatch");
    let job = root.join("deploy/k8s/quantize-job.yaml");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&sbatch)
        .status()
        .unwrap();
    assert!(status.success(), "bash -n {}", sbatch.display());
    let python = std::env::var("DYNQUANT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, shlex, sys, yaml
sb = [l for l in open(sys.argv[1]) if l.startswith("dynquant ")]
assert len(sb) == 1, sb
docs = list(yaml.safe_load_all(open(sys.argv[2])))
assert len(docs) == 1
j = docs[0]
assert j["apiVersion"] == "batch/v1" and j["kind"] == "Job", j
spec = j["spec"]
assert spec["completionMode"] == "Indexed"
c = spec["template"]["spec"]["containers"]
assert len(c) == 1 and spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
env = {e["name"]: e["value"] for e in c[0]["env"]}
assert int(env["N"]) == spec["completions"] == spec["parallelism"], (env["N"], spec)
cmd = c[0]["command"]
assert cmd[:2] == ["/bin/sh", "-c"] and len(cmd) == 3, cmd
print(json.dumps({"slurm": shlex.split(sb[0]), "k8s": shlex.split(cmd[2])}))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&sbatch)
        .arg(&job)
        .output()
        .expect("python3 with PyYAML");
    let json = ok(out, "checking the recipes");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tested: Vec<String> = std::iter::once("dynquant".to_string())
        .chain(
            worker_command(
                Path::new("$MODEL"),
                Path::new("$OUT_PREFIX"),
                &RECIPE_FLAGS,
                Some("$I/$N".into()),
            )
            .into_iter()
            .map(|s| s.into_string().unwrap()),
        )
        .collect();
    for (which, index_var) in [("slurm", "$I"), ("k8s", "$JOB_COMPLETION_INDEX")] {
        let got: Vec<String> = v[which]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().replace(index_var, "$I"))
            .collect();
        assert_eq!(got, tested, "{which}");
    }
}
