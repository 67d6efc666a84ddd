//! Real llama.cpp quantization as an oracle: `llama_model_quantize` from node-llama-cpp's
//! prebuilt `libllama` (llama.cpp 80fb11ac), loaded at run time with libloading.
//!
//! Used by tests (llama.cpp's type choices through a dry run, reference files for quality
//! comparisons) and by the benchmark scripts (`dynquant-dev llama-quantize`). The library's
//! log goes to a process-global buffer, so calls are serialized.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::sync::Mutex;

use dynquant_gguf::imatrix::Imatrix;

/// `struct llama_model_quantize_params` (`include/llama.h` @80fb11ac, `docs/oracles.md` §6).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct QuantizeParams {
    /// Worker threads (0: hardware concurrency).
    pub nthread: i32,
    /// `enum llama_ftype`.
    pub ftype: i32,
    /// Output tensor type override (`GGML_TYPE_COUNT`: none).
    pub output_tensor_type: i32,
    /// Token embedding type override.
    pub token_embedding_type: i32,
    /// Allow re-quantizing quantized tensors.
    pub allow_requantize: bool,
    /// Quantize `output.weight`.
    pub quantize_output_tensor: bool,
    /// Only copy tensors.
    pub only_copy: bool,
    /// Every tensor to the ftype's default type.
    pub pure: bool,
    /// Keep the input's split layout.
    pub keep_split: bool,
    /// Compute types and sizes only.
    pub dry_run: bool,
    /// Null-name-terminated list of imatrix vectors, or null.
    pub imatrix: *const ImatrixData,
    /// KV overrides (unused here).
    pub kv_overrides: *const c_void,
    /// Tensor type overrides (unused here).
    pub tt_overrides: *const c_void,
    /// Layers to prune (unused here).
    pub prune_layers: *const i32,
    /// Buffer size limit (0: default).
    pub max_buf_size: usize,
}

/// `struct llama_model_imatrix_data`: one tensor's averaged importance vector.
#[repr(C)]
pub struct ImatrixData {
    /// Weight name (NUL-terminated), null to end the list.
    pub name: *const c_char,
    /// `size` floats.
    pub data: *const f32,
    /// Number of floats (`ne0 * n_mat`).
    pub size: usize,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlamaQuantizeError {
    /// The library could not be loaded or lacks a symbol.
    #[error("libllama: {0}")]
    Load(String),
    /// A path not representable as a C string.
    #[error("path {0} is not usable from C")]
    BadPath(String),
    /// `llama_model_quantize` returned non-zero.
    #[error("llama_model_quantize failed (rc {rc}):\n{log}")]
    Failed {
        /// Return code.
        rc: u32,
        /// Captured log.
        log: String,
    },
}

static LOG: Mutex<String> = Mutex::new(String::new());
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn log_cb(_level: i32, text: *const c_char, _ud: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    LOG.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
}

/// A loaded `libllama`.
pub struct LlamaLib {
    lib: libloading::Library,
}

impl LlamaLib {
    /// Loads the library at `path` and initialises its backend; its log is captured.
    pub fn load(path: &Path) -> Result<Self, LlamaQuantizeError> {
        let err = |e: libloading::Error| LlamaQuantizeError::Load(e.to_string());
        // SAFETY: loading libllama runs only its static initialisers.
        let lib = unsafe { libloading::Library::new(path) }.map_err(err)?;
        // SAFETY: documented C API signatures (include/llama.h).
        unsafe {
            let set: libloading::Symbol<
                unsafe extern "C" fn(extern "C" fn(i32, *const c_char, *mut c_void), *mut c_void),
            > = lib.get(b"llama_log_set").map_err(err)?;
            set(log_cb, std::ptr::null_mut());
            let init: libloading::Symbol<unsafe extern "C" fn()> =
                lib.get(b"llama_backend_init").map_err(err)?;
            init();
        }
        Ok(LlamaLib { lib })
    }

    /// Loads the library named by the `LLAMA_LIB` environment variable (set by
    /// `.oracle/env.sh`).
    pub fn from_env() -> Result<Self, LlamaQuantizeError> {
        let path = std::env::var_os("LLAMA_LIB").ok_or_else(|| {
            LlamaQuantizeError::Load(
                "LLAMA_LIB is not set: source .oracle/env.sh (scripts/prepare-oracles.sh)".into(),
            )
        })?;
        Self::load(Path::new(&path))
    }

    /// `llama_model_quantize_default_params()`.
    pub fn default_params(&self) -> Result<QuantizeParams, LlamaQuantizeError> {
        // SAFETY: returns the struct by value; layout per llama.h.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn() -> QuantizeParams> = self
                .lib
                .get(b"llama_model_quantize_default_params")
                .map_err(|e| LlamaQuantizeError::Load(e.to_string()))?;
            Ok(f())
        }
    }

    /// Runs `llama_model_quantize(input, output, params)` with `imatrix` (averaged as
    /// llama-quantize's `load_imatrix` does: per matrix `in_sum2 / count`, ones for a matrix
    /// that saw nothing), or without one when `imatrix` is `None`. Returns the log.
    pub fn quantize(
        &self,
        input: &Path,
        output: &Path,
        mut params: QuantizeParams,
        imatrix: Option<&Imatrix>,
    ) -> Result<String, LlamaQuantizeError> {
        let c_path = |p: &Path| {
            p.to_str()
                .and_then(|s| CString::new(s).ok())
                .ok_or_else(|| LlamaQuantizeError::BadPath(p.display().to_string()))
        };
        let (inp, out) = (c_path(input)?, c_path(output)?);
        // Keep names and vectors alive for the call.
        let mut names = Vec::new();
        let mut vectors = Vec::new();
        if let Some(im) = imatrix {
            for e in &im.entries {
                names.push(CString::new(e.name.as_str()).map_err(|_| {
                    LlamaQuantizeError::BadPath(format!("imatrix name {}", e.name))
                })?);
                vectors.push(
                    (0..e.n_mat())
                        .flat_map(|m| e.weights(m))
                        .collect::<Vec<f32>>(),
                );
            }
        }
        let mut list: Vec<ImatrixData> = names
            .iter()
            .zip(&vectors)
            .map(|(n, v)| ImatrixData {
                name: n.as_ptr(),
                data: v.as_ptr(),
                size: v.len(),
            })
            .collect();
        list.push(ImatrixData {
            name: std::ptr::null(),
            data: std::ptr::null(),
            size: 0,
        });
        if imatrix.is_some() {
            params.imatrix = list.as_ptr();
        }
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // SAFETY: valid C strings, and params whose pointers are null or point to the live,
        // null-terminated list above.
        let rc = unsafe {
            let f: libloading::Symbol<
                unsafe extern "C" fn(*const c_char, *const c_char, *const QuantizeParams) -> u32,
            > = self
                .lib
                .get(b"llama_model_quantize")
                .map_err(|e| LlamaQuantizeError::Load(e.to_string()))?;
            f(inp.as_ptr(), out.as_ptr(), &params)
        };
        let log = std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()));
        if rc != 0 {
            return Err(LlamaQuantizeError::Failed { rc, log });
        }
        Ok(log)
    }
}
