//! The input as a PE image and its PDB, through `read::parse_with_pdb`.
//!
//! Layout: a little-endian `u32` image length, the image, then the PDB.
#![no_main]

use hotpatch_formats::{read, ReadOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return;
    }
    let (image, pdb) = rest.split_at(len);
    if !image.starts_with(b"MZ") {
        return;
    }
    let opts = ReadOptions::new("fuzz.dll").with_pdb("fuzz.pdb");
    match read::parse_with_pdb(image, pdb, &opts) {
        Ok(image) => common::check_image(&image),
        Err(e) => common::check_error(&e, &["fuzz.dll", "fuzz.pdb"]),
    }
});
