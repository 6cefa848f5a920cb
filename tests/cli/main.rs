//! End-to-end tests of the `hotpatch` command line over the shipped corpus.
//!
//! One integration-test binary; each module covers one command or concern.

mod bad_input;
mod build;
mod common;
mod corpus;
mod diff;
mod generated;
mod imports;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod live;
mod packaging;
mod stripped;
mod symbols;
mod vectors;
mod verdicts;
