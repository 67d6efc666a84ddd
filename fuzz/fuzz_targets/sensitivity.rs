//! Fuzzes the sensitivity file parser (`dynquant_plan::Sensitivity::parse`,
//! `dynquant-sensitivity/1`). Any input must give Ok or a typed error; a file that parsed must
//! serialize and parse back to the same value.
#![no_main]

use dynquant_plan::Sensitivity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sens) = Sensitivity::parse(text) else {
        return;
    };
    let again = Sensitivity::parse(&sens.to_json()).expect("a file dynquant writes must parse");
    assert_eq!(again.to_json(), sens.to_json());
});
