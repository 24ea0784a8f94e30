#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = kest_fuzz::targets::render(data);
});
