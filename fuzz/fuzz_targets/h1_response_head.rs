#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico_fuzzcheck::h1::response_head(data));
