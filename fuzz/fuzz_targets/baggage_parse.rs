#![no_main]
//! libFuzzer entry for `kest_fuzz::targets::baggage_parse`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kest_fuzz::targets::baggage_parse(data);
});
