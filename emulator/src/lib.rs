//! An emulated x86-64 or AArch64 machine that loads a PE or ELF image
//! itself and calls its exports: the VM target of `hotpatch replay`.
//!
//! **Licence.** This crate links [unicorn-engine](https://www.unicorn-engine.org),
//! which is GPL-2.0, and is therefore `GPL-2.0-only`. The rest of the
//! workspace is MIT OR Apache-2.0 and reaches it only through the `hotpatch`
//! package's default `emulator` cargo feature (`--no-default-features`
//! builds without it).
//!
//! # Loading
//! [`Vm::load_file`] (or [`Vm::load`] from bytes) reads the image with its
//! own loader, as the Windows or Linux loader would, without running any
//! code of it:
//! - PE sections (and the headers) or ELF `PT_LOAD` segments are mapped
//!   with their protections, at the preferred base plus
//!   [`DEFAULT_BIAS`] unless [`LoadOptions::base`] says otherwise; a page
//!   shared by two pieces gets the union of their protections, and ELF
//!   `PT_GNU_RELRO` pages are made read-only after relocation;
//! - PE base relocations (`DIR64`, `HIGHLOW`) and ELF `R_*_RELATIVE`,
//!   RELR, and symbol relocations (`GLOB_DAT`, `JUMP_SLOT`, `ABS64`,
//!   resolved against the image's own definitions) are applied;
//! - exports are found by name (the PE export table; defined ELF dynamic
//!   symbols of default or protected visibility);
//! - every import (PE import and delay-load tables; undefined ELF symbols)
//!   gets a trap stub: a call into one stops with [`Error::ImportCalled`],
//!   naming it (`library!name` for PE, the symbol for ELF). Stubs are
//!   readable, not writable: an imported data object reads as filler and
//!   a write to it faults. Undefined weak ELF symbols are 0.
//!
//! Not supported (refused with [`Error::Unsupported`]): TLS, IFUNCs,
//! `SHT_REL` relocations, non-PIC ELF executables. Initialisers
//! (`DllMain`, `DT_INIT`/`DT_INIT_ARRAY`) are not run.
//!
//! # Calling
//! [`Vm::call`] runs an export with integer or byte-buffer [`Arg`]s under
//! the image's [`Convention`] (Windows x64 with 32 bytes of shadow space,
//! System V AMD64, or AAPCS64 for both ARM64 platforms). The return
//! address is [`SENTINEL`]: the call ends when the program counter reaches
//! it. Each call has an instruction budget; running out is
//! [`Error::Budget`], a fault is [`Error::Fault`]. Buffers are copied into a
//! scratch region, passed by pointer, and read back into
//! [`CallResult::buffers`].
//!
//! # Memory
//! [`Vm::read`], [`Vm::write`] (any protection; translated code in the
//! range is dropped, so patched code runs), [`Vm::allocate`],
//! [`Vm::free`], [`Vm::protect`], and [`Vm::memory_digest`], a SHA-256 of
//! every mapped range, its protection and its bytes, to prove that a
//! refused operation changed nothing. [`Vm::read_rva`],
//! [`Vm::write_rva`], [`Vm::read_data_object`] and
//! [`Vm::write_data_object`] address the image by RVA; [`Vm::parse`] gives
//! its `hotpatch_formats` model (functions, data objects), and
//! [`LoadedImage::relocations_in`] the pointer slots inside a range.
//!
//! The VM implements [`hotpatch_applier::Target`]: it holds one image,
//! located by file name; `stop` returns no threads; state records are kept
//! in memory. A [`Vm`] owns a unicorn engine and is not `Send`.
//!
//! # Address space
//! | range | what |
//! | --- | --- |
//! | below [`LOWEST_ADDRESS`] | never mapped (null pointers fault) |
//! | up to [`IMAGE_LIMIT`] | the image and [`Vm::allocate`]d ranges |
//! | [`TRAP_BASE`] | import trap stubs (readable, not executable) |
//! | [`SENTINEL`] | the return address of every call |
//! | [`SCRATCH_BASE`] | buffer arguments |
//! | [`STACK_BASE`] | the stack ([`STACK_SIZE`] bytes) |
//!
//! ```no_run
//! use std::path::Path;
//! use hotpatch_emulator::{Arg, LoadOptions, Vm};
//!
//! let mut vm = Vm::load_file(
//!     Path::new("corpus/01-bounds-check/bin/aarch64-windows/v1.dll"),
//!     &LoadOptions::default(),
//! )?;
//! let r = vm.call("hb_load", &[Arg::Int(5), Arg::Int(40)], 1_000_000)?;
//! assert_eq!(r.value, 5);
//! # Ok::<(), hotpatch_emulator::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod error;
mod loader;
mod target;
mod vm;

pub use error::{Error, Result};
pub use loader::{Base, ImportStub, Region, RelocSlot, SlotTarget, MAX_SPAN, PAGE};
pub use vm::{
    Arg, CallResult, Convention, LoadOptions, LoadedImage, MappedRegion, Vm, DEFAULT_BIAS,
    IMAGE_LIMIT, LOWEST_ADDRESS, SCRATCH_BASE, SCRATCH_MAX, SENTINEL, STACK_BASE, STACK_SIZE,
    TRAP_BASE, TRAP_SIZE,
};
