//! x86-64 normaliser (iced-x86).
//!
//! Every instruction becomes one [`NormInsn`](super::NormInsn) whose hash
//! covers its address-independent form: the iced [`Code`] (mnemonic and
//! operand form, with short and near branches folded together), the
//! prefixes that change meaning, and every operand. Operands that hold an
//! address are replaced by the [`SymRef`] of what they point at:
//!
//! - near branch and call targets;
//! - RIP-relative memory operands (`next_ip + disp32`); when the target is an
//!   anonymous pointer slot (a GOT entry) the slot is taken by what its
//!   relocation points at;
//! - immediates and displacements patched by a load-time relocation (PE
//!   `mov r64, imm64` of an address, absolute `moffs` operands).
//!
//! Calls through an ELF PLT stub are taken by the symbol of the stub's GOT
//! slot.
//!
//! Jump tables of 32-bit entries relative to the table (the only form gcc
//! `-fPIC` and clang for COFF emit on x86-64:
//! `lea rT,[rip+TABLE]; movsxd rX,[rT+rI*4]; add rX,rT; jmp rX`) are compared
//! as part of the function: the `lea` that loads the table hashes the list of
//! its entries, each resolved to a [`SymRef::Local`]. A table that lies inside
//! the function's own code (as some toolchains place it) is also skipped by
//! the decoder, each entry becoming one normalised datum.
//!
//! Bytes that do not decode become one opaque token per byte, and decoding
//! resumes at the next byte.

use std::hash::{DefaultHasher, Hash, Hasher};

use hotpatch_formats::Relocation;
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind};

use super::Normalized;
use crate::index::{ImageIndex, SymRef};

/// Longest x86 instruction, in bytes.
const MAX_INSN_LEN: usize = 15;

/// Fewest consecutive entries that make a jump table.
const MIN_TABLE_ENTRIES: usize = 2;

/// Tags that keep the different kinds of hashed fields apart.
mod tag {
    /// A register operand.
    pub const REGISTER: u8 = 1;
    /// An immediate taken by value.
    pub const IMMEDIATE: u8 = 2;
    /// An immediate patched by a relocation.
    pub const IMMEDIATE_RELOC: u8 = 3;
    /// A near branch target.
    pub const BRANCH: u8 = 4;
    /// A memory operand.
    pub const MEMORY: u8 = 5;
    /// A RIP-relative target.
    pub const RIP: u8 = 6;
    /// A RIP-relative pointer slot, taken by its relocation's target.
    pub const SLOT: u8 = 7;
    /// A displacement patched by a relocation.
    pub const DISP_RELOC: u8 = 8;
    /// A displacement taken by value.
    pub const DISP: u8 = 9;
    /// A relocation inside an instruction that covers no known field.
    pub const OTHER_RELOC: u8 = 10;
    /// A far branch (never decoded in 64-bit mode; kept for completeness).
    pub const FAR: u8 = 11;
    /// Any other operand kind (string operands, implicit operands).
    pub const OTHER: u8 = 12;
    /// A jump table loaded by `lea`.
    pub const JUMP_TABLE: u8 = 13;
    /// One entry of a jump table inside the code.
    pub const TABLE_ENTRY: u8 = 14;
    /// A branch to a PLT stub, taken by the stub's GOT slot.
    pub const PLT: u8 = 15;
}

/// Pass 1: push every address the code at `rva` refers to outside itself:
/// near branch and call targets and RIP-relative memory targets. Targets
/// inside `[rva, rva + code.len())` are left out: they cut no anonymous data.
pub(crate) fn references(code: &[u8], rva: u64, out: &mut Vec<u64>) {
    let end = rva.saturating_add(code.len() as u64);
    let outside = |t: u64| t < rva || t >= end;
    let mut decoder = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        let pos = decoder.position();
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            if !resync(&mut decoder, rva, pos + 1) {
                break;
            }
            continue;
        }
        for i in 0..insn.op_count() {
            let target = match insn.op_kind(i) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    insn.near_branch_target()
                }
                OpKind::Memory if insn.is_ip_rel_memory_operand() => insn.ip_rel_memory_address(),
                _ => continue,
            };
            if outside(target) {
                out.push(target);
            }
        }
    }
}

/// Move `decoder` to offset `pos` of its code (RVA `base + pos`). Returns
/// `false` when `pos` is past the end.
fn resync(decoder: &mut Decoder<'_>, base: u64, pos: usize) -> bool {
    if decoder.set_position(pos).is_err() {
        return false;
    }
    decoder.set_ip(base.wrapping_add(pos as u64));
    true
}

/// A jump table found inside the part being normalised, which the decoder
/// must step over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InlineTable {
    /// Offset of the first entry in the part.
    start: usize,
    /// Offset one past the last entry.
    end: usize,
}

/// What the normaliser needs to know about the function being normalised.
struct Context<'a, 'i, 'd, 'c> {
    /// The image's index.
    index: &'a ImageIndex<'i, 'd>,
    /// The function group being normalised.
    group: usize,
    /// RVA of the part's first byte.
    rva: u64,
    /// The part's bytes.
    code: &'c [u8],
    /// Jump tables found inside the part, sorted by start, not yet reached.
    inline_tables: Vec<InlineTable>,
}

/// Pass 2: normalise the code of one part (at `rva`) of function group
/// `group`, appending one [`NormInsn`](super::NormInsn) per instruction to
/// `out`, and noting every resolved reference.
pub(crate) fn normalize<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    rva: u64,
    code: &[u8],
    out: &mut Normalized<'a>,
) {
    let relocs = index.relocations_in(rva, code.len() as u64);
    let mut next_reloc = 0usize;
    let mut cx = Context {
        index,
        group,
        rva,
        code,
        inline_tables: Vec::new(),
    };
    let mut decoder = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        let pos = decoder.position();
        // A jump table inside the code starts here: emit its entries.
        if let Some(t) = cx.inline_tables.first().copied() {
            if t.start <= pos {
                cx.inline_tables.remove(0);
                if t.start == pos {
                    cx.emit_inline_table(t, out);
                    if !resync(&mut decoder, rva, t.end) {
                        break;
                    }
                }
                continue;
            }
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            out.push_raw(pos, code.get(pos..pos + 1).unwrap_or(&[]));
            if !resync(&mut decoder, rva, pos + 1) {
                break;
            }
            continue;
        }
        let len = insn.len();
        // An instruction that runs into a known table: its bytes up to the
        // table are not code.
        if let Some(t) = cx.inline_tables.first() {
            if t.start > pos && t.start < pos + len {
                let stop = t.start;
                out.push_raw(pos, code.get(pos..stop).unwrap_or(&[]));
                if !resync(&mut decoder, rva, stop) {
                    break;
                }
                continue;
            }
        }
        // Relocations whose patched bytes start inside this instruction.
        let ip = insn.ip();
        while relocs.get(next_reloc).is_some_and(|r| r.rva < ip) {
            next_reloc += 1;
        }
        let first = next_reloc;
        while relocs
            .get(next_reloc)
            .is_some_and(|r| r.rva < insn.next_ip())
        {
            next_reloc += 1;
        }
        let here = relocs.get(first..next_reloc).unwrap_or(&[]);

        let mut h = DefaultHasher::new();
        cx.hash_insn(&decoder, &mut insn, here, &mut h, out);
        out.push(pos, len, h);
    }
}

impl<'a, 'i, 'd, 'c> Context<'a, 'i, 'd, 'c> {
    /// Feed the address-independent form of `insn` to `h`. `relocs` are the
    /// relocations whose patched bytes start inside it.
    fn hash_insn(
        &mut self,
        decoder: &Decoder<'_>,
        insn: &mut Instruction,
        relocs: &'i [Relocation],
        h: &mut DefaultHasher,
        out: &mut Normalized<'a>,
    ) {
        // `jmp short` and `jmp near` to the same place are the same thing.
        insn.as_near_branch();
        let flags = u64::from(insn.has_lock_prefix())
            | u64::from(insn.has_rep_prefix()) << 1
            | u64::from(insn.has_repne_prefix()) << 2
            | u64::from(insn.has_xacquire_prefix()) << 3
            | u64::from(insn.has_xrelease_prefix()) << 4
            | u64::from(insn.is_broadcast()) << 5
            | u64::from(insn.zeroing_masking()) << 6
            | u64::from(insn.suppress_all_exceptions()) << 7;
        let head = insn.code() as u64
            | u64::from(insn.op_count()) << 16
            | flags << 24
            | (insn.segment_prefix() as u64) << 32
            | (insn.op_mask() as u64) << 40
            | (insn.rounding_control() as u64) << 48;
        h.write_u64(head);

        // Which relocation patches the displacement, which the immediate.
        let mut disp_reloc = None;
        let mut imm_reloc = None;
        if !relocs.is_empty() {
            let co = decoder.get_constant_offsets(insn);
            let ip = insn.ip();
            for r in relocs {
                let at = r.rva.wrapping_sub(ip);
                if co.has_displacement() && at == co.displacement_offset() as u64 {
                    disp_reloc = Some(r);
                } else if co.has_immediate() && at == co.immediate_offset() as u64 {
                    imm_reloc = Some(r);
                } else {
                    let s = self.index.resolve_reloc(r, Some(self.group));
                    (tag::OTHER_RELOC, at, s).hash(h);
                    out.note(&s);
                }
            }
        }

        for i in 0..insn.op_count() {
            let kind = insn.op_kind(i);
            match kind {
                OpKind::Register => {
                    h.write_u16(u16::from(tag::REGISTER) | (insn.op_register(i) as u16) << 8);
                }
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    self.hash_branch(insn.near_branch_target(), h, out);
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    (tag::FAR, insn.far_branch_selector(), insn.far_branch32()).hash(h);
                }
                OpKind::Immediate8
                | OpKind::Immediate8_2nd
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64 => match imm_reloc.take() {
                    Some(r) => {
                        let s = self.index.resolve_reloc(r, Some(self.group));
                        (tag::IMMEDIATE_RELOC, s).hash(h);
                        out.note(&s);
                    }
                    None => {
                        h.write_u8(tag::IMMEDIATE);
                        h.write_u64(insn.immediate(i));
                    }
                },
                OpKind::Memory => {
                    let shape = u64::from(tag::MEMORY)
                        | (insn.memory_base() as u64) << 8
                        | (insn.memory_index() as u64) << 16
                        | u64::from(insn.memory_index_scale()) << 24
                        | (insn.memory_segment() as u64) << 32
                        | (insn.memory_size() as u64) << 40;
                    h.write_u64(shape);
                    if insn.is_ip_rel_memory_operand() {
                        let target = insn.ip_rel_memory_address();
                        self.hash_rip_target(insn, target, h, out);
                    } else if let Some(r) = disp_reloc.take() {
                        let s = self.index.resolve_reloc(r, Some(self.group));
                        (tag::DISP_RELOC, s).hash(h);
                        out.note(&s);
                    } else {
                        h.write_u8(tag::DISP);
                        h.write_u64(insn.memory_displacement64());
                    }
                }
                _ => {
                    // String operands ([rsi], es:[rdi]) and the like: their
                    // form is in the code; keep the segment and size.
                    let other = u64::from(tag::OTHER)
                        | (kind as u64) << 8
                        | (insn.memory_segment() as u64) << 16
                        | (insn.memory_size() as u64) << 24;
                    h.write_u64(other);
                }
            }
        }
    }

    /// Hash a near branch or call target.
    fn hash_branch(&self, target: u64, h: &mut DefaultHasher, out: &mut Normalized<'a>) {
        let s = self.index.resolve(target, Some(self.group));
        if let SymRef::Anon { .. } = s {
            if let Some(slot) = self.plt_slot(target) {
                (tag::PLT, slot).hash(h);
                out.note(&slot);
                return;
            }
        }
        (tag::BRANCH, s).hash(h);
        out.note(&s);
    }

    /// If `target` is an ELF PLT stub (`[endbr64;] [bnd] jmp [rip+slot]`) whose
    /// slot carries a relocation, what the slot points at.
    fn plt_slot(&self, target: u64) -> Option<SymRef<'a>> {
        let block = self.index.block(target)?;
        if !block.executable {
            return None;
        }
        let off = usize::try_from(target.checked_sub(block.start)?).ok()?;
        let bytes = block.bytes.get(off..)?;
        let bytes = bytes.get(..bytes.len().min(2 * MAX_INSN_LEN))?;
        let mut decoder = Decoder::with_ip(64, bytes, target, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        for _ in 0..2 {
            if !decoder.can_decode() {
                return None;
            }
            decoder.decode_out(&mut insn);
            match insn.code() {
                Code::Endbr64 => continue,
                Code::Jmp_rm64 if insn.is_ip_rel_memory_operand() => {
                    let slot = insn.ip_rel_memory_address();
                    let r = self.index.relocation_in(slot, 1)?;
                    return (r.rva == slot).then(|| self.index.resolve_reloc(r, Some(self.group)));
                }
                _ => return None,
            }
        }
        None
    }

    /// Hash the target of a RIP-relative memory operand of `insn`.
    fn hash_rip_target(
        &mut self,
        insn: &Instruction,
        target: u64,
        h: &mut DefaultHasher,
        out: &mut Normalized<'a>,
    ) {
        let s = self.index.resolve(target, Some(self.group));
        if insn.code() == Code::Lea_r64_m {
            if let Some(table) = self.jump_table(target, insn.next_ip(), &s) {
                (tag::JUMP_TABLE, table).hash(h);
                return;
            }
        }
        if let SymRef::Anon { .. } | SymRef::Unmapped(_) = s {
            // An anonymous pointer slot (GOT entry): what it points at.
            if let Some(r) = self.index.relocation_in(target, 1) {
                if r.rva == target {
                    let p = self.index.resolve_reloc(r, Some(self.group));
                    (tag::SLOT, r.width, p).hash(h);
                    out.note(&p);
                    return;
                }
            }
        }
        (tag::RIP, s).hash(h);
        out.note(&s);
    }

    /// If `table` (resolved to `s`) starts a jump table of this function, the
    /// hash of its entries (each as a [`SymRef::Local`]). A table inside the
    /// part being normalised, past `next_ip`, is remembered so that the
    /// decoder skips it.
    fn jump_table(&mut self, table: u64, next_ip: u64, s: &SymRef<'_>) -> Option<u64> {
        let (bytes, limit) = match s {
            SymRef::Anon { .. } => {
                let block = self.index.block(table)?;
                if block.executable || block.writable {
                    return None;
                }
                let off = usize::try_from(table.checked_sub(block.start)?).ok()?;
                let len = usize::try_from(block.end.checked_sub(table)?).ok()?;
                let bytes = block.bytes.get(off..)?;
                (bytes, len)
            }
            SymRef::Local { .. } => {
                // Only a table inside this very part, after the `lea`.
                let off = usize::try_from(table.checked_sub(self.rva)?).ok()?;
                if table < next_ip {
                    return None;
                }
                let bytes = self.code.get(off..)?;
                (bytes, bytes.len())
            }
            _ => return None,
        };
        let mut h = DefaultHasher::new();
        let n = self.table_entries(table, bytes, limit, |s| s.hash(&mut h));
        if n < MIN_TABLE_ENTRIES {
            return None;
        }
        n.hash(&mut h);
        if let SymRef::Local { .. } = s {
            if let Some(start) = table
                .checked_sub(self.rva)
                .and_then(|o| usize::try_from(o).ok())
            {
                let t = InlineTable {
                    start,
                    end: start + 4 * n,
                };
                if !self.inline_tables.contains(&t) {
                    let at = self.inline_tables.partition_point(|x| x.start < start);
                    self.inline_tables.insert(at, t);
                }
            }
        }
        Some(h.finish())
    }

    /// Walk the 32-bit entries of the table at `table` (whose bytes are
    /// `bytes`, at most `limit` of which belong to it), relative to the table,
    /// while they land inside this function group; call `each` with every
    /// resolved entry and return how many there were.
    fn table_entries(
        &self,
        table: u64,
        bytes: &[u8],
        limit: usize,
        mut each: impl FnMut(SymRef<'a>),
    ) -> usize {
        let usable = bytes.get(..bytes.len().min(limit)).unwrap_or(&[]);
        let mut n = 0;
        for chunk in usable.chunks_exact(4) {
            let Ok(raw) = <[u8; 4]>::try_from(chunk) else {
                break;
            };
            let e = i32::from_le_bytes(raw);
            let t = table.wrapping_add_signed(i64::from(e));
            match self.index.function_at(t) {
                Some((g, _)) if g == self.group => {}
                _ => break,
            }
            each(self.index.resolve(t, Some(self.group)));
            n += 1;
        }
        n
    }

    /// Emit one normalised datum per entry of a jump table inside the code.
    fn emit_inline_table(&self, t: InlineTable, out: &mut Normalized<'a>) {
        let Some(bytes) = self.code.get(t.start..t.end) else {
            return;
        };
        let table = self.rva.wrapping_add(t.start as u64);
        let mut entries: Vec<SymRef<'a>> = Vec::new();
        self.table_entries(table, bytes, bytes.len(), |s| entries.push(s));
        for (i, s) in entries.iter().enumerate() {
            let mut h = DefaultHasher::new();
            (tag::TABLE_ENTRY, s).hash(&mut h);
            out.push(t.start + 4 * i, 4, h);
        }
        // Entries that no longer resolve (cannot happen: the table was
        // measured from these bytes) are kept as raw bytes.
        let done = 4 * entries.len();
        if done < bytes.len() {
            out.push_raw(t.start + done, bytes.get(done..).unwrap_or(&[]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use hotpatch_formats::read::{load_file, parse, ReadOptions};
    use hotpatch_formats::Image;

    use super::*;
    use crate::norm::normalize_part;

    /// The corpus directory.
    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
    }

    /// Parse an image (a PE finds its PDB beside it).
    fn parse_image<'d>(bytes: &'d [u8], path: &Path) -> Image<'d> {
        parse(bytes, &ReadOptions::new(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Index an image and run pass 1 over all its code.
    fn build_index<'i, 'd>(img: &'i Image<'d>) -> ImageIndex<'i, 'd> {
        let mut idx = ImageIndex::new(img);
        let mut refs = Vec::new();
        for g in &idx.groups {
            for p in &g.parts {
                if let Some(code) = img.bytes_at(p.rva, p.size) {
                    references(code, p.rva, &mut refs);
                }
            }
        }
        idx.finish(refs);
        idx
    }

    /// The hash sequence of every part of group `g`.
    fn group_hashes(idx: &ImageIndex<'_, '_>, g: usize) -> Vec<Vec<u64>> {
        (0..idx.groups[g].parts.len())
            .map(|p| {
                let mut n = Normalized::default();
                normalize_part(idx, g, p, &mut n);
                n.insns.iter().map(|i| i.hash).collect()
            })
            .collect()
    }

    /// Keys present in both images whose normalised code differs.
    fn differing(a: &ImageIndex<'_, '_>, b: &ImageIndex<'_, '_>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (ga, group) in a.groups.iter().enumerate() {
            let Some(gb) = b.group(&group.key) else {
                continue;
            };
            if group_hashes(a, ga) != group_hashes(b, gb) {
                out.insert(group.key.to_string());
            }
        }
        out
    }

    /// Diff two corpus files (paths relative to the corpus).
    fn diff_files(a: &str, b: &str) -> BTreeSet<String> {
        let (pa, pb) = (corpus().join(a), corpus().join(b));
        let (ba, bb) = (load_file(&pa).unwrap(), load_file(&pb).unwrap());
        let (ia, ib) = (parse_image(&ba, &pa), parse_image(&bb, &pb));
        let (xa, xb) = (build_index(&ia), build_index(&ib));
        differing(&xa, &xb)
    }

    #[test]
    fn print_all() {
        for entry in std::fs::read_dir(corpus()).unwrap() {
            let dir = entry.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            if !name.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            for (t, ext) in [("x86_64-linux", "so"), ("x86_64-windows", "dll")] {
                for v in 2..=3 {
                    let b = format!("{name}/bin/{t}/v{v}.{ext}");
                    if !corpus().join(&b).exists() {
                        continue;
                    }
                    let d = diff_files(&format!("{name}/bin/{t}/v1.{ext}"), &b);
                    println!("{name} {t} v{v}: {d:?}");
                }
            }
        }
    }
}
