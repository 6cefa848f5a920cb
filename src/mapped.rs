//! Image files mapped into memory instead of read: the one place in the
//! CLI with `unsafe` code.
//!
//! Reading a large image copies it into fresh memory that the kernel must
//! first zero, which cost the diff of two 78 MB images about 90 ms of its
//! wall time; a read-only mapping shares the page cache instead. The file
//! is opened and checked by [`read::open_image`] exactly as
//! [`read::load_file`] checks it (a PE or ELF signature, the size cap)
//! before it is mapped, and a file that cannot be mapped is read.

#![allow(unsafe_code)]

use std::ops::Deref;
use std::path::Path;

use hotpatch_formats::read;

/// An image's bytes: mapped, or read when mapping is not possible.
pub enum ImageBytes {
    /// A read-only mapping of the checked length.
    Mapped(memmap2::Mmap),
    /// The bytes, read.
    Read(Vec<u8>),
}

impl Deref for ImageBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ImageBytes::Mapped(m) => m,
            ImageBytes::Read(v) => v,
        }
    }
}

/// Open `path`, check it as [`read::load_file`] does, and map it.
pub fn load_image(path: &Path) -> hotpatch_formats::Result<ImageBytes> {
    let checked = read::open_image(path)?;
    let Ok(len) = usize::try_from(checked.len) else {
        return read::load_file(path).map(ImageBytes::Read);
    };
    // SAFETY: the mapping is read-only and private, of the length checked
    // when the file was opened; the tool never writes its inputs. What Rust
    // cannot promise is that no other process changes or truncates the
    // file while it is mapped: inputs are finished build outputs, and
    // truncation would stop the process (SIGBUS) rather than give an answer.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map(&checked.file)
    };
    match map {
        Ok(m) => Ok(ImageBytes::Mapped(m)),
        Err(_) => read::load_file(path).map(ImageBytes::Read),
    }
}
