//! The real ggml CPU backend (node-llama-cpp's prebuilt libggml-base.so and the best-scoring
//! libggml-cpu-*.so next to it, chosen as ggml's backend loader chooses: highest
//! `ggml_backend_score`), driven through libloading to get per-op reference results.
//! Weights whose type ggml repacks on this CPU are placed in the CPU_REPACK buffer type, as
//! llama.cpp places them.
#![allow(dead_code)]

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_NOW};

#[repr(C)]
struct InitParams {
    mem_size: usize,
    mem_buffer: *mut c_void,
    no_alloc: bool,
}

type P = *mut c_void;

pub struct Ggml {
    base: Library,
    cpu: Library,
    pub variant: String,
}

/// A graph under construction: tensors live in one no-alloc context.
pub struct Graph<'g> {
    g: &'g Ggml,
    ctx: P,
    /// (tensor, data) to upload after allocation; repacked weights first.
    inputs: Vec<(P, Vec<u8>, bool)>,
    bufs: Vec<P>,
}

impl Ggml {
    /// Loads ggml, or `None` when oracles are skipped (`DYNQUANT_SKIP_ORACLES=1`).
    pub fn load() -> Option<Ggml> {
        let Some(path) = std::env::var_os("GGML_BASE_LIB") else {
            if std::env::var("DYNQUANT_SKIP_ORACLES").as_deref() == Ok("1") {
                return None;
            }
            panic!("GGML_BASE_LIB is not set: source .oracle/env.sh (scripts/prepare-oracles.sh)");
        };
        let base_path = PathBuf::from(path);
        // SAFETY: loading ggml runs no initialisers with preconditions.
        let base = unsafe { Library::open(Some(&base_path), RTLD_NOW | RTLD_GLOBAL) }
            .expect("load libggml-base");
        let dir = base_path.parent().expect("lib dir");
        // GGML_CPU_VARIANT=haswell (say) loads that variant instead of the best-scoring one
        let (variant, cpu) = match std::env::var("GGML_CPU_VARIANT") {
            Ok(v) => {
                let n = format!("libggml-cpu-{v}.so");
                // SAFETY: as above.
                let lib = unsafe { Library::open(Some(&dir.join(&n)), RTLD_NOW) }.expect("variant");
                (n, lib)
            }
            Err(_) => best_cpu(dir),
        };
        let g = Ggml { base, cpu, variant };
        // ggml logs each repacked tensor: keep the test output quiet
        extern "C" fn quiet(_level: i32, _text: *const std::ffi::c_char, _ud: *mut c_void) {}
        let set_log: unsafe extern "C" fn(
            Option<extern "C" fn(i32, *const std::ffi::c_char, *mut c_void)>,
            *mut c_void,
        ) = g.base_fn(b"ggml_log_set");
        // SAFETY: a valid callback that ignores its arguments.
        unsafe { set_log(Some(quiet), std::ptr::null_mut()) };
        // SAFETY: no arguments; fills ggml-cpu's tables.
        unsafe { g.cpu_fn::<unsafe extern "C" fn()>(b"ggml_cpu_init")() };
        Some(g)
    }

    fn base_fn<T: Copy>(&self, name: &[u8]) -> T {
        // SAFETY: the caller names the symbol with its C signature.
        unsafe {
            let s: Symbol<T> = self.base.get(name).expect("ggml symbol");
            *s
        }
    }

    fn cpu_fn<T: Copy>(&self, name: &[u8]) -> T {
        // SAFETY: as base_fn.
        unsafe {
            let s: Symbol<T> = self.cpu.get(name).expect("ggml-cpu symbol");
            *s
        }
    }

    pub fn graph(&self) -> Graph<'_> {
        let init: unsafe extern "C" fn(InitParams) -> P = self.base_fn(b"ggml_init");
        // SAFETY: metadata-only context.
        let ctx = unsafe {
            init(InitParams {
                mem_size: 64 << 20,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            })
        };
        assert!(!ctx.is_null());
        Graph {
            g: self,
            ctx,
            inputs: Vec::new(),
            bufs: Vec::new(),
        }
    }
}

fn best_cpu(dir: &Path) -> (String, Library) {
    let mut best: Option<(i32, String, Library)> = None;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("lib dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libggml-cpu-") && n.ends_with(".so"))
        .collect();
    names.sort();
    for n in names {
        // SAFETY: as above.
        let lib = unsafe { Library::open(Some(&dir.join(&n)), RTLD_NOW) }.expect("load cpu");
        // SAFETY: ggml_backend_score takes no arguments.
        let score = unsafe {
            let f: Symbol<unsafe extern "C" fn() -> i32> =
                lib.get(b"ggml_backend_score").expect("score");
            f()
        };
        if score > 0 && best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, n, lib));
        }
    }
    let (_, n, lib) = best.expect("no usable libggml-cpu variant");
    (n, lib)
}

/// ggml type ids used here.
pub const F32: i32 = 0;
pub const F16: i32 = 1;
pub const I32: i32 = 26;

impl Graph<'_> {
    fn op<T: Copy>(&self, name: &[u8]) -> T {
        self.g.base_fn(name)
    }

    /// A new tensor of `ty` and shape `ne` (ggml order) holding `data` (stored bytes).
    pub fn input(&mut self, ty: i32, ne: &[i64], data: Vec<u8>, repack: bool) -> P {
        let f: unsafe extern "C" fn(P, i32, i32, *const i64) -> P = self.op(b"ggml_new_tensor");
        // SAFETY: valid context and shape.
        let t = unsafe { f(self.ctx, ty, ne.len() as i32, ne.as_ptr()) };
        assert!(!t.is_null());
        if repack {
            let buft: unsafe extern "C" fn() -> P =
                self.g.cpu_fn(b"_Z35ggml_backend_cpu_repack_buffer_typev");
            let size: unsafe extern "C" fn(P, P) -> usize =
                self.op(b"ggml_backend_buft_get_alloc_size");
            let alloc: unsafe extern "C" fn(P, usize) -> P =
                self.op(b"ggml_backend_buft_alloc_buffer");
            let base: unsafe extern "C" fn(P) -> P = self.op(b"ggml_backend_buffer_get_base");
            let talloc: unsafe extern "C" fn(P, P, P) -> i32 =
                self.op(b"ggml_backend_tensor_alloc");
            // SAFETY: a fresh buffer of the tensor's size for the tensor.
            unsafe {
                let b = buft();
                let buf = alloc(b, size(b, t));
                assert!(!buf.is_null());
                assert_eq!(talloc(buf, t, base(buf)), 0);
                self.bufs.push(buf);
            }
        }
        self.inputs.push((t, data, repack));
        t
    }

    pub fn f32(&mut self, ne: &[i64], v: &[f32]) -> P {
        self.input(
            F32,
            ne,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            false,
        )
    }

    pub fn f16(&mut self, ne: &[i64], v: &[f32]) -> P {
        let b = v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        self.input(F16, ne, b, false)
    }

    pub fn i32s(&mut self, ne: &[i64], v: &[i32]) -> P {
        self.input(
            I32,
            ne,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            false,
        )
    }

    /// `ggml_mul_mat_id(as, b, ids)`: `as` [cols, rows, n_expert], `b` [cols, 1 or n_used,
    /// n_tok], `ids` I32 [n_used, n_tok]; the result is [rows, n_used, n_tok].
    pub fn mul_mat_id(&self, a: P, b: P, ids: P) -> P {
        let f: unsafe extern "C" fn(P, P, P, P) -> P = self.op(b"ggml_mul_mat_id");
        // SAFETY: tensors of this context.
        unsafe { f(self.ctx, a, b, ids) }
    }

    pub fn mul_mat(&self, a: P, b: P) -> P {
        let f: unsafe extern "C" fn(P, P, P) -> P = self.op(b"ggml_mul_mat");
        // SAFETY: tensors of this context.
        unsafe { f(self.ctx, a, b) }
    }

    pub fn rms_norm(&self, a: P, eps: f32) -> P {
        let f: unsafe extern "C" fn(P, P, f32) -> P = self.op(b"ggml_rms_norm");
        // SAFETY: as above.
        unsafe { f(self.ctx, a, eps) }
    }

    pub fn mul(&self, a: P, b: P) -> P {
        let f: unsafe extern "C" fn(P, P, P) -> P = self.op(b"ggml_mul");
        // SAFETY: as above.
        unsafe { f(self.ctx, a, b) }
    }

    pub fn swiglu(&self, a: P, b: P) -> P {
        let f: unsafe extern "C" fn(P, P, P) -> P = self.op(b"ggml_swiglu_split");
        // SAFETY: as above.
        unsafe { f(self.ctx, a, b) }
    }

    pub fn geglu(&self, a: P, b: P) -> P {
        let f: unsafe extern "C" fn(P, P, P) -> P = self.op(b"ggml_geglu_split");
        // SAFETY: as above.
        unsafe { f(self.ctx, a, b) }
    }

    /// `ggml_rope_ext(a, pos, NULL, n_dims, mode, 0, base, scale, 0, 1, 32, 1)`.
    pub fn rope(&self, a: P, pos: P, n_dims: i32, mode: i32, base: f32, scale: f32) -> P {
        self.rope_ext(a, pos, n_dims, mode, 0, base, scale, [0.0, 1.0, 32.0, 1.0])
    }

    /// `ggml_rope_ext` with YaRN's parameters `[ext_factor, attn_factor, beta_fast,
    /// beta_slow]` and the original context `n_ctx_orig`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_ext(
        &self,
        a: P,
        pos: P,
        n_dims: i32,
        mode: i32,
        n_ctx_orig: i32,
        base: f32,
        scale: f32,
        yarn: [f32; 4],
    ) -> P {
        #[allow(clippy::type_complexity)]
        let f: unsafe extern "C" fn(
            P,
            P,
            P,
            P,
            i32,
            i32,
            i32,
            f32,
            f32,
            f32,
            f32,
            f32,
            f32,
        ) -> P = self.op(b"ggml_rope_ext");
        // SAFETY: as above.
        unsafe {
            f(
                self.ctx,
                a,
                pos,
                std::ptr::null_mut(),
                n_dims,
                mode,
                n_ctx_orig,
                base,
                scale,
                yarn[0],
                yarn[1],
                yarn[2],
                yarn[3],
            )
        }
    }

    /// `ggml_flash_attn_ext(q, k, v, mask, scale, 0, 0)` with f32 precision, output permuted
    /// to [head_dim, n_head, n_tok].
    pub fn flash_attn(&self, q: P, k: P, v: P, mask: P, scale: f32) -> P {
        let f: unsafe extern "C" fn(P, P, P, P, P, f32, f32, f32) -> P =
            self.op(b"ggml_flash_attn_ext");
        let prec: unsafe extern "C" fn(P, i32) = self.op(b"ggml_flash_attn_ext_set_prec");
        // SAFETY: as above.
        unsafe {
            let t = f(self.ctx, q, k, v, mask, scale, 0.0, 0.0);
            prec(t, 10); // GGML_PREC_F32
            t
        }
    }

    /// Computes `out` with one thread and returns its f32 values.
    pub fn compute(mut self, out: P, n: usize) -> Vec<f32> {
        let g = self.g;
        let new_graph: unsafe extern "C" fn(P) -> P = self.op(b"ggml_new_graph");
        let expand: unsafe extern "C" fn(P, P) = self.op(b"ggml_build_forward_expand");
        let cpu_buft: unsafe extern "C" fn() -> P = self.op(b"ggml_backend_cpu_buffer_type");
        let alloc_ctx: unsafe extern "C" fn(P, P) -> P =
            self.op(b"ggml_backend_alloc_ctx_tensors_from_buft");
        let set: unsafe extern "C" fn(P, *const c_void, usize, usize) =
            self.op(b"ggml_backend_tensor_set");
        let get: unsafe extern "C" fn(P, *mut c_void, usize, usize) =
            self.op(b"ggml_backend_tensor_get");
        let compute: unsafe extern "C" fn(P, P) -> i32 = self.op(b"ggml_backend_graph_compute");
        let cpu_init: unsafe extern "C" fn() -> P = g.cpu_fn(b"ggml_backend_cpu_init");
        let threads: unsafe extern "C" fn(P, i32) = g.cpu_fn(b"ggml_backend_cpu_set_n_threads");
        let free_backend: unsafe extern "C" fn(P) = self.op(b"ggml_backend_free");
        let mut y = vec![0f32; n];
        // SAFETY: every pointer comes from ggml for this context; sizes are the tensors'.
        unsafe {
            let gf = new_graph(self.ctx);
            expand(gf, out);
            let buf = alloc_ctx(self.ctx, cpu_buft());
            assert!(!buf.is_null());
            self.bufs.push(buf);
            for (t, d, _) in &self.inputs {
                set(*t, d.as_ptr().cast(), 0, d.len());
            }
            let be = cpu_init();
            threads(be, 1);
            assert_eq!(compute(be, gf), 0);
            get(out, y.as_mut_ptr().cast(), 0, 4 * n);
            free_backend(be);
        }
        y
    }
}

impl Drop for Graph<'_> {
    fn drop(&mut self) {
        let free_buf: unsafe extern "C" fn(P) = self.op(b"ggml_backend_buffer_free");
        let free: unsafe extern "C" fn(P) = self.op(b"ggml_free");
        // SAFETY: owned by this graph.
        unsafe {
            for b in self.bufs.drain(..) {
                free_buf(b);
            }
            free(self.ctx);
        }
    }
}
