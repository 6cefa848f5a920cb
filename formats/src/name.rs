//! Names taken from untrusted input, made safe to print.
//!
//! Every name the readers take from a file (symbol, section, module, export
//! and import names, the CodeView PDB path) goes through [`escape_name`] once, when
//! it is read. The model therefore never holds a control character, a
//! terminal escape sequence or an invisible formatting character, and any
//! message built from its names stays on one line and shows what is there.
//!
//! The escape is injective: two different raw names never give the same
//! escaped name, so matching by name (the diff does) is unaffected. Ordinary
//! C and C++ names (printable ASCII without a backslash, or printable UTF-8)
//! are unchanged.

use std::fmt::Write;

/// Escape a raw name for the model and for messages.
///
/// - A backslash becomes `\\`.
/// - A byte that is not part of valid UTF-8 becomes `\xNN` (two lowercase
///   hexadecimal digits).
/// - An ASCII control character (U+0000 to U+001F, U+007F) becomes `\xNN`.
/// - A C1 control (U+0080 to U+009F), a line or paragraph separator
///   (U+2028, U+2029) and any format character (Unicode general category Cf:
///   bidirectional overrides and isolates, zero-width characters, the byte
///   order mark, the soft hyphen, tag characters, ...) becomes `\u{N}` with
///   the code point in lowercase hexadecimal.
/// - Every other character is kept as it is.
///
/// Because every escape starts with a backslash and a backslash is always
/// escaped, the output decodes back to exactly the input: the escape is
/// injective.
///
/// ```
/// use hotpatch_formats::escape_name;
/// assert_eq!(escape_name(b"ns::f<int>"), "ns::f<int>");
/// assert_eq!(escape_name(b"a\x1b[2Jb"), "a\\x1b[2Jb");
/// assert_eq!(escape_name(b"bad\xffname"), "bad\\xffname");
/// assert_eq!(escape_name("x\u{202e}y".as_bytes()), "x\\u{202e}y");
/// assert_eq!(escape_name(b"back\\slash"), "back\\\\slash");
/// ```
pub fn escape_name(raw: &[u8]) -> String {
    // The common case: printable ASCII without a backslash.
    if raw.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        // Printable ASCII is UTF-8 as it is: one copy.
        if let Ok(text) = std::str::from_utf8(raw) {
            return text.to_owned();
        }
    }
    let mut out = String::with_capacity(raw.len().saturating_add(8));
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for &b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Append one valid character, escaped as [`escape_name`] says.
fn push_char(out: &mut String, c: char) {
    let code = u32::from(c);
    if c == '\\' {
        out.push_str("\\\\");
    } else if code < 0x20 || code == 0x7f {
        let _ = write!(out, "\\x{code:02x}");
    } else if is_hidden(code) {
        let _ = write!(out, "\\u{{{code:x}}}");
    } else {
        out.push(c);
    }
}

/// Whether a code point above the ASCII controls is one that changes how
/// text is laid out or shown rather than showing itself: a C1 control, a
/// line or paragraph separator, or a format character (general category Cf
/// as of Unicode 15.1).
fn is_hidden(code: u32) -> bool {
    matches!(
        code,
        0x80..=0x9f
            | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of [`escape_name`], for the injectivity tests.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            match chars.next().expect("dangling backslash") {
                '\\' => out.push(b'\\'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap());
                }
                'u' => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let c = char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap();
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                other => panic!("unknown escape \\{other}"),
            }
        }
        out
    }

    fn is_one_clean_line(s: &str) -> bool {
        s.chars().all(|c| {
            let code = u32::from(c);
            code >= 0x20 && code != 0x7f && !is_hidden(code)
        })
    }

    #[test]
    fn ordinary_names_are_unchanged() {
        for name in [
            "main",
            "_ZN2ns1fEv",
            "?g@ns@@YAHH@Z",
            "ns::vec<int>::push_back",
            "sess_recv.part.0",
            "checksum.isra.0.cold",
            "operator new[]",
            "`anonymous namespace'::f",
            "GLIBC_2.2.5",
            "naïve_função",
            "日本語",
            "",
        ] {
            assert_eq!(escape_name(name.as_bytes()), name);
        }
    }

    #[test]
    fn controls_and_escapes_are_escaped() {
        assert_eq!(escape_name(b"a\nb"), "a\\x0ab");
        assert_eq!(escape_name(b"\r\t\0"), "\\x0d\\x09\\x00");
        assert_eq!(escape_name(b"\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(escape_name(b"del\x7f"), "del\\x7f");
        // U+009B (CSI as a C1 control), encoded in UTF-8.
        assert_eq!(escape_name("x\u{9b}31m".as_bytes()), "x\\u{9b}31m");
        assert_eq!(
            escape_name("a\u{2028}b\u{2029}".as_bytes()),
            "a\\u{2028}b\\u{2029}"
        );
        assert_eq!(
            escape_name("\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}".as_bytes()),
            "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}"
        );
        assert_eq!(
            escape_name("\u{2066}\u{2067}\u{2068}\u{2069}".as_bytes()),
            "\\u{2066}\\u{2067}\\u{2068}\\u{2069}"
        );
        assert_eq!(
            escape_name("zero\u{200b}width\u{feff}".as_bytes()),
            "zero\\u{200b}width\\u{feff}"
        );
        assert_eq!(escape_name("tag\u{e0041}".as_bytes()), "tag\\u{e0041}");
        assert_eq!(escape_name(b"a\\b"), "a\\\\b");
    }

    #[test]
    fn invalid_utf8_is_escaped_byte_by_byte() {
        assert_eq!(escape_name(b"\xff"), "\\xff");
        assert_eq!(escape_name(b"\xc3"), "\\xc3");
        // A truncated sequence, then a valid character.
        assert_eq!(escape_name(b"\xe2\x82x"), "\\xe2\\x82x");
        // A lone C1 byte (not UTF-8) and the UTF-8 encoding of U+009B differ.
        assert_eq!(escape_name(b"\x9b"), "\\x9b");
        assert_eq!(escape_name(b"\xc2\x9b"), "\\u{9b}");
        // Overlong and surrogate encodings are invalid UTF-8.
        assert_eq!(escape_name(b"\xc0\xaf"), "\\xc0\\xaf");
        assert_eq!(escape_name(b"\xed\xa0\x80"), "\\xed\\xa0\\x80");
    }

    #[test]
    fn distinct_names_stay_distinct() {
        // What String::from_utf8_lossy merged: both became "f\u{fffd}".
        assert_ne!(escape_name(b"f\xff"), escape_name(b"f\xfe"));
        assert_ne!(escape_name(b"f\xff"), escape_name("f\u{fffd}".as_bytes()));
        // An escape's text and the byte it stands for.
        assert_ne!(escape_name(b"\\x1b"), escape_name(b"\x1b"));
        assert_ne!(
            escape_name(b"\\u{202e}"),
            escape_name("\u{202e}".as_bytes())
        );
    }

    #[test]
    fn escape_round_trips_on_random_bytes() {
        let mut state = 0x853c_49e6_748f_ea9b_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|_| {
                    // Favour the interesting bytes.
                    match next() % 6 {
                        0 => b'\\',
                        1 => 0x1b,
                        2 => 0x80 | (next() as u8 & 0x3f),
                        3 => 0xc2,
                        4 => 0xe2,
                        _ => next() as u8,
                    }
                })
                .collect();
            let escaped = escape_name(&raw);
            assert!(is_one_clean_line(&escaped), "{escaped:?}");
            assert_eq!(unescape(&escaped), raw, "{escaped:?}");
            if let Some(other) = seen.insert(escaped.clone(), raw.clone()) {
                assert_eq!(other, raw, "two names escape to {escaped:?}");
            }
        }
    }
}
