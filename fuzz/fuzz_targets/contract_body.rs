#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico_fuzzcheck::contract::contract_body(data));
