//! llama.cpp's mixes against real llama-quantize: node-llama-cpp's prebuilt `libllama`
//! (llama.cpp 80fb11ac), loaded with libloading. Needs `LLAMA_LIB` and the test models (see
//! `.oracle/env.sh`); fails loudly without them unless `DYNQUANT_SKIP_ORACLES=1`.
//!
//! Oracle: `llama_model_quantize` with `dry_run = true` runs llama.cpp's whole type selection
//! (real model loading, hparams, loader order, counters, fallback) without quantizing, and logs
//! each tensor's type; the log is captured with `llama_log_set`. Every ftype is compared twice:
//! without an imatrix, and with one, as `llama-quantize --imatrix` passes it (llama.cpp sets
//! `qs.has_imatrix` when `params->imatrix` is given; the model's own imatrix from the test
//! models, or for a model without one a neutral imatrix of ones for every matrix llama.cpp
//! may quantize), so the imatrix branches of the mixture code are checked too. Our side plans
//! through [`Preset::plan`], the path `plan` and `quantize` take. A few real quantizations to
//! a temporary GGUF check that the dry-run types are the written ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use dynquant_gguf::imatrix::{Imatrix, ImatrixEntry};
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{Access, GgufModel};
use dynquant_plan::{keep_reason, Ftype, Inventory, PlanOptions, Preset};
use dynquant_testkit::llama_quantize::{LlamaLib, QuantizeParams};

/// The tests take turns (one llama.cpp run at a time).
static SERIAL: Mutex<()> = Mutex::new(());

struct Llama {
    lib: LlamaLib,
}

impl Llama {
    fn load() -> Option<Llama> {
        if std::env::var_os("LLAMA_LIB").is_none() {
            if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") {
                return None;
            }
            panic!("LLAMA_LIB is not set: source .oracle/env.sh (scripts/prepare-oracles.sh)");
        }
        Some(Llama {
            lib: LlamaLib::from_env().expect("load libllama"),
        })
    }

    fn default_params(&self) -> QuantizeParams {
        self.lib.default_params().unwrap()
    }

    /// Runs `llama_model_quantize`; returns the captured log, panicking on failure.
    fn quantize(
        &self,
        input: &Path,
        output: &Path,
        p: &QuantizeParams,
        imatrix: Option<&Imatrix>,
    ) -> String {
        let log = self
            .lib
            .quantize(input, output, *p, imatrix)
            .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        // llama.cpp takes its imatrix branches exactly when it was given one.
        assert_eq!(
            log.contains("have importance matrix data"),
            imatrix.is_some(),
            "{}: imatrix not seen as given",
            input.display()
        );
        log
    }

    /// llama.cpp's type per tensor for `ftype` (dry run).
    fn types(
        &self,
        model: &Path,
        ftype: Ftype,
        imatrix: Option<&Imatrix>,
    ) -> BTreeMap<String, GgmlType> {
        let mut p = self.default_params();
        p.nthread = 1;
        p.ftype = ftype.id() as i32;
        p.dry_run = true;
        let log = self.quantize(model, Path::new("/nonexistent/dry-run.gguf"), &p, imatrix);
        parse_dry_run(&log)
    }
}

/// `[   1/  70] output.weight   - [   512,  49152,      1,      1], type =    f16, size =
/// 48.00 MiB ->    16.50 MiB (q5_K)`; no `(type)` when the type is unchanged.
fn parse_dry_run(log: &str) -> BTreeMap<String, GgmlType> {
    let re = regex::Regex::new(
        r"^\[\s*\d+/\s*\d+\] (\S+)\s+- \[[^\]]*\], type =\s*(\S+), size =[^(]*(?:\((\S+)\))?\s*$",
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for line in log.lines() {
        if let Some(c) = re.captures(line) {
            let ty = c.get(3).unwrap_or_else(|| c.get(2).unwrap()).as_str();
            let ty: GgmlType = ty.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            out.insert(c[1].to_string(), ty);
        }
    }
    out
}

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DYNQUANT_ORACLE")
        .map(|d| PathBuf::from(d).join("test-models"))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.oracle/test-models"));
    dir.is_dir().then_some(dir)
}

const MODELS: &[&str] = &[
    "smollm2-768.gguf",
    "smollm2-768-moe.gguf",
    "synth-deepseek2-mla.gguf",
    "synth-deepseek2-legacy.gguf",
    "synth-qwen3moe.gguf",
    "smollm2-f16.gguf",
];

fn inventory(path: &Path) -> Inventory {
    Inventory::from_gguf(&GgufModel::open(path, Access::Pread).unwrap())
}

/// The imatrix `llama-quantize --imatrix` would pass for `model`: the test models' own
/// (`<model>.imatrix.gguf`), or a neutral one (weights 1 for every matrix llama.cpp may
/// quantize, one vector per expert) for a model that has none.
fn imatrix_for(model: &Path, inv: &Inventory) -> Imatrix {
    let own = model.with_extension("imatrix.gguf");
    if own.is_file() {
        return Imatrix::read(&own).unwrap();
    }
    let entries = inv
        .tensors
        .iter()
        .filter(|t| keep_reason(&t.name, &t.shape).is_none())
        .map(|t| {
            let n_mat = t.shape.get(2).copied().unwrap_or(1) as usize;
            ImatrixEntry {
                name: t.name.clone(),
                n_per_mat: t.shape[0] as usize,
                in_sum2: vec![1.0; t.shape[0] as usize * n_mat],
                counts: vec![1.0; n_mat],
            }
        })
        .collect();
    Imatrix {
        datasets: vec!["neutral".into()],
        chunk_count: 1,
        chunk_size: 1,
        entries,
    }
}

/// Our plan's types, and the differences from `oracle` (one line each).
fn compare(
    inv: &Inventory,
    ftype: Ftype,
    has_imatrix: bool,
    oracle: &BTreeMap<String, GgmlType>,
) -> Vec<String> {
    let opts = PlanOptions {
        has_imatrix,
        ..PlanOptions::default()
    };
    let plan = match Preset::Mix(ftype).plan(inv, &opts) {
        Ok(p) => p,
        Err(e) => return vec![format!("planning failed: {e}")],
    };
    let mut diffs = Vec::new();
    if plan.tensors.len() != oracle.len() {
        diffs.push(format!(
            "{} planned tensors vs {} in llama.cpp's output",
            plan.tensors.len(),
            oracle.len()
        ));
    }
    for t in &plan.tensors {
        match oracle.get(&t.name) {
            Some(&ty) if ty == t.target => {}
            Some(&ty) => diffs.push(format!(
                "{}: ours {} (requested {}, {}), llama.cpp {}",
                t.name, t.target, t.requested, t.why, ty
            )),
            None => diffs.push(format!("{}: not in llama.cpp's output", t.name)),
        }
    }
    diffs
}

#[test]
fn mixes_match_llama_quantize_dry_run() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(llama) = Llama::load() else { return };
    let dir = models_dir().expect("test models: run scripts/prepare-oracles.sh");
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut summary = String::new();
    for name in MODELS {
        let path = dir.join(name);
        let inv = inventory(&path);
        let imatrix = imatrix_for(&path, &inv);
        let mut line = format!("{name:<28}");
        for &ftype in Ftype::ALL {
            for has_imatrix in [false, true] {
                let oracle = llama.types(&path, ftype, has_imatrix.then_some(&imatrix));
                let diffs = compare(&inv, ftype, has_imatrix, &oracle);
                if !has_imatrix {
                    line.push_str(&format!(
                        " {}:{}",
                        ftype.name(),
                        if diffs.is_empty() {
                            "ok".to_string()
                        } else {
                            diffs.len().to_string()
                        }
                    ));
                }
                for d in diffs {
                    failures.push(format!(
                        "{name} {} (imatrix {has_imatrix}): {d}",
                        ftype.name()
                    ));
                }
            }
        }
        summary.push_str(&format!("{line} [{} tensors]\n", inv.tensors.len()));
    }
    eprintln!("{summary}dry runs: {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} differences from llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn dry_run_types_are_the_written_types() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(llama) = Llama::load() else { return };
    let dir = models_dir().expect("test models: run scripts/prepare-oracles.sh");
    let tmp = std::env::temp_dir().join(format!("dynquant-mix-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (model, ftype) in [
        ("smollm2-768.gguf", Ftype::Q4_K_M),
        ("smollm2-f16.gguf", Ftype::Q8_0),
        ("synth-qwen3moe.gguf", Ftype::Q3_K_M),
    ] {
        let start = Instant::now();
        let input = dir.join(model);
        let out = tmp.join(format!("{model}.{}.gguf", ftype.name()));
        let mut p = llama.default_params();
        p.nthread = 1;
        p.ftype = ftype.id() as i32;
        llama.quantize(&input, &out, &p, None);
        let written: BTreeMap<String, GgmlType> = GgufModel::open(&out, Access::Pread)
            .unwrap()
            .tensors()
            .map(|t| (t.info.name.clone(), t.info.ggml_type))
            .collect();
        std::fs::remove_file(&out).ok();
        assert_eq!(
            written,
            llama.types(&input, ftype, None),
            "{model} {}",
            ftype.name()
        );
        let diffs = compare(&inventory(&input), ftype, false, &written);
        assert!(
            diffs.is_empty(),
            "{model} {}:\n{}",
            ftype.name(),
            diffs.join("\n")
        );
        eprintln!(
            "{model} {}: {} tensors written and planned alike ({:.1} s)",
            ftype.name(),
            written.len(),
            start.elapsed().as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}
