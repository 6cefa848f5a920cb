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
mod publics;
#[cfg(feature = "emulator")]
mod replay;
mod stripped;
mod symbols;
#[path = "../../formats/src/test_elf.rs"]
mod test_elf;
#[path = "../../formats/src/pe/test_msf.rs"]
mod test_msf;
mod vectors;
mod verdicts;
