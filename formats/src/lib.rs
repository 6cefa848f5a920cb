//! The image model of the hotpatch toolchain and its readers.
//!
//! [`read`] turns a PE image with its PDB, or an ELF image, into one
//! [`Image`]: sections, functions with their translation units, data objects,
//! exports, load-time relocations and the build identity; and, from the debug
//! information (DWARF, or the PDB's type and symbol streams), struct, union
//! and class layouts ([`TypeLayout`]) and the types each function uses
//! ([`TypeUse`]).
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

mod elf;
pub mod error;
pub mod image;
pub mod package;
mod pe;
pub mod read;
mod types;

pub use error::{Error, Result};
pub use image::{
    Arch, CodeView, DataObject, Export, Field, Format, FormatIdentity, Function, Identity, Image,
    Permissions, RelocTarget, Relocation, Section, TypeInfo, TypeKind, TypeLayout, TypeUse,
    Visibility,
};
pub use read::ReadOptions;
