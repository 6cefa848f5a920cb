//! The input as a PE image read without a PDB (none given, none beside it),
//! through `read::parse`: the stripped reading from the exception directory
//! and the exports.
#![no_main]

use hotpatch_formats::{read, ReadOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"MZ") {
        return;
    }
    // No `fuzz-stripped.pdb` exists where the fuzzer runs: the image is
    // read as a stripped one.
    match read::parse(data, &ReadOptions::new("fuzz-stripped.dll")) {
        Ok(image) => {
            assert!(image.stripped && image.data.is_empty());
            common::check_image(&image);
        }
        Err(e) => common::check_error(&e, &["fuzz-stripped.dll"]),
    }
});
