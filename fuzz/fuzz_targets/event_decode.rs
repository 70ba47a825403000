//! `Event::decode`, `Event::line` and `Event::line_noted` on arbitrary ring
//! buffer records (the bytes past the record: interface name and note).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::event(data));
