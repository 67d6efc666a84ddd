//! Fuzzes the GGUF imatrix reader (`dynquant_gguf::Imatrix::read`, which dispatches on the magic
//! to the GGUF or legacy reader). Any input must give Ok or a typed error; entries that read must
//! give weights.
#![no_main]

#[path = "common.rs"]
mod common;

use dynquant_gguf::imatrix::Imatrix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write_scratch("fuzz.imatrix.gguf", data);
    let Ok(imatrix) = Imatrix::read(&path) else {
        return;
    };
    for entry in &imatrix.entries {
        for mat in 0..entry.n_mat().min(4) {
            let _ = entry.weights(mat);
        }
    }
});
