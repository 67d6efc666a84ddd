//! Fuzzes llama.cpp's legacy `.dat` imatrix parser (`dynquant_gguf::Imatrix::parse_legacy`). Any
//! input must give Ok or a typed error; a file that parsed must encode and parse again.
#![no_main]

use dynquant_gguf::imatrix::Imatrix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(imatrix) = Imatrix::parse_legacy(data) else {
        return;
    };
    for entry in &imatrix.entries {
        let _ = entry.weights(0);
    }
    let again = Imatrix::parse_legacy(&imatrix.to_legacy_bytes())
        .expect("an imatrix dynquant encodes must parse");
    assert_eq!(again.entries.len(), imatrix.entries.len());
});
