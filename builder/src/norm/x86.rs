//! x86-64 normaliser (iced-x86).
//!
//! Every instruction becomes one [`NormInsn`](super::NormInsn) whose hash
//! covers its address-independent form: the iced [`Code`] (mnemonic and
//! operand form, with short and near branches folded together), the
//! prefixes that change meaning, and every operand (registers, immediates,
//! memory base/index/scale/displacement/segment/size). Operands that hold an
//! address are replaced by the [`SymRef`] of what they point at:
//!
//! - near branch and call targets (a call through an ELF PLT stub or a PE
//!   import thunk is taken by the import it forwards to, see
//!   [`ImageIndex::resolve`]);
//! - RIP-relative memory operands (`next_ip + disp32`). Two refinements for
//!   anonymous read-only targets: a pointer slot with a relocation (a GOT
//!   entry) is taken by what the relocation points at, and a load of a known
//!   size (`movdqa xmm0, [rip+C]`) by the bytes it reads, so that whatever
//!   follows the constant up to the next anchor (lld puts the debug
//!   directory, with the build's GUID, right after clang's last constant in
//!   `.rdata`) does not leak into the comparison;
//! - immediates and displacements patched by a load-time relocation (PE
//!   `mov r64, imm64` of an address, absolute `moffs` operands).
//!
//! Jump tables of 32-bit entries relative to the table (the form both gcc
//! `-fPIC` for ELF and clang for COFF emit on x86-64:
//! `lea rT,[rip+TABLE]; movsxd rX,[rT+rI*4]; add rX,rT; jmp rX`, with TABLE
//! in `.rodata`/`.rdata`) are compared as part of the function: the `lea`
//! that loads the table hashes the list of its entries, each resolved to a
//! [`SymRef::Local`], instead of the table's bytes, which change whenever the
//! function moves relative to its table. A table that lies inside the
//! function's own code (as some toolchains place it) is skipped by the
//! decoder in both passes, each entry becoming one normalised datum.
//!
//! `NOP`s are left out of the stream (see [`super`]): `nop` (`90`, with any
//! operand-size prefix, so `66 90` = `xchg ax,ax` too, or `REX.W`) and the
//! multi-byte `nop r/m` (`0F 1F /0`, with any prefixes, including a
//! RIP-relative operand, whose target is ignored). Nothing else: not
//! `pause` (`F3 90`), not `xchg eax,eax` (`87 C0`, which clears the upper
//! half of `rax`), not the reserved-`NOP` space `0F 18`..`0F 1E` (prefetch,
//! `endbr64`, ...), and not `int3`: GCC and clang pad inside a function with
//! `NOP`s only, and an `int3` inside a function's bounds cannot be told apart
//! from a deliberate trap (`__builtin_trap`, `__debugbreak`) without knowing
//! that no path reaches it. Branch and jump-table targets inside the group
//! are compared by position in the `NOP`-free stream, so a branch relaxed
//! from rel8 to rel32 (the short and near forms already hash alike) or
//! padding added before a loop head moves nothing.
//!
//! Bytes that do not decode become one opaque token per byte, and decoding
//! resumes at the next byte.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::Canon;

use hotpatch_formats::package::RelocKind;
use hotpatch_formats::Relocation;
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind};

use super::x86_quick::{self, Quick};
use super::{hash_ref, FieldKind, NormInsn, Normalized, Scope};
use crate::index::{ImageIndex, SymRef};

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
    /// A load of anonymous read-only bytes, taken by the bytes it reads.
    pub const CONSTANT: u8 = 16;
    /// An instruction with no address in it, taken by its bytes.
    pub const PLAIN: u8 = 17;
    /// A jump table that an earlier `lea` of the part already wrote out,
    /// by its number.
    pub const TABLE_AGAIN: u8 = 18;
}

/// For each byte count 0..=8, the mask that keeps that many low bytes of a
/// little-endian word.
const BYTE_MASKS: [u64; 9] = [
    0,
    0xff,
    0xffff,
    0xff_ffff,
    0xffff_ffff,
    0xff_ffff_ffff,
    0xffff_ffff_ffff,
    0xff_ffff_ffff_ffff,
    u64::MAX,
];

/// The `len` (at most 16) bytes at `pos` of `code`, zero-padded, as two
/// little-endian words. A fixed 16-byte load where the code allows it, so
/// that the common case copies no variable-length slice.
#[inline]
fn insn_words(code: &[u8], pos: usize, len: usize) -> [u64; 2] {
    let mask = |n: usize| BYTE_MASKS.get(n.min(8)).copied().unwrap_or(u64::MAX);
    let v = match code
        .get(pos..pos.saturating_add(16))
        .and_then(|w| <[u8; 16]>::try_from(w).ok())
    {
        Some(window) => u128::from_le_bytes(window),
        None => code
            .iter()
            .skip(pos)
            .take(len.min(16))
            .enumerate()
            .fold(0u128, |v, (i, &b)| v | u128::from(b) << ((i as u32) << 3)),
    };
    [
        v as u64 & mask(len),
        (v >> 64) as u64 & mask(len.saturating_sub(8)),
    ]
}

/// Whether `insn` is a `NOP` that only pads: `nop` (`90`, `66 90`, `REX.W 90`)
/// or `nop r/m` (`0F 1F /0`), without a `lock` prefix (which makes it
/// invalid). `F3 90` decodes as `pause`, `41 90` as `xchg r8d,eax`, and the
/// other reserved-`NOP` opcodes under other codes, so none of them is one.
pub(crate) fn is_nop(insn: &Instruction) -> bool {
    matches!(
        insn.code(),
        Code::Nopw | Code::Nopd | Code::Nopq | Code::Nop_rm16 | Code::Nop_rm32 | Code::Nop_rm64
    ) && !insn.has_lock_prefix()
}

/// Whether nothing in `insn` depends on where it is (given no relocation
/// patches it): no RIP-relative operand and no branch target. Its bytes are
/// then its form.
#[inline]
pub(crate) fn is_plain_kind(insn: &Instruction) -> bool {
    !insn.is_ip_rel_memory_operand()
        && !matches!(
            insn.op0_kind(),
            OpKind::NearBranch16
                | OpKind::NearBranch32
                | OpKind::NearBranch64
                | OpKind::FarBranch16
                | OpKind::FarBranch32
        )
}

/// The first word of the form of a decoded instruction (short branches
/// already made near): its code, operand count, the prefixes that change
/// its meaning, segment, mask and rounding.
#[inline]
fn header(insn: &Instruction) -> u64 {
    let flags = u64::from(insn.has_lock_prefix())
        | u64::from(insn.has_rep_prefix()) << 1
        | u64::from(insn.has_repne_prefix()) << 2
        | u64::from(insn.has_xacquire_prefix()) << 3
        | u64::from(insn.has_xrelease_prefix()) << 4
        | u64::from(insn.is_broadcast()) << 5
        | u64::from(insn.zeroing_masking()) << 6
        | u64::from(insn.suppress_all_exceptions()) << 7;
    insn.code() as u64
        | u64::from(insn.op_count()) << 16
        | flags << 24
        | (insn.segment_prefix() as u64) << 32
        | (insn.op_mask() as u64) << 40
        | (insn.rounding_control() as u64) << 48
}

/// The iced-x86 code of each [`Quick::Branch`] kind, near form: the 16
/// conditions of `jcc`, then `jmp` and `call`.
pub(crate) const BRANCH_CODES: [Code; 18] = [
    Code::Jo_rel32_64,
    Code::Jno_rel32_64,
    Code::Jb_rel32_64,
    Code::Jae_rel32_64,
    Code::Je_rel32_64,
    Code::Jne_rel32_64,
    Code::Jbe_rel32_64,
    Code::Ja_rel32_64,
    Code::Js_rel32_64,
    Code::Jns_rel32_64,
    Code::Jp_rel32_64,
    Code::Jnp_rel32_64,
    Code::Jl_rel32_64,
    Code::Jge_rel32_64,
    Code::Jle_rel32_64,
    Code::Jg_rel32_64,
    Code::Jmp_rel32_64,
    Code::Call_rel32_64,
];

/// [`header`] of a [`Quick::Branch`] of `kind`: its near code, one
/// operand, no prefix.
#[inline]
fn branch_header(kind: u8) -> Option<u64> {
    let code = *BRANCH_CODES.get(usize::from(kind))?;
    Some(code as u64 | 1 << 16)
}

/// Move `decoder` to offset `pos` of its code (RVA `base + pos`). Returns
/// `false` when `pos` is past the end.
pub(super) fn resync(decoder: &mut Decoder<'_>, base: u64, pos: usize) -> bool {
    if decoder.set_position(pos).is_err() {
        return false;
    }
    decoder.set_ip(base.wrapping_add(pos as u64));
    true
}

/// A jump table found inside the part being decoded, which the decoder must
/// step over: `[start, end)`, offsets in the part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InlineTable {
    /// Offset of the first entry in the part.
    start: usize,
    /// Offset one past the last entry.
    end: usize,
}

/// What the decoding loop must do at some position, given the jump tables
/// found inside the code so far.
enum Step {
    /// Decode an instruction.
    Decode,
    /// A table starts here.
    Table(InlineTable),
}

/// The jump tables found inside the part being decoded and not yet reached,
/// by start (at most one per start: the first one found).
#[derive(Default)]
struct InlineTables(std::collections::BTreeMap<usize, InlineTable>);

impl InlineTables {
    /// Remember a table (once).
    fn add(&mut self, t: InlineTable) {
        self.0.entry(t.start).or_insert(t);
    }

    /// What to do at offset `pos`: tables already passed are forgotten.
    #[inline]
    fn at(&mut self, pos: usize) -> Step {
        if self.0.is_empty() {
            return Step::Decode;
        }
        while let Some(entry) = self.0.first_entry() {
            if *entry.key() > pos {
                break;
            }
            let t = entry.remove();
            if t.start == pos {
                return Step::Table(t);
            }
        }
        Step::Decode
    }

    /// If an instruction at `pos` of `len` bytes runs into a table, where
    /// the table starts.
    #[inline]
    fn cut(&self, pos: usize, len: usize) -> Option<usize> {
        if self.0.is_empty() {
            return None;
        }
        self.0
            .keys()
            .next()
            .copied()
            .filter(|&s| s > pos && s < pos.saturating_add(len))
    }
}

/// How many 32-bit entries relative to `table` lie at the start of `bytes`
/// while `lands` accepts the address they lead to.
fn count_entries(table: u64, bytes: &[u8], mut lands: impl FnMut(u64) -> bool) -> usize {
    bytes
        .chunks_exact(4)
        .map_while(|c| <[u8; 4]>::try_from(c).ok())
        .map(|raw| table.wrapping_add_signed(i64::from(i32::from_le_bytes(raw))))
        .take_while(|&t| lands(t))
        .count()
}

/// Record the address field that a load-time relocation patches: an
/// absolute pointer (64 bits; 32-bit ones are recorded with their width's
/// kind so that relinking refuses them).
fn reloc_field(out: &mut Normalized<'_>, offset: usize, r: &Relocation) {
    let kind = if r.width == 8 {
        FieldKind::Reloc(RelocKind::Abs64)
    } else {
        FieldKind::Abs32
    };
    match r.target {
        hotpatch_formats::RelocTarget::Rva(t) => out.field(offset, kind, t, 0),
        hotpatch_formats::RelocTarget::Symbol { .. } => out.field(offset, kind, 0, 0),
    }
}

/// Append a reference to the instruction being built, after `tag` (see
/// [`hash_ref`]).
fn sym<'a>(tag: u8, s: &SymRef<'a>, out: &mut Normalized<'a>) {
    out.write_u64(u64::from(tag) | 0x200);
    hash_ref(s, out);
}

/// What the normaliser needs to know about the function being normalised.
struct Context<'a, 'i, 'd, 'c> {
    /// The part being normalised.
    scope: Scope<'a, 'i, 'd>,
    /// The part's bytes.
    code: &'c [u8],
    /// Jump tables found inside the part, not yet reached.
    inline_tables: InlineTables,
    /// Jump tables in anonymous data, written out once the part is
    /// decoded: (position of the `lea` in the stream, address, whether
    /// measured before the index was finished).
    anon_tables: Vec<(u32, u64, bool)>,
    /// Jump tables inside the part already written out, by offset, with
    /// their number: a table several `lea`s load is written once.
    inline_seen: HashMap<usize, u64>,
}

/// The bytes from `table` to the end of its anonymous read-only block, and
/// how many of them belong to the block (the rest is not file-backed).
fn anon_table_bytes<'d>(index: &ImageIndex<'_, 'd>, table: u64) -> Option<(&'d [u8], usize)> {
    let block = index.block(table)?;
    if block.executable || block.writable {
        return None;
    }
    let off = usize::try_from(table.checked_sub(block.start)?).ok()?;
    let len = usize::try_from(block.end.checked_sub(table)?).ok()?;
    Some((block.bytes.get(off..)?, len))
}

/// The bytes from `table` on, in anonymous read-only data, and how many of
/// them a jump table there may use, given the (sorted) anchors of the part
/// that loads it: up to its block's end or the part's next anchor after
/// it, whichever comes first.
fn anon_table_extent<'d>(
    index: &ImageIndex<'_, 'd>,
    table: u64,
    anchors: &[u64],
) -> Option<(&'d [u8], usize)> {
    let (bytes, limit) = anon_table_bytes(index, table)?;
    let next = anchors
        .get(anchors.partition_point(|&a| a <= table))
        .map_or(limit, |&a| {
            usize::try_from(a.saturating_sub(table)).unwrap_or(usize::MAX)
        });
    Some((bytes, limit.min(next)))
}

/// How a part's `lea` of a jump table in anonymous data is written out
/// (see [`anon_table_loads`]).
pub(super) enum TableLoad<'d> {
    /// The table's first load: its bytes from the table on, and how many of
    /// them it may use (see [`anon_table_extent`]).
    First(&'d [u8], usize),
    /// A later load of a table already written out, by its number (tables
    /// are numbered in the order they are first loaded).
    Again(u64),
    /// A first load of a table that is no longer in anonymous read-only
    /// data: nothing is written for it.
    Lost,
}

/// The loads of jump tables in anonymous data that a part makes, given as
/// `(position of the lea, table, measured before the index was finished)`
/// in order, each with how it is written out, for the part whose (sorted)
/// anchors are `anchors`. A table is measured once, however many `lea`s
/// load it.
pub(super) fn anon_table_loads<'t, 'd>(
    index: &'t ImageIndex<'_, 'd>,
    tables: &'t [(u32, u64, bool)],
    anchors: &'t [u64],
) -> impl Iterator<Item = (u32, u64, bool, TableLoad<'d>)> + 't {
    let mut numbers: HashMap<u64, u64> = HashMap::new();
    tables.iter().map(move |&(insn, table, provisional)| {
        let seen = numbers.len() as u64;
        let load = match numbers.entry(table) {
            std::collections::hash_map::Entry::Occupied(e) => TableLoad::Again(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(seen);
                anon_table_extent(index, table, anchors)
                    .map_or(TableLoad::Lost, |(bytes, end)| TableLoad::First(bytes, end))
            }
        };
        (insn, table, provisional, load)
    })
}

/// [`group_entries`] of the group `scope` is in, each entry resolved from
/// inside the part.
pub(super) fn table_entries<'a>(
    scope: Scope<'a, '_, '_>,
    table: u64,
    bytes: &[u8],
    limit: usize,
    mut each: impl FnMut(SymRef<'a>),
) -> usize {
    group_entries(scope.index, scope.group, table, bytes, limit, |t| {
        each(scope.resolve(t))
    })
}

/// Resolve the address a branch or RIP-relative operand of the part
/// `scope` holds; anonymous bytes it reaches before the index is finished
/// are an anchor of the part.
pub(super) fn resolve_operand<'a>(
    scope: Scope<'a, '_, '_>,
    target: u64,
    out: &mut Normalized<'a>,
) -> SymRef<'a> {
    let s = scope.resolve(target);
    if let SymRef::Deferred(rva) = s {
        out.anchors.push(rva);
    }
    s
}

/// How many whole 32-bit entries fit between `table` and the end of its
/// anonymous read-only block (of its file-backed bytes), with the index's
/// blocks as they are now: the most [`table_len`] can measure.
pub(crate) fn table_room(index: &ImageIndex<'_, '_>, table: u64) -> usize {
    anon_table_bytes(index, table).map_or(0, |(bytes, limit)| bytes.len().min(limit) / 4)
}

/// How many 32-bit entries the jump table at `table`, in anonymous read-only
/// data, has for group `group` with the index's blocks as they are now: what
/// [`Context::jump_table`] measures.
pub(crate) fn table_len(index: &ImageIndex<'_, '_>, group: usize, table: u64) -> usize {
    let Some((bytes, limit)) = anon_table_bytes(index, table) else {
        return 0;
    };
    group_entries(index, group, table, bytes, limit, |_| {})
}

/// Walk the 32-bit entries of the table at `table` (whose bytes are `bytes`,
/// at most `limit` of which belong to it), relative to the table, while they
/// land inside function group `group`; call `each` with every entry's
/// target and return how many there were.
fn group_entries(
    index: &ImageIndex<'_, '_>,
    group: usize,
    table: u64,
    bytes: &[u8],
    limit: usize,
    mut each: impl FnMut(u64),
) -> usize {
    let usable = bytes.get(..bytes.len().min(limit)).unwrap_or(&[]);
    // Entries land close together: one look-up per stretch of addresses
    // with the same answer.
    let mut span: Option<(usize, u64, u64)> = None;
    count_entries(table, usable, |t| {
        let known = span.filter(|&(_, lo, hi)| lo <= t && t < hi);
        let here = known.or_else(|| {
            span = index.function_span(t);
            span
        });
        let lands = here.is_some_and(|(g, _, _)| g == group);
        if lands {
            each(t);
        }
        lands
    })
}

/// What a RIP-relative operand that is not a jump table stands for in
/// the form of its instruction.
pub(super) enum RipOperand<'a, 'd> {
    /// An anonymous pointer slot with a relocation (a GOT entry): the
    /// relocation's width and what it points at.
    Slot(u8, SymRef<'a>),
    /// A load of anonymous read-only bytes: the bytes it reads.
    Constant(&'d [u8]),
    /// Anything else: the target itself.
    Target(SymRef<'a>),
}

/// What the RIP-relative operand of `insn` at `target` (resolved to `s`)
/// stands for, unless it loads a jump table (see [`starts_table`]): an
/// anonymous target is taken by the pointer its slot holds, or by the
/// constant the instruction reads, when it is one.
pub(super) fn rip_operand<'a, 'd>(
    scope: Scope<'a, '_, 'd>,
    insn: &Instruction,
    target: u64,
    s: SymRef<'a>,
) -> RipOperand<'a, 'd> {
    if let SymRef::Anon { .. } | SymRef::Deferred(_) | SymRef::Unmapped(_) = s {
        // An anonymous pointer slot (GOT entry): what it points at.
        if let Some(r) = scope.index.relocation_in(target, 1) {
            if r.rva == target {
                return RipOperand::Slot(r.width, scope.index.resolve_reloc(r, Some(scope.group)));
            }
        }
    }
    if s.is_anon() {
        // A load of an anonymous constant: the bytes it reads.
        if let Some(bytes) = constant_read(scope.index, insn, target) {
            return RipOperand::Constant(bytes);
        }
    }
    RipOperand::Target(s)
}

/// The bytes that `insn` reads at `target`, when that is anonymous
/// read-only memory free of relocations and the access has a known size
/// (not `lea`, whose "access" has none). A load depends on exactly these
/// bytes, not on whatever else follows them up to the next anchor.
fn constant_read<'d>(
    index: &ImageIndex<'_, 'd>,
    insn: &Instruction,
    target: u64,
) -> Option<&'d [u8]> {
    let size = insn.memory_size().size();
    if size == 0 || insn.code() == Code::Lea_r64_m {
        return None;
    }
    let block = index.block(target)?;
    if block.executable || block.writable {
        return None;
    }
    let size = size as u64;
    if !index.relocations_in(target, size).is_empty() {
        return None;
    }
    index.image.bytes_at(target, size)
}

/// Where the jump table that a `lea` loads lies (see [`starts_table`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TableAt {
    /// In anonymous read-only data; `provisional` when it is measured
    /// before the index is finished (its address resolved to
    /// [`SymRef::Deferred`]).
    Anon {
        /// Measured before the index is finished.
        provisional: bool,
    },
    /// Inside the part's own code, at this offset.
    Code(usize),
}

/// Whether a `lea` of `table` (resolved to `s`) that ends at `next_ip`,
/// in the part `scope` whose bytes are `code`, loads a jump table of its
/// function, and where: a 4-aligned run of at least [`MIN_TABLE_ENTRIES`]
/// 32-bit entries relative to the table that land in the function group,
/// in anonymous read-only data or inside the part's own code after the
/// `lea`. The one test of [`Context::jump_table`] and of the twin walk.
pub(super) fn starts_table(
    scope: Scope<'_, '_, '_>,
    code: &[u8],
    table: u64,
    next_ip: u64,
    s: &SymRef<'_>,
) -> Option<TableAt> {
    // Compilers align tables of 32-bit entries to 4.
    if table % 4 != 0 {
        return None;
    }
    // Whether it is a table at all shows in its first entries.
    let (at, bytes, limit) = match s {
        SymRef::Anon { .. } | SymRef::Deferred(_) => {
            let (bytes, limit) = anon_table_bytes(scope.index, table)?;
            let provisional = matches!(s, SymRef::Deferred(_));
            (TableAt::Anon { provisional }, bytes, limit)
        }
        SymRef::Local { part, .. } if *part == scope.part && table >= next_ip => {
            let off = usize::try_from(table.checked_sub(scope.rva)?).ok()?;
            let bytes = code.get(off..)?;
            (TableAt::Code(off), bytes, bytes.len())
        }
        _ => return None,
    };
    let first = bytes
        .get(..bytes.len().min(4 * MIN_TABLE_ENTRIES))
        .unwrap_or(&[]);
    (group_entries(scope.index, scope.group, table, first, limit, |_| {}) >= MIN_TABLE_ENTRIES)
        .then_some(at)
}

/// Pass 2: normalise the code of one part (at `rva`) of function group
/// `group`, appending one [`NormInsn`](super::NormInsn) per instruction to
/// `out` (`NOP`s to [`Normalized::nops`]), recording every reference into
/// the group's code for [`super::normalize_group`] to resolve, and noting
/// every other resolved reference.
///
/// `hint`, when given, is the same part of the other build, already
/// normalised: its plain instructions (see [`NormInsn::plain`]) whose bytes
/// this part repeats at the same offset, with no relocation in them here
/// either, are taken over without decoding (the same bytes decode to the
/// same instruction, and a plain instruction's form is its bytes). The
/// result is exactly what decoding would give; only the work differs.
pub(crate) fn normalize<'a>(
    scope: Scope<'a, '_, '_>,
    code: &[u8],
    hint: Option<super::Hint<'_, '_>>,
    out: &mut Normalized<'a>,
) {
    let rva = scope.rva;
    let relocs = scope.index.relocations_in(rva, code.len() as u64);
    let mut next_reloc = 0usize;
    let mut cx = Context {
        scope,
        code,
        inline_tables: InlineTables::default(),
        anon_tables: Vec::new(),
        inline_seen: HashMap::new(),
    };
    out.insns.reserve(code.len() / 4);
    let (hint_insns, hint_words, hint_code) = hint.map_or((&[][..], &[][..], &[][..]), |h| {
        (&h.form.insns[..], &h.form.words[..], h.code)
    });
    let mut next_hint = 0usize;
    // The run of the hint's plain instructions that `next_hint` is in:
    // where it ends (instruction index, byte offset).
    let mut run = (0usize, 0usize);
    let mut decoder = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut pos = 0usize;
    while pos < code.len() {
        // A jump table inside the code starts here: emit its entries.
        if let Step::Table(t) = cx.inline_tables.at(pos) {
            cx.emit_inline_table(t, out);
            pos = t.end;
            continue;
        }
        // Nothing before `limit` can cut an instruction short or patch it.
        let limit = run_limit(&cx, pos, relocs, &mut next_reloc);
        // The other build has a run of plain instructions here: as far as
        // the bytes are the same, so are the instructions, taken over at
        // once.
        if !hint_insns.is_empty() {
            while hint_insns
                .get(next_hint)
                .is_some_and(|h| (h.offset as usize) < pos)
            {
                next_hint = next_hint.saturating_add(1);
            }
            if run.0 <= next_hint {
                run = plain_run_end(hint_insns, next_hint);
            }
            if let Some((j, end)) =
                same_prefix(hint_insns, next_hint, run, hint_code, code, pos, limit)
            {
                let from = hint_insns.get(next_hint).map_or(0, |h| h.start as usize);
                let to = hint_insns
                    .get(j.saturating_sub(1))
                    .map_or(0, |h| (h.start as usize).saturating_add(h.count as usize));
                out.push_plain_run(
                    hint_insns.get(next_hint..j).unwrap_or(&[]),
                    hint_words.get(from..to).unwrap_or(&[]),
                );
                next_hint = j;
                pos = end;
                continue;
            }
        }
        // The common plain instructions and `NOP`s need only their length,
        // direct branches their target.
        let start = pos;
        let stop;
        (pos, stop) = plain_run(code, pos, limit, rva, out);
        if let Quick::Branch { len, kind, rel } = stop {
            // (A packager needs the branch's address field: it decodes.)
            if let Some(h) =
                branch_header(kind).filter(|_| !out.want_fields && pos.saturating_add(len) <= limit)
            {
                let target = rva
                    .wrapping_add(pos as u64)
                    .wrapping_add(len as u64)
                    .wrapping_add_signed(rel);
                #[cfg(debug_assertions)]
                debug_check_branch(code, pos, rva, h, target);
                out.write_u64(h);
                cx.hash_branch(target, out);
                out.push(pos, len);
                pos = pos.saturating_add(len);
                continue;
            }
        }
        if pos != start && pos >= limit {
            // A table or a relocation starts here: look again.
            continue;
        }
        if decoder.position() != pos && !resync(&mut decoder, rva, pos) {
            break;
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            out.push_raw(pos, code.get(pos..pos.saturating_add(1)).unwrap_or(&[]));
            pos = pos.saturating_add(1);
            continue;
        }
        let len = insn.len();
        // An instruction that runs into a known table: its bytes up to the
        // table are not code.
        if let Some(stop) = cx.inline_tables.cut(pos, len) {
            out.push_raw(pos, code.get(pos..stop).unwrap_or(&[]));
            pos = stop;
            continue;
        }
        // Relocations whose patched bytes start inside this instruction.
        let ip = insn.ip();
        while relocs.get(next_reloc).is_some_and(|r| r.rva < ip) {
            next_reloc = next_reloc.saturating_add(1);
        }
        let first = next_reloc;
        while relocs
            .get(next_reloc)
            .is_some_and(|r| r.rva < insn.next_ip())
        {
            next_reloc = next_reloc.saturating_add(1);
        }
        let here = relocs.get(first..next_reloc).unwrap_or(&[]);
        pos = pos.saturating_add(len);
        // Padding: left out of the stream (unless a relocation patches it,
        // which makes it something else).
        if here.is_empty() && is_nop(&insn) {
            out.push_nop(pos.saturating_sub(len), len);
            continue;
        }
        let at = pos.saturating_sub(len);
        if here.is_empty() && is_plain_kind(&insn) {
            // Nothing in it depends on where it is: its bytes are its form.
            write_plain(code, at, len, out);
            out.push_plain(at, len);
        } else {
            cx.hash_insn(&decoder, &mut insn, here, out);
            out.push(at, len);
        }
    }
    cx.finish_anon_tables(out);
}

/// Where the run of plain instructions of `insns` from `k` on ends: the
/// index past its last instruction and the byte offset past it. A run is
/// contiguous in the code (no `NOP` between) and in the words.
fn plain_run_end(insns: &[NormInsn], k: usize) -> (usize, usize) {
    let Some(first) = insns.get(k).filter(|h| h.plain) else {
        return (k, 0);
    };
    let (mut end, mut words) = (first.offset as usize, first.start as usize);
    let mut m = k;
    while let Some(h) = insns.get(m) {
        if !h.plain || h.offset as usize != end || h.start as usize != words {
            break;
        }
        end = end.saturating_add(usize::from(h.len));
        words = words.saturating_add(h.count as usize);
        m = m.saturating_add(1);
    }
    (m, end)
}

/// The instructions `k..j` of the run `run` (see [`plain_run_end`]) of the
/// other build's plain instructions, starting at `pos`, that end by
/// `limit` and whose bytes in `code` are those of `other` at the same
/// offsets: `j` and the byte offset where they end. `None` when not even
/// the first one is.
#[inline]
fn same_prefix(
    insns: &[NormInsn],
    k: usize,
    run: (usize, usize),
    other: &[u8],
    code: &[u8],
    pos: usize,
    limit: usize,
) -> Option<(usize, usize)> {
    insns
        .get(k)
        .filter(|h| h.plain && h.offset as usize == pos)?;
    let (m, end) = run;
    let bound = end.min(limit);
    let (a, b) = (other.get(pos..bound)?, code.get(pos..bound)?);
    if bound == end && a == b {
        return Some((m, end));
    }
    // Changed code, or something cuts in: the instructions before.
    let same = common_prefix(a, b);
    let limit = pos.saturating_add(same);
    let (mut j, mut at) = (k, pos);
    while let Some(h) = insns.get(j).filter(|_| j < m) {
        let e = (h.offset as usize).saturating_add(usize::from(h.len));
        if e > limit {
            break;
        }
        at = e;
        j = j.saturating_add(1);
    }
    (j > k).then_some((j, at))
}

/// How many bytes `a` and `b` have in common from their start: whole
/// blocks first (a slice comparison), then the bytes of the first block
/// that differs.
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let blocks = a
        .chunks(32)
        .zip(b.chunks(32))
        .take_while(|(x, y)| x == y)
        .count();
    let i = blocks.saturating_mul(32);
    let tail = a
        .get(i..)
        .unwrap_or(&[])
        .iter()
        .zip(b.get(i..).unwrap_or(&[]));
    i.saturating_add(tail.take_while(|(x, y)| x == y).count())
}

/// Normalise the plain instructions and `NOP`s that [`x86_quick::classify`]
/// knows from `pos` on, as far as they end by `limit`. Returns where they
/// end and what the quick look found there (not taken).
#[inline(always)]
fn plain_run(
    code: &[u8],
    mut pos: usize,
    limit: usize,
    #[cfg_attr(not(debug_assertions), allow(unused_variables))] rva: u64,
    out: &mut Normalized<'_>,
) -> (usize, Quick) {
    while let Some(rest) = code.get(pos..).filter(|r| !r.is_empty()) {
        let q = x86_quick::classify(rest);
        let (len, nop) = match q {
            Quick::Plain(len) => (len, false),
            Quick::Nop(len) => (len, true),
            _ => return (pos, q),
        };
        if pos.saturating_add(len) > limit {
            return (pos, q);
        }
        #[cfg(debug_assertions)]
        debug_check_quick(code, pos, rva, len, nop);
        if nop {
            out.push_nop(pos, len);
        } else {
            write_plain(code, pos, len, out);
            out.push_plain(pos, len);
        }
        pos = pos.saturating_add(len);
    }
    (pos, Quick::Decode)
}

/// How far from `pos` instructions can be taken by their bytes alone: to
/// the first relocation that patches bytes at or after `pos`, or the first
/// jump table inside the code after it (offsets in the part), else the
/// end of the code. Moves `next_reloc` past relocations before `pos`, as
/// decoding does.
#[inline]
fn run_limit(
    cx: &Context<'_, '_, '_, '_>,
    pos: usize,
    relocs: &[Relocation],
    next_reloc: &mut usize,
) -> usize {
    let end = cx.code.len();
    if relocs.is_empty() && cx.inline_tables.0.is_empty() {
        return end;
    }
    let rva = cx.scope.rva;
    let ip = rva.wrapping_add(pos as u64);
    while relocs.get(*next_reloc).is_some_and(|r| r.rva < ip) {
        *next_reloc = next_reloc.saturating_add(1);
    }
    let reloc = relocs.get(*next_reloc).map_or(end, |r| {
        usize::try_from(r.rva.wrapping_sub(rva)).map_or(end, |o| o.min(end))
    });
    let table = cx
        .inline_tables
        .0
        .keys()
        .next()
        .map_or(end, |&s| s.min(end));
    reloc.min(table)
}

/// In builds with debug assertions, check a quick branch against
/// iced-x86: the same header and target.
#[cfg(debug_assertions)]
fn debug_check_branch(code: &[u8], pos: usize, rva: u64, h: u64, target: u64) {
    let ip = rva.wrapping_add(pos as u64);
    let mut d = Decoder::with_ip(64, code.get(pos..).unwrap_or(&[]), ip, DecoderOptions::NONE);
    let mut insn = d.decode();
    insn.as_near_branch();
    debug_assert!(
        !insn.is_invalid() && header(&insn) == h && insn.near_branch_target() == target,
        "the quick branch disagrees with iced-x86 at offset {pos}"
    );
}

/// In builds with debug assertions (the tests, fuzzing), check every quick
/// answer against iced-x86.
#[cfg(debug_assertions)]
fn debug_check_quick(code: &[u8], pos: usize, rva: u64, len: usize, nop: bool) {
    let mut d = Decoder::with_ip(
        64,
        code.get(pos..).unwrap_or(&[]),
        rva,
        DecoderOptions::NONE,
    );
    let insn = d.decode();
    debug_assert!(
        !insn.is_invalid()
            && insn.len() == len
            && is_nop(&insn) == nop
            && (nop || is_plain_kind(&insn)),
        "the quick look disagrees with iced-x86 at offset {pos}: {:02x?}",
        code.get(pos..pos.saturating_add(len)).unwrap_or(&[])
    );
}

/// The first word of the form of a plain instruction of `len` bytes.
#[inline]
fn plain_tag(len: usize) -> u64 {
    u64::from(tag::PLAIN) | (len as u64) << 8
}

/// The form of a plain instruction of `len` bytes at `pos`: its bytes.
#[inline(always)]
fn write_plain(code: &[u8], pos: usize, len: usize, out: &mut Normalized<'_>) {
    let [lo, hi] = insn_words(code, pos, len);
    out.words.push(plain_tag(len));
    out.words.push(lo);
    if len > 8 {
        out.words.push(hi);
    }
}

impl<'a, 'i, 'd, 'c> Context<'a, 'i, 'd, 'c> {
    /// Write the address-independent form of `insn` to `out`. `relocs` are
    /// the relocations whose patched bytes start inside it. Kept out of the
    /// decoding loop, whose common case (a plain instruction) it is not.
    #[inline(never)]
    fn hash_insn(
        &mut self,
        decoder: &Decoder<'_>,
        insn: &mut Instruction,
        relocs: &'i [Relocation],
        out: &mut Normalized<'a>,
    ) {
        // Where the address fields are, for a packager.
        let fields = out.want_fields.then(|| {
            let co = decoder.get_constant_offsets(insn);
            let pos = insn.ip().wrapping_sub(self.scope.rva) as usize;
            (co, pos, insn.len())
        });
        // `jmp short` and `jmp near` to the same place are the same thing.
        insn.as_near_branch();
        out.write_u64(header(insn));

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
                    if let Some((_, pos, _)) = fields {
                        reloc_field(out, pos.saturating_add(at as usize), r);
                    }
                    let s = self.scope.index.resolve_reloc(r, Some(self.scope.group));
                    out.write_u64(u64::from(tag::OTHER_RELOC) | at << 8);
                    sym(tag::OTHER_RELOC, &s, out);
                    out.note(&s);
                }
            }
        }

        for i in 0..insn.op_count() {
            let kind = insn.op_kind(i);
            match kind {
                OpKind::Register => {
                    out.write_u64(u64::from(tag::REGISTER) | (insn.op_register(i) as u64) << 8);
                }
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    if let Some((co, pos, len)) = fields {
                        // The displacement ends the instruction. A short
                        // one is recorded too (relinking must refuse it).
                        let size = co.immediate_size();
                        out.field(
                            pos.saturating_add(co.immediate_offset()),
                            if size == 4 {
                                FieldKind::Reloc(RelocKind::Rel32)
                            } else {
                                FieldKind::Rel8
                            },
                            insn.near_branch_target(),
                            0i64.saturating_sub(len.saturating_sub(co.immediate_offset()) as i64),
                        );
                    }
                    self.hash_branch(insn.near_branch_target(), out);
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    out.write_u64(
                        u64::from(tag::FAR)
                            | u64::from(insn.far_branch_selector()) << 8
                            | u64::from(insn.far_branch32()) << 24,
                    );
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
                        if let Some((co, pos, _)) = fields {
                            reloc_field(out, pos.saturating_add(co.immediate_offset()), r);
                        }
                        let s = self.scope.index.resolve_reloc(r, Some(self.scope.group));
                        sym(tag::IMMEDIATE_RELOC, &s, out);
                        out.note(&s);
                    }
                    None => {
                        out.write_u64(u64::from(tag::IMMEDIATE));
                        out.write_u64(insn.immediate(i));
                    }
                },
                OpKind::Memory => {
                    out.write_u64(
                        u64::from(tag::MEMORY)
                            | (insn.memory_base() as u64) << 8
                            | (insn.memory_index() as u64) << 16
                            | u64::from(insn.memory_index_scale()) << 24
                            | (insn.memory_segment() as u64) << 32
                            | (insn.memory_size() as u64) << 40,
                    );
                    if insn.is_ip_rel_memory_operand() {
                        let target = insn.ip_rel_memory_address();
                        if let Some((co, pos, len)) = fields {
                            out.field(
                                pos.saturating_add(co.displacement_offset()),
                                FieldKind::Reloc(RelocKind::Rel32),
                                target,
                                0i64.saturating_sub(
                                    len.saturating_sub(co.displacement_offset()) as i64
                                ),
                            );
                        }
                        self.hash_rip_target(insn, target, out);
                    } else if let Some(r) = disp_reloc.take() {
                        if let Some((co, pos, _)) = fields {
                            reloc_field(out, pos.saturating_add(co.displacement_offset()), r);
                        }
                        let s = self.scope.index.resolve_reloc(r, Some(self.scope.group));
                        sym(tag::DISP_RELOC, &s, out);
                        out.note(&s);
                    } else {
                        out.write_u64(u64::from(tag::DISP));
                        out.write_u64(insn.memory_displacement64());
                    }
                }
                _ => {
                    // String operands ([rsi], es:[rdi]) and the like: their
                    // form is in the code; keep the segment and size.
                    out.write_u64(
                        u64::from(tag::OTHER)
                            | (kind as u64) << 8
                            | (insn.memory_segment() as u64) << 16
                            | (insn.memory_size() as u64) << 24,
                    );
                }
            }
        }
    }

    /// Hash a near branch or call target.
    fn hash_branch(&self, target: u64, out: &mut Normalized<'a>) {
        // A PLT entry or import thunk resolves to what it forwards to.
        let s = resolve_operand(self.scope, target, out);
        sym(tag::BRANCH, &s, out);
        out.note(&s);
    }

    /// Hash the target of a RIP-relative memory operand of `insn`.
    fn hash_rip_target(&mut self, insn: &Instruction, target: u64, out: &mut Normalized<'a>) {
        let s = resolve_operand(self.scope, target, out);
        if insn.code() == Code::Lea_r64_m && self.jump_table(target, insn.next_ip(), &s, out) {
            return;
        }
        match rip_operand(self.scope, insn, target, s) {
            RipOperand::Slot(width, p) => {
                out.write_u64(u64::from(tag::SLOT) | u64::from(width) << 8);
                sym(tag::SLOT, &p, out);
                out.note(&p);
            }
            RipOperand::Constant(bytes) => {
                out.write_u64(u64::from(tag::CONSTANT));
                bytes.hash(out);
            }
            RipOperand::Target(s) => {
                sym(tag::RIP, &s, out);
                out.note(&s);
            }
        }
    }

    /// If `table` (resolved to `s`) starts a jump table of this function: a
    /// 4-aligned run of at least [`MIN_TABLE_ENTRIES`] 32-bit entries
    /// relative to the table that land in this function group, in anonymous
    /// read-only data or inside this part's own code after the `lea`
    /// (`next_ip`). Returns whether it wrote the `lea`'s operand as a table.
    ///
    /// A table in the code is written at once (its entries, each a
    /// [`SymRef::Local`] recorded in `out` for the `lea` being built, see
    /// [`Normalized::local`]) and remembered so that the decoder skips it.
    /// A table in anonymous data is only recorded here: it runs until its
    /// entries leave the function or its block ends, and the other tables
    /// and constants this part refers to end it too, which are known only
    /// once the whole part is decoded ([`Context::finish_anon_tables`]).
    /// Either way a table is written out once per part: another `lea` of
    /// the same table names it by its number, so the work stays linear
    /// however many places load one table.
    fn jump_table(
        &mut self,
        table: u64,
        next_ip: u64,
        s: &SymRef<'_>,
        out: &mut Normalized<'a>,
    ) -> bool {
        match starts_table(self.scope, self.code, table, next_ip, s) {
            None => false,
            Some(TableAt::Anon { provisional }) => {
                let insn = u32::try_from(out.insns.len()).unwrap_or(u32::MAX);
                self.anon_tables.push((insn, table, provisional));
                // The entries are added by `finish_anon_tables`.
                out.write_u64(u64::from(tag::JUMP_TABLE) | 0x100);
                true
            }
            Some(TableAt::Code(off)) => {
                // A table inside this very part, after the `lea`.
                let seen = self.inline_seen.len() as u64;
                if let Some(&number) = self.inline_seen.get(&off) {
                    out.write_u64(u64::from(tag::TABLE_AGAIN));
                    out.write_u64(number);
                    return true;
                }
                let bytes = self.code.get(off..).unwrap_or(&[]);
                out.write_u64(u64::from(tag::JUMP_TABLE));
                let n = table_entries(self.scope, table, bytes, bytes.len(), |s| hash_ref(&s, out));
                n.hash(out);
                self.inline_seen.insert(off, seen);
                self.inline_tables.add(InlineTable {
                    start: off,
                    end: off.saturating_add(n.saturating_mul(4)),
                });
                true
            }
        }
    }

    /// Add the jump tables in anonymous data that [`Context::jump_table`]
    /// recorded to their `lea`s, now that the part is decoded: each ends at
    /// its block's end or at the next address this part refers to,
    /// whichever comes first. A table measured before the index is finished
    /// goes to [`Normalized::tables`], to be measured again after. A table
    /// is walked once; another `lea` of it gets its number.
    fn finish_anon_tables(&mut self, out: &mut Normalized<'a>) {
        if self.anon_tables.is_empty() {
            return;
        }
        let tables = std::mem::take(&mut self.anon_tables);
        // Where each table must end at the latest: the next anchor after it
        // (their order does not matter to anyone else).
        out.anchors.sort_unstable();
        out.anchors.dedup();
        let mut places: Vec<(u32, u32, u64)> = Vec::new();
        let mut late: Vec<(u32, u64)> = Vec::new();
        let scope = self.scope;
        for (insn, table, provisional, load) in anon_table_loads(scope.index, &tables, &out.anchors)
        {
            let mut c = Canon::default();
            match load {
                TableLoad::Lost => continue,
                TableLoad::Again(number) => (tag::TABLE_AGAIN, number).hash(&mut c),
                TableLoad::First(bytes, anchors_end) => {
                    let n = table_entries(scope, table, bytes, anchors_end, |s| match s {
                        SymRef::Local { part, offset } => places.push((insn, part, offset)),
                        other => out.refs.push((insn, other)),
                    });
                    if provisional {
                        // Fewer than a table's worth leaves the `lea` written as
                        // a table all the same: the final measure differs, so
                        // the part is normalised again.
                        out.tables.push((table, n));
                    }
                    if out.want_fields {
                        let mut entries = Vec::new();
                        group_entries(scope.index, scope.group, table, bytes, anchors_end, |t| {
                            let at = entries.len().saturating_mul(4);
                            entries.push(super::AddrField {
                                insn,
                                offset: u32::try_from(at).unwrap_or(u32::MAX),
                                kind: FieldKind::Reloc(RelocKind::Rel32),
                                target: t,
                                addend: at as i64,
                                reg: None,
                            });
                        });
                        let size = (entries.len() as u64).saturating_mul(4);
                        out.owned_tables.push(super::OwnedTable {
                            rva: table,
                            entries,
                            size,
                        });
                    }
                    (tag::JUMP_TABLE, n).hash(&mut c);
                }
            }
            late.extend(c.words.iter().map(|&w| (insn, w)));
        }
        out.late.extend(late);
        out.locals_late(&places);
    }

    /// Emit one normalised datum per entry of a jump table inside the code.
    fn emit_inline_table(&self, t: InlineTable, out: &mut Normalized<'a>) {
        let Some(bytes) = self.code.get(t.start..t.end) else {
            return;
        };
        let table = self.scope.rva.wrapping_add(t.start as u64);
        let mut done = 0;
        let scope = self.scope;
        group_entries(
            scope.index,
            scope.group,
            table,
            bytes,
            bytes.len(),
            |target| {
                if out.want_fields {
                    out.field(
                        t.start.saturating_add(done),
                        FieldKind::Reloc(RelocKind::Rel32),
                        target,
                        done as i64,
                    );
                }
                sym(tag::TABLE_ENTRY, &scope.resolve(target), out);
                out.push(t.start.saturating_add(done), 4);
                done = done.saturating_add(4);
            },
        );
        // Entries that no longer resolve (cannot happen: the table was
        // measured from these bytes) are kept as raw bytes.
        if done < bytes.len() {
            out.push_raw(
                t.start.saturating_add(done),
                bytes.get(done..).unwrap_or(&[]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use hotpatch_formats::read::{load_file, parse, ReadOptions};
    use hotpatch_formats::{Arch, Format, Function, Image, RelocTarget, Section};

    use super::*;
    use crate::diff::index;
    use crate::key::Key;
    use crate::norm::{normalize_group, normalize_part};
    use crate::testutil::{corpus_file, image, section};

    // ---- helpers ---------------------------------------------------------

    /// Parse an image (a PE finds its PDB beside it).
    fn parse_image<'d>(bytes: &'d [u8], path: &Path) -> Image<'d> {
        parse(bytes, &ReadOptions::new(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The normalised form of every part of group `g`, as the diff engine
    /// computes it.
    fn group_norm<'a>(idx: &'a ImageIndex<'_, '_>, g: usize) -> Vec<Normalized<'a>> {
        let mut parts = Vec::new();
        normalize_group(idx, g, &mut parts);
        parts
    }

    /// The hash sequence of every part of group `g`.
    fn group_hashes(idx: &ImageIndex<'_, '_>, g: usize) -> Vec<Vec<u64>> {
        group_norm(idx, g)
            .iter()
            .map(|n| n.insn_digests())
            .collect()
    }

    /// The hash sequence of the (global) function `name`.
    fn hashes_of(idx: &ImageIndex<'_, '_>, name: &str) -> Vec<Vec<u64>> {
        let key = Key { name, unit: None };
        let g = idx
            .group(&key)
            .unwrap_or_else(|| panic!("no function {name}"));
        group_hashes(idx, g)
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

    /// Diff two image files.
    fn diff_paths(pa: &Path, pb: &Path) -> BTreeSet<String> {
        let (ba, bb) = (load_file(pa).unwrap(), load_file(pb).unwrap());
        let (ia, ib) = (parse_image(&ba, pa), parse_image(&bb, pb));
        let (xa, xb) = (index(&ia), index(&ib));
        differing(&xa, &xb)
    }

    /// A bare x86-64 image for hand-assembled tests.
    fn synthetic<'d>(
        format: Format,
        sections: Vec<Section<'d>>,
        functions: &[(&str, u64, u64)],
    ) -> Image<'d> {
        image(format, Arch::X86_64, sections, functions)
    }

    /// One jump table loaded by many `lea`s (a crafted function: `K`
    /// times `lea rdx,[rip+table]`, then `N` one-byte cases; the table's
    /// `N` entries land on the cases). The table is walked once, not once
    /// per `lea`: the places the part records grow with `K + N`, not
    /// `K * N` (at `K = N = 12,000` the old walk asked for 4 GB).
    #[test]
    fn jump_table_loaded_from_many_places_is_walked_once() {
        const K: usize = 4000;
        const N: usize = 4000;
        let text_at = 0x1000u64;
        let code_len = 7 * K + N;
        let table = (text_at + code_len as u64 + 0xfff) & !0xfff;
        let mut code = Vec::with_capacity(code_len);
        for k in 0..K {
            let next = text_at + 7 * (k as u64 + 1);
            code.extend_from_slice(&[0x48, 0x8d, 0x15]);
            code.extend_from_slice(&((table as i64 - next as i64) as i32).to_le_bytes());
        }
        let cases = text_at + code.len() as u64;
        code.extend(std::iter::repeat_n(0xc3u8, N));
        let entries: Vec<u8> = (0..N as u64)
            .flat_map(|n| ((cases + n) as i64 - table as i64).to_le_bytes()[..4].to_vec())
            .collect();
        let img = synthetic(
            Format::Elf,
            vec![
                section(".text", text_at, &code, false, true),
                section(".rodata", table, &entries, false, false),
            ],
            &[("f", text_at, code.len() as u64)],
        );
        let idx = index(&img);
        let g = idx
            .group(&Key {
                name: "f",
                unit: None,
            })
            .unwrap();
        let parts = group_norm(&idx, g);
        assert_eq!(parts[0].insns.len(), K + N);
        // Each entry once; every later `lea` names the table by number.
        assert_eq!(parts[0].places.len(), N);
        let again = parts[0]
            .late
            .iter()
            .filter(|&&(_, w)| w == u64::from(tag::TABLE_AGAIN))
            .count();
        assert_eq!(again, K - 1);
    }

    /// Every address field the normaliser records for a packager reads back,
    /// with its kind at its own address, as its target plus its addend: on
    /// every function of every x86-64 corpus image, ELF and PE (branches,
    /// calls, RIP-relative operands, absolute pointers, jump-table entries).
    #[test]
    fn address_fields_read_back_as_their_targets() {
        use crate::norm::{normalize_group_with_fields, FieldKind};
        use hotpatch_formats::package::Site;
        let mut checked = 0;
        for scenario in std::fs::read_dir(crate::testutil::corpus()).unwrap() {
            let scenario = scenario.unwrap().path();
            for target in ["x86_64-linux", "x86_64-windows"] {
                let dir = scenario.join("bin").join(target);
                let Ok(files) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for f in files {
                    let path = f.unwrap().path();
                    if !matches!(
                        path.extension().and_then(|e| e.to_str()),
                        Some("so" | "dll")
                    ) {
                        continue;
                    }
                    let (bytes, opts) = crate::testutil::read(&path);
                    let img = parse(&bytes, &opts).unwrap();
                    let idx = index(&img);
                    for g in 0..idx.groups.len() {
                        let parts = normalize_group_with_fields(&idx, g);
                        for (p, n) in parts.iter().enumerate() {
                            let part = &idx.parts(g)[p];
                            let code = img.bytes_at(part.rva, part.size).unwrap();
                            let check = |field: &crate::norm::AddrField, base: u64, code: &[u8]| {
                                let at = field.offset as usize;
                                let pc = base + u64::from(field.offset);
                                let mut want = field.target.wrapping_add_signed(field.addend);
                                if field.kind
                                    == FieldKind::Reloc(hotpatch_formats::package::RelocKind::Abs64)
                                {
                                    // Absolute: the image is at its preferred base.
                                    want = want.wrapping_add(img.preferred_base);
                                }
                                match field.kind {
                                    FieldKind::Reloc(kind) => {
                                        let site = Site {
                                            address: pc,
                                            image_base: img.preferred_base,
                                        };
                                        let got = kind.read(&code[at..], site).unwrap();
                                        assert_eq!(got, want, "{} {:?}", path.display(), field);
                                    }
                                    FieldKind::Rel8 => {
                                        let rel = code[at] as i8 as i64;
                                        assert_eq!(pc.wrapping_add_signed(rel), want);
                                    }
                                    FieldKind::Abs32 | FieldKind::A64Unsupported => {}
                                }
                            };
                            for field in &n.fields {
                                check(field, part.rva, code);
                                checked += 1;
                            }
                            for t in &n.owned_tables {
                                let bytes = img.bytes_at(t.rva, t.size).unwrap();
                                for e in &t.entries {
                                    check(e, t.rva, bytes);
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// PE `mov r64, imm64` of an address (a base-relocated immediate): an
    /// absolute field, read back as the preferred base plus the target.
    #[test]
    fn absolute_pointer_in_code_is_an_abs64_field() {
        use crate::norm::{normalize_group_with_fields, FieldKind};
        use hotpatch_formats::package::{RelocKind, Site};
        // mov rax, 0x180002000 (preferred base 0x180000000 + 0x2000); ret
        let mut code = vec![0x48, 0xb8];
        code.extend_from_slice(&0x1_8000_2000u64.to_le_bytes());
        code.push(0xc3);
        let mut img = synthetic(
            Format::Pe,
            vec![
                section(".text", 0x1000, &code, false, true),
                section(".data", 0x2000, &[0u8; 8], true, false),
            ],
            &[("f", 0x1000, code.len() as u64)],
        );
        img.preferred_base = 0x1_8000_0000;
        img.relocations = vec![hotpatch_formats::Relocation {
            rva: 0x1002,
            width: 8,
            target: RelocTarget::Rva(0x2000),
        }];
        let idx = index(&img);
        let g = idx
            .group(&Key {
                name: "f",
                unit: None,
            })
            .unwrap();
        let parts = normalize_group_with_fields(&idx, g);
        assert_eq!(
            parts[0].fields,
            [crate::norm::AddrField {
                insn: 0,
                offset: 2,
                kind: FieldKind::Reloc(RelocKind::Abs64),
                target: 0x2000,
                addend: 0,
                reg: None
            }]
        );
        let site = Site {
            address: 0x1002,
            image_base: img.preferred_base,
        };
        assert_eq!(
            RelocKind::Abs64.read(&code[2..], site).unwrap(),
            0x1_8000_2000
        );
    }

    // ---- the corpus ------------------------------------------------------

    /// Two links of the same objects in another order: nothing changed.
    #[test]
    fn relink_order_changes_nothing() {
        for target in ["x86_64-linux", "x86_64-windows"] {
            let d = diff_paths(
                &corpus_file("12-relink-order", target, "v1"),
                &corpus_file("12-relink-order", target, "v2"),
            );
            assert!(d.is_empty(), "{target}: {d:?}");
        }
    }

    /// The read-only table of scenario 06 is noted as a data reference, so
    /// that the diff engine can spread its change to its users.
    #[test]
    fn rodata_table_is_noted() {
        for target in ["x86_64-linux", "x86_64-windows"] {
            let path = corpus_file("06-rodata-table", target, "v1");
            let bytes = load_file(&path).unwrap();
            let img = parse_image(&bytes, &path);
            let idx = index(&img);
            for f in ["suite_allowed", "suite_pick"] {
                let g = idx
                    .group(&Key {
                        name: f,
                        unit: None,
                    })
                    .unwrap();
                let refs: Vec<String> = group_norm(&idx, g)
                    .iter()
                    .flat_map(|n| n.data_refs.iter().map(|k| k.to_string()))
                    .collect();
                assert!(
                    refs.iter().any(|k| k.ends_with("suite_strength")),
                    "{target} {f}: {refs:?}"
                );
            }
        }
    }

    /// Anonymous vector constants that clang places just before lld's debug
    /// directory: a load is taken by the 16 bytes it reads, so the build's
    /// GUID that follows in `.rdata` does not leak into the comparison.
    #[test]
    fn clang_vector_constant_before_debug_directory() {
        for (scenario, f) in [
            ("03-new-helper", "pkt_push"),
            ("01-bounds-check", "hb_load"),
        ] {
            let (pa, pb) = (
                corpus_file(scenario, "x86_64-windows", "v1"),
                corpus_file(scenario, "x86_64-windows", "v2"),
            );
            let (ba, bb) = (load_file(&pa).unwrap(), load_file(&pb).unwrap());
            let (ia, ib) = (parse_image(&ba, &pa), parse_image(&bb, &pb));
            let (xa, xb) = (index(&ia), index(&ib));
            assert_eq!(hashes_of(&xa, f), hashes_of(&xb, f), "{scenario} {f}");
        }
    }

    // ---- jump tables -----------------------------------------------------

    /// The RIP-relative `lea` of `func` that loads a jump table of 32-bit
    /// entries relative to the table: (offset of its disp32 in the section
    /// data of `text`, table RVA, number of entries). Found independently of
    /// the normaliser, by plain decoding.
    fn find_table(img: &Image<'_>, f: &Function) -> (usize, u64, usize) {
        let code = img.bytes_at(f.rva, f.size).unwrap();
        let mut dec = Decoder::with_ip(64, code, f.rva, DecoderOptions::NONE);
        let text = img.section_at(f.rva).unwrap();
        for insn in &mut dec {
            if insn.code() != Code::Lea_r64_m || !insn.is_ip_rel_memory_operand() {
                continue;
            }
            let t = insn.ip_rel_memory_address();
            let Some(ro) = img.section_at(t) else {
                continue;
            };
            if ro.perms.execute || ro.perms.write {
                continue;
            }
            let mut n = 0;
            while let Some(b) = img.bytes_at(t + 4 * n, 4) {
                let e = i32::from_le_bytes(b.try_into().unwrap());
                let target = t.wrapping_add_signed(i64::from(e));
                if target < f.rva || target >= f.rva + f.size {
                    break;
                }
                n += 1;
            }
            // lea r64, [rip+disp32]: the displacement is the last 4 bytes.
            let disp = (insn.next_ip() - 4 - text.rva) as usize;
            return (disp, t, n as usize);
        }
        panic!("{}: no jump table", f.name);
    }

    /// Normalise `func` in the corpus image, and in a copy where the read-only
    /// section holding its jump table has moved away from the code (as a
    /// relink does), the `lea` and the table's entries rewritten to match;
    /// they must compare equal. A copy whose table sends two cases to each
    /// other's code must not.
    fn check_moved_jump_table(path: &Path, func: &str, entries: usize) {
        let bytes = load_file(path).unwrap();
        let img = parse_image(&bytes, path);
        let f = img
            .functions
            .iter()
            .find(|f| f.name == func)
            .unwrap()
            .clone();
        let (disp_at, table, n) = find_table(&img, &f);
        assert_eq!(n, entries, "{func}: table entries");
        let ti = img.sections.iter().position(|s| s.contains(f.rva)).unwrap();
        let ri = img.sections.iter().position(|s| s.contains(table)).unwrap();
        let end = img.sections.iter().map(|s| s.rva + s.size).max().unwrap();
        let new_rva = (end + 0x1fff) & !0xfff;
        let delta = new_rva - img.sections[ri].rva;

        let mut text = img.sections[ti].data.to_vec();
        let d = i32::from_le_bytes(text[disp_at..disp_at + 4].try_into().unwrap());
        let d = d + i32::try_from(delta).unwrap();
        text[disp_at..disp_at + 4].copy_from_slice(&d.to_le_bytes());
        let mut ro = img.sections[ri].data.to_vec();
        let at = (table - img.sections[ri].rva) as usize;
        for i in 0..n {
            let p = at + 4 * i;
            let e = i32::from_le_bytes(ro[p..p + 4].try_into().unwrap());
            let e = e - i32::try_from(delta).unwrap();
            ro[p..p + 4].copy_from_slice(&e.to_le_bytes());
        }
        assert_ne!(ro, img.sections[ri].data, "the table's bytes must change");
        let mut swapped = ro.clone();
        swapped.copy_within(at..at + 4, at + 4);
        swapped[at..at + 4].copy_from_slice(&ro[at + 4..at + 8]);
        assert_ne!(swapped, ro);

        let base = index(&img);
        let want = hashes_of(&base, func);
        let same_img = moved(&img, ti, ri, new_rva, &ro, &text);
        let same = index(&same_img);
        assert_eq!(hashes_of(&same, func), want, "{func}: moved table");
        let other_img = moved(&img, ti, ri, new_rva, &swapped, &text);
        let other = index(&other_img);
        assert_ne!(hashes_of(&other, func), want, "{func}: swapped cases");
    }

    /// A copy of `img` with section `ri` moved to `new_rva` with contents
    /// `ro`, and section `ti` given contents `text`; data objects and
    /// relocations in or into the moved section follow it.
    fn moved<'x>(
        img: &Image<'x>,
        ti: usize,
        ri: usize,
        new_rva: u64,
        ro: &'x [u8],
        text: &'x [u8],
    ) -> Image<'x> {
        let old = img.sections[ri].rva..img.sections[ri].rva + img.sections[ri].size;
        let delta = new_rva - old.start;
        let mut m = img.clone();
        m.sections[ti].data = text;
        m.sections[ri].data = ro;
        m.sections[ri].rva = new_rva;
        for d in &mut m.data {
            if old.contains(&d.rva) {
                d.rva += delta;
            }
        }
        for r in &mut m.relocations {
            if old.contains(&r.rva) {
                r.rva += delta;
            }
            if let RelocTarget::Rva(t) = &mut r.target {
                if old.contains(t) {
                    *t += delta;
                }
            }
        }
        m.relocations.sort_by_key(|r| r.rva);
        m
    }

    /// gcc -O2 -fPIC (ELF): `lea rcx,[rip+T]; movsxd rdx,[rcx+rdi*4];
    /// add rdx,rcx; jmp rdx`, T in `.rodata`, entries `case - T`.
    #[test]
    fn jump_table_gcc_pic_rodata() {
        let path = corpus_file("05-jump-table", "x86_64-linux", "v1");
        check_moved_jump_table(&path, "vm_exec", 14);
    }

    /// clang-19 for COFF x64: the same shape, `lea rax,[rip+T];
    /// movsxd rcx,[rax+4*rcx]; add rcx,rax; jmp rcx`, T in `.rdata` (followed
    /// there by the debug directory), entries `case - T`, no relocations.
    #[test]
    fn jump_table_clang_coff_rdata() {
        let path = corpus_file("05-jump-table", "x86_64-windows", "v1");
        check_moved_jump_table(&path, "vm_exec", 14);
    }

    /// A function `sw` with a 3-case switch whose table of table-relative
    /// entries lies inside its own code, between case bodies (the layout
    /// some toolchains use). `cases` gives the case offsets of the entries.
    fn inline_table_code(cases: [i32; 3]) -> Vec<u8> {
        let mut c = vec![
            0x83, 0xff, 0x02, // 00: cmp edi, 2
            0x77, 0x2b, // 03: ja 0x30
            0x48, 0x8d, 0x15, 0x0c, 0x00, 0x00, 0x00, // 05: lea rdx, [rip+0x0c] (0x18)
            0x48, 0x63, 0x04, 0xba, // 0c: movsxd rax, [rdx+rdi*4]
            0x48, 0x01, 0xd0, // 10: add rax, rdx
            0xff, 0xe0, // 13: jmp rax
            0xc3, // 15: ret (case 0)
            0xcc, 0xcc, // 16: int3 (alignment)
        ];
        for case in cases {
            c.extend_from_slice(&(case - 0x18).to_le_bytes()); // 18: the table
        }
        c.extend_from_slice(&[
            0xb8, 0x02, 0x00, 0x00, 0x00, 0xc3, // 24: mov eax, 2; ret (case 1)
            0xb8, 0x03, 0x00, 0x00, 0x00, 0xc3, // 2a: mov eax, 3; ret (case 2)
            0x31, 0xc0, 0xc3, // 30: xor eax, eax; ret (default)
        ]);
        c
    }

    /// Normalise `sw` built by [`inline_table_code`] at `at`.
    fn normalize_inline(at: u64, cases: [i32; 3]) -> (Vec<NormInsn>, Vec<u64>, Vec<u8>) {
        let code = inline_table_code(cases);
        let text = [vec![0xcc; (at - 0x1000) as usize], code.clone()].concat();
        let img = synthetic(
            Format::Elf,
            vec![section(".text", 0x1000, &text, false, true)],
            &[("sw", at, code.len() as u64)],
        );
        let idx = index(&img);
        let g = idx
            .group(&Key {
                name: "sw",
                unit: None,
            })
            .unwrap();
        let mut n = Normalized::default();
        normalize_part(&idx, g, 0, &mut n);
        let digests = n.insn_digests();
        (n.insns, digests, code)
    }

    use super::super::NormInsn;

    /// A table inside the function's code: its entries become one 4-byte
    /// datum each (never garbage instructions), decoding resumes right
    /// after it, and the function compares equal wherever it is placed.
    #[test]
    fn jump_table_inline_in_code() {
        let cases = [0x15, 0x24, 0x2a];
        let (a, da, code) = normalize_inline(0x1000, cases);
        let offsets: Vec<u32> = a.iter().map(|i| i.offset).collect();
        assert_eq!(
            offsets,
            [
                0x00, 0x03, 0x05, 0x0c, 0x10, 0x13, 0x15, 0x16, 0x17, 0x18, 0x1c, 0x20, 0x24, 0x29,
                0x2a, 0x2f, 0x30, 0x32
            ]
        );
        assert!(a[9..12].iter().all(|i| i.len == 4));
        assert_eq!(
            a.iter().map(|i| usize::from(i.len)).sum::<usize>(),
            code.len()
        );
        let (b, db, _) = normalize_inline(0x1230, cases);
        assert_eq!((&a, &da), (&b, &db));
        let (_, dc, _) = normalize_inline(0x1000, [0x15, 0x2a, 0x24]);
        assert_ne!(da, dc);
    }

    // ---- other references ---------------------------------------------------

    /// gcc's `.cold` split of `hb_echo` (scenario 01) belongs to its group:
    /// the jumps between the parts are local, not calls of another function.
    #[test]
    fn cold_part_jumps_are_local() {
        let path = corpus_file("01-bounds-check", "x86_64-linux", "v1");
        let bytes = load_file(&path).unwrap();
        let img = parse_image(&bytes, &path);
        let idx = index(&img);
        let g = idx
            .group(&Key {
                name: "hb_echo",
                unit: None,
            })
            .unwrap();
        let sigs: Vec<&str> = idx.parts(g).iter().map(|p| &*p.signature).collect();
        assert_eq!(sigs, ["", "cold"]);
        let cold = &idx.parts(g)[1];
        let main = &idx.parts(g)[0];
        // The body really branches into the cold part.
        let code = img.bytes_at(main.rva, main.size).unwrap();
        let branches_to_cold = Decoder::with_ip(64, code, main.rva, DecoderOptions::NONE)
            .into_iter()
            .any(|i| {
                i.is_jcc_short_or_near() || i.is_jmp_short_or_near()
            } && (cold.rva..cold.rva + cold.size).contains(&i.near_branch_target()));
        assert!(branches_to_cold);
        for n in group_norm(&idx, g) {
            assert!(
                n.fn_refs.iter().all(|(k, _)| k.name != "hb_echo"),
                "{:?}",
                n.fn_refs
            );
        }
    }

    /// `call foo@plt` and `mov rax, [rip+foo@GOTPCREL]`: taken by the symbol
    /// of the slot's relocation, wherever the PLT and GOT are.
    #[test]
    fn plt_and_got_by_symbol() {
        // Code at 0x1000: call plt; mov rax, [rip+got+8]; ret
        // PLT stub at `plt`: jmp [rip+got]. GOT slots: the PLT's symbol,
        // `data_sym`, and an unrelated `neighbour` slot.
        let build = |plt: u64, got: u64, sym: &str, neighbour: &str| {
            let mut code = vec![0xe8];
            code.extend_from_slice(&((plt as i64 - 0x1005) as i32).to_le_bytes());
            code.extend_from_slice(&[0x48, 0x8b, 0x05]);
            code.extend_from_slice(&((got as i64 + 8 - 0x100c) as i32).to_le_bytes());
            code.push(0xc3);
            let mut stub = vec![0xff, 0x25];
            stub.extend_from_slice(&((got as i64 - (plt as i64 + 6)) as i32).to_le_bytes());
            stub.extend_from_slice(&[0x90; 10]);
            (
                code,
                stub,
                [sym.to_string(), neighbour.to_string()],
                plt,
                got,
            )
        };
        type Parts = (Vec<u8>, Vec<u8>, [String; 2], u64, u64);
        let norm = |(code, stub, [sym, neighbour], plt, got): &Parts| {
            let slots = [0u8; 24];
            let mut img = synthetic(
                Format::Elf,
                vec![
                    section(".text", 0x1000, code, false, true),
                    section(".plt", *plt, stub, false, true),
                    section(".got", *got, &slots, true, false),
                ],
                &[("f", 0x1000, code.len() as u64)],
            );
            for (i, name) in [sym, "data_sym", neighbour].iter().enumerate() {
                img.relocations.push(hotpatch_formats::Relocation {
                    rva: got + 8 * i as u64,
                    width: 8,
                    target: RelocTarget::Symbol {
                        name: name.to_string(),
                        addend: 0,
                    },
                });
            }
            let idx = index(&img);
            hashes_of(&idx, "f")
        };
        let a = norm(&build(0x2000, 0x3000, "memcpy", "x"));
        let b = norm(&build(0x2800, 0x5000, "memcpy", "y"));
        let c = norm(&build(0x2000, 0x3000, "memmove", "x"));
        assert_eq!(a, b);
        assert_ne!(a[0][0], c[0][0], "call through another symbol's PLT slot");
        assert_eq!(a[0][1..], c[0][1..]);
    }

    /// Hashes of `f` at 0x1000 in `.text` holding `text`, with extra
    /// functions and relocations.
    fn synthetic_hashes(
        format: Format,
        text: &[u8],
        functions: &[(&str, u64, u64)],
        relocations: Vec<hotpatch_formats::Relocation>,
    ) -> Vec<Vec<u64>> {
        let mut img = synthetic(
            format,
            vec![section(".text", 0x1000, text, false, true)],
            functions,
        );
        img.relocations = relocations;
        let idx = index(&img);
        hashes_of(&idx, "f")
    }

    /// PE `mov rax, imm64` of a function's address, patched by a base
    /// relocation: taken by the function it points at.
    #[test]
    fn imm64_with_base_relocation() {
        let norm = |target_rva: u64, pointee: &str| {
            let mut text = vec![0x48, 0xb8];
            text.extend_from_slice(&(0x1_8000_0000u64 + target_rva).to_le_bytes());
            text.push(0xc3);
            let len = text.len() as u64;
            text.resize((target_rva - 0x1000) as usize, 0xcc);
            text.extend_from_slice(&[0xc3; 8]);
            synthetic_hashes(
                Format::Pe,
                &text,
                &[
                    ("f", 0x1000, len),
                    (pointee, target_rva, 1),
                    ("other", target_rva + 1, 1),
                ],
                vec![hotpatch_formats::Relocation {
                    rva: 0x1002,
                    width: 8,
                    target: RelocTarget::Rva(target_rva),
                }],
            )
        };
        assert_eq!(norm(0x1100, "g"), norm(0x1800, "g"));
        assert_ne!(norm(0x1100, "g"), norm(0x1100, "h"));
    }

    // ---- padding and branch relaxation --------------------------------------

    /// A 4-byte `nop dword [rax]` (alignment padding).
    const NOP4: &[u8] = &[0x0f, 0x1f, 0x40, 0x00];

    /// Where the `jle` of [`loop_fn`] goes.
    #[derive(Clone, Copy)]
    enum Exit {
        /// To the `ret` after the loop.
        End,
        /// To the `dec edi` inside the loop.
        Dec,
    }

    /// `int f(int n)`: `xor eax,eax; test edi,edi; jle EXIT; PAD; L: OP
    /// eax,edi; dec edi; jne L; ret`, with `pad` before the loop head, the
    /// branches in their rel8 or rel32 form (`near`), every displacement
    /// computed for that layout, and `op` the opcode of the loop's
    /// arithmetic (`0x01` add, `0x29` sub).
    fn loop_fn(pad: &[u8], near: bool, op: u8, exit: Exit) -> Vec<u8> {
        let branch_len = if near { 6 } else { 2 };
        let head = 4 + branch_len + pad.len();
        let jne_at = head + 4;
        let end = jne_at + branch_len;
        let target = match exit {
            Exit::End => end,
            Exit::Dec => head + 2,
        };
        let branch = |code: &mut Vec<u8>, cc: u8, at: usize, target: usize| {
            let rel = target as i64 - (at + branch_len) as i64;
            if near {
                code.extend_from_slice(&[0x0f, 0x80 | cc]);
                code.extend_from_slice(&(rel as i32).to_le_bytes());
            } else {
                code.extend_from_slice(&[0x70 | cc, rel as i8 as u8]);
            }
        };
        let mut c = vec![0x31, 0xc0, 0x85, 0xff];
        branch(&mut c, 0xe, 4, target); // jle
        c.extend_from_slice(pad);
        c.extend_from_slice(&[op, 0xf8, 0xff, 0xcf]);
        branch(&mut c, 0x5, jne_at, head); // jne
        c.push(0xc3);
        assert_eq!(c.len(), end + 1);
        c
    }

    /// The hashes of `f` = `code`, placed at `at` in `.text`.
    fn hashes_at(code: &[u8], at: u64) -> Vec<Vec<u64>> {
        let mut text = vec![0xcc; (at - 0x1000) as usize];
        text.extend_from_slice(code);
        synthetic_hashes(
            Format::Elf,
            &text,
            &[("f", at, code.len() as u64)],
            Vec::new(),
        )
    }

    /// GCC pads loop heads with multi-byte `NOP`s relative to the section, so
    /// an unchanged function gains or loses padding when it moves. The same
    /// function with and without a `NOP` before its loop head (every branch
    /// re-targeted, placed elsewhere) compares equal; a real change of the
    /// instruction next to the padding still differs.
    #[test]
    fn alignment_nops_inside_unchanged_function_compare_equal() {
        let plain = hashes_at(&loop_fn(&[], false, 0x01, Exit::End), 0x1000);
        let padded = hashes_at(&loop_fn(NOP4, false, 0x01, Exit::End), 0x1234);
        assert_eq!(plain, padded);
        // Any NOP form, any amount: 66 90 (xchg ax,ax), 90, 10-byte nopw.
        let mixed = [
            &[0x66, 0x90][..],
            &[0x90],
            &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        ]
        .concat();
        let more = hashes_at(&loop_fn(&mixed, false, 0x01, Exit::End), 0x1100);
        assert_eq!(plain, more);
        // A change right after the padding is still a change.
        let changed = hashes_at(&loop_fn(NOP4, false, 0x29, Exit::End), 0x1234);
        assert_ne!(plain, changed);
        // Neither `pause` nor `int3` is padding.
        for not_nop in [&[0xf3, 0x90][..], &[0xcc]] {
            let other = hashes_at(&loop_fn(not_nop, false, 0x01, Exit::End), 0x1000);
            assert_ne!(plain, other, "{not_nop:02x?}");
        }
    }

    /// The assembler relaxes a branch from rel8 to rel32 when the code
    /// between grows past 127 bytes, which moves everything after it. The
    /// same function with every branch in the other form compares equal.
    #[test]
    fn relaxed_branch_rel8_to_rel32_compares_equal() {
        let short = hashes_at(&loop_fn(&[], false, 0x01, Exit::End), 0x1000);
        let near = hashes_at(&loop_fn(&[], true, 0x01, Exit::End), 0x1000);
        assert_eq!(short, near);
        let near_padded = hashes_at(&loop_fn(NOP4, true, 0x01, Exit::End), 0x1450);
        assert_eq!(short, near_padded);
        let near_changed = hashes_at(&loop_fn(&[], true, 0x29, Exit::End), 0x1000);
        assert_ne!(short, near_changed);
    }

    /// Padding that appears together with a branch to another instruction:
    /// the position-based comparison still sees the new target.
    #[test]
    fn nop_only_change_does_not_hide_branch_target_change() {
        let plain = hashes_at(&loop_fn(&[], false, 0x01, Exit::End), 0x1000);
        // Without padding, `jle` to `dec edi` is 4 bytes short of `ret`; with
        // 4 bytes of padding before the loop it lands at the old `ret`'s
        // byte offset, which must not make it look unchanged.
        let retargeted = hashes_at(&loop_fn(NOP4, false, 0x01, Exit::Dec), 0x1000);
        assert_ne!(plain, retargeted);
        let unpadded = hashes_at(&loop_fn(&[], false, 0x01, Exit::Dec), 0x1000);
        assert_eq!(unpadded, retargeted);
        // A branch into the middle of an instruction (the `jne`'s rel8) is
        // not the instruction after it.
        let mut mid = loop_fn(&[], false, 0x01, Exit::End);
        mid[5] -= 1;
        assert_ne!(plain, hashes_at(&mid, 0x1000));
    }

    /// A switch with a `.rodata` table of table-relative entries
    /// (`lea; movsxd; add; jmp`), `pad` before the second case and the
    /// entries and displacements computed for that layout. `swap` exchanges
    /// the second and third case's entries.
    fn switch_image(pad: &[u8], swap: bool, at: u64) -> Vec<Vec<u64>> {
        const TABLE: u64 = 0x4000;
        let case1 = 0x16 + pad.len();
        let case2 = case1 + 6;
        let default = case2 + 6;
        let mut c = vec![0x83, 0xff, 0x02, 0x77, (default - 5) as u8];
        let lea_end = at + 0x0c;
        c.extend_from_slice(&[0x48, 0x8d, 0x15]);
        c.extend_from_slice(&((TABLE as i64 - lea_end as i64) as i32).to_le_bytes());
        c.extend_from_slice(&[0x48, 0x63, 0x04, 0xba, 0x48, 0x01, 0xd0, 0xff, 0xe0]);
        c.push(0xc3); // case 0 (0x15)
        c.extend_from_slice(pad);
        c.extend_from_slice(&[0xb8, 0x02, 0x00, 0x00, 0x00, 0xc3]);
        c.extend_from_slice(&[0xb8, 0x03, 0x00, 0x00, 0x00, 0xc3]);
        c.extend_from_slice(&[0x31, 0xc0, 0xc3]);
        let cases = if swap {
            [0x15, case2, case1]
        } else {
            [0x15, case1, case2]
        };
        let ro: Vec<u8> = cases
            .iter()
            .flat_map(|&k| ((at + k as u64) as i64 - TABLE as i64).to_le_bytes()[..4].to_vec())
            .collect();
        let mut text = vec![0xcc; (at - 0x1000) as usize];
        text.extend_from_slice(&c);
        let img = synthetic(
            Format::Elf,
            vec![
                section(".text", 0x1000, &text, false, true),
                section(".rodata", TABLE, &ro, false, false),
            ],
            &[("f", at, c.len() as u64)],
        );
        let idx = index(&img);
        hashes_of(&idx, "f")
    }

    /// Jump-table entries are places inside the function too: padding before
    /// a case moves the case and rewrites the table, and still compares
    /// equal; exchanging two cases does not.
    /// An instruction's bytes as words are the same whether or not 16 bytes
    /// of code follow it.
    #[test]
    fn insn_words_read_the_same_at_the_end_of_code() {
        let code: Vec<u8> = (1..=40).collect();
        for pos in 0..24 {
            for len in 1..=15 {
                let tail = &code[..pos + len];
                assert_eq!(insn_words(&code, pos, len), insn_words(tail, pos, len));
                let mut w = [0u8; 16];
                w[..len].copy_from_slice(&code[pos..pos + len]);
                let v = u128::from_le_bytes(w);
                assert_eq!(insn_words(&code, pos, len), [v as u64, (v >> 64) as u64]);
            }
        }
    }

    #[test]
    fn jump_table_entries_compare_by_position_across_padding() {
        let plain = switch_image(&[], false, 0x1000);
        assert_eq!(plain, switch_image(NOP4, false, 0x1040));
        assert_ne!(plain, switch_image(NOP4, true, 0x1040));
        assert_ne!(plain, switch_image(&[], true, 0x1000));
    }

    /// `f` jumps into its `.cold` part; padding inside the cold part moves
    /// the target. Normalised as a group (as the diff engine does) the parts
    /// compare by position; a jump to another cold instruction differs.
    /// Alone, a part keeps the other part's byte offset.
    #[test]
    fn cold_part_references_compare_by_position() {
        // `cold_pad` before the cold part's first instruction; `second`: jump
        // to its second instruction (`inc eax`) rather than its first.
        let build = |cold_pad: &[u8], second: bool| {
            let cold_at = 0x1100u64;
            let mut cold = cold_pad.to_vec();
            cold.extend_from_slice(&[0xb8, 0x01, 0x00, 0x00, 0x00, 0xff, 0xc0, 0xc3]);
            let target = cold_at + cold_pad.len() as u64 + if second { 5 } else { 0 };
            let mut f = vec![0x85, 0xff, 0x0f, 0x84];
            f.extend_from_slice(&((target as i64 - 0x1008) as i32).to_le_bytes());
            f.push(0xc3);
            let mut text = f.clone();
            text.resize(0x100, 0xcc);
            text.extend_from_slice(&cold);
            let img = synthetic(
                Format::Elf,
                vec![section(".text", 0x1000, &text, false, true)],
                &[
                    ("f", 0x1000, f.len() as u64),
                    ("f.cold", cold_at, cold.len() as u64),
                ],
            );
            let idx = index(&img);
            let group = hashes_of(&idx, "f");
            let g = idx
                .group(&Key {
                    name: "f",
                    unit: None,
                })
                .unwrap();
            let mut alone = Normalized::default();
            normalize_part(&idx, g, 0, &mut alone);
            let alone: Vec<u64> = alone.insn_digests();
            (group, alone)
        };
        let (plain, plain_alone) = build(&[], true);
        let (padded, padded_alone) = build(&[0x66, 0x90], true);
        assert_eq!(plain, padded);
        assert_ne!(plain, build(&[0x66, 0x90], false).0);
        assert_ne!(plain_alone, padded_alone, "alone: by byte offset");
    }

    /// Undecodable bytes never stop the normaliser: every byte of any input
    /// is covered exactly once, in order, by an instruction or a dropped
    /// `NOP`.
    #[test]
    fn any_bytes_are_covered() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut data = vec![0u8; 64 * 1024];
        for b in &mut data {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        // Truncated prefixes at the end as well.
        data.extend_from_slice(&[0x0f, 0x38]);
        let img = synthetic(
            Format::Elf,
            vec![section(".text", 0x1000, &data, false, true)],
            &[("f", 0x1000, data.len() as u64)],
        );
        let idx = index(&img);
        let g = idx
            .group(&Key {
                name: "f",
                unit: None,
            })
            .unwrap();
        let mut n = Normalized::default();
        normalize_part(&idx, g, 0, &mut n);
        let mut spans: Vec<(u32, u8)> = n.insns.iter().map(|i| (i.offset, i.len)).collect();
        spans.extend(n.nops.iter().map(|s| (s.offset, s.len)));
        spans.sort_unstable();
        let mut at = 0usize;
        for (offset, len) in spans {
            assert_eq!(offset as usize, at);
            at += usize::from(len);
        }
        assert_eq!(at, data.len());
        assert!(n.insns.iter().any(|i| i.len == 1));
        assert!(!n.nops.is_empty());
    }
}
