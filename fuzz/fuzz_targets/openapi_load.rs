#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico_fuzzcheck::config::openapi_load(data));
