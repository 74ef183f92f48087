#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico_fuzzcheck::config::config_load(data));
