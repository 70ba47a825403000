//! `Event::decode` and `Event::line` on arbitrary ring buffer records.
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::event(data));
