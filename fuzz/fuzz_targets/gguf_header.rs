//! Fuzzes the GGUF header parser and tensor data access: any input must give Ok or a typed
//! error, never a panic, an out-of-bounds read or an unbounded allocation.
#![no_main]

use dynquant_gguf::{encode_header_unpadded, GgufFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes("fuzz", data.to_vec()) else {
        return;
    };
    let h = file.header();
    for i in 0..h.tensors.len() {
        let bytes = file.tensor_data(i).expect("validated tensor must be readable");
        assert_eq!(bytes.len() as u64, h.tensors[i].n_bytes);
    }
    // A header that parsed must re-encode to the same bytes.
    let again = encode_header_unpadded(h);
    assert_eq!(&again[..], &data[..again.len()]);
});
