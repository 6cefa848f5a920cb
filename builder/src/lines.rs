//! Line-number-only changes: a function whose code differs from its
//! baseline only because a `__LINE__` it passes on (to an assertion or an
//! error reporter) moved with its source.
//!
//! When a fix adds lines above a function, every `__LINE__` in it grows by
//! the same shift, and so does the function's own first line. Such a
//! function is `changed`, but shipping it fixes nothing; kpatch calls it a
//! "line macro change only". [`lines_only`] decides it exactly: it takes
//! the baseline's code, replaces each differing instruction's immediate by
//! the update's where the two differ by exactly the function's line shift,
//! normalises the result again, and requires it to equal the update's
//! normalised form. Anything else that differs (a register, a branch, a
//! reference, another immediate) leaves the function an ordinary change.
//!
//! The shift is [`line_shift`]: how far the function's first line (its
//! declaration line in DWARF, the first line of its line table in a PDB)
//! moved between the builds. [`crate::diff`] asks for every changed
//! function with a non-zero shift that uses no changed read-only object,
//! and marks it [`crate::diff::Entry::lines_only`].
//!
//! The immediates it can replace are those of moves, the only way a line
//! number reaches code (an argument, `mov ecx, 18B1h`; a stack argument or a
//! global, `mov dword ptr [rsp+20h], 10C6h`; on AArch64, a `MOVZ` before a
//! call or a store). An immediate compared, added or masked (`cmp`, `add`,
//! `and`, ...) is a bound or a size, and a fix that changes one by chance
//! by the line shift must not pass for a moved line:
//! - x86-64: the immediate operand of a `MOV` that decodes to the same code
//!   and length on both sides;
//! - AArch64: the 16-bit field of `MOVZ`/`MOVN` with the same register,
//!   width and shift (`mov w2, #0x18b1`).
//!
//! A fix that only changes the constant a function moves into a register
//! or memory, by exactly that function's line shift, still passes for one:
//! the report lists line-only functions apart, with their instructions, for
//! review, and `hotpatch build --include-lines-only` carries them.

use hotpatch_formats::Arch;

use crate::index::ImageIndex;
use crate::norm::{self, Normalized};

/// The line shift of a matched function (groups `bg` of `base` and `ug` of
/// `upd`): how far its first source line moved, update minus baseline
/// ([`hotpatch_formats::Image::lines`]). Taken over its parts of the same
/// kind that both builds give a line; `None` when none do, or when two
/// parts disagree.
pub fn line_shift(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
) -> Option<i64> {
    let uparts = upd.parts(ug);
    let mut shift = None;
    for b in base.parts(bg) {
        let Some(bl) = base.image.line_at(b.rva) else {
            continue;
        };
        let Some(ul) = uparts
            .iter()
            .find(|u| u.signature == b.signature)
            .and_then(|u| upd.image.line_at(u.rva))
        else {
            continue;
        };
        let s = i64::from(ul).wrapping_sub(i64::from(bl));
        match shift {
            None => shift = Some(s),
            Some(t) if t == s => {}
            Some(_) => return None,
        }
    }
    shift
}

/// Whether group `bg` of `base` and group `ug` of `upd` differ only by
/// immediates that grew by `shift` (the function's line shift, update minus
/// baseline). `false` when the shift is zero, when the functions have other
/// parts or instruction counts, or when anything but such immediates
/// differs.
pub fn lines_only(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
    shift: i64,
) -> bool {
    if shift == 0 {
        return false;
    }
    let (bparts, uparts) = (base.parts(bg), upd.parts(ug));
    if bparts.len() != uparts.len()
        || bparts
            .iter()
            .zip(uparts)
            .any(|(b, u)| b.signature != u.signature || b.size != u.size)
    {
        return false;
    }
    let (mut bn, mut un) = (Vec::new(), Vec::new());
    norm::normalize_group(base, bg, &mut bn);
    norm::normalize_group(upd, ug, &mut un);
    let mut patched: Vec<(usize, Vec<u8>)> = Vec::new();
    for (p, ((b, u), (bpart, upart))) in bn
        .iter()
        .zip(&un)
        .zip(bparts.iter().zip(uparts))
        .enumerate()
    {
        if b.insns.len() != u.insns.len() {
            return false;
        }
        let (Some(bcode), Some(ucode)) = (
            base.image.bytes_at(bpart.rva, bpart.size),
            upd.image.bytes_at(upart.rva, upart.size),
        ) else {
            return false;
        };
        let mut code: Option<Vec<u8>> = None;
        for (x, y) in b.insns.iter().zip(&u.insns) {
            if b.words_of(x) == u.words_of(y) {
                continue;
            }
            if x.offset != y.offset || x.len != y.len {
                return false;
            }
            let at = x.offset as usize;
            let end = at.saturating_add(usize::from(x.len));
            let (Some(bi), Some(ui)) = (bcode.get(at..end), ucode.get(at..end)) else {
                return false;
            };
            let pc = (
                bpart.rva.wrapping_add(at as u64),
                upart.rva.wrapping_add(at as u64),
            );
            let Some(fixed) = patch_immediate(base.image.arch, bi, ui, pc, shift) else {
                return false;
            };
            let c = code.get_or_insert_with(|| bcode.to_vec());
            match c.get_mut(at..end) {
                Some(slot) => slot.copy_from_slice(&fixed),
                None => return false,
            }
        }
        if let Some(c) = code {
            patched.push((p, c));
        }
    }
    if patched.is_empty() {
        // Nothing immediate differs: the difference lies elsewhere.
        return false;
    }
    let mut again: Vec<Normalized<'_>> = Vec::new();
    norm::normalize_group_patched(base, bg, &patched, &mut again);
    again
        .iter()
        .zip(&un)
        .all(|(a, u)| norm::exact_difference(a, u).is_none())
}

/// The baseline instruction `b` with its immediate replaced by the
/// update's (`u`), when both are the same instruction but for an immediate
/// that grew by exactly `shift`. `pc` are their addresses.
fn patch_immediate(arch: Arch, b: &[u8], u: &[u8], pc: (u64, u64), shift: i64) -> Option<Vec<u8>> {
    match arch {
        Arch::X86_64 => x86_immediate(b, u, pc, shift),
        Arch::Aarch64 => arm64_immediate(b, u, shift),
    }
}

/// x86-64: the same `MOV` (code and length) whose immediate operand grew by
/// `shift`; the baseline's bytes with the update's immediate field.
fn x86_immediate(b: &[u8], u: &[u8], pc: (u64, u64), shift: i64) -> Option<Vec<u8>> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
    let decode = |bytes: &[u8], ip: u64| {
        let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        let insn = d.decode();
        let offsets = d.get_constant_offsets(&insn);
        (!insn.is_invalid() && insn.len() == bytes.len()).then_some((insn, offsets))
    };
    let (bi, bo) = decode(b, pc.0)?;
    let (ui, uo) = decode(u, pc.1)?;
    if bi.code() != ui.code()
        || bi.mnemonic() != Mnemonic::Mov
        || !bo.has_immediate()
        || bo.immediate_offset() != uo.immediate_offset()
        || bo.immediate_size() != uo.immediate_size()
    {
        return None;
    }
    let op = (0..bi.op_count()).find(|&i| {
        matches!(
            bi.op_kind(i),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
        )
    })?;
    let grew = (ui.immediate(op) as i64).wrapping_sub(bi.immediate(op) as i64);
    if grew != shift {
        return None;
    }
    let at = bo.immediate_offset();
    let end = at.saturating_add(bo.immediate_size());
    let mut fixed = b.to_vec();
    fixed.get_mut(at..end)?.copy_from_slice(u.get(at..end)?);
    Some(fixed)
}

/// AArch64: `MOVZ`/`MOVN` with the same register, width and shift whose
/// value grew by `shift`; that is the update's word.
fn arm64_immediate(b: &[u8], u: &[u8], shift: i64) -> Option<Vec<u8>> {
    let word = |x: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(x.try_into().ok()?)) };
    let (wb, wu) = (word(b)?, word(u)?);
    // MOVN (opc 00) or MOVZ (opc 10), either width: sf x 00|10 100101.
    let kind = wb & 0x7f80_0000;
    if kind != 0x1280_0000 && kind != 0x5280_0000 {
        return None;
    }
    let field = 0xffff << 5;
    if wb & !field != wu & !field {
        return None;
    }
    let value = |w: u32| -> i64 {
        let imm = i64::from((w >> 5) & 0xffff) << (((w >> 21) & 3) << 4);
        if w & 0x7f80_0000 == 0x1280_0000 {
            !imm
        } else {
            imm
        }
    };
    (value(wu).wrapping_sub(value(wb)) == shift).then(|| u.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::index;
    use crate::key::Key;
    use crate::testutil::{image, section};
    use hotpatch_formats::Format;

    /// An x86-64 image with `f` at 0x1000 (its `code`) and `g` after it.
    fn x86<'d>(code: &'d [u8]) -> hotpatch_formats::Image<'d> {
        image(
            Format::Elf,
            Arch::X86_64,
            vec![section(".text", 0x1000, code, false, true)],
            &[("f", 0x1000, code.len() as u64)],
        )
    }

    /// `mov ecx, line; mov edx, 7; ret`
    fn reporter(line: u32, other: u8) -> Vec<u8> {
        let mut c = vec![0xb9];
        c.extend_from_slice(&line.to_le_bytes());
        c.extend_from_slice(&[0xba, other, 0, 0, 0, 0xc3]);
        c
    }

    fn decide(a: &[u8], b: &[u8], shift: i64) -> bool {
        let (ia, ib) = (x86(a), x86(b));
        let (xa, xb) = (index(&ia), index(&ib));
        let key = Key {
            name: "f",
            unit: None,
        };
        let (ga, gb) = (xa.group(&key).unwrap(), xb.group(&key).unwrap());
        lines_only(&xa, ga, &xb, gb, shift)
    }

    /// `mov ecx,18B1h` → `mov ecx,18B2h` with a line shift of one is a
    /// line-only change; with another shift, or with another difference
    /// beside it, it is not.
    #[test]
    fn line_immediate_shifted_by_the_line_shift_is_lines_only() {
        let (a, b) = (reporter(0x18b1, 7), reporter(0x18b2, 7));
        assert!(decide(&a, &b, 1));
        assert!(!decide(&a, &b, 2));
        assert!(!decide(&a, &b, 0));
        assert!(!decide(&a, &reporter(0x18b2, 9), 1));
        // Nothing differs at all: not a line-only *change*.
        assert!(!decide(&a, &a, 1));
    }

    /// `cmp ecx, 100` → `cmp ecx, 101` with a line shift of one is a bound
    /// that moved, not a line: only moves carry line numbers. A store of
    /// the line to memory is one.
    #[test]
    fn only_moved_immediates_are_line_numbers() {
        let cmp = |bound: u32| {
            let mut c = vec![0x81, 0xf9];
            c.extend_from_slice(&bound.to_le_bytes());
            c.push(0xc3);
            c
        };
        assert!(!decide(&cmp(100), &cmp(101), 1));
        // mov dword ptr [rsp+20h], line; ret
        let store = |line: u32| {
            let mut c = vec![0xc7, 0x44, 0x24, 0x20];
            c.extend_from_slice(&line.to_le_bytes());
            c.push(0xc3);
            c
        };
        assert!(decide(&store(0x10c0), &store(0x10c6), 6));
        assert!(!decide(&store(0x10c0), &store(0x10c6), 5));
    }

    /// The shift is taken over the parts both builds give a line (a GCC
    /// function and its `.cold` part); parts that disagree give none.
    #[test]
    fn line_shift_over_the_parts() {
        let code = [0xc3u8; 0x20];
        let with = |lines: &[(u64, u32)]| {
            let mut img = image(
                Format::Elf,
                Arch::X86_64,
                vec![section(".text", 0x1000, &code, false, true)],
                &[("f", 0x1000, 0x10), ("f.cold", 0x1010, 0x10)],
            );
            img.lines = lines
                .iter()
                .map(|&(rva, line)| hotpatch_formats::FunctionLine { rva, line })
                .collect();
            img
        };
        let shift = |a: &[(u64, u32)], b: &[(u64, u32)]| {
            let (ia, ib) = (with(a), with(b));
            let (xa, xb) = (index(&ia), index(&ib));
            let key = Key {
                name: "f",
                unit: None,
            };
            let (ga, gb) = (xa.group(&key).unwrap(), xb.group(&key).unwrap());
            line_shift(&xa, ga, &xb, gb)
        };
        let both = |l: u32| [(0x1000, l), (0x1010, l)];
        assert_eq!(shift(&both(40), &both(47)), Some(7));
        assert_eq!(shift(&both(47), &both(40)), Some(-7));
        assert_eq!(shift(&[(0x1010, 40)], &both(42)), Some(2));
        assert_eq!(shift(&both(40), &[(0x1000, 41), (0x1010, 42)]), None);
        assert_eq!(shift(&[(0x1000, 40)], &[(0x1010, 41)]), None);
        assert_eq!(shift(&[], &[]), None);
    }

    /// AArch64 `MOVZ`: only the 16-bit field may differ, by the shift.
    #[test]
    fn arm64_movz_by_the_shift_is_an_immediate() {
        let movz = |rd: u32, imm: u32| (0x5280_0000 | (imm << 5) | rd).to_le_bytes();
        let (a, b) = (movz(2, 0x18b1), movz(2, 0x18b2));
        assert_eq!(arm64_immediate(&a, &b, 1), Some(b.to_vec()));
        assert_eq!(arm64_immediate(&a, &b, 3), None);
        assert_eq!(arm64_immediate(&a, &movz(3, 0x18b2), 1), None);
        // MOVN: value is the complement.
        let movn = |imm: u32| (0x1280_0000 | (imm << 5) | 2).to_le_bytes();
        assert_eq!(
            arm64_immediate(&movn(5), &movn(4), 1),
            Some(movn(4).to_vec())
        );
    }
}
