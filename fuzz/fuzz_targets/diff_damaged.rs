//! A fixed corpus baseline against the input as the updated image, through
//! `hotpatch_builder::diff::diff`, when both parse.
//!
//! The baseline is `05-jump-table` v1 (jump tables, literal data, several
//! functions), the x86-64 or the AArch64 build to match the input's
//! machine.
#![no_main]

use hotpatch_formats::{read, ReadOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

static X86_64: &[u8] = include_bytes!("../../corpus/05-jump-table/bin/x86_64-linux/v1.so");
static AARCH64: &[u8] = include_bytes!("../../corpus/05-jump-table/bin/aarch64-linux/v1.so");

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"\x7fELF") {
        return;
    }
    // e_machine: EM_AARCH64 (183) or anything else (x86-64 baseline).
    let baseline = if data.get(18..20) == Some(&[183, 0]) {
        AARCH64
    } else {
        X86_64
    };
    let base = read::parse(baseline, &ReadOptions::new("v1.so")).expect("the baseline parses");
    let upd = match read::parse(data, &ReadOptions::new("fuzz.so")) {
        Ok(image) => image,
        Err(e) => {
            common::check_error(&e, &["fuzz.so"]);
            return;
        }
    };
    common::check_image(&upd);
    if let Ok(d) = hotpatch_builder::diff::diff(&base, &upd) {
        let mut out = Vec::new();
        let _ = hotpatch_builder::report::write_summary(&mut out, &d);
    }
});
