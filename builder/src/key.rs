//! Function and data keys: how a symbol of the baseline finds its partner in
//! the update.
//!
//! A key is the source-level name plus, for `static` (local) symbols, the
//! translation unit, so that two `static helper` functions of two files stay
//! apart. GCC clone suffixes (`.part.N`, `.isra.N`, `.constprop.N`, `.cold`,
//! and combinations) are folded: `parse.isra.0.cold` belongs to `parse`.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// The identity of a function or data object across two builds.
///
/// Keys borrow their text from the [`Image`](hotpatch_formats::Image) they
/// were made from: an index of fifty thousand functions makes no copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key<'a> {
    /// Source-level name, clone suffixes removed.
    pub name: &'a str,
    /// Translation unit (file stem, e.g. `b` for `b.c` or `b.obj`) for local
    /// symbols; `None` for global ones, whose names are unique in an image.
    pub unit: Option<&'a str>,
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unit {
            Some(u) => write!(f, "{u}:{}", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// Suffix families GCC (and clang's LTO) append to clones and split parts.
const CLONE_SUFFIXES: [&str; 7] = [
    "part",
    "isra",
    "constprop",
    "cold",
    "lto_priv",
    "localalias",
    "llvm",
];

/// Split a symbol name into its source-level name and its clone signature:
/// the suffix families in order, numbers dropped (`"isra.cold"`), or `""` for
/// the plain function. Names with an unknown dotted suffix are kept whole.
/// The signature borrows from `symbol` unless numbers had to be dropped.
///
/// ```
/// use hotpatch_builder::key::split_clone;
/// assert_eq!(split_clone("parse"), ("parse", "".into()));
/// assert_eq!(split_clone("parse.cold"), ("parse", "cold".into()));
/// assert_eq!(split_clone("parse.isra.0.cold"), ("parse", "isra.cold".into()));
/// assert_eq!(split_clone("copy.constprop.12"), ("copy", "constprop".into()));
/// assert_eq!(split_clone("weird.name"), ("weird.name", "".into()));
/// ```
pub fn split_clone(symbol: &str) -> (&str, Cow<'_, str>) {
    let plain = (symbol, Cow::Borrowed(""));
    // A byte scan: names are short, and most have no dot at all.
    let Some(dot) = symbol.bytes().position(|b| b == b'.') else {
        return plain;
    };
    let (Some(base), Some(rest)) = (symbol.get(..dot), symbol.get(dot.saturating_add(1)..)) else {
        return plain;
    };
    if base.is_empty() {
        return plain;
    }
    let mut families = 0u32;
    let mut numbers = false;
    for part in rest.split('.') {
        if part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty() {
            numbers = true;
        } else if CLONE_SUFFIXES.contains(&part) {
            families = families.saturating_add(1);
        } else {
            return plain;
        }
    }
    if families == 0 {
        return plain;
    }
    if !numbers {
        return (base, Cow::Borrowed(rest));
    }
    let folded: Vec<&str> = rest
        .split('.')
        .filter(|p| !p.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    (base, Cow::Owned(folded.join(".")))
}

/// Whether a clone signature names a part that is entered only by jumps from
/// its parent (a `.cold` split), rather than a callable entry point.
pub fn is_split_part(signature: &str) -> bool {
    signature.rsplit('.').next() == Some("cold")
}

/// The unit stem of a translation-unit name: the file name without
/// directories and extension (`obj/b.obj` and `b.c` both give `b`).
///
/// ```
/// use hotpatch_builder::key::unit_stem;
/// assert_eq!(unit_stem("b.c"), "b");
/// assert_eq!(unit_stem("obj\\net\\b.obj"), "b");
/// assert_eq!(unit_stem("./src/b.c"), "b");
/// ```
pub fn unit_stem(unit: &str) -> &str {
    let file = unit.rsplit(['/', '\\']).next().unwrap_or(unit);
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_and_constprop_combinations_fold_to_parent() {
        assert_eq!(split_clone("f.part.0"), ("f", "part".into()));
        assert_eq!(
            split_clone("f.constprop.0.isra.0"),
            ("f", "constprop.isra".into())
        );
        assert_eq!(split_clone("f.part.0.cold"), ("f", "part.cold".into()));
        assert!(is_split_part("part.cold"));
        assert!(!is_split_part("isra"));
        assert!(!is_split_part(""));
    }

    #[test]
    fn leading_dot_and_numeric_only_suffixes_are_kept() {
        assert_eq!(split_clone(".L123"), (".L123", "".into()));
        assert_eq!(split_clone("f.123"), ("f.123", "".into()));
    }
}
