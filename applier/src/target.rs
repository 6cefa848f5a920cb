//! What the engine patches: the [`Target`] trait.
//!
//! A target is a place where a baseline image is mapped and running (or
//! about to run): an emulated VM, a live process, an image file. The engine
//! (verify → plan → apply) only ever touches it through this trait, so the
//! same checks, placement, linking, redirect order and state record serve
//! every kind of target.
//!
//! Addresses are absolute virtual addresses in the target. Every method is
//! fallible with a [`TargetError`]; a target never panics on a bad address.

use hotpatch_formats::package::{ImageIdentity, Sha256Digest};
use hotpatch_formats::{Arch, Format};

/// Memory protection of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protection {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

impl Protection {
    /// Read and execute: code.
    pub const CODE: Protection = Protection {
        read: true,
        write: false,
        execute: true,
    };
    /// Read only: constants and jump tables.
    pub const READ_ONLY: Protection = Protection {
        read: true,
        write: false,
        execute: false,
    };
    /// Read and write: new data.
    pub const READ_WRITE: Protection = Protection {
        read: true,
        write: true,
        execute: false,
    };
}

/// Where a target holds one of a package's images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The address the image's RVA 0 lies at.
    pub base: u64,
    /// SHA-256 of the file the image was loaded from.
    pub file_sha256: Sha256Digest,
    /// The format of the image the target holds under that name, so that a
    /// package for the other format is refused for what it is.
    pub format: Format,
    /// The architecture of that image (and of the target's code).
    pub arch: Arch,
    /// How it was found, for the report (for example the mapped path).
    pub how: String,
}

/// One thread of a stopped target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadPc {
    /// Its id (the Linux TID; 0 for the only thread of a VM).
    pub tid: u64,
    /// Its program counter.
    pub pc: u64,
}

/// Why a target operation failed. Each message is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The image is not in the target.
    #[error("image `{name}` is not loaded in {target}")]
    NotLoaded {
        /// The image's name.
        name: String,
        /// The target.
        target: String,
    },
    /// A read or write outside mapped memory, or refused by the target.
    #[error("{target}: cannot access {len} bytes at {address:#x}: {detail}")]
    Access {
        /// The target.
        target: String,
        /// The first address.
        address: u64,
        /// The length.
        len: u64,
        /// What the target said.
        detail: String,
    },
    /// No free range of that size within the bounds.
    #[error("{target}: no free {size}-byte range between {lo:#x} and {hi:#x}")]
    NoRoom {
        /// The target.
        target: String,
        /// Size wanted.
        size: u64,
        /// Lowest acceptable start.
        lo: u64,
        /// Highest acceptable end.
        hi: u64,
    },
    /// Bytes about to be overwritten are no longer what they were when
    /// they were checked (someone else changed them): nothing was written.
    #[error("{target}: the {len} bytes at {address:#x} changed since they were checked")]
    Changed {
        /// The target.
        target: String,
        /// The first address of the patch whose bytes changed.
        address: u64,
        /// Its length.
        len: u64,
    },
    /// The target went away (a process exited) or refused an operation.
    #[error("{target}: {detail}")]
    Other {
        /// The target.
        target: String,
        /// What happened.
        detail: String,
    },
}

/// One write of a [`Target::patch`]: `new` over bytes that must still be
/// `old` (the same length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch<'a> {
    /// The first address.
    pub address: u64,
    /// What the bytes must be now.
    pub old: &'a [u8],
    /// What they become.
    pub new: &'a [u8],
}

/// A place where a baseline image runs, as the engine sees it.
pub trait Target {
    /// A short description for messages ("VM", "process 1234").
    fn describe(&self) -> String;

    /// Find the image a package targets: where it lies, and the SHA-256 of
    /// its file. `identity` is the package's record of the baseline, for
    /// targets that find images by build id.
    fn locate(&mut self, name: &str, identity: &ImageIdentity) -> Result<Located, TargetError>;

    /// The page size of the target.
    fn page_size(&self) -> u64;

    /// Read `buf.len()` bytes at `address`.
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), TargetError>;

    /// Write `bytes` at `address`, whatever its protection (a target makes
    /// code writable for the write and restores its protection).
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), TargetError>;

    /// Apply `patches` (sorted by address, not overlapping), with the
    /// target stopped: first check that every range still holds its `old`
    /// bytes, and write nothing if one does not ([`TargetError::Changed`]);
    /// then write every `new` and make it visible to instruction fetch.
    /// The writes may land in any order (nothing runs meanwhile). On any
    /// other error some of them may have been written.
    ///
    /// The default reads, checks and writes each patch in turn; a target
    /// where each access is a system call gathers patches that share pages.
    fn patch(&mut self, patches: &[Patch<'_>]) -> Result<(), TargetError> {
        let mut buf = Vec::new();
        for p in patches {
            buf.resize(p.old.len(), 0);
            self.read(p.address, &mut buf)?;
            if buf != p.old || p.new.len() != p.old.len() {
                return Err(TargetError::Changed {
                    target: self.describe(),
                    address: p.address,
                    len: p.old.len() as u64,
                });
            }
        }
        for p in patches {
            self.write(p.address, p.new)?;
            self.flush_code(p.address, p.new.len() as u64)?;
        }
        Ok(())
    }

    /// Map `size` bytes (a multiple of the page size), readable and
    /// writable, starting at or above `lo` and ending at or below `hi`.
    /// Returns the start.
    fn allocate(&mut self, lo: u64, hi: u64, size: u64) -> Result<u64, TargetError>;

    /// Unmap a range [`Target::allocate`] returned.
    fn free(&mut self, address: u64, size: u64) -> Result<(), TargetError>;

    /// Set the protection of a range (page aligned).
    fn protect(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<(), TargetError>;

    /// Stop every thread and return their program counters. A target
    /// without threads of its own (a VM between calls, a file) returns an
    /// empty list.
    fn stop(&mut self) -> Result<Vec<ThreadPc>, TargetError> {
        Ok(Vec::new())
    }

    /// Resume what [`Target::stop`] stopped.
    fn resume(&mut self) -> Result<(), TargetError> {
        Ok(())
    }

    /// Whether [`Target::free`] keeps memory mapped that threads may still
    /// run in (a live process: a thread may be inside replaced code, or
    /// hold a return address into it). Such a target needs no thread to be
    /// outside a replaced package's code before it is freed; one that
    /// really unmaps it (the default) does.
    fn retires_freed_code(&self) -> bool {
        false
    }

    /// Make freshly written code visible to instruction fetch (AArch64
    /// caches; a no-op by default).
    fn flush_code(&mut self, _address: u64, _len: u64) -> Result<(), TargetError> {
        Ok(())
    }

    /// The state record stored for image `key` (the engine's own
    /// serialisation), if any.
    fn load_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, TargetError>;

    /// Store (or, with `None`, delete) the state record for `key`.
    fn store_state(&mut self, key: &str, record: Option<&[u8]>) -> Result<(), TargetError>;
}
