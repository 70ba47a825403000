//! `Config::parse` and `Config::parse_fragment` (and the diagnostics they
//! render) on arbitrary text.
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config(data));
