//! SHA-256 digests and key ids, written as 64 lowercase hex digits.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Why a hex string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex digits, found {found:?}")]
pub struct HexError {
    /// How many digits were expected (`any even number` for free-length data).
    pub expected: &'static str,
    /// What was found (at most 80 characters of it).
    pub found: String,
}

impl HexError {
    fn new(expected: &'static str, found: &str) -> Self {
        HexError {
            expected,
            found: found.chars().take(80).collect(),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for &b in bytes {
        for n in [b >> 4, b & 15] {
            s.push(char::from(
                DIGITS.get(usize::from(n)).copied().unwrap_or(b'?'),
            ));
        }
    }
    s
}

/// The bytes of a hex string (either case, even length).
pub fn from_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let err = || HexError::new("an even number of", text);
    if text.len() % 2 != 0 {
        return Err(err());
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| match pair {
            [h, l] => Some((nibble(*h)? << 4) | nibble(*l)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(err)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(c.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(c.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

fn parse32(text: &str) -> Result<[u8; 32], HexError> {
    let err = || HexError::new("64", text);
    if text.len() != 64 {
        return Err(err());
    }
    from_hex(text)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(err)
}

macro_rules! hex32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parse 64 hex digits.
            pub fn parse(text: &str) -> Result<Self, HexError> {
                parse32(text).map($name)
            }

            /// The first 8 bytes in hex, for compact messages.
            pub fn short(&self) -> String {
                to_hex(self.0.get(..8).unwrap_or_default())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&to_hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                $name::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex32!(
    /// A SHA-256 digest.
    Sha256Digest
);

hex32!(
    /// A signing key's id: the SHA-256 of its public key's DER
    /// SubjectPublicKeyInfo.
    KeyId
);

impl Sha256Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }
}

/// Bytes of free length written as hex (an ELF build-id).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexBytes({self})")
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        from_hex(&text)
            .map(HexBytes)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::parse(&d.to_string()), Ok(d));
        assert_eq!(Sha256Digest::parse(&d.to_string().to_uppercase()), Ok(d));
        assert_eq!(d.short(), "ba7816bf8f01cfea");
        assert!(Sha256Digest::parse("ba78").is_err());
        assert!(Sha256Digest::parse(&"g".repeat(64)).is_err());
        assert_eq!(from_hex("0aFf"), Ok(vec![0x0a, 0xff]));
        assert!(from_hex("0a0").is_err());
        assert!(from_hex("é0").is_err());
    }
}
