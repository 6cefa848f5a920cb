//! A quick look at x86-64 bytes: the length of the common instructions
//! whose normalised form is their bytes alone, without decoding them.
//!
//! The normaliser ([`super::x86`]) writes a plain instruction (no address
//! in it: not a branch, no RIP-relative operand) as its bytes, and leaves a
//! `NOP` out of the stream. For such an instruction all it needs from a
//! decoder is the length, and most instructions of compiled code are
//! plain. [`classify`] finds that length from a few tables (prefixes,
//! opcode, ModRM, SIB, displacement, immediate) for a deliberately small
//! set of instruction forms: the integer, SSE and SSE2 instructions that
//! compilers emit most, with the prefixes they use. Everything else,
//! including every branch, every RIP-relative operand, `lock`, VEX and
//! EVEX, three-byte opcodes, x87, and any prefix combination outside the
//! set, is [`Quick::Decode`]: left to iced-x86.
//!
//! The contract, checked against iced-x86 over every opcode with many
//! prefix, REX, ModRM and SIB combinations
//! (`quick_look_agrees_with_iced`), and again for every instruction the
//! normaliser meets in a build with debug assertions: when [`classify`]
//! answers [`Quick::Plain`] or [`Quick::Nop`], iced-x86 decodes the same
//! bytes as a valid instruction of that length that is, respectively, plain
//! and not a `NOP`, or a `NOP` in the normaliser's sense.

/// What [`classify`] found at the start of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quick {
    /// A valid plain instruction of this many bytes that is not a `NOP`.
    Plain(usize),
    /// A `NOP` (in the normaliser's sense) of this many bytes.
    Nop(usize),
    /// A direct near branch without prefixes: `jcc` (`kind` = the
    /// condition, 0..16), `jmp` ([`JMP`]) or `call` ([`CALL`]), rel8 or
    /// rel32, of `len` bytes, whose target is `rel` bytes past its end.
    Branch {
        /// Length in bytes.
        len: usize,
        /// Which branch.
        kind: u8,
        /// The displacement, sign-extended.
        rel: i64,
    },
    /// Not known here: decode it.
    Decode,
}

/// How an opcode continues.
const FORM_MASK: u32 = 0b11;
/// Not handled here.
const OTHER: u32 = 0;
/// No ModRM byte.
const BARE: u32 = 1;
/// A ModRM byte (and perhaps SIB and displacement).
const MODRM: u32 = 2;
/// A ModRM byte whose `reg` field (or whole value) decides: see
/// [`special`].
const SPECIAL: u32 = 3;

/// [`Quick::Branch::kind`] of `jmp`.
pub(crate) const JMP: u8 = 16;
/// [`Quick::Branch::kind`] of `call`.
pub(crate) const CALL: u8 = 17;

/// A direct near branch (bit 12): its immediate is the displacement, and
/// bits 13..18 its kind.
const BRANCH: u32 = 1 << 12;
/// Where a branch's kind starts.
const KIND_SHIFT: u32 = 13;

/// Which immediate follows (bits 2..5).
const IMM_SHIFT: u32 = 2;
/// No immediate.
const I0: u32 = 0;
/// 8 bits.
const I8: u32 = 1 << IMM_SHIFT;
/// 16 bits.
const I16: u32 = 2 << IMM_SHIFT;
/// 16 bits with an operand-size prefix, otherwise 32 (`iz`).
const IZ: u32 = 3 << IMM_SHIFT;
/// 16, 32 or, with `REX.W`, 64 bits (`iv`: `mov r, imm`).
const IV: u32 = 4 << IMM_SHIFT;
/// All the immediate bits.
const IMM_MASK: u32 = 7 << IMM_SHIFT;

/// The prefixes an opcode accepts (bits 8..12): none of `66`/`F3`/`F2`,
/// `66`, `F3`, `F2`. In the one-byte map `66` is the operand size and
/// `F3`/`F2` are `rep`; in the `0F` map they select the instruction.
const P_NONE: u32 = 1 << 8;
/// `66`.
const P_66: u32 = 1 << 9;
/// `F3`.
const P_F3: u32 = 1 << 10;
/// `F2`.
const P_F2: u32 = 1 << 11;
/// No mandatory prefix, or `66`.
const NP66: u32 = P_NONE | P_66;
/// Any of the four.
const PALL: u32 = P_NONE | P_66 | P_F3 | P_F2;

// The table builders run at compile time only: an index out of bounds
// there fails the build, it cannot panic at run time.

/// Set `value` for every opcode in `ops`.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn set(mut t: [u32; 256], ops: &[u8], value: u32) -> [u32; 256] {
    let mut i = 0;
    while i < ops.len() {
        t[ops[i] as usize] = value;
        i += 1;
    }
    t
}

/// Set `value` for the opcodes `from..=to`.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn range(mut t: [u32; 256], from: u8, to: u8, value: u32) -> [u32; 256] {
    let mut op = from as usize;
    while op <= to as usize {
        t[op] = value;
        op += 1;
    }
    t
}

/// The one-byte opcode map (64-bit mode).
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const ONE: [u32; 256] = {
    let mut t = [OTHER; 256];
    // The eight ALU operations: r/m,r and r,r/m forms, then AL/eAX with an
    // immediate (x6, x7, xE, xF are invalid in 64-bit mode or prefixes).
    let mut row = 0;
    while row < 8 {
        let base = row * 8;
        t = range(t, base, base + 3, MODRM | NP66);
        t[(base + 4) as usize] = BARE | I8 | NP66;
        t[(base + 5) as usize] = BARE | IZ | NP66;
        row += 1;
    }
    t = range(t, 0x50, 0x5f, BARE | NP66); // push, pop r
    let mut cc = 0;
    while cc < 16 {
        t[0x70 + cc] = BARE | I8 | P_NONE | BRANCH | (cc as u32) << KIND_SHIFT; // jcc rel8
        cc += 1;
    }
    t[0xe8] = BARE | IZ | P_NONE | BRANCH | (CALL as u32) << KIND_SHIFT; // call rel32
    t[0xe9] = BARE | IZ | P_NONE | BRANCH | (JMP as u32) << KIND_SHIFT; // jmp rel32
    t[0xeb] = BARE | I8 | P_NONE | BRANCH | (JMP as u32) << KIND_SHIFT; // jmp rel8
    t[0x63] = MODRM | NP66; // movsxd
    t[0x68] = BARE | IZ | NP66; // push imm
    t[0x69] = MODRM | IZ | NP66; // imul r, r/m, imm
    t[0x6a] = BARE | I8 | NP66;
    t[0x6b] = MODRM | I8 | NP66;
    t[0x80] = MODRM | I8 | NP66; // group 1
    t[0x81] = MODRM | IZ | NP66;
    t[0x83] = MODRM | I8 | NP66;
    t = range(t, 0x84, 0x8b, MODRM | NP66); // test, xchg, mov
    t[0x8d] = SPECIAL | NP66; // lea: memory only
    t[0x8f] = SPECIAL | NP66; // pop r/m: /0 only
    t[0x90] = SPECIAL | NP66; // nop, xchg r8
    t = range(t, 0x91, 0x97, BARE | NP66); // xchg eAX, r
    t = set(t, &[0x98, 0x99], BARE | NP66); // cbw.., cwd..
    t = set(
        t,
        &[0xa4, 0xa5, 0xa6, 0xa7, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf],
        BARE | PALL,
    );
    t[0xa8] = BARE | I8 | NP66; // test al, imm
    t[0xa9] = BARE | IZ | NP66;
    t = range(t, 0xb0, 0xb7, BARE | I8 | NP66); // mov r8, imm
    t = range(t, 0xb8, 0xbf, BARE | IV | NP66); // mov r, imm
    t = set(t, &[0xc0, 0xc1], MODRM | I8 | NP66); // shifts
    t[0xc2] = BARE | I16 | NP66; // ret imm16
    t[0xc3] = BARE | PALL; // ret (rep ret)
    t[0xc6] = SPECIAL | NP66; // mov r/m8, imm8: /0 only
    t[0xc7] = SPECIAL | NP66; // mov r/m, imm: /0 only
    t[0xc9] = BARE | NP66; // leave
    t[0xcc] = BARE | P_NONE; // int3
    t = range(t, 0xd0, 0xd3, MODRM | NP66); // shifts
    t = set(t, &[0xf5, 0xf8, 0xf9, 0xfc, 0xfd], BARE | NP66); // cmc, clc, stc, cld, std
    t = set(t, &[0xf6, 0xf7, 0xfe, 0xff], SPECIAL | NP66); // groups 3, 4, 5
    t
};

/// The two-byte opcode map (`0F xx`).
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const TWO: [u32; 256] = {
    let mut t = [OTHER; 256];
    t[0x05] = BARE | P_NONE; // syscall
    t[0x0b] = BARE | P_NONE; // ud2
    t = set(t, &[0x10, 0x11], MODRM | PALL); // movups/pd/ss/sd
    t = set(t, &[0x14, 0x15], MODRM | NP66); // unpck
    t[0x1e] = SPECIAL | P_F3; // endbr64, endbr32
    t[0x1f] = SPECIAL | NP66; // nop r/m
    t = set(t, &[0x28, 0x29, 0x2e, 0x2f], MODRM | NP66); // movap, (u)comis
    t = set(t, &[0x2a, 0x2c, 0x2d], MODRM | P_F3 | P_F2); // cvt(t)si2s, cvt(t)s2si
    t = range(t, 0x40, 0x4f, MODRM | NP66); // cmovcc
    t[0x51] = MODRM | PALL; // sqrt
    t = range(t, 0x54, 0x57, MODRM | NP66); // and, andn, or, xor
    t = set(t, &[0x58, 0x59, 0x5a, 0x5c, 0x5d, 0x5e, 0x5f], MODRM | PALL);
    t[0x5b] = MODRM | P_NONE | P_66 | P_F3; // cvtdq2ps, cvtps2dq, cvttps2dq
    t = range(t, 0x60, 0x6b, MODRM | NP66); // punpck, pack, pcmpgt
    t = set(t, &[0x6c, 0x6d], MODRM | P_66); // punpckqdq
    t[0x6e] = MODRM | NP66; // movd/q
    t = set(t, &[0x6f, 0x7f], MODRM | P_NONE | P_66 | P_F3); // movq, movdqa, movdqu
    t[0x70] = MODRM | I8 | PALL; // pshufw/d/hw/lw
    t = range(t, 0x74, 0x76, MODRM | NP66); // pcmpeq
    t[0x7e] = MODRM | P_NONE | P_66 | P_F3; // movd/q
    let mut cc = 0;
    while cc < 16 {
        t[0x80 + cc] = BARE | IZ | P_NONE | BRANCH | (cc as u32) << KIND_SHIFT; // jcc rel32
        cc += 1;
    }
    t = range(t, 0x90, 0x9f, MODRM | P_NONE); // setcc
    t = set(t, &[0xa3, 0xa5, 0xab, 0xad, 0xaf, 0xb3, 0xbb], MODRM | NP66); // bt.., shld/shrd cl, imul
    t = set(t, &[0xa4, 0xac], MODRM | I8 | NP66); // shld/shrd imm
    t = set(
        t,
        &[0xb0, 0xb1, 0xb6, 0xb7, 0xbe, 0xbf, 0xc0, 0xc1],
        MODRM | NP66,
    ); // cmpxchg, movzx, movsx, xadd
    t[0xb8] = MODRM | P_F3; // popcnt
    t[0xba] = SPECIAL | NP66; // bt.. imm: /4../7
    t = set(t, &[0xbc, 0xbd], MODRM | P_NONE | P_66 | P_F3); // bsf/bsr, tzcnt/lzcnt
    t[0xc2] = MODRM | I8 | PALL; // cmpps/pd/ss/sd
    t[0xc6] = MODRM | I8 | NP66; // shufps/pd
    t = range(t, 0xc8, 0xcf, BARE | P_NONE); // bswap
    t = set(t, &[0xd1, 0xd2, 0xd3, 0xd4, 0xd5], MODRM | NP66);
    t = range(t, 0xd8, 0xdf, MODRM | NP66);
    t = range(t, 0xe0, 0xe5, MODRM | NP66);
    t[0xe6] = MODRM | P_66 | P_F3 | P_F2; // cvt(t)pd2dq, cvtdq2pd
    t = range(t, 0xe8, 0xef, MODRM | NP66);
    t = range(t, 0xf1, 0xf6, MODRM | NP66);
    t = range(t, 0xf8, 0xfe, MODRM | NP66);
    t
};

/// Byte `at` of the window (the index is masked to it, so no bounds
/// check is left).
#[inline(always)]
fn byte(w: &[u8; 16], at: usize) -> u8 {
    w.get(at & 15).copied().unwrap_or(0)
}

/// The ModRM byte at `w[at]` and what follows it up to the immediate: the
/// position after it, and whether the operand is RIP-relative.
#[inline(always)]
fn modrm_end(w: &[u8; 16], at: usize) -> (usize, bool) {
    let modrm = byte(w, at);
    let (md, rm) = (modrm >> 6, modrm & 7);
    // Positions stay below 40: no arithmetic here can overflow.
    let end = at.wrapping_add(1);
    if md == 3 {
        return (end, false);
    }
    let disp = match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = byte(w, end);
        let sib_disp = if md == 0 && sib & 7 == 5 { 5 } else { 1 };
        (end.wrapping_add(sib_disp).wrapping_add(disp), false)
    } else if md == 0 && rm == 5 {
        (end.wrapping_add(4), true)
    } else {
        (end.wrapping_add(disp), false)
    }
}

/// What the `reg` field (or the whole ModRM byte) of an opcode marked
/// [`SPECIAL`] makes of it: its form without the prefix bits, and whether
/// it is a `NOP`. `None`: decode it.
#[inline]
fn special(two: bool, op: u8, modrm: u8, rex_b: bool, rep: bool) -> Option<(u32, bool)> {
    let reg = (modrm >> 3) & 7;
    let memory = modrm >> 6 != 3;
    Some(match (two, op) {
        (false, 0x8d) if memory => (MODRM, false),
        (false, 0x8f) if reg == 0 => (MODRM, false),
        // `nop`; `F3 90` is `pause` and `REX.B 90` is `xchg r8, rax`.
        (false, 0x90) if !rex_b && !rep => (BARE, true),
        (false, 0x90) if rex_b && !rep => (BARE, false),
        (false, 0xc6) if reg == 0 => (MODRM | I8, false),
        (false, 0xc7) if reg == 0 => (MODRM | IZ, false),
        (false, 0xf6) => (MODRM | if reg < 2 { I8 } else { I0 }, false),
        (false, 0xf7) => (MODRM | if reg < 2 { IZ } else { I0 }, false),
        (false, 0xfe) if reg < 2 => (MODRM, false),
        (false, 0xff) if matches!(reg, 0 | 1 | 2 | 4 | 6) => (MODRM, false),
        (true, 0x1e) if modrm == 0xfa || modrm == 0xfb => (MODRM, false),
        (true, 0x1f) if reg == 0 => (MODRM, true),
        (true, 0xba) if reg >= 4 => (MODRM | I8, false),
        _ => return None,
    })
}

/// The longest instruction x86-64 allows.
const MAX_LEN: usize = 15;

/// What a legacy prefix byte is: bit 0 `66`, bit 1 `F3`, bit 2 `F2`,
/// bit 3 a segment prefix (ignored or kept in the bytes); 0 for anything
/// else (not a prefix, or `lock` and `67`, which are not handled here).
#[allow(clippy::indexing_slicing)]
const PREFIX: [u8; 256] = {
    let mut t = [0u8; 256];
    t[0x66] = 1;
    t[0xf3] = 2;
    t[0xf2] = 4;
    t[0x2e] = 8;
    t[0x3e] = 8;
    t[0x26] = 8;
    t[0x36] = 8;
    t[0x64] = 8;
    t[0x65] = 8;
    t
};

/// The prefix bit of an entry that the `66`/`F3`/`F2` prefixes seen (bits
/// 0..3 of [`PREFIX`]) select; 0 for two of them at once, where which one
/// counts depends on the opcode.
const WHICH: [u32; 8] = [P_NONE, P_66, P_F3, 0, P_F2, 0, 0, 0];

/// Look at the instruction at the start of `code`: see [`Quick`].
#[inline(always)]
pub(crate) fn classify(code: &[u8]) -> Quick {
    match code.first_chunk::<16>() {
        Some(w) => look(w, 16),
        None => {
            // Near the end of the code: the same look at a zero-padded
            // window, whose answer must end inside the code.
            let mut w = [0u8; 16];
            w.iter_mut().zip(code).for_each(|(d, s)| *d = *s);
            look(&w, code.len())
        }
    }
}

/// [`classify`] of the first `avail` (at most 16) bytes of `w`.
#[inline(always)]
fn look(w: &[u8; 16], avail: usize) -> Quick {
    // Legacy prefixes: operand size, segments, rep; not lock or address
    // size.
    let mut seen = 0u8;
    let mut at = 0usize;
    loop {
        let p = PREFIX.get(usize::from(byte(w, at))).copied().unwrap_or(0);
        if p == 0 {
            break;
        }
        seen |= p;
        at = at.wrapping_add(1);
        if at >= MAX_LEN {
            return Quick::Decode;
        }
    }
    let mut rex = 0u8;
    let b = byte(w, at);
    if b & 0xf0 == 0x40 {
        rex = b;
        at = at.wrapping_add(1);
    }
    let mut op = byte(w, at);
    at = at.wrapping_add(1);
    let two = op == 0x0f;
    if two {
        op = byte(w, at);
        at = at.wrapping_add(1);
    }
    let map = if two { &TWO } else { &ONE };
    let entry = map.get(usize::from(op)).copied().unwrap_or(OTHER);
    let which = WHICH.get(usize::from(seen & 7)).copied().unwrap_or(0);
    if entry & which == 0 {
        return Quick::Decode;
    }
    if entry & BRANCH != 0 {
        // No prefix at all (a segment prefix is a hint that iced-x86
        // keeps, `F2` is `bnd`), no REX.
        if seen != 0 || rex != 0 {
            return Quick::Decode;
        }
        let kind = (entry >> KIND_SHIFT) as u8;
        let (len, rel) = if entry & IMM_MASK == I8 {
            (at.wrapping_add(1), i64::from(byte(w, at) as i8))
        } else {
            let d = [
                byte(w, at),
                byte(w, at.wrapping_add(1)),
                byte(w, at.wrapping_add(2)),
                byte(w, at.wrapping_add(3)),
            ];
            (at.wrapping_add(4), i64::from(i32::from_le_bytes(d)))
        };
        if len > avail {
            return Quick::Decode;
        }
        return Quick::Branch { len, kind, rel };
    }
    let (form, nop) = match entry & FORM_MASK {
        OTHER => return Quick::Decode,
        SPECIAL => match special(two, op, byte(w, at), rex & 1 != 0, seen & 6 != 0) {
            Some(s) => s,
            None => return Quick::Decode,
        },
        f => (f | (entry & IMM_MASK), false),
    };
    let mut end = at;
    if form & FORM_MASK == MODRM {
        let (e, rip) = modrm_end(w, at);
        // A RIP-relative operand has an address in it (a `NOP`'s is
        // ignored).
        if rip && !nop {
            return Quick::Decode;
        }
        end = e;
    }
    let wide = rex & 8 != 0;
    let p66 = seen & 1 != 0;
    end = end.wrapping_add(match form & IMM_MASK {
        I8 => 1,
        I16 => 2,
        IZ if p66 && !wide => 2,
        IZ => 4,
        IV if wide => 8,
        IV if p66 => 2,
        IV => 4,
        _ => 0,
    });
    if end > MAX_LEN || end > avail {
        return Quick::Decode;
    }
    if nop {
        Quick::Nop(end)
    } else {
        Quick::Plain(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Instruction};

    /// What iced-x86 makes of `bytes`, in [`Quick`]'s terms.
    fn iced(bytes: &[u8]) -> Quick {
        let mut d = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        d.decode_out(&mut insn);
        if insn.is_invalid() {
            return Quick::Decode;
        }
        if super::super::x86::is_nop(&insn) {
            return Quick::Nop(insn.len());
        }
        let len = insn.len();
        let target = insn.near_branch_target();
        let mut near = insn;
        near.as_near_branch();
        if let Some(kind) = super::super::x86::BRANCH_CODES
            .iter()
            .position(|&c| c == near.code())
            .filter(|_| {
                near.op_count() == 1
                    && bytes.first().is_some_and(|b| {
                        !matches!(
                            b,
                            0x26 | 0x2e
                                | 0x36
                                | 0x3e
                                | 0x64
                                | 0x65
                                | 0x66
                                | 0x67
                                | 0xf0
                                | 0xf2
                                | 0xf3
                                | 0x40..=0x4f
                        )
                    })
            })
        {
            return Quick::Branch {
                len,
                kind: kind as u8,
                rel: target.wrapping_sub(0x1000 + len as u64) as i64,
            };
        }
        if super::super::x86::is_plain_kind(&insn) {
            Quick::Plain(insn.len())
        } else {
            Quick::Decode
        }
    }

    /// Check one byte string; count what was classified, and keep what
    /// was wrong.
    fn check(bytes: &[u8], known: &mut usize, wrong: &mut Vec<String>) {
        let q = classify(bytes);
        if q == Quick::Decode {
            return;
        }
        *known += 1;
        let want = iced(bytes);
        if q != want && wrong.len() < 200 {
            wrong.push(format!("{bytes:02x?}: {q:?}, iced {want:?}"));
        }
    }

    /// Every opcode of both maps with the prefix sets compilers use and
    /// many they do not, REX variants, and ModRM/SIB bytes of every
    /// addressing form: the quick look is never wrong, and it knows the
    /// common forms.
    #[test]
    fn quick_look_agrees_with_iced() {
        let prefixes: &[&[u8]] = &[
            &[],
            &[0x66],
            &[0xf3],
            &[0xf2],
            &[0x66, 0xf3],
            &[0xf3, 0x66],
            &[0x66, 0xf2],
            &[0xf2, 0xf3],
            &[0x2e],
            &[0x66, 0x2e],
            &[0x66, 0x66, 0x2e],
            &[0x64],
            &[0x65],
            &[0x3e],
            &[0x26, 0x36],
            &[0xf0],
            &[0x67],
            &[0x66, 0x67],
            &[0x66; 14],
        ];
        let rexes: &[&[u8]] = &[
            &[],
            &[0x40],
            &[0x41],
            &[0x42],
            &[0x44],
            &[0x48],
            &[0x49],
            &[0x4c],
            &[0x4f],
        ];
        // Every reg value with each addressing form (and SIB forms).
        let mut modrms: Vec<Vec<u8>> = Vec::new();
        for reg in 0..8u8 {
            for (md, rm, sib) in [
                (0, 0, None),
                (0, 4, Some(0x24)),
                (0, 4, Some(0x25)),
                (0, 4, Some(0xe5)),
                (0, 5, None),
                (1, 0, None),
                (1, 4, Some(0x64)),
                (2, 1, None),
                (2, 4, Some(0x25)),
                (3, 0, None),
                (3, 2, None),
                (3, 5, None),
            ] {
                let mut m = vec![md << 6 | reg << 3 | rm];
                m.extend(sib);
                modrms.push(m);
            }
        }
        let mut opcodes: Vec<Vec<u8>> = (0..=255u8)
            .filter(|&b| b != 0x0f)
            .map(|b| vec![b])
            .collect();
        opcodes.extend((0..=255u8).map(|b| vec![0x0f, b]));
        let tail = [
            0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
            0xf1, 0x12,
        ];
        let mut known = 0usize;
        let mut wrong = Vec::new();
        let mut bytes = Vec::with_capacity(40);
        for p in prefixes {
            for r in rexes {
                for op in &opcodes {
                    for m in &modrms {
                        bytes.clear();
                        bytes.extend_from_slice(p);
                        bytes.extend_from_slice(r);
                        bytes.extend_from_slice(op);
                        bytes.extend_from_slice(m);
                        bytes.extend_from_slice(&tail);
                        check(&bytes, &mut known, &mut wrong);
                        // Cut short: never a length past the end.
                        let full = classify(&bytes);
                        if let Quick::Plain(n) | Quick::Nop(n) = full {
                            for cut in 0..n {
                                assert_eq!(
                                    classify(&bytes[..cut]),
                                    Quick::Decode,
                                    "{bytes:02x?} cut at {cut}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // Every ModRM and SIB byte, without prefixes and with the common ones.
        for p in [&[][..], &[0x66], &[0x48], &[0xf3], &[0xf2], &[0x66, 0x48]] {
            for op in &opcodes {
                for modrm in 0..=255u8 {
                    let sibs: Vec<u8> = if modrm >> 6 != 3 && modrm & 7 == 4 {
                        (0..=255u8).step_by(7).chain([0x25, 0x05, 0xfd]).collect()
                    } else {
                        vec![0x24]
                    };
                    for sib in sibs {
                        bytes.clear();
                        bytes.extend_from_slice(p);
                        bytes.extend_from_slice(op);
                        bytes.extend_from_slice(&[modrm, sib]);
                        bytes.extend_from_slice(&tail);
                        check(&bytes, &mut known, &mut wrong);
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(known > 1_000_000, "only {known} classified");
    }

    /// The forms GCC and clang emit most, each known.
    #[test]
    fn common_forms_are_known() {
        for (bytes, want) in [
            (&[0x48, 0x89, 0xe5][..], Quick::Plain(3)), // mov rbp, rsp
            (&[0x55], Quick::Plain(1)),                 // push rbp
            (&[0xc3], Quick::Plain(1)),                 // ret
            (&[0xf3, 0x0f, 0x1e, 0xfa], Quick::Plain(4)), // endbr64
            (
                &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],
                Quick::Nop(10),
            ), // nopw cs:[rax+rax]
            (&[0x0f, 0x1f, 0x44, 0x00, 0x00], Quick::Nop(5)), // nop [rax+rax]
            (&[0x90], Quick::Nop(1)),
            (&[0xf3, 0x90], Quick::Decode), // pause: decoded
            (
                &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0],
                Quick::Plain(9),
            ), // mov rax, fs:0x28
            (&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], Quick::Plain(10)), // movabs
            (&[0x48, 0x8b, 0x05, 1, 2, 3, 4], Quick::Decode), // RIP-relative
            (
                &[0xe8, 1, 2, 3, 4],
                Quick::Branch {
                    len: 5,
                    kind: CALL,
                    rel: 0x0403_0201,
                },
            ), // call
            (
                &[0x74, 0x05],
                Quick::Branch {
                    len: 2,
                    kind: 4,
                    rel: 5,
                },
            ), // je
            (&[0xc7, 0x44, 0x24, 0x08, 1, 0, 0, 0], Quick::Plain(8)), // mov [rsp+8], 1
            (&[0x66, 0x0f, 0xef, 0xc0], Quick::Plain(4)), // pxor
            (&[0xf2, 0x0f, 0x10, 0x44, 0x24, 0x08], Quick::Plain(6)), // movsd
        ] {
            assert_eq!(classify(bytes), want, "{bytes:02x?}");
            if want != Quick::Decode {
                assert_eq!(iced(bytes), want, "{bytes:02x?} (iced)");
            }
        }
    }
}
