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
mod packaging;
#[cfg(feature = "emulator")]
mod replay;
mod stripped;
mod symbols;
mod vectors;
mod verdicts;
