//! Relocation field kinds: how a value is written into, and read back from,
//! the bytes of a relocatable body.
//!
//! One implementation serves the builder (which proves its records by
//! linking each body at a pretend address) and the applier (which links it
//! for real). Every kind checks its range: a value that does not fit is an
//! error, never a silent truncation.
//!
//! Terms, as in the ELF psABIs:
//! - `P` ([`Site::address`]): the address of the field, that is the body's
//!   address plus the relocation's offset (for AArch64 kinds: the address of
//!   the instruction that holds the field);
//! - `V` (the `value` argument): the target's address plus the addend;
//! - `B` ([`Site::image_base`]): the load address of the baseline image.

use std::fmt;

use serde::{Serialize, Serializer};

/// Where a field is being linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// `P`: the address of the field (of its instruction, on AArch64).
    pub address: u64,
    /// `B`: the load address of the baseline image (for [`RelocKind::ImageRel32`]).
    pub image_base: u64,
}

/// How a relocation's value is encoded in the body's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RelocKind {
    /// 32-bit little-endian signed `V - P`: x86-64 `call`/`jmp`/`jcc rel32`
    /// and RIP-relative operands (the addend carries the usual `-4`, or
    /// `-4 - immediate size`), and 32-bit relative entries of jump tables
    /// (the addend carries the entry's distance from the table's base).
    Rel32,
    /// 64-bit little-endian absolute `V`: pointers in data, on either
    /// architecture.
    Abs64,
    /// 32-bit little-endian unsigned `V - B`: image-relative addresses (PE
    /// `IMAGE_REL_*_ADDR32NB`, as in x64 PE jump tables).
    ImageRel32,
    /// AArch64 `B`/`BL`: imm26 (bits 25:0) = `(V - P) / 4`, ±128 MiB.
    A64Branch26,
    /// AArch64 `B.cond`/`CBZ`/`CBNZ`: imm19 (bits 23:5) = `(V - P) / 4`, ±1 MiB.
    A64CondBranch19,
    /// AArch64 `TBZ`/`TBNZ`: imm14 (bits 18:5) = `(V - P) / 4`, ±32 KiB.
    A64TestBranch14,
    /// AArch64 `ADR`: immhi:immlo (bits 23:5, 30:29) = `V - P`, ±1 MiB.
    A64Adr,
    /// AArch64 `ADRP`: immhi:immlo = `(V & !0xfff) - (P & !0xfff)` in 4 KiB
    /// pages, ±4 GiB.
    A64AdrpPage21,
    /// AArch64 12-bit page offset of an `ADRP` user, unsigned imm12 (bits
    /// 21:10) = `(V & 0xfff) >> scale`: `ADD` (scale 0) or `LDR`/`STR`
    /// (unsigned offset) with an access of `1 << scale` bytes (0..=4). The
    /// offset must be a multiple of the access size.
    A64Lo12 {
        /// log2 of the access size: 0 for `ADD`, `LDRB`/`STRB`; up to 4 for
        /// 128-bit `LDR Q`/`STR Q`.
        scale: u8,
    },
    /// AArch64 12-bit page offset used by `LDP`/`STP` (signed offset),
    /// imm7 (bits 21:15) = `(V & 0xfff) >> scale`, which must be at most 63.
    A64PairLo12 {
        /// log2 of the size of one register of the pair: 2, 3 or 4.
        scale: u8,
    },
    /// AArch64 `LDR` (literal): imm19 (bits 23:5) = `(V - P) / 4`, ±1 MiB.
    A64LdrLiteral19,
}

/// Why a value could not be written into, or read from, a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The field runs past the end of the bytes.
    #[error("{kind} field needs {needed} bytes, {available} are left")]
    Short {
        /// The kind.
        kind: RelocKind,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The value does not fit the field.
    #[error("{kind} field: {what} {value} is out of range {min}..={max}")]
    OutOfRange {
        /// The kind.
        kind: RelocKind,
        /// What was computed (for example `V - P`).
        what: &'static str,
        /// The value.
        value: i128,
        /// The smallest value that fits.
        min: i128,
        /// The largest value that fits.
        max: i128,
    },
    /// The value is not a multiple of what the field counts in.
    #[error("{kind} field: {what} {value:#x} is not a multiple of {align}")]
    Misaligned {
        /// The kind.
        kind: RelocKind,
        /// What was computed.
        what: &'static str,
        /// The value.
        value: i128,
        /// The required multiple.
        align: u64,
    },
    /// The bytes do not hold the instruction the kind applies to.
    #[error("{kind} field: instruction {insn:#010x} is not {expected}")]
    WrongInstruction {
        /// The kind.
        kind: RelocKind,
        /// The instruction word found.
        insn: u32,
        /// What the kind expects.
        expected: &'static str,
    },
    /// The instruction's access size disagrees with the kind's scale.
    #[error("{kind} field: instruction {insn:#010x} accesses {found} bytes, the relocation says {expected}")]
    WrongScale {
        /// The kind.
        kind: RelocKind,
        /// The instruction word.
        insn: u32,
        /// The access size the instruction encodes.
        found: u64,
        /// The access size of the kind.
        expected: u64,
    },
    /// The kind's scale is not one the kind allows.
    #[error("{kind}: invalid scale")]
    BadScale {
        /// The kind.
        kind: RelocKind,
    },
    /// `target + addend` overflows 64 bits.
    #[error("target {target:#x} + addend {addend} overflows 64 bits")]
    Overflow {
        /// The target address.
        target: u64,
        /// The addend.
        addend: i64,
    },
}

type R<T> = Result<T, FieldError>;

impl RelocKind {
    /// Every kind, with each valid scale, in code order.
    pub fn all() -> Vec<RelocKind> {
        let mut v = vec![
            RelocKind::Rel32,
            RelocKind::Abs64,
            RelocKind::ImageRel32,
            RelocKind::A64Branch26,
            RelocKind::A64CondBranch19,
            RelocKind::A64TestBranch14,
            RelocKind::A64Adr,
            RelocKind::A64AdrpPage21,
        ];
        v.extend((0..=4).map(|scale| RelocKind::A64Lo12 { scale }));
        v.extend((2..=4).map(|scale| RelocKind::A64PairLo12 { scale }));
        v.push(RelocKind::A64LdrLiteral19);
        v
    }

    /// The kind's code in the payload encoding (see `formats/SPEC.md`).
    pub fn code(self) -> u8 {
        match self {
            RelocKind::Rel32 => 1,
            RelocKind::Abs64 => 2,
            RelocKind::ImageRel32 => 3,
            RelocKind::A64Branch26 => 16,
            RelocKind::A64CondBranch19 => 17,
            RelocKind::A64TestBranch14 => 18,
            RelocKind::A64Adr => 19,
            RelocKind::A64AdrpPage21 => 20,
            RelocKind::A64Lo12 { .. } => 21,
            RelocKind::A64PairLo12 { .. } => 22,
            RelocKind::A64LdrLiteral19 => 23,
        }
    }

    /// The scale byte of the payload encoding (0 for kinds without one).
    pub fn scale(self) -> u8 {
        match self {
            RelocKind::A64Lo12 { scale } | RelocKind::A64PairLo12 { scale } => scale,
            _ => 0,
        }
    }

    /// The kind with this code and scale, if it is valid.
    pub fn from_code(code: u8, scale: u8) -> Option<RelocKind> {
        let kind = match code {
            1 => RelocKind::Rel32,
            2 => RelocKind::Abs64,
            3 => RelocKind::ImageRel32,
            16 => RelocKind::A64Branch26,
            17 => RelocKind::A64CondBranch19,
            18 => RelocKind::A64TestBranch14,
            19 => RelocKind::A64Adr,
            20 => RelocKind::A64AdrpPage21,
            21 => RelocKind::A64Lo12 { scale },
            22 => RelocKind::A64PairLo12 { scale },
            23 => RelocKind::A64LdrLiteral19,
            _ => return None,
        };
        (kind.scale() == scale && kind.scale_valid()).then_some(kind)
    }

    fn scale_valid(self) -> bool {
        match self {
            RelocKind::A64Lo12 { scale } => scale <= 4,
            RelocKind::A64PairLo12 { scale } => (2..=4).contains(&scale),
            _ => true,
        }
    }

    /// The name used in manifests, `inspect` and messages.
    pub fn name(self) -> &'static str {
        match self {
            RelocKind::Rel32 => "rel32",
            RelocKind::Abs64 => "abs64",
            RelocKind::ImageRel32 => "image-rel32",
            RelocKind::A64Branch26 => "a64-branch26",
            RelocKind::A64CondBranch19 => "a64-cond-branch19",
            RelocKind::A64TestBranch14 => "a64-test-branch14",
            RelocKind::A64Adr => "a64-adr",
            RelocKind::A64AdrpPage21 => "a64-adrp-page21",
            RelocKind::A64Lo12 { .. } => "a64-lo12",
            RelocKind::A64PairLo12 { .. } => "a64-pair-lo12",
            RelocKind::A64LdrLiteral19 => "a64-ldr-literal19",
        }
    }

    /// Bytes of the field (of the instruction word, on AArch64).
    pub fn width(self) -> usize {
        match self {
            RelocKind::Abs64 => 8,
            _ => 4,
        }
    }

    /// Whether the field is an AArch64 instruction word (which must sit at a
    /// multiple of 4 in its body).
    pub fn is_a64_instruction(self) -> bool {
        !matches!(
            self,
            RelocKind::Rel32 | RelocKind::Abs64 | RelocKind::ImageRel32
        )
    }

    /// Write `value` (`V`) into `field` (the bytes from the relocation's
    /// offset to the end of the body), linked at `site`. Other bits of an
    /// instruction are kept.
    pub fn write(self, field: &mut [u8], site: Site, value: u64) -> R<()> {
        if !self.scale_valid() {
            return Err(FieldError::BadScale { kind: self });
        }
        match self {
            RelocKind::Rel32 => {
                let d = self.fit(rel(value, site.address), "V - P", 32, true)?;
                put32(self, field, d as u32)
            }
            RelocKind::Abs64 => {
                let available = field.len();
                let bytes = field.get_mut(..8).ok_or(FieldError::Short {
                    kind: self,
                    needed: 8,
                    available,
                })?;
                bytes.copy_from_slice(&value.to_le_bytes());
                Ok(())
            }
            RelocKind::ImageRel32 => {
                let d = rel(value, site.image_base);
                let d = self.fit(d, "V - B", 32, false)?;
                put32(self, field, d as u32)
            }
            RelocKind::A64Branch26 => {
                let insn = self.insn(field)?;
                let imm = self.scaled(rel(value, site.address), "V - P", 2, 26)?;
                put32(self, field, (insn & !0x03ff_ffff) | imm)
            }
            RelocKind::A64CondBranch19 | RelocKind::A64LdrLiteral19 => {
                let insn = self.insn(field)?;
                let imm = self.scaled(rel(value, site.address), "V - P", 2, 19)?;
                put32(self, field, (insn & !(0x7ffff << 5)) | (imm << 5))
            }
            RelocKind::A64TestBranch14 => {
                let insn = self.insn(field)?;
                let imm = self.scaled(rel(value, site.address), "V - P", 2, 14)?;
                put32(self, field, (insn & !(0x3fff << 5)) | (imm << 5))
            }
            RelocKind::A64Adr => {
                let insn = self.insn(field)?;
                let imm = self.scaled(rel(value, site.address), "V - P", 0, 21)?;
                put32(self, field, adr_imm(insn, imm))
            }
            RelocKind::A64AdrpPage21 => {
                let insn = self.insn(field)?;
                let d = rel(value & !0xfff, site.address & !0xfff);
                let imm = self.scaled(d, "page(V) - page(P)", 12, 21)?;
                put32(self, field, adr_imm(insn, imm))
            }
            RelocKind::A64Lo12 { scale } => {
                let insn = self.insn(field)?;
                let lo = value & 0xfff;
                let imm = self.scaled(i128::from(lo), "V & 0xfff", scale, 12)?;
                put32(self, field, (insn & !(0xfff << 10)) | (imm << 10))
            }
            RelocKind::A64PairLo12 { scale } => {
                let insn = self.insn(field)?;
                let lo = value & 0xfff;
                let imm = self.scaled(i128::from(lo), "V & 0xfff", scale, 7)?;
                put32(self, field, (insn & !(0x7f << 15)) | (imm << 15))
            }
        }
    }

    /// Read back what `field` encodes, linked at `site`: `V` itself, except
    /// that [`RelocKind::A64AdrpPage21`] gives the page `V & !0xfff` and the
    /// lo12 kinds give the page offset `V & 0xfff`.
    pub fn read(self, field: &[u8], site: Site) -> R<u64> {
        if !self.scale_valid() {
            return Err(FieldError::BadScale { kind: self });
        }
        let word = || -> R<u32> { get32(self, field) };
        Ok(match self {
            RelocKind::Rel32 => {
                let d = word()? as i32;
                site.address.wrapping_add_signed(i64::from(d))
            }
            RelocKind::Abs64 => {
                let b: [u8; 8] =
                    field
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or(FieldError::Short {
                            kind: self,
                            needed: 8,
                            available: field.len(),
                        })?;
                u64::from_le_bytes(b)
            }
            RelocKind::ImageRel32 => site.image_base.wrapping_add(u64::from(word()?)),
            RelocKind::A64Branch26 => {
                let insn = self.insn(field)?;
                site.address
                    .wrapping_add_signed(sext(insn & 0x03ff_ffff, 26) << 2)
            }
            RelocKind::A64CondBranch19 | RelocKind::A64LdrLiteral19 => {
                let insn = self.insn(field)?;
                site.address
                    .wrapping_add_signed(sext((insn >> 5) & 0x7ffff, 19) << 2)
            }
            RelocKind::A64TestBranch14 => {
                let insn = self.insn(field)?;
                site.address
                    .wrapping_add_signed(sext((insn >> 5) & 0x3fff, 14) << 2)
            }
            RelocKind::A64Adr => {
                let insn = self.insn(field)?;
                site.address.wrapping_add_signed(sext(adr_field(insn), 21))
            }
            RelocKind::A64AdrpPage21 => {
                let insn = self.insn(field)?;
                (site.address & !0xfff).wrapping_add_signed(sext(adr_field(insn), 21) << 12)
            }
            RelocKind::A64Lo12 { scale } => {
                let insn = self.insn(field)?;
                u64::from((insn >> 10) & 0xfff) << scale
            }
            RelocKind::A64PairLo12 { scale } => {
                let insn = self.insn(field)?;
                (sext((insn >> 15) & 0x7f, 7) << scale) as u64
            }
        })
    }

    /// `d` as a field of `bits` bits (signed or unsigned), or an error.
    fn fit(self, d: i128, what: &'static str, bits: u32, signed: bool) -> R<u64> {
        // `bits` is 7..=32: none of this overflows.
        let (min, max) = if signed {
            let half = 1i128 << bits.wrapping_sub(1);
            (half.wrapping_neg(), half.wrapping_sub(1))
        } else {
            (0, (1i128 << bits).wrapping_sub(1))
        };
        if d < min || d > max {
            return Err(FieldError::OutOfRange {
                kind: self,
                what,
                value: d,
                min,
                max,
            });
        }
        // Two's complement in `bits` bits.
        Ok((d as u64) & (1u64 << bits).wrapping_sub(1))
    }

    /// `d >> shift` as a `bits`-bit field: `d` must be a multiple of
    /// `1 << shift`, and the quotient must fit (signed for the PC-relative
    /// kinds, unsigned for the lo12 kinds).
    fn scaled(self, d: i128, what: &'static str, shift: u8, bits: u32) -> R<u32> {
        let align = 1u64 << shift;
        if d.rem_euclid(i128::from(align)) != 0 {
            return Err(FieldError::Misaligned {
                kind: self,
                what,
                value: d,
                align,
            });
        }
        let q = d >> shift;
        let signed = !matches!(
            self,
            RelocKind::A64Lo12 { .. } | RelocKind::A64PairLo12 { .. }
        );
        // The pair field is signed, but a page offset is never negative, so
        // only 0..=63 fits.
        let v = if matches!(self, RelocKind::A64PairLo12 { .. }) {
            if q > 63 {
                return Err(FieldError::OutOfRange {
                    kind: self,
                    what,
                    value: d,
                    min: 0,
                    max: 63 << shift,
                });
            }
            q as u64
        } else {
            self.fit(q, what, bits, signed).map_err(|e| match e {
                // Report the range in the units of `d`, not of the field.
                FieldError::OutOfRange { min, max, .. } => FieldError::OutOfRange {
                    kind: self,
                    what,
                    value: d,
                    min: min << shift,
                    max: max << shift,
                },
                other => other,
            })?
        };
        Ok(v as u32)
    }

    /// The instruction word of an AArch64 kind, checked against the kind.
    fn insn(self, field: &[u8]) -> R<u32> {
        let insn = get32(self, field)?;
        let (ok, expected) = match self {
            RelocKind::A64Branch26 => (insn & 0x7c00_0000 == 0x1400_0000, "B or BL"),
            RelocKind::A64CondBranch19 => (
                insn & 0xff00_0010 == 0x5400_0000 || insn & 0x7e00_0000 == 0x3400_0000,
                "B.cond, CBZ or CBNZ",
            ),
            RelocKind::A64TestBranch14 => (insn & 0x7e00_0000 == 0x3600_0000, "TBZ or TBNZ"),
            RelocKind::A64Adr => (insn & 0x9f00_0000 == 0x1000_0000, "ADR"),
            RelocKind::A64AdrpPage21 => (insn & 0x9f00_0000 == 0x9000_0000, "ADRP"),
            RelocKind::A64LdrLiteral19 => (insn & 0x3b00_0000 == 0x1800_0000, "LDR (literal)"),
            RelocKind::A64Lo12 { scale } => {
                if insn & 0x7f80_0000 == 0x1100_0000 {
                    // ADD (immediate), unshifted.
                    self.check_scale(insn, 0, scale)?;
                    (true, "")
                } else if insn & 0x3b00_0000 == 0x3900_0000 {
                    // LDR/STR (immediate, unsigned offset).
                    let size = insn >> 30;
                    let vector = insn & (1 << 26) != 0;
                    let opc = (insn >> 22) & 3;
                    let found = if vector && opc & 2 != 0 {
                        if size != 0 {
                            return Err(FieldError::WrongInstruction {
                                kind: self,
                                insn,
                                expected: "ADD (immediate) or LDR/STR (unsigned offset)",
                            });
                        }
                        4
                    } else {
                        size as u8
                    };
                    self.check_scale(insn, found, scale)?;
                    (true, "")
                } else {
                    (false, "ADD (immediate) or LDR/STR (unsigned offset)")
                }
            }
            RelocKind::A64PairLo12 { scale } => {
                if insn & 0x3b80_0000 == 0x2900_0000 {
                    let opc = insn >> 30;
                    let vector = insn & (1 << 26) != 0;
                    let found = match (vector, opc) {
                        (false, 0) | (false, 1) | (true, 0) => 2,
                        (false, 2) | (true, 1) => 3,
                        (true, 2) => 4,
                        _ => {
                            return Err(FieldError::WrongInstruction {
                                kind: self,
                                insn,
                                expected: "LDP or STP (signed offset)",
                            })
                        }
                    };
                    self.check_scale(insn, found, scale)?;
                    (true, "")
                } else {
                    (false, "LDP or STP (signed offset)")
                }
            }
            RelocKind::Rel32 | RelocKind::Abs64 | RelocKind::ImageRel32 => (true, ""),
        };
        if ok {
            Ok(insn)
        } else {
            Err(FieldError::WrongInstruction {
                kind: self,
                insn,
                expected,
            })
        }
    }

    fn check_scale(self, insn: u32, found: u8, expected: u8) -> R<()> {
        if found == expected {
            Ok(())
        } else {
            Err(FieldError::WrongScale {
                kind: self,
                insn,
                found: 1 << found,
                expected: 1 << expected,
            })
        }
    }
}

/// `value - place` as a signed 128-bit number (no wrap-around: both fit in
/// 64 bits, the difference in 65).
fn rel(value: u64, place: u64) -> i128 {
    i128::from(value).wrapping_sub(i128::from(place))
}

/// Sign-extend the low `bits` bits (1..=32) of `v`.
fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64u32.wrapping_sub(bits);
    i64::from(v).wrapping_shl(shift).wrapping_shr(shift)
}

/// ADR/ADRP: put the 21-bit immediate into immlo (30:29) and immhi (23:5).
fn adr_imm(insn: u32, imm: u32) -> u32 {
    let immlo = imm & 3;
    let immhi = (imm >> 2) & 0x7ffff;
    (insn & !((3 << 29) | (0x7ffff << 5))) | (immlo << 29) | (immhi << 5)
}

/// ADR/ADRP: the 21-bit immediate.
fn adr_field(insn: u32) -> u32 {
    ((insn >> 5) & 0x7ffff) << 2 | ((insn >> 29) & 3)
}

fn get32(kind: RelocKind, field: &[u8]) -> R<u32> {
    let b: [u8; 4] = field
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(FieldError::Short {
            kind,
            needed: 4,
            available: field.len(),
        })?;
    Ok(u32::from_le_bytes(b))
}

fn put32(kind: RelocKind, field: &mut [u8], v: u32) -> R<()> {
    let available = field.len();
    let bytes = field.get_mut(..4).ok_or(FieldError::Short {
        kind,
        needed: 4,
        available,
    })?;
    bytes.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

impl fmt::Display for RelocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelocKind::A64Lo12 { scale } | RelocKind::A64PairLo12 { scale } => {
                write!(f, "{}/{}", self.name(), 1u32 << scale)
            }
            _ => f.write_str(self.name()),
        }
    }
}

impl Serialize for RelocKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    fn site(address: u64) -> Site {
        Site {
            address,
            image_base: BASE,
        }
    }

    /// A representative instruction for each AArch64 kind.
    fn insn_for(kind: RelocKind) -> u32 {
        match kind {
            RelocKind::A64Branch26 => 0x9400_0000,              // bl .
            RelocKind::A64CondBranch19 => 0x5400_0001,          // b.ne .
            RelocKind::A64TestBranch14 => 0x3700_0000,          // tbnz w0, #0, .
            RelocKind::A64Adr => 0x1000_0000,                   // adr x0, .
            RelocKind::A64AdrpPage21 => 0x9000_0000,            // adrp x0, .
            RelocKind::A64LdrLiteral19 => 0x5800_0000,          // ldr x0, .
            RelocKind::A64Lo12 { scale: 0 } => 0x9100_0000,     // add x0, x0, #0
            RelocKind::A64Lo12 { scale: 1 } => 0x7940_0000,     // ldrh w0, [x0]
            RelocKind::A64Lo12 { scale: 2 } => 0xb940_0000,     // ldr w0, [x0]
            RelocKind::A64Lo12 { scale: 3 } => 0xf940_0000,     // ldr x0, [x0]
            RelocKind::A64Lo12 { scale: 4 } => 0x3dc0_0000,     // ldr q0, [x0]
            RelocKind::A64PairLo12 { scale: 2 } => 0x2940_0000, // ldp w0, w0, [x0]
            RelocKind::A64PairLo12 { scale: 3 } => 0xa900_0000, // stp x0, x0, [x0]
            RelocKind::A64PairLo12 { scale: 4 } => 0xad40_0000, // ldp q0, q0, [x0]
            _ => 0,
        }
    }

    fn bytes_for(kind: RelocKind) -> Vec<u8> {
        let mut v = insn_for(kind).to_le_bytes().to_vec();
        v.extend_from_slice(&[0xaa; 8]);
        v
    }

    /// Write `value` at `place` and read it back; the other bytes and bits
    /// are kept.
    fn round_trip(kind: RelocKind, place: u64, value: u64) -> R<u64> {
        let mut b = bytes_for(kind);
        let before = b.clone();
        kind.write(&mut b, site(place), value)?;
        assert_eq!(
            b[kind.width()..],
            before[kind.width()..],
            "{kind}: bytes past the field changed"
        );
        if kind.is_a64_instruction() {
            // Only the immediate moved: the opcode bits are the same.
            let old = u32::from_le_bytes(before[..4].try_into().unwrap());
            let new = u32::from_le_bytes(b[..4].try_into().unwrap());
            let mask = match kind {
                RelocKind::A64Branch26 => 0x03ff_ffff,
                RelocKind::A64CondBranch19 | RelocKind::A64LdrLiteral19 => 0x7ffff << 5,
                RelocKind::A64TestBranch14 => 0x3fff << 5,
                RelocKind::A64Adr | RelocKind::A64AdrpPage21 => (3 << 29) | (0x7ffff << 5),
                RelocKind::A64Lo12 { .. } => 0xfff << 10,
                RelocKind::A64PairLo12 { .. } => 0x7f << 15,
                _ => unreachable!(),
            };
            assert_eq!(old & !mask, new & !mask, "{kind}: opcode bits changed");
        }
        kind.read(&b, site(place))
    }

    fn out_of_range(kind: RelocKind, place: u64, value: u64) {
        let mut b = bytes_for(kind);
        let before = b.clone();
        let err = kind.write(&mut b, site(place), value).unwrap_err();
        assert!(
            matches!(
                err,
                FieldError::OutOfRange { .. } | FieldError::Misaligned { .. }
            ),
            "{kind}: {err}"
        );
        assert_eq!(b, before, "{kind}: a failed write changed the bytes");
    }

    #[test]
    fn rel32_round_trips_and_range() {
        let k = RelocKind::Rel32;
        let p = 0x1_0000_0000u64;
        for v in [p, p + 1, p - 4, p + 0x7fff_ffff, p - 0x8000_0000] {
            assert_eq!(round_trip(k, p, v), Ok(v));
        }
        out_of_range(k, p, p + 0x8000_0000);
        out_of_range(k, p, p - 0x8000_0001);
        out_of_range(k, 0, u64::MAX); // no wrap-around
        let mut b = [0u8; 4];
        k.write(&mut b, site(0x1000), 0x0ffc).unwrap();
        assert_eq!(b, (-4i32).to_le_bytes());
    }

    #[test]
    fn abs64_round_trips() {
        for v in [0, 1, BASE + 0x1234, u64::MAX] {
            assert_eq!(round_trip(RelocKind::Abs64, 0x40, v), Ok(v));
        }
        let mut b = [0u8; 7];
        assert!(matches!(
            RelocKind::Abs64.write(&mut b, site(0), 1),
            Err(FieldError::Short {
                needed: 8,
                available: 7,
                ..
            })
        ));
    }

    #[test]
    fn image_rel32_round_trips_and_range() {
        let k = RelocKind::ImageRel32;
        for v in [BASE, BASE + 0x1000, BASE + 0xffff_ffff] {
            assert_eq!(round_trip(k, BASE + 0x10, v), Ok(v));
        }
        out_of_range(k, BASE, BASE - 1);
        out_of_range(k, BASE, BASE + 0x1_0000_0000);
    }

    #[test]
    fn branch26_round_trips_and_range() {
        let k = RelocKind::A64Branch26;
        let p = 0x4000_0000u64;
        let max = (1u64 << 27) - 4;
        for v in [p, p + 4, p - 4, p + max, p - (1 << 27)] {
            assert_eq!(round_trip(k, p, v), Ok(v), "{v:#x}");
        }
        out_of_range(k, p, p + max + 4);
        out_of_range(k, p, p - (1 << 27) - 4);
        out_of_range(k, p, p + 2); // misaligned
                                   // bl +8 from 0: 0x94000002
        let mut b = 0x9400_0000u32.to_le_bytes();
        k.write(&mut b, site(0), 8).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0x9400_0002);
    }

    #[test]
    fn imm19_kinds_round_trip_and_range() {
        for k in [RelocKind::A64CondBranch19, RelocKind::A64LdrLiteral19] {
            let p = 0x20_0000u64;
            let max = (1u64 << 20) - 4;
            for v in [p, p + 4, p + max, p - (1 << 20)] {
                assert_eq!(round_trip(k, p, v), Ok(v), "{k} {v:#x}");
            }
            out_of_range(k, p, p + max + 4);
            out_of_range(k, p, p - (1 << 20) - 4);
            out_of_range(k, p, p + 6);
        }
        // cbz and cbnz take the same field.
        for insn in [0xb400_0000u32, 0x3500_0000] {
            let mut b = insn.to_le_bytes();
            RelocKind::A64CondBranch19
                .write(&mut b, site(0x100), 0x80)
                .unwrap();
            assert_eq!(RelocKind::A64CondBranch19.read(&b, site(0x100)), Ok(0x80));
        }
    }

    #[test]
    fn test_branch14_round_trips_and_range() {
        let k = RelocKind::A64TestBranch14;
        let p = 0x10_0000u64;
        let max = (1u64 << 15) - 4;
        for v in [p, p + max, p - (1 << 15)] {
            assert_eq!(round_trip(k, p, v), Ok(v));
        }
        out_of_range(k, p, p + max + 4);
        out_of_range(k, p, p - (1 << 15) - 4);
        // The bit number (b5:b40) is kept: tbz x3, #42, . = 0xb6500003
        let mut b = 0xb650_0003u32.to_le_bytes();
        k.write(&mut b, site(0x1000), 0x1000 + 0x20).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xb650_0103);
    }

    #[test]
    fn adr_round_trips_and_range() {
        let k = RelocKind::A64Adr;
        let p = 0x20_0000u64;
        for v in [p, p + 1, p + 3, p - 1, p + (1 << 20) - 1, p - (1 << 20)] {
            assert_eq!(round_trip(k, p, v), Ok(v), "{v:#x}");
        }
        out_of_range(k, p, p + (1 << 20));
        out_of_range(k, p, p - (1 << 20) - 1);
        // adr x1, .+5 = 0x30000021
        let mut b = 0x1000_0001u32.to_le_bytes();
        k.write(&mut b, site(0x400), 0x405).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0x3000_0021);
    }

    #[test]
    fn adrp_round_trips_pages_and_range() {
        let k = RelocKind::A64AdrpPage21;
        let p = 0x2_0000_0abcu64;
        for v in [
            p,
            p + 0x1234,
            p - 0x1000,
            (p & !0xfff) + (1 << 32) - 0x1000,
            (p & !0xfff) - (1 << 32),
        ] {
            assert_eq!(round_trip(k, p, v), Ok(v & !0xfff), "{v:#x}");
        }
        out_of_range(k, p, (p & !0xfff) + (1 << 32));
        out_of_range(k, p, (p & !0xfff) - (1 << 32) - 0x1000);
        // adrp x0, page+1 at 0: 0xb0000000
        let mut b = 0x9000_0000u32.to_le_bytes();
        k.write(&mut b, site(0xfff), 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xb000_0000);
    }

    #[test]
    fn lo12_round_trips_scaled_and_checks_alignment() {
        for scale in 0..=4u8 {
            let k = RelocKind::A64Lo12 { scale };
            let unit = 1u64 << scale;
            for lo in [0, unit, 0x1000 - unit] {
                let v = 0x5555_5000 + lo;
                assert_eq!(round_trip(k, 0x40_0000, v), Ok(lo), "{k} {v:#x}");
            }
            if scale > 0 {
                out_of_range(k, 0, 0x5555_5000 + unit / 2);
            }
        }
        // ldr x1, [x2, #:lo12:sym] with sym at 0x...fe8: imm12 = 0xfe8 / 8 = 0x1fd
        let mut b = 0xf940_0041u32.to_le_bytes();
        RelocKind::A64Lo12 { scale: 3 }
            .write(&mut b, site(0), 0x9000_0fe8)
            .unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xf947_f441);
    }

    #[test]
    fn pair_lo12_round_trips_and_range() {
        for scale in 2..=4u8 {
            let k = RelocKind::A64PairLo12 { scale };
            let unit = 1u64 << scale;
            for lo in [0, unit, 63 * unit] {
                assert_eq!(round_trip(k, 0, 0x8000 + lo), Ok(lo), "{k}");
            }
            out_of_range(k, 0, 0x8000 + 64 * unit);
            out_of_range(k, 0, 0x8000 + unit / 2);
        }
    }

    #[test]
    fn instruction_and_scale_are_checked() {
        // A B26 relocation over an ADRP is a builder bug, not a patch.
        let mut b = 0x9000_0000u32.to_le_bytes();
        assert_eq!(
            RelocKind::A64Branch26
                .write(&mut b, site(0), 0)
                .unwrap_err()
                .to_string(),
            "a64-branch26 field: instruction 0x90000000 is not B or BL"
        );
        // ldr x0 accesses 8 bytes; a scale-2 relocation says 4.
        let mut b = 0xf940_0000u32.to_le_bytes();
        assert_eq!(
            RelocKind::A64Lo12 { scale: 2 }
                .write(&mut b, site(0), 0)
                .unwrap_err()
                .to_string(),
            "a64-lo12/4 field: instruction 0xf9400000 accesses 8 bytes, the relocation says 4"
        );
        // ADD takes scale 0 only.
        let mut b = 0x9100_0000u32.to_le_bytes();
        assert!(matches!(
            RelocKind::A64Lo12 { scale: 3 }.write(&mut b, site(0), 0),
            Err(FieldError::WrongScale { .. })
        ));
        for k in RelocKind::all()
            .into_iter()
            .filter(|k| k.is_a64_instruction())
        {
            // `NOP` is no instruction any kind takes.
            let mut b = 0xd503_201fu32.to_le_bytes();
            assert!(
                matches!(
                    k.write(&mut b, site(0), 0),
                    Err(FieldError::WrongInstruction { .. })
                ),
                "{k}"
            );
        }
    }

    #[test]
    fn out_of_range_message() {
        let mut b = [0u8; 4];
        assert_eq!(
            RelocKind::Rel32
                .write(&mut b, site(0), 0x8000_0000)
                .unwrap_err()
                .to_string(),
            "rel32 field: V - P 2147483648 is out of range -2147483648..=2147483647"
        );
    }

    #[test]
    fn codes_round_trip() {
        for k in RelocKind::all() {
            assert_eq!(RelocKind::from_code(k.code(), k.scale()), Some(k));
        }
        assert_eq!(RelocKind::from_code(1, 1), None);
        assert_eq!(RelocKind::from_code(21, 5), None);
        assert_eq!(RelocKind::from_code(22, 1), None);
        assert_eq!(RelocKind::from_code(0, 0), None);
        assert_eq!(RelocKind::from_code(24, 0), None);
        let invalid = RelocKind::A64Lo12 { scale: 9 };
        assert_eq!(
            invalid.write(&mut [0; 4], site(0), 0),
            Err(FieldError::BadScale { kind: invalid })
        );
    }
}
