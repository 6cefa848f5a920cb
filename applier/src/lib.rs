//! Verify → plan → apply for hotpatch packages.
//!
//! Targets are a patched image file, an emulated x64/ARM64 VM and a live Linux
//! process. This crate is filled in by the applier issue; until then it
//! deliberately exports nothing.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
