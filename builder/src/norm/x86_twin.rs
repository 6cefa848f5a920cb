//! Two builds of one x86-64 function part walked side by side, for the
//! common case of a diff: the same code at another address.
//!
//! [`same_part`] decodes only the baseline's bytes, and only as far as the
//! normaliser would: the quick look of [`x86_quick`] first, iced-x86 for the
//! rest. Where the update's bytes are the same, so is the instruction; where
//! they differ, they may only differ in the address field of an instruction
//! that holds an address (a branch target, a RIP-relative displacement),
//! and then both addresses must refer to the same thing, by the rules of
//! [`super::x86`]. Nothing is written to an instruction stream.
//!
//! The walk answers "the same" only when the two parts have the same
//! instructions at the same offsets (`NOP`s included), with the same
//! forms: then references into the group's own code are the same exactly
//! when their byte offsets are, and the normaliser's streams would be
//! equal. Anything else (different bytes, another layout, a relocation, a
//! jump table, bytes that do not decode) makes it give up, and the caller
//! normalises both parts the usual way. So the walk decides nothing the
//! normaliser would decide otherwise; it only saves the work of writing
//! and comparing two streams. Builds with debug assertions check every
//! "the same" against the normaliser (see `crate::diff`).

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};

use super::x86::{self, RipOperand, TableAt, TableLoad};
use super::x86_quick::{self, Quick};
use super::{Normalized, SameDeferred, Scope};
use crate::index::SymRef;

/// One build's side of the walk: the part, its bytes, and where the
/// references its code makes are noted (see [`same_part`]).
pub(super) struct Side<'s, 'a, 'i, 'd> {
    /// The part.
    pub scope: Scope<'a, 'i, 'd>,
    /// Its bytes.
    pub code: &'s [u8],
    /// Receives the anchors, noted references and provisionally measured
    /// jump tables the normaliser would record ([`Normalized::anchors`],
    /// [`Normalized::data_refs`], [`Normalized::fn_refs`],
    /// [`Normalized::tables`]); nothing else.
    pub out: &'s mut Normalized<'a>,
    /// Jump tables in anonymous data that the part loads, in order: the
    /// position of the `lea` in the stream, the table's address, and
    /// whether it is measured before the index is finished.
    pub tables: Vec<(u32, u64, bool)>,
}

impl<'a> Side<'_, 'a, '_, '_> {
    /// Resolve an address an instruction holds, as the normaliser does.
    fn resolve(&mut self, target: u64) -> SymRef<'a> {
        x86::resolve_operand(self.scope, target, self.out)
    }
}

/// The offset of the first byte from `from` on where `a` and `b` differ
/// (their common length when none does).
fn mismatch(a: &[u8], b: &[u8], from: usize) -> usize {
    match (a.get(from..), b.get(from..)) {
        (Some(a), Some(b)) => from.saturating_add(x86::common_prefix(a, b)),
        _ => from,
    }
}

/// Whether two references that instruction `insn` of part `part` (at
/// byte `offset`, the same in both builds) makes are the same, given that
/// both parts have the same layout: places in the group's code by part and
/// offset, anonymous bytes not yet in a block left to the caller (recorded
/// in `deferred`), anything else exactly.
fn same_ref(
    b: &SymRef<'_>,
    u: &SymRef<'_>,
    part: u32,
    insn: u32,
    offset: usize,
    deferred: &mut Vec<SameDeferred>,
) -> bool {
    match (b, u) {
        (SymRef::Deferred(x), SymRef::Deferred(y)) => {
            deferred.push(SameDeferred {
                part,
                insn,
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                rvas: (*x, *y),
            });
            true
        }
        (SymRef::Deferred(_), _) | (_, SymRef::Deferred(_)) => false,
        // Places in the group's code compare by part and offset.
        (x, y) => x == y,
    }
}

/// Decode the instruction at `pos` of `code` (at `rva`) into `insn`.
fn decode_at(decoder: &mut Decoder<'_>, rva: u64, pos: usize, insn: &mut Instruction) -> bool {
    if !x86::resync(decoder, rva, pos) {
        return false;
    }
    decoder.decode_out(insn);
    !insn.is_invalid()
}

/// Whether the part `b` of the baseline and the part `u` of the update
/// are the same code laid out alike (see the module documentation).
/// References to anonymous bytes not yet in a block go to `deferred`, in
/// order; the anchors, noted references and tables of each side go to its
/// [`Side::out`]. `false` means "not known to be": the caller must
/// normalise, and drop what the walk recorded.
pub(super) fn same_part(
    mut b: Side<'_, '_, '_, '_>,
    mut u: Side<'_, '_, '_, '_>,
    deferred: &mut Vec<SameDeferred>,
) -> bool {
    let n = b.code.len();
    if u.code.len() != n {
        return false;
    }
    let (brva, urva) = (b.scope.rva, u.scope.rva);
    // The bytes before `same` are the same in both parts.
    let mut same = mismatch(b.code, u.code, 0);
    let mut pos = 0usize;
    // Instructions kept in the normaliser's stream so far (`NOP`s are not).
    let mut kept = 0u32;
    let mut bdec = Decoder::with_ip(64, b.code, brva, DecoderOptions::NONE);
    let mut udec = Decoder::with_ip(64, u.code, urva, DecoderOptions::NONE);
    let (mut bi, mut ui) = (Instruction::default(), Instruction::default());
    while pos < n {
        let rest = b.code.get(pos..).unwrap_or(&[]);
        let len = match x86_quick::classify(rest) {
            q @ (Quick::Plain(len) | Quick::Nop(len)) => {
                // Its bytes are its form: they must repeat.
                if pos.saturating_add(len) > same {
                    return false;
                }
                kept = kept.saturating_add(u32::from(matches!(q, Quick::Plain(_))));
                pos = pos.saturating_add(len);
                continue;
            }
            Quick::Branch { len, kind, rel } => {
                let end = pos.saturating_add(len);
                let urel = if end <= same {
                    rel
                } else {
                    match x86_quick::classify(u.code.get(pos..).unwrap_or(&[])) {
                        Quick::Branch {
                            len: l,
                            kind: k,
                            rel,
                        } if l == len && k == kind => rel,
                        _ => return false,
                    }
                };
                let tb = brva.wrapping_add(end as u64).wrapping_add_signed(rel);
                let tu = urva.wrapping_add(end as u64).wrapping_add_signed(urel);
                if !same_branch(&mut b, tb, &mut u, tu, kept, pos, deferred) {
                    return false;
                }
                len
            }
            Quick::Decode => {
                if !decode_at(&mut bdec, brva, pos, &mut bi) {
                    return false;
                }
                let len = bi.len();
                let end = pos.saturating_add(len);
                let nop = x86::is_nop(&bi);
                if nop || x86::is_plain_kind(&bi) {
                    if end > same {
                        return false;
                    }
                    kept = kept.saturating_add(u32::from(!nop));
                    pos = end;
                    continue;
                }
                // An address in it: the update's target, from its own
                // bytes where they differ (in the address field only).
                let branch = matches!(
                    bi.op0_kind(),
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                );
                let rip = bi.is_ip_rel_memory_operand();
                if branch == rip {
                    // A far branch (not in 64-bit code), or both (cannot be).
                    return false;
                }
                let target = |i: &Instruction| {
                    if branch {
                        i.near_branch_target()
                    } else {
                        i.ip_rel_memory_address()
                    }
                };
                let tb = target(&bi);
                // The same bytes hold the same displacement: the target
                // moves with the code, unless it is cut to 16 or 32 bits
                // (`66` before a branch, `67` before a RIP-relative
                // operand), which only decoding the update's bytes gets
                // right.
                let full = if branch {
                    bi.op0_kind() == OpKind::NearBranch64
                } else {
                    bi.memory_base() == Register::RIP
                };
                let tu = if end <= same && full {
                    tb.wrapping_sub(brva).wrapping_add(urva)
                } else {
                    if !decode_at(&mut udec, urva, pos, &mut ui) || ui.len() != len {
                        return false;
                    }
                    let co = bdec.get_constant_offsets(&bi);
                    let (at, size) = if branch {
                        (co.immediate_offset(), co.immediate_size())
                    } else {
                        (co.displacement_offset(), co.displacement_size())
                    };
                    let field = pos.saturating_add(at);
                    let after = field.saturating_add(size);
                    if b.code.get(pos..field) != u.code.get(pos..field)
                        || b.code.get(after..end) != u.code.get(after..end)
                    {
                        return false;
                    }
                    target(&ui)
                };
                let ok = if branch {
                    same_branch(&mut b, tb, &mut u, tu, kept, pos, deferred)
                } else {
                    same_rip(&mut b, tb, &mut u, tu, &bi, (kept, pos), deferred)
                };
                if !ok {
                    return false;
                }
                len
            }
        };
        kept = kept.saturating_add(1);
        pos = pos.saturating_add(len);
        if same < pos {
            same = mismatch(b.code, u.code, pos);
        }
    }
    same_tables(&mut b, &mut u)
}

/// Whether the jump tables in anonymous data that the two parts load are
/// written out alike ([`x86::anon_table_loads`], as the normaliser writes
/// them): the same `lea`s load a table first or again (by the same
/// number), and each table has the same entries, walked up to its block's
/// end or the part's next anchor. Records the provisionally measured
/// tables in each side's [`Normalized::tables`].
fn same_tables(b: &mut Side<'_, '_, '_, '_>, u: &mut Side<'_, '_, '_, '_>) -> bool {
    if b.tables.is_empty() && u.tables.is_empty() {
        return true;
    }
    if b.tables.len() != u.tables.len() {
        return false;
    }
    for anchors in [&mut b.out.anchors, &mut u.out.anchors] {
        anchors.sort_unstable();
        anchors.dedup();
    }
    let (bs, us) = (b.scope, u.scope);
    let mut entries = Vec::new();
    let loads = x86::anon_table_loads(bs.index, &b.tables, &b.out.anchors)
        .zip(x86::anon_table_loads(us.index, &u.tables, &u.out.anchors));
    for ((kb, tb, pb, lb), (ku, tu, pu, lu)) in loads {
        if kb != ku {
            return false;
        }
        let ((bb, be), (ub, ue)) = match (lb, lu) {
            (TableLoad::First(bb, be), TableLoad::First(ub, ue)) => ((bb, be), (ub, ue)),
            (TableLoad::Again(x), TableLoad::Again(y)) if x == y => continue,
            _ => return false,
        };
        entries.clear();
        let n = x86::table_entries(bs, tb, bb, be, |s| entries.push(s));
        let mut k = 0usize;
        let mut same = true;
        let m = x86::table_entries(us, tu, ub, ue, |s| {
            // Entries are places in the group's code, compared by part and
            // offset (or, should one not be, exactly).
            same &= entries.get(k) == Some(&s);
            k = k.saturating_add(1);
        });
        if !same || n != m {
            return false;
        }
        if pb {
            b.out.tables.push((tb, n));
        }
        if pu {
            u.out.tables.push((tu, m));
        }
    }
    true
}

/// Whether a branch to `tb` in the baseline and to `tu` in the update, by
/// instruction `insn` at byte `offset`, go to the same place (see
/// [`same_ref`]); notes the targets as the normaliser does.
fn same_branch<'a, 'c>(
    b: &mut Side<'_, 'a, '_, '_>,
    tb: u64,
    u: &mut Side<'_, 'c, '_, '_>,
    tu: u64,
    insn: u32,
    offset: usize,
    deferred: &mut Vec<SameDeferred>,
) -> bool {
    let (sb, su) = (b.resolve(tb), u.resolve(tu));
    if !same_ref(&sb, &su, b.scope.part, insn, offset, deferred) {
        return false;
    }
    b.out.note(&sb);
    u.out.note(&su);
    true
}

/// Whether the RIP-relative operands of `insn` (the baseline's decoding;
/// the update's is the same but for the address) at `tb` and `tu` stand for
/// the same thing (see [`x86::rip_operand`]). A `lea` of a jump table in
/// either build is left to the normaliser.
fn same_rip(
    b: &mut Side<'_, '_, '_, '_>,
    tb: u64,
    u: &mut Side<'_, '_, '_, '_>,
    tu: u64,
    insn: &Instruction,
    (kept, offset): (u32, usize),
    deferred: &mut Vec<SameDeferred>,
) -> bool {
    let (sb, su) = (b.resolve(tb), u.resolve(tu));
    if insn.code() == Code::Lea_r64_m {
        let end = offset.saturating_add(insn.len()) as u64;
        match (
            x86::starts_table(b.scope, b.code, tb, b.scope.rva.wrapping_add(end), &sb),
            x86::starts_table(u.scope, u.code, tu, u.scope.rva.wrapping_add(end), &su),
        ) {
            (None, None) => {}
            // A table in anonymous data in both: its entries are compared
            // once the part's anchors are all known (`same_tables`).
            (Some(TableAt::Anon { provisional: pb }), Some(TableAt::Anon { provisional: pu })) => {
                b.tables.push((kept, tb, pb));
                u.tables.push((kept, tu, pu));
                return true;
            }
            // A table inside the code, or in one build only.
            _ => return false,
        }
    }
    match (
        x86::rip_operand(b.scope, insn, tb, sb),
        x86::rip_operand(u.scope, insn, tu, su),
    ) {
        (RipOperand::Slot(wb, pb), RipOperand::Slot(wu, pu)) => {
            if wb != wu || !same_ref(&pb, &pu, b.scope.part, kept, offset, deferred) {
                return false;
            }
            b.out.note(&pb);
            u.out.note(&pu);
            true
        }
        (RipOperand::Constant(x), RipOperand::Constant(y)) => x == y,
        (RipOperand::Target(x), RipOperand::Target(y)) => {
            if !same_ref(&x, &y, b.scope.part, kept, offset, deferred) {
                return false;
            }
            b.out.note(&x);
            u.out.note(&y);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hotpatch_formats::read::parse;
    use hotpatch_formats::{Arch, Format, Image};

    use super::super::{exact_difference, normalize_group, same_code, Normalized, SameDeferred};
    use crate::diff::index;
    use crate::index::ImageIndex;
    use crate::key::Key;
    use crate::testutil::{corpus, image, read, section};

    /// What the twin walk and the normaliser say of group `bg` of `a` and
    /// `ug` of `b`: (the twin walk's answer, with its deferred references
    /// and the tables it recorded; whether the normaliser's streams are
    /// equal).
    fn both(
        a: &ImageIndex<'_, '_>,
        bg: usize,
        b: &ImageIndex<'_, '_>,
        ug: usize,
    ) -> (bool, Vec<SameDeferred>, Vec<(u64, usize)>, bool) {
        let (mut bn, mut un, mut deferred) = (Vec::new(), Vec::new(), Vec::new());
        let same = same_code(a, bg, b, ug, &mut bn, &mut un, &mut deferred);
        let tables = bn.iter().flat_map(|n| n.tables.iter().copied()).collect();
        let (mut sb, mut su): (Vec<Normalized<'_>>, Vec<Normalized<'_>>) = (Vec::new(), Vec::new());
        normalize_group(a, bg, &mut sb);
        normalize_group(b, ug, &mut su);
        let equal = a.parts(bg).len() == b.parts(ug).len()
            && a.parts(bg)
                .iter()
                .zip(b.parts(ug))
                .all(|(x, y)| x.signature == y.signature)
            && sb.len() == su.len()
            && sb
                .iter()
                .zip(&su)
                .all(|(x, y)| exact_difference(x, y).is_none());
        (same, deferred, tables, equal)
    }

    /// A function `f` at `at` that switches over three cases through a
    /// table of 32-bit entries at 0x4000 in `.rodata` (entries in `order`),
    /// then calls `g` at 0x2fff and takes the address 0x4100; `pad` goes
    /// before case 1, `imm` is what case 1 returns.
    fn switch(at: u64, pad: &[u8], order: [usize; 3], imm: u8) -> (Vec<u8>, Vec<u8>, u64) {
        const TABLE: u64 = 0x4000;
        let rel = |from: u64, to: u64| ((to as i64 - from as i64) as i32).to_le_bytes();
        // cmp edi,2; ja default
        let mut c = vec![0x83, 0xff, 0x02, 0x77, 0x00];
        // lea rdx,[rip+TABLE]
        c.extend_from_slice(&[0x48, 0x8d, 0x15]);
        c.extend_from_slice(&rel(at + c.len() as u64 + 4, TABLE));
        // movsxd rax,[rdx+rdi*4]; add rax,rdx; jmp rax
        c.extend_from_slice(&[0x48, 0x63, 0x04, 0xba, 0x48, 0x01, 0xd0, 0xff, 0xe0]);
        let case0 = c.len();
        // call g; lea rax,[rip+0x4100]; ret
        c.push(0xe8);
        c.extend_from_slice(&rel(at + c.len() as u64 + 4, 0x2fff));
        c.extend_from_slice(&[0x48, 0x8d, 0x05]);
        c.extend_from_slice(&rel(at + c.len() as u64 + 4, 0x4100));
        c.push(0xc3);
        c.extend_from_slice(pad);
        let case1 = c.len();
        c.extend_from_slice(&[0xb8, imm, 0x00, 0x00, 0x00, 0xc3]);
        let case2 = c.len();
        c.extend_from_slice(&[0xb8, 0x03, 0x00, 0x00, 0x00, 0xc3]);
        let default = c.len();
        c.extend_from_slice(&[0x31, 0xc0, 0xc3]);
        c[4] = (default - 5) as u8;
        let cases = [case0, case1, case2];
        let mut ro: Vec<u8> = order
            .iter()
            .flat_map(|&k| rel(TABLE, at + cases[k] as u64))
            .collect();
        ro.resize(0x108, 0x5a);
        (c, ro, at)
    }

    /// The images of [`switch`]: `f`, and `g` (one `ret`) at 0x2fff.
    fn switch_image<'d>(text: &'d mut Vec<u8>, ro: &'d [u8], f: &[u8], at: u64) -> Image<'d> {
        text.clear();
        text.resize((at - 0x1000) as usize, 0xcc);
        text.extend_from_slice(f);
        text.resize(0x2000, 0xcc);
        text[0x2000 - 1] = 0xc3;
        image(
            Format::Elf,
            Arch::X86_64,
            vec![
                section(".text", 0x1000, text, false, true),
                section(".rodata", 0x4000, ro, false, false),
            ],
            &[("f", at, f.len() as u64), ("g", 0x2fff, 1)],
        )
    }

    /// The twin walk's and the normaliser's answers for `f` in the images
    /// of two [`switch`] functions.
    fn switch_pair(
        a: (Vec<u8>, Vec<u8>, u64),
        b: (Vec<u8>, Vec<u8>, u64),
    ) -> (bool, Vec<SameDeferred>, Vec<(u64, usize)>, bool) {
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        let (ia, ib) = (
            switch_image(&mut ta, &a.1, &a.0, a.2),
            switch_image(&mut tb, &b.1, &b.0, b.2),
        );
        // Not finished, as the diff compares them.
        let (xa, xb) = (ImageIndex::new(&ia), ImageIndex::new(&ib));
        let key = Key {
            name: "f",
            unit: None,
        };
        let (ga, gb) = (xa.group(&key).unwrap(), xb.group(&key).unwrap());
        both(&xa, ga, &xb, gb)
    }

    /// A function that only moved (its call, its constant load and its
    /// jump table's entries all rewritten) is the same code: the table is
    /// recorded as measured before the blocks are known, and the address
    /// in anonymous data is left to compare once they are.
    #[test]
    fn moved_switch_is_the_same_code() {
        let (same, deferred, tables, equal) = switch_pair(
            switch(0x1000, &[], [0, 1, 2], 2),
            switch(0x1230, &[], [0, 1, 2], 2),
        );
        assert!(same && equal);
        assert_eq!(tables, [(0x4000, 3)]);
        assert_eq!(
            deferred
                .iter()
                .map(|d| (d.insn, d.rvas))
                .collect::<Vec<_>>(),
            [(7, (0x4100, 0x4100))]
        );
    }

    /// Exchanged cases, or a changed immediate, are not the same code, and
    /// the normaliser agrees.
    #[test]
    fn exchanged_cases_or_changed_bytes_are_not_the_same_code() {
        for (order, imm) in [([0, 2, 1], 2), ([0, 1, 2], 4)] {
            let (same, _, _, equal) = switch_pair(
                switch(0x1000, &[], [0, 1, 2], 2),
                switch(0x1230, &[], order, imm),
            );
            assert!(!same && !equal, "{order:?} {imm}");
        }
    }

    /// Padding that moves a case is left to the normaliser (the layouts
    /// differ), which finds the code equal.
    #[test]
    fn padding_is_left_to_the_normaliser() {
        let (same, _, _, equal) = switch_pair(
            switch(0x1000, &[], [0, 1, 2], 2),
            switch(0x1230, &[0x66, 0x90], [0, 1, 2], 2),
        );
        assert!(!same && equal);
    }

    /// Regression: an EIP-relative operand (`67` prefix) whose bytes are
    /// the same in both builds was taken to point where the baseline's
    /// target lies moved with the code. Its address is cut to 32 bits, so
    /// the update's target must be read from the update: here the
    /// baseline's `lea rax,[eip-0x1808]` at 0x1000 wraps to a data object
    /// at 0xFFFF_F800, and the same bytes at 0x2000 point at 0x800, where
    /// nothing is, although the object moved by the same 0x1000.
    #[test]
    fn eip_relative_target_is_read_from_the_update() {
        let f: Vec<u8> = {
            let mut c = vec![0x67, 0x48, 0x8d, 0x05];
            c.extend_from_slice(&(-0x1808i32).to_le_bytes());
            c.push(0xc3);
            c
        };
        let build = |text: &'static [u8], data_at: u64, at: u64| {
            let mut img = image(
                Format::Elf,
                Arch::X86_64,
                vec![
                    section(".text", 0x1000, text, false, true),
                    section(".data", data_at, &[0u8; 0x1000], true, false),
                ],
                &[("f", at, 9)],
            );
            img.data = vec![hotpatch_formats::DataObject {
                name: "d".into(),
                rva: data_at + 0x800,
                size: 8,
                section: ".data".into(),
                unit: None,
                visibility: hotpatch_formats::Visibility::Global,
            }];
            img
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let mut moved = vec![0xcc; 0x1000];
        moved.extend_from_slice(&f);
        let (a, b) = (
            build(leak(f.clone()), 0xffff_f000, 0x1000),
            build(leak(moved), 0x1_0000_0000, 0x2000),
        );
        let (xa, xb) = (ImageIndex::new(&a), ImageIndex::new(&b));
        let key = Key {
            name: "f",
            unit: None,
        };
        let (ga, gb) = (xa.group(&key).unwrap(), xb.group(&key).unwrap());
        let (same, _, _, equal) = both(&xa, ga, &xb, gb);
        assert!(!equal, "the normaliser sees different targets");
        assert!(!same);
    }

    /// On every pair of versions of every x86-64 scenario of the corpus,
    /// the twin walk never finds the same code where the normaliser finds
    /// a difference; and where the normaliser finds every function of a
    /// relinked library equal, the walk does too.
    #[test]
    fn twin_walk_never_contradicts_the_normaliser_on_the_corpus() {
        let mut taken = 0;
        for entry in std::fs::read_dir(corpus()).unwrap() {
            let dir = entry.unwrap().path();
            for target in ["x86_64-linux", "x86_64-windows"] {
                let bin = dir.join("bin").join(target);
                let Ok(files) = std::fs::read_dir(&bin) else {
                    continue;
                };
                let mut images: Vec<_> = files
                    .map(|f| f.unwrap().path())
                    .filter(|p| {
                        matches!(p.extension().and_then(|e| e.to_str()), Some("so" | "dll"))
                    })
                    .collect();
                images.sort();
                let loaded: Vec<_> = images.iter().map(|p| (read(p), p.clone())).collect();
                let parsed: Vec<Image<'_>> = loaded
                    .iter()
                    .map(|((bytes, opts), p)| {
                        parse(bytes, opts).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    })
                    .collect();
                // As the diff compares them (not finished), and finished.
                let unfinished = parsed.iter().map(ImageIndex::new);
                let indexes: Vec<_> = unfinished.chain(parsed.iter().map(index)).collect();
                let n = parsed.len();
                for (i, a) in indexes.iter().enumerate() {
                    for (j, b) in indexes.iter().enumerate().filter(|(j, _)| j / n == i / n) {
                        let relinked = dir.ends_with("12-relink-order") && i != j;
                        for (ga, g) in a.groups.iter().enumerate() {
                            let Some(gb) = b.group(&g.key) else {
                                continue;
                            };
                            let (same, _, _, equal) = both(a, ga, b, gb);
                            let at = |k: usize| Path::new(&images[k % n]).display().to_string();
                            assert!(!same || equal, "{} vs {}: {}", at(i), at(j), g.key);
                            if relinked {
                                assert!(same, "{} vs {}: {}", at(i), at(j), g.key);
                            }
                            taken += usize::from(same);
                        }
                    }
                }
            }
        }
        assert!(taken > 0);
    }
}
