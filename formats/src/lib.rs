//! The image model of the hotpatch toolchain and its readers.
//!
//! [`read`] turns a PE image with its PDB, or an ELF image, into one
//! [`Image`] (a stripped ELF, or a PE image without its PDB, gives the
//! functions its unwind data and exports show, and no data objects): sections, functions with their translation units, data objects,
//! exports, load-time relocations and the build identity; and, from the debug
//! information (DWARF, or the PDB's type and symbol streams), struct, union
//! and class layouts ([`TypeLayout`]), the types each function uses
//! ([`TypeUse`]) and each function's first source line ([`FunctionLine`]).
//!
//! The readers take hostile input: every file is checked before it is read
//! whole ([`read::load_file`], [`read::load_pdb`]), every extent is checked
//! against the file, a lie is a one-line [`Error`] that names the damaged
//! file, and every name taken from the input is escaped once, when it is
//! read ([`escape_name`]), so that the model and any message built from it
//! hold no control characters.
//!
//! ```no_run
//! use std::path::Path;
//! use hotpatch_formats::{read, ReadOptions};
//!
//! let path = Path::new("corpus/01-bounds-check/bin/x86_64-linux/v1.so");
//! let bytes = read::load_file(path)?;
//! let image = read::parse(&bytes, &ReadOptions::new(path))?;
//! for f in &image.functions {
//!     println!("{} {:#x} {}", f.name, f.rva, f.size);
//! }
//! # Ok::<(), hotpatch_formats::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// The library is linted against panic sources (`[lints.clippy]` in
// Cargo.toml); the unit tests build hostile input on purpose and index and
// unwrap freely.
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

mod elf;
pub mod error;
pub mod image;
pub mod name;
pub mod package;
mod pe;
pub mod read;
#[cfg(test)]
mod test_elf;
mod types;

pub use error::{Error, Result};
pub use image::{
    Arch, CodeView, DataObject, Export, Extent, Field, Format, FormatIdentity, Function,
    FunctionLine, Identity, Image, Permissions, RelocTarget, Relocation, Section, TypeInfo,
    TypeKind, TypeLayout, TypeUse, Visibility,
};
pub use name::escape_name;
pub use read::ReadOptions;
