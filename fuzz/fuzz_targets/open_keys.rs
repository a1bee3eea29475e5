//! Fuzz target `open_keys`: see `fuzz/logic.rs` for what it checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../logic.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::open_keys(data));
