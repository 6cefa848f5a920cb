//! Room for the entry redirection of a changed function.
//!
//! The old entry of a changed function is overwritten with a jump to the new
//! code. How many bytes that takes depends on the architecture and on what
//! the linker left around the function:
//!
//! - x86-64 PE built for hotpatching (`/functionpadmin:6`, first instruction
//!   of at least 2 bytes): `jmp rel32` goes into the padding before the
//!   function and a 2-byte `jmp short` (`EB F9`) at the entry, which a single
//!   atomic 2-byte store writes.
//! - other x86-64 images: a 5-byte `jmp rel32` over the first instructions,
//!   so the function needs at least 5 bytes of its own.
//! - AArch64: one 4-byte `B` (±128 MB; a veneer otherwise, placed by the
//!   applier), so any function of at least one instruction fits.

use hotpatch_formats::Arch;
use iced_x86::{Decoder, DecoderOptions};
use serde::Serialize;

use crate::index::ImageIndex;

/// Bytes of padding the x86-64 hotpatch scheme needs before a function.
pub const X64_PADDING: u64 = 6;

/// How the entry of a function can be redirected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// x86-64: `jmp rel32` in the padding before the entry, `EB F9` at it.
    PaddingShortJump,
    /// x86-64: `jmp rel32` over the first 5 bytes.
    NearJump,
    /// AArch64: `B` over the first instruction.
    Branch,
}

/// The verdict for one entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryScheme {
    /// It fits, with this scheme.
    Fits(Scheme),
    /// It does not; `needed` says what the architecture requires.
    TooSmall {
        /// What would be needed, for the message.
        needed: &'static str,
    },
}

/// The entry scheme for the function part at `[rva, rva + size)` of
/// `index`'s image.
pub fn entry_scheme(index: &ImageIndex<'_, '_>, rva: u64, size: u64) -> EntryScheme {
    let image = index.image;
    match image.arch {
        Arch::Aarch64 => {
            if size >= 4 {
                EntryScheme::Fits(Scheme::Branch)
            } else {
                EntryScheme::TooSmall {
                    needed: "needs 4 bytes for a `B` instruction",
                }
            }
        }
        Arch::X86_64 => {
            if has_padding(index, rva) && first_insn_len(index, rva, size) >= 2 {
                EntryScheme::Fits(Scheme::PaddingShortJump)
            } else if size >= 5 {
                EntryScheme::Fits(Scheme::NearJump)
            } else {
                EntryScheme::TooSmall {
                    needed: "needs 5 bytes for `jmp rel32`, or 6 bytes of padding before it and a first instruction of at least 2 bytes",
                }
            }
        }
    }
}

/// Whether the 6 bytes before `rva` are padding (`int3` or `nop`) that no
/// function or data object owns.
fn has_padding(index: &ImageIndex<'_, '_>, rva: u64) -> bool {
    let Some(start) = rva.checked_sub(X64_PADDING) else {
        return false;
    };
    let Some(bytes) = index.image.bytes_at(start, X64_PADDING) else {
        return false;
    };
    let executable = index
        .image
        .section_at(start)
        .is_some_and(|s| s.perms.execute && s.contains(rva));
    executable
        && bytes.iter().all(|&b| b == 0xcc || b == 0x90)
        && (start..rva).all(|a| index.function_at(a).is_none() && index.data_at(a).is_none())
}

/// Length of the first instruction at `rva` (0 if it does not decode).
fn first_insn_len(index: &ImageIndex<'_, '_>, rva: u64, size: u64) -> usize {
    let Some(code) = index.image.bytes_at(rva, size.min(15)) else {
        return 0;
    };
    let mut d = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
    let insn = d.decode();
    if insn.is_invalid() {
        0
    } else {
        insn.len()
    }
}
