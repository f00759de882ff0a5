//! `tower_response_cache::__fuzz::conditional` on arbitrary bytes (see `src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_response_cache::__fuzz::conditional(data);
});
