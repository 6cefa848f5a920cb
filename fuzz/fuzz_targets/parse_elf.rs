//! The input as an ELF image, through `read::parse`.
#![no_main]

use hotpatch_formats::{read, ReadOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"\x7fELF") {
        return;
    }
    match read::parse(data, &ReadOptions::new("fuzz.so")) {
        Ok(image) => common::check_image(&image),
        Err(e) => common::check_error(&e, &["fuzz.so"]),
    }
});
