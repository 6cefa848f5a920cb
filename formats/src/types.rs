//! Struct, union and class layouts, and the types each function uses, from
//! the debug information: DWARF for ELF images ([`dwarf`]), the PDB type
//! and symbol streams for PE images (`pe/layouts.rs`).
//!
//! Both readers produce the same model ([`TypeLayout`], [`TypeUse`],
//! [`TypeInfo`]) with the same conventions, documented on those types:
//! layouts are complete definitions only, named by tag, by `typedef` for an
//! anonymous type, or by qualified C++ name; members of anonymous members
//! are flattened into the enclosing type; a bit-field's offset is the byte
//! that holds its first bit. A function uses a type through its parameters,
//! locals (including those of subroutines inlined into it) and return type,
//! through any chain of pointers, references, arrays, typedefs and
//! qualifiers.
//!
//! The debug information is untrusted input. Every chain of type references
//! is followed at most [`MAX_CHAIN`] steps (chains can be cyclic), nesting is
//! capped, nothing is allocated from a declared size, and damaged debug
//! information is a one-line [`crate::Error::Malformed`] naming the file.
//! Debug information that is valid but in a form these readers do not handle
//! (compressed DWARF sections) is [`TypeInfo::Unsupported`], not an error:
//! the image is still usable, only its layouts cannot be compared.

pub(crate) mod dwarf;

use crate::image::{FunctionLine, TypeInfo, TypeLayout, TypeUse};

/// How many references a chain of types may follow (pointer to typedef to
/// const to struct, abstract origin to specification, ...). Real chains are
/// a handful long; the limit stops crafted cycles.
pub(crate) const MAX_CHAIN: usize = 64;

/// How deep anonymous members may be flattened into their enclosing type.
pub(crate) const MAX_FLATTEN: usize = 16;

/// How many members one layout may visit, counting those of flattened
/// anonymous members (which a crafted file could nest to make the count
/// explode). Real records have at most a few thousand.
pub(crate) const MAX_MEMBERS: usize = 1 << 16;

/// What a reader found.
#[derive(Debug, PartialEq)]
pub(crate) struct Found {
    /// Whether the debug information was there and read.
    pub(crate) info: TypeInfo,
    /// Layouts, in any order (the image canonicalises them).
    pub(crate) types: Vec<TypeLayout>,
    /// Uses, in any order (the image canonicalises them).
    pub(crate) uses: Vec<TypeUse>,
    /// First source lines of functions, in any order (the image
    /// canonicalises them); the DWARF reader's (the PDB's come from the
    /// module line subsections, not the type reader).
    pub(crate) lines: Vec<FunctionLine>,
}

impl Found {
    /// Nothing found: the image has no debug information about types.
    pub(crate) fn absent() -> Self {
        Found {
            info: TypeInfo::Absent,
            types: Vec::new(),
            uses: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Debug information that is there but not in a form this reader reads.
    pub(crate) fn unsupported(why: impl Into<String>) -> Self {
        Found {
            info: TypeInfo::Unsupported(why.into()),
            types: Vec::new(),
            uses: Vec::new(),
            lines: Vec::new(),
        }
    }
}

/// Whether a type name is a compiler's placeholder for an anonymous type
/// (MSVC and clang CodeView write `<unnamed-tag>`, `<anonymous-tag>`, or a
/// scope followed by one of those).
pub(crate) fn is_placeholder_name(name: &[u8]) -> bool {
    name.is_empty()
        || name.ends_with(b"<unnamed-tag>")
        || name.ends_with(b"<anonymous-tag>")
        || name.ends_with(b"__unnamed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_names() {
        assert!(is_placeholder_name(b""));
        assert!(is_placeholder_name(b"<unnamed-tag>"));
        assert!(is_placeholder_name(b"flags::<unnamed-tag>"));
        assert!(is_placeholder_name(b"<anonymous-tag>"));
        assert!(!is_placeholder_name(b"conn"));
        assert!(!is_placeholder_name(b"ns::conn"));
    }
}
