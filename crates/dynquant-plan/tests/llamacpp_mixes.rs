//! llama.cpp's mixes against real llama-quantize: node-llama-cpp's prebuilt `libllama`
//! (llama.cpp 80fb11ac), loaded with libloading. Needs `LLAMA_LIB` and the test models (see
//! `.oracle/env.sh`); fails loudly without them unless `DYNQUANT_SKIP_ORACLES=1`.
//!
//! Oracle: `llama_model_quantize` with `dry_run = true` runs llama.cpp's whole type selection
//! (real model loading, hparams, loader order, counters, fallback) without quantizing, and logs
//! each tensor's type; the log is captured with `llama_log_set`. `has_imatrix` is set by
//! passing an (empty) imatrix list, so both paths are compared for every ftype, including
//! those that need an imatrix to actually quantize. A few real quantizations to a temporary
//! GGUF check that the dry-run types are the written ones.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use dynquant_core::gguf::{Access, GgufModel};
use dynquant_core::types::GgmlType;
use dynquant_plan::inventory::Inventory;
use dynquant_plan::llamacpp::{plan_llamacpp_with, Ftype, MixOptions};
use dynquant_plan::PlanOptions;

/// `struct llama_model_quantize_params` (`include/llama.h` @80fb11ac, `oracles.md` §6).
#[repr(C)]
#[derive(Clone, Copy)]
struct QuantizeParams {
    nthread: i32,
    ftype: i32,
    output_tensor_type: i32,
    token_embedding_type: i32,
    allow_requantize: bool,
    quantize_output_tensor: bool,
    only_copy: bool,
    pure: bool,
    keep_split: bool,
    dry_run: bool,
    imatrix: *const ImatrixEntry,
    kv_overrides: *const c_void,
    tt_overrides: *const c_void,
    prune_layers: *const i32,
    max_buf_size: usize,
}

/// `struct llama_model_imatrix_data`.
#[repr(C)]
struct ImatrixEntry {
    name: *const c_char,
    data: *const f32,
    size: usize,
}

static LOG: Mutex<String> = Mutex::new(String::new());

/// The log is process-global: the tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn log_cb(_level: i32, text: *const c_char, _ud: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    LOG.lock().unwrap().push_str(&s);
}

struct Llama {
    lib: libloading::Library,
}

impl Llama {
    fn load() -> Option<Llama> {
        let Some(path) = std::env::var_os("LLAMA_LIB") else {
            if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") {
                return None;
            }
            panic!("LLAMA_LIB is not set: source .oracle/env.sh (scripts/prepare-oracles.sh)");
        };
        // SAFETY: loading libllama runs only its static initialisers.
        let lib = unsafe { libloading::Library::new(path) }.expect("load libllama");
        // SAFETY: documented C API signatures (include/llama.h).
        unsafe {
            let set: libloading::Symbol<
                unsafe extern "C" fn(extern "C" fn(i32, *const c_char, *mut c_void), *mut c_void),
            > = lib.get(b"llama_log_set").unwrap();
            set(log_cb, std::ptr::null_mut());
            let init: libloading::Symbol<unsafe extern "C" fn()> =
                lib.get(b"llama_backend_init").unwrap();
            init();
        }
        Some(Llama { lib })
    }

    fn default_params(&self) -> QuantizeParams {
        // SAFETY: returns the struct by value; layout per llama.h.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn() -> QuantizeParams> = self
                .lib
                .get(b"llama_model_quantize_default_params")
                .unwrap();
            f()
        }
    }

    /// Runs `llama_model_quantize`; returns the rc and the captured log.
    fn quantize(&self, input: &Path, output: &Path, p: &QuantizeParams) -> (u32, String) {
        let inp = CString::new(input.to_str().unwrap()).unwrap();
        let out = CString::new(output.to_str().unwrap()).unwrap();
        LOG.lock().unwrap().clear();
        // SAFETY: valid paths and params (pointers null or to live terminated lists).
        let rc = unsafe {
            let f: libloading::Symbol<
                unsafe extern "C" fn(*const c_char, *const c_char, *const QuantizeParams) -> u32,
            > = self.lib.get(b"llama_model_quantize").unwrap();
            f(inp.as_ptr(), out.as_ptr(), p)
        };
        (rc, std::mem::take(&mut *LOG.lock().unwrap()))
    }

    /// llama.cpp's type per tensor for `ftype` (dry run).
    fn types(&self, model: &Path, ftype: Ftype, has_imatrix: bool) -> BTreeMap<String, GgmlType> {
        let empty = [ImatrixEntry {
            name: std::ptr::null(),
            data: std::ptr::null(),
            size: 0,
        }];
        let mut p = self.default_params();
        p.nthread = 1;
        p.ftype = ftype.id() as i32;
        p.dry_run = true;
        if has_imatrix {
            p.imatrix = empty.as_ptr();
        }
        let (rc, log) = self.quantize(model, Path::new("/nonexistent/dry-run.gguf"), &p);
        assert_eq!(
            rc,
            0,
            "{} {}: llama_model_quantize failed:\n{log}",
            model.display(),
            ftype.name()
        );
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

/// Our plan's types, and the differences from `oracle` (one line each).
fn compare(
    inv: &Inventory,
    ftype: Ftype,
    has_imatrix: bool,
    oracle: &BTreeMap<String, GgmlType>,
) -> Vec<String> {
    let mix = MixOptions {
        has_imatrix,
        ..MixOptions::default()
    };
    let plan = match plan_llamacpp_with(inv, ftype, &PlanOptions::default(), mix) {
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
        let mut line = format!("{name:<28}");
        for &ftype in Ftype::ALL {
            for has_imatrix in [false, true] {
                let oracle = llama.types(&path, ftype, has_imatrix);
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
        let (rc, log) = llama.quantize(&input, &out, &p);
        assert_eq!(rc, 0, "{model} {}: {log}", ftype.name());
        let written: BTreeMap<String, GgmlType> = GgufModel::open(&out, Access::Pread)
            .unwrap()
            .tensors()
            .map(|t| (t.info.name.clone(), t.info.ggml_type))
            .collect();
        std::fs::remove_file(&out).ok();
        assert_eq!(
            written,
            llama.types(&input, ftype, false),
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
