//! AArch64 normaliser (yaxpeax-arm).
//!
//! Every 4-byte word of a function part becomes one normalised instruction
//! (see [`super::NormInsn`]), except `NOP`s. For almost every instruction the raw 32-bit
//! word already is the address-independent form, so that is what is hashed.
//! The exceptions are the PC-relative forms and the users of an `ADRP`:
//!
//! * `B`, `BL`, `B.cond`, `CBZ`/`CBNZ`, `TBZ`/`TBNZ`, `ADR`: the target is
//!   resolved to a [`SymRef`] and hashed instead of the offset field. A call
//!   into a PLT entry or a range-extension veneer is followed to what the
//!   stub jumps to.
//! * `ADRP`: hashed as opcode and destination register only (the page alone
//!   says nothing: a symbol a few bytes further may cross a 4 KiB boundary).
//!   The page is remembered per register, and each instruction that adds the
//!   low 12 bits to it (`ADD` immediate; loads and stores with an immediate
//!   offset, including pairs and SIMD/FP registers) hashes the resolved full
//!   target instead of its immediate. A register is forgotten when anything
//!   else writes it.
//! * `LDR`/`LDRSW`/`PRFM` (literal): the target is resolved; when the literal
//!   lies inside the part (a literal pool), its value is hashed instead (or
//!   the target of the relocation that covers it), and the pool's words are
//!   hashed as data, not decoded as instructions.
//! * Words inside the part that a load-time relocation patches (absolute
//!   pointers in a PE literal pool) are data: the relocation's target is
//!   hashed instead of their bytes.
//! * A load (literal, or an `ADRP` user) from anonymous read-only data that
//!   no relocation patches hashes the loaded bytes themselves: the constant's
//!   value is what the code depends on, and it does not depend on where the
//!   anonymous block around it happens to end (in a PE image the last
//!   constants of `.rdata` run into the debug directory, which changes with
//!   every build). A load from a slot that a relocation fills (a GOT entry)
//!   hashes the relocation's target.
//! * Jump tables: `ADRP`+`ADD` table, a register-offset load of an entry
//!   (`LDRB`/`LDRH`/`LDR`/`LDRSW`...), and an `ADD` of the entry (extended or
//!   shifted) to a base (an `ADR` anchor in the code, or the table itself).
//!   The entry count comes from the bound check on the index (`CMP #n` with
//!   its conditional branch, or an `AND`/`UBFX` mask). The dispatching `ADD`
//!   hashes every entry's target as a [`SymRef`] (normally a
//!   [`SymRef::Local`] offset), and the `ADD` that formed the table address
//!   hashes only the fact that it is a jump table, so the table's own address
//!   and the distance to it never matter. Both ends of the table are anchors
//!   (see [`Normalized::anchors`]) so that its anonymous block is exactly
//!   the table. A table placed
//!   inside the code after its dispatch is treated as data.
//!
//! `NOP` (`0xd503201f`) words are left out of the stream (see [`super`]):
//! GCC aligns loop heads (8) more strictly than functions (4), so without
//! `-ffunction-sections` the padding inside an unchanged function changes
//! whenever an earlier function of its unit changes size. Only that exact
//! word counts: other `HINT`s (`BTI`, `PACIASP`, `YIELD`, `CSDB`...) have
//! effects, and a `NOP` word that is data (a literal pool, a jump table in
//! the code) stays data. Every reference into the function group's own code
//! (branch targets, `ADR`, jump-table entries, relocated pointers in a
//! literal pool) is compared by position in the `NOP`-free stream, not by
//! byte offset.
//!
//! Register tracking is a single linear pass over the part, with one piece
//! of control flow: a forward branch records the pages its target inherits,
//! and code after an instruction that never falls through (`B`, `BR`, `RET`)
//! starts from those instead of the state the textually previous path left
//! (a forward branch taken while no register holds a page records that too).
//! A recognised jump table's dispatch records the same for each of its
//! cases, so that the cases of two switches each start from their own
//! dispatch; code reached by neither starts from the pages held at the last
//! `BR`. Values
//! survive calls, as callee-saved page registers do. On the corpus and on
//! generated images this finds exactly the instructions that carry an
//! `:lo12:` relocation in the object files (GCC and clang alike).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use super::Canon;

use yaxpeax_arch::{Decoder, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Instruction, Opcode, Operand};

use super::{hash_ref, FieldKind, Normalized, Scope};
use hotpatch_formats::package::RelocKind;
use hotpatch_formats::Image;

use crate::index::{ImageIndex, SymRef};

/// Hash tag of a direct branch (`B`, `BL`, `B.cond`, `CBZ`, `TBZ`...).
const TAG_BRANCH: u8 = 1;
/// Hash tag of an `ADR`.
const TAG_ADR: u8 = 2;
/// Hash tag of an `ADRP` (page dropped).
const TAG_ADRP: u8 = 3;
/// Hash tag of an instruction that consumes an `ADRP` page.
const TAG_CONSUMER: u8 = 4;
/// Hash tag of a literal load whose target lies outside the part.
const TAG_LITERAL: u8 = 5;
/// Hash tag of a literal load from the part's own literal pool.
const TAG_POOL_LOAD: u8 = 6;
/// Hash tag of a literal-pool or relocated word inside code.
const TAG_DATA: u8 = 7;
/// Hash tag of a jump table dispatch (`ADD` of base and entry).
const TAG_JUMP_TABLE: u8 = 8;
/// Hash tag of the `ADD` that formed a jump table's address.
const TAG_JUMP_TABLE_BASE: u8 = 9;
/// Hash tag of a jump table that an earlier dispatch of the part already
/// wrote out, followed by its number.
const TAG_TABLE_AGAIN: u8 = 10;
/// Marker hashed before a target reached through a relocation (a GOT slot,
/// a relocated literal).
const VIA_RELOC: u8 = 0xa0;
/// Marker hashed before the value of an anonymous read-only constant.
const VIA_VALUE: u8 = 0xa2;

/// The `NOP` instruction (`HINT #0`), the only word left out as padding.
const NOP: u32 = 0xd503_201f;

/// Largest jump table believed (entries).
const MAX_TABLE_ENTRIES: u32 = 4096;

/// What the scanner knows about a general-purpose register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    /// Nothing useful.
    Unknown,
    /// The page address loaded by an `ADRP`.
    Page(u64),
    /// A full address: from an `ADR`, or from `ADD` on an `ADRP` page (then
    /// `at` is the word index of that `ADD`).
    Addr {
        /// The address.
        addr: u64,
        /// Word index of the `ADD` that formed it from a page, if any.
        at: Option<u32>,
    },
    /// An entry loaded from a presumed jump table.
    Entry(Entry),
}

/// A jump-table entry held in a register, as loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Table address.
    table: u64,
    /// Number of entries.
    count: u32,
    /// Entry size in bytes (1, 2, 4 or 8).
    size: u8,
    /// Whether the load sign-extends.
    signed: bool,
    /// Whether the destination is a W register (sign extension stops at 32 bits).
    dest_w: bool,
    /// Word index of the `ADD` that formed the table address, if any.
    at: Option<u32>,
}

/// A recognised jump table dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JumpTable {
    /// The entry as loaded.
    entry: Entry,
    /// The address the scaled entry is added to.
    base: u64,
    /// Extension applied to the entry register by the `ADD` (the
    /// extended-register `option` field; 3 = `LSL`/`UXTX`).
    extend: u8,
    /// Left shift applied after the extension.
    shift: u8,
}

impl JumpTable {
    /// Byte length of the table.
    fn len(&self) -> u64 {
        u64::from(self.entry.count).saturating_mul(u64::from(self.entry.size))
    }

    /// The branch target of an entry's raw little-endian bytes.
    fn target(&self, raw: &[u8]) -> u64 {
        let mut v: u64 = 0;
        for (i, b) in raw.iter().take(8).enumerate() {
            v |= u64::from(*b) << ((i as u32) << 3);
        }
        let bits = u32::from(self.entry.size) * 8;
        // As loaded into the register.
        let loaded = if self.entry.signed && bits < 64 {
            let s = sign_extend(v, bits);
            if self.entry.dest_w {
                s & 0xffff_ffff
            } else {
                s
            }
        } else {
            v
        };
        // As extended by the ADD.
        let extended = match self.extend {
            0 => loaded & 0xff,
            1 => loaded & 0xffff,
            2 => loaded & 0xffff_ffff,
            4 => sign_extend(loaded & 0xff, 8),
            5 => sign_extend(loaded & 0xffff, 16),
            6 => sign_extend(loaded & 0xffff_ffff, 32),
            _ => loaded,
        };
        self.base
            .wrapping_add(extended.wrapping_shl(u32::from(self.shift)))
    }
}

/// What one word turned out to be, for the pass at hand to consume.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// Not a valid instruction: compare the raw bytes.
    Raw,
    /// An instruction whose raw word is its address-independent form.
    Plain(u32),
    /// A data word inside the code (literal pool, relocated pointer).
    Data,
    /// An instruction referring to `target`; `masked` is the word with the
    /// address field cleared. `load` is the access size when the
    /// instruction loads from `target`.
    Target {
        /// Hash tag.
        tag: u8,
        /// The word with the address field cleared.
        masked: u32,
        /// The referenced address.
        target: u64,
        /// Bytes loaded from `target` (0 when nothing is loaded).
        load: u8,
    },
    /// An `ADRP`: opcode and destination only.
    Adrp(u32),
    /// A literal load from the part's own pool at `offset` (part-relative).
    PoolLoad {
        /// The word with the literal offset cleared.
        masked: u32,
        /// Offset of the literal in the part.
        offset: usize,
        /// Size of the literal.
        size: u8,
    },
    /// The `ADD` that dispatches through a jump table.
    JumpTable {
        /// The raw word.
        word: u32,
        /// The table.
        table: JumpTable,
    },
}

/// The little-endian word at the start of `b` (0 when `b` is shorter).
fn le32(b: &[u8]) -> u32 {
    b.first_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w))
}

/// Sign-extend the low `bits` bits of `v`.
fn sign_extend(v: u64, bits: u32) -> u64 {
    if bits == 0 || bits >= 64 {
        return v;
    }
    let shift = 64u32.saturating_sub(bits);
    (((v << shift) as i64) >> shift) as u64
}

/// Bit mask of register `r` (none for register 31, which is SP or ZR).
fn reg_bit(r: u32) -> u32 {
    if r < 31 {
        1 << r
    } else {
        0
    }
}

/// Size in bytes of the value a literal load (`LDR`/`LDRSW`/`PRFM` literal)
/// reads, 0 for `PRFM` and unallocated forms.
fn literal_size(w: u32) -> u8 {
    let opc = w >> 30;
    let simd = w & (1 << 26) != 0;
    match (opc, simd) {
        (0, false) | (2, false) | (0, true) => 4,
        (1, false) | (1, true) => 8,
        (2, true) => 16,
        _ => 0,
    }
}

/// PC-relative target of a literal load or `B.cond`/`CBZ` (imm19 at bit 5).
fn imm19_target(pc: u64, w: u32) -> u64 {
    let imm = sign_extend(u64::from((w >> 5) & 0x7_ffff), 19) << 2;
    pc.wrapping_add(imm)
}

/// General-purpose registers (bit mask) that `insn` (raw `w`) writes.
/// Errs on the side of reporting a write: forgetting a register costs at
/// most a spurious difference, keeping a stale one could hide the meaning
/// of an instruction.
fn gpr_writes(w: u32, insn: &Instruction) -> u32 {
    let rt = w & 31;
    let rn = (w >> 5) & 31;
    let rt2 = (w >> 10) & 31;
    let rs = (w >> 16) & 31;
    let simd = w & (1 << 26) != 0;
    if w & 0x0a00_0000 == 0x0800_0000 {
        // Loads and stores.
        return match (w >> 28) & 3 {
            3 => {
                let opc = (w >> 22) & 3;
                let size = w >> 30;
                let unsigned_imm = w & (1 << 24) != 0;
                let bit21 = w & (1 << 21) != 0;
                let op4 = (w >> 10) & 3;
                if !unsigned_imm && bit21 && op4 != 2 {
                    // Atomics, LDAPR, LDRAA/LDRAB: write Rt (and maybe Rn).
                    return reg_bit(rt) | reg_bit(rn);
                }
                let load = opc != 0 && !(size == 3 && opc == 2);
                let mut m = if load && !simd { reg_bit(rt) } else { 0 };
                if !unsigned_imm && !bit21 && op4 & 1 == 1 {
                    m |= reg_bit(rn); // pre/post-index writeback
                }
                m
            }
            2 => {
                // Pairs.
                let load = w & (1 << 22) != 0;
                let mut m = if load && !simd {
                    reg_bit(rt) | reg_bit(rt2)
                } else {
                    0
                };
                if (w >> 23) & 1 == 1 {
                    m |= reg_bit(rn); // pre/post-index writeback
                }
                m
            }
            1 => {
                if w & (1 << 24) == 0 {
                    // Literal loads.
                    if !simd && (w >> 30) != 3 {
                        reg_bit(rt)
                    } else {
                        0
                    }
                } else {
                    // LDAPR/STLUR unscaled, memory copy/set, ...
                    reg_bit(rt) | reg_bit(rn) | reg_bit(rs)
                }
            }
            _ => {
                if simd {
                    // Structure loads/stores: post-index writeback.
                    if w & (1 << 23) != 0 {
                        reg_bit(rn)
                    } else {
                        0
                    }
                } else {
                    // Exclusives, ordered, compare-and-swap.
                    reg_bit(rt) | reg_bit(rt2) | reg_bit(rs)
                }
            }
        };
    }
    if w & 0x1c00_0000 == 0x1400_0000 {
        // Branches, exception generation, system.
        return match insn.opcode {
            Opcode::BL
            | Opcode::BLR
            | Opcode::BLRAA
            | Opcode::BLRAAZ
            | Opcode::BLRAB
            | Opcode::BLRABZ => 1 << 30,
            _ if w & 0xfff0_0000 == 0xd530_0000 || w & 0xfff8_0000 == 0xd528_0000 => {
                reg_bit(rt) // MRS, SYSL
            }
            _ => 0,
        };
    }
    if matches!(insn.opcode, Opcode::CCMP | Opcode::CCMN) {
        return 0;
    }
    match insn.operands[0] {
        Operand::Register(_, r) | Operand::RegisterOrSP(_, r) => reg_bit(u32::from(r)),
        _ => 0,
    }
}

/// Which `ADRP` a low-12-bit user of a page sees, proven rather than
/// assumed, for a packager that must link each `ADRP` against the page its
/// users really share.
///
/// The normaliser pairs users with pages by register and page over a
/// linear pass, which is right for hashing but says nothing about which of
/// two `ADRP`s of one register and one page a user sees: clang emits
/// `adrp x10, P; add x10, x10, #8` on one path and `adrp x10, P; add x10,
/// x10, #4` on another, and both users have the register and page. Once
/// patched, the two objects may lie on different pages (one stays in the
/// baseline, the other is carried by the package), and only an exact
/// pairing says that each `ADRP` still serves one page.
///
/// [`PageFlow::sole_users`] proves the pairing for an `ADRP` whose value
/// dies in straight-line code: from the `ADRP` to the instruction that
/// overwrites its register, no instruction is a branch target, a branch,
/// or any other instruction that names the register, except the known
/// users. Each user found can then be reached only through this `ADRP`,
/// and the `ADRP`'s value reaches nothing else. Anything less certain is
/// `None`, and the caller keeps the conservative pairing by register and
/// page.
#[derive(Debug)]
pub(crate) struct PageFlow<'c> {
    code: &'c [u8],
    /// Byte offsets control can reach other than by falling through (every
    /// branch or `ADR` target in the part, and what the caller adds).
    entries: BTreeSet<u32>,
    /// Whether an indirect branch may land anywhere (more `BR`s than jump
    /// tables whose entries the caller gave).
    unknown_entries: bool,
}

impl<'c> PageFlow<'c> {
    /// The flow of part `code`, entered also at `extra` (byte offsets of
    /// jump-table cases, targets of other parts' branches), with `tables`
    /// jump tables whose cases `extra` holds.
    pub(crate) fn new(code: &'c [u8], extra: impl IntoIterator<Item = u32>, tables: usize) -> Self {
        let mut entries: BTreeSet<u32> = extra.into_iter().collect();
        let mut indirect = 0usize;
        let decoder = InstDecoder::default();
        for (k, word) in code.chunks_exact(4).enumerate() {
            let off = (k as u64) << 2;
            let w = le32(word);
            // Direct branches and `ADR` (an address in the code may be
            // jumped to). Words that are data count too: that can only add
            // entries, which costs precision, never soundness.
            let target = if w & 0x7c00_0000 == 0x1400_0000 {
                Some(off.wrapping_add(sign_extend(u64::from(w & 0x03ff_ffff), 26) << 2))
            } else if w & 0xff00_0010 == 0x5400_0000 || w & 0x7e00_0000 == 0x3400_0000 {
                Some(imm19_target(off, w))
            } else if w & 0x7e00_0000 == 0x3600_0000 {
                Some(off.wrapping_add(sign_extend(u64::from((w >> 5) & 0x3fff), 14) << 2))
            } else if w & 0x9f00_0000 == 0x1000_0000 {
                let imm = u64::from(((w >> 3) & 0x1f_fffc) | ((w >> 29) & 3));
                Some(off.wrapping_add(sign_extend(imm, 21)))
            } else {
                None
            };
            if let Some(t) = target.and_then(|t| u32::try_from(t).ok()) {
                entries.insert(t);
            }
            let mut reader = U8Reader::new(word);
            if let Ok(insn) = decoder.decode(&mut reader) {
                if matches!(
                    insn.opcode,
                    Opcode::BR | Opcode::BRAA | Opcode::BRAAZ | Opcode::BRAB | Opcode::BRABZ
                ) {
                    indirect = indirect.saturating_add(1);
                }
            }
        }
        PageFlow {
            code,
            entries,
            unknown_entries: indirect > tables,
        }
    }

    /// The users of the `ADRP` at byte `adrp`, when it provably serves
    /// exactly them (see [`PageFlow`]): byte offsets, among `users` (the
    /// offsets of the part's low-12-bit users based on the `ADRP`'s
    /// register), in order. `None` when its value may flow further.
    pub(crate) fn sole_users(&self, adrp: u32, users: &[u32]) -> Option<Vec<u32>> {
        if self.unknown_entries {
            return None;
        }
        let at = |off: u32| {
            self.code
                .get(usize::try_from(off).ok()?..)
                .filter(|b| b.len() >= 4)
                .map(le32)
        };
        let w = at(adrp)?;
        if w & 0x9f00_0000 != 0x9000_0000 {
            return None;
        }
        let rd = w & 31;
        if rd == 31 {
            return None;
        }
        let names = |w: u32| [0u32, 5, 10, 16].iter().any(|s| (w >> s) & 31 == rd);
        let decoder = InstDecoder::default();
        let mut found = Vec::new();
        let mut off = adrp;
        loop {
            off = off.checked_add(4)?;
            if self.entries.contains(&off) {
                return None;
            }
            let w = at(off)?;
            if w == NOP {
                continue;
            }
            // Branches, exception generation and system instructions.
            if w & 0x1c00_0000 == 0x1400_0000 {
                return None;
            }
            let mut reader = U8Reader::new(self.code.get(off as usize..)?);
            let insn = decoder.decode(&mut reader).ok()?;
            let writes = gpr_writes(w, &insn) & reg_bit(rd) != 0;
            if users.contains(&off) {
                // A store of the page itself lets it escape.
                let store = w & 0x0a00_0000 == 0x0800_0000 && !writes;
                let pair = (w >> 28) & 3 == 2;
                if store && (w & 31 == rd || (pair && (w >> 10) & 31 == rd)) {
                    return None;
                }
                found.push(off);
                if writes {
                    return Some(found);
                }
                continue;
            }
            // An instruction that only writes the register (another
            // `ADRP`, an `ADR`, a `MOVZ`/`MOVN`) ends its value.
            let pure_write = w & 0x1f00_0000 == 0x1000_0000
                || (w & 0x1f80_0000 == 0x1280_0000 && matches!((w >> 29) & 3, 0 | 2));
            if pure_write && w & 31 == rd {
                return Some(found);
            }
            if names(w) {
                return None;
            }
        }
    }
}

/// Whether an instruction other than a plain `CMP #imm` may set the flags.
fn sets_flags(insn: &Instruction) -> bool {
    matches!(
        insn.opcode,
        Opcode::ADDS
            | Opcode::SUBS
            | Opcode::ANDS
            | Opcode::BICS
            | Opcode::ADCS
            | Opcode::SBCS
            | Opcode::CCMP
            | Opcode::CCMN
            | Opcode::FCMP
            | Opcode::FCMPE
            | Opcode::FCCMP
            | Opcode::FCCMPE
            | Opcode::MSR
    )
}

/// The number of values a register can hold after an `AND` with a low
/// mask, a `UBFX` of a narrow field, or a zero extension, if it is small.
fn mask_bound(w: u32) -> Option<u32> {
    let sf = w >> 31;
    let n = (w >> 22) & 1;
    let immr = (w >> 16) & 0x3f;
    let imms = (w >> 10) & 0x3f;
    let opc = (w >> 29) & 3;
    let width = if w & 0x1f80_0000 == 0x1200_0000 && (opc == 0 || opc == 3) {
        // AND/ANDS (immediate): a run of imms+1 ones at bit 0.
        if n != sf || immr != 0 || (n == 0 && imms >= 32) {
            return None;
        }
        imms.saturating_add(1)
    } else if w & 0x7f80_0000 == 0x5300_0000 {
        // UBFM: UBFX (and UXTB/UXTH) when imms >= immr.
        if n != sf || imms < immr {
            return None;
        }
        imms.wrapping_sub(immr).wrapping_add(1)
    } else {
        return None;
    };
    (width <= 12).then(|| 1u32 << width)
}

/// At most this many (target, register, page) records of forward branches
/// are kept per part.
const MAX_SNAPSHOTS: usize = 1024;

/// Linear scanner state of one part.
struct Scanner<'c> {
    /// The image, for the entries of the jump tables the part dispatches
    /// through.
    image: &'c Image<'c>,
    /// The part's bytes.
    code: &'c [u8],
    /// RVA of the part.
    rva: u64,
    /// What each register holds.
    regs: [Reg; 32],
    /// Number of values the index in each register can take (0 = unknown).
    bounds: [u32; 32],
    /// The last `CMP reg, #imm` as (register, bound), while the flags are its.
    last_cmp: Option<(u32, u32)>,
    /// Bounds that hold at a later word of the part: (word index, register,
    /// bound), from a conditional branch after a `CMP`.
    pending: Vec<(u32, u32, u32)>,
    /// The smallest word index in `pending` (`u32::MAX` when empty).
    next_pending: u32,
    /// Pages held at forward branches, by target word index: (register,
    /// page).
    snapshots: BTreeMap<u32, Vec<(u8, u64)>>,
    /// How many (register, page) records `snapshots` holds.
    snapshot_count: usize,
    /// Jump tables whose cases are recorded, by address: their number.
    table_ids: HashMap<u64, usize>,
    /// The pages held at each recorded table's dispatches, per register
    /// (every dispatch of a shared table merged; see [`CasePage`]).
    table_pages: Vec<[CasePage; 32]>,
    /// For each word that is a recorded table's case: those tables.
    cases: BTreeMap<u32, Vec<usize>>,
    /// Pages held at the last indirect branch (`BR`), as (register, page):
    /// the state in which jump-table cases, placed after it, are entered.
    at_indirect: Option<Vec<(u8, u64)>>,
    /// The smallest word index in `snapshots` (`u32::MAX` when empty).
    next_snapshot: u32,
    /// Bit set of the word indexes that a forward branch taken while no
    /// register held a page leads to (empty until there is one).
    bare: Vec<u64>,
    /// What the backward branches of an earlier scan held (see
    /// [`normalize`]).
    known_backward: Backward,
    /// What this scan's backward branches hold (at most
    /// [`MAX_SNAPSHOTS`] records).
    seen_backward: Backward,
    /// Words entered after an instruction that never falls through, with
    /// nothing recorded for them: their state is a guess.
    entered_blind: Vec<u32>,
    /// Whether the previous instruction never falls through (`B`, `BR`,
    /// `RET`): the next one is reached only by branches.
    dead: bool,
    /// Word indexes that are data, not code.
    data: BTreeSet<u32>,
}

/// What a register holds on entry to a jump table's cases, over all the
/// table's dispatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CasePage {
    /// No dispatch held a page in it.
    Unset,
    /// Every dispatch that held a page in it held this one.
    Page(u64),
    /// Dispatches held different pages in it.
    Conflict,
}

/// Two accounts of what a register holds on entry to some code, merged: a
/// page that every account that has one agrees on, else a conflict.
fn merge_page(a: CasePage, b: CasePage) -> CasePage {
    match (a, b) {
        (CasePage::Unset, x) | (x, CasePage::Unset) => x,
        (CasePage::Page(p), CasePage::Page(q)) if p == q => a,
        _ => CasePage::Conflict,
    }
}

impl<'c> Scanner<'c> {
    /// A scanner over `code` at `rva`. `extra_data` lists further word
    /// indexes to treat as data (relocated words).
    fn new(image: &'c Image<'c>, code: &'c [u8], rva: u64, extra_data: Vec<u32>) -> Self {
        let mut data = extra_data;
        let end = rva.saturating_add(code.len() as u64);
        for (i, chunk) in code.chunks_exact(4).enumerate() {
            let w = le32(chunk);
            if w & 0x3b00_0000 != 0x1800_0000 {
                continue;
            }
            let size = literal_size(w);
            let target = imm19_target(rva.wrapping_add((i as u64) << 2), w);
            if size == 0 || target < rva || target >= end {
                continue;
            }
            let first = target.wrapping_sub(rva) / 4;
            let last = target
                .wrapping_sub(rva)
                .wrapping_add(u64::from(size))
                .wrapping_sub(1)
                / 4;
            for k in first..=last {
                data.push(k as u32);
            }
        }
        let data: BTreeSet<u32> = data.into_iter().collect();
        Scanner {
            image,
            code,
            rva,
            regs: [Reg::Unknown; 32],
            bounds: [0; 32],
            last_cmp: None,
            pending: Vec::new(),
            next_pending: u32::MAX,
            snapshots: BTreeMap::new(),
            snapshot_count: 0,
            table_ids: HashMap::new(),
            table_pages: Vec::new(),
            cases: BTreeMap::new(),
            next_snapshot: u32::MAX,
            bare: Vec::new(),
            known_backward: Backward::default(),
            seen_backward: Backward::default(),
            entered_blind: Vec::new(),
            at_indirect: None,
            dead: false,
            data,
        }
    }

    /// Whether word `i` is data.
    fn is_data(&mut self, i: u32) -> bool {
        self.data.contains(&i)
    }

    /// Whether `target` lies inside the part.
    fn inside(&self, target: u64) -> bool {
        target >= self.rva && target.wrapping_sub(self.rva) < self.code.len() as u64
    }

    /// Scan every word, calling `f(word index, event)`; a trailing partial
    /// word is reported as [`Event::Raw`] with index `len / 4`.
    fn run(&mut self, mut f: impl FnMut(u32, Event)) {
        let decoder = InstDecoder::default();
        let mut insn = Instruction::default();
        let words = self.code.len() / 4;
        for i in 0..words {
            let i = i as u32;
            if self.is_data(i) {
                f(i, Event::Data);
                continue;
            }
            let off = (i as usize) << 2;
            let Some(bytes) = self.code.get(off..off.saturating_add(4)) else {
                break;
            };
            if self.dead || i >= self.next_snapshot {
                self.enter(i);
            }
            if i >= self.next_pending {
                self.apply_pending(i);
            }
            let mut reader = U8Reader::new(bytes);
            if decoder.decode_into(&mut insn, &mut reader).is_err() {
                f(i, Event::Raw);
                continue;
            }
            let w = le32(bytes);
            let pc = self.rva.wrapping_add(u64::from(i) << 2);
            let ev = self.step(i, pc, w, &insn);
            f(i, ev);
        }
        if self.code.len() % 4 != 0 {
            f(words as u32, Event::Raw);
        }
    }

    /// Set up the state in which word `i` is entered. After an instruction
    /// that never falls through, the linear state belongs to another path:
    /// take the pages recorded by the branches to `i` (a register holds a
    /// page when some branch says so and none says a different one; a
    /// branch that held no page counts too), or, without any branch, those
    /// of the last indirect branch; forget the rest.
    fn enter(&mut self, i: u32) {
        let dead = std::mem::replace(&mut self.dead, false);
        let mut held = Vec::new();
        if i >= self.next_snapshot {
            held = self.snapshots.remove(&i).unwrap_or_default();
            self.snapshot_count = self.snapshot_count.saturating_sub(held.len());
            // Records for words already passed (inside data) are stale.
            while let Some(entry) = self.snapshots.first_entry() {
                if *entry.key() > i {
                    break;
                }
                let gone = entry.remove();
                self.snapshot_count = self.snapshot_count.saturating_sub(gone.len());
            }
            self.next_snapshot = self.snapshots.keys().next().copied().unwrap_or(u32::MAX);
        }
        // Jump-table cases at `i` (and stale ones before it).
        while self.cases.first_key_value().is_some_and(|(&k, _)| k < i) {
            self.cases.pop_first();
        }
        let tables = self.cases.remove(&i).unwrap_or_default();
        if let Some(back) = self.known_backward.pages.get(&i) {
            held.extend(back.iter().copied());
        }
        if !dead {
            // Reached by falling through and by branches: a register
            // unknown on the way here holds the page the branches agree on;
            // pages that disagree are unknown.
            let mut merged = [CasePage::Unset; 32];
            for &(r, page) in &held {
                if let Some(slot) = merged.get_mut(usize::from(r)) {
                    *slot = merge_page(*slot, CasePage::Page(page));
                }
            }
            for (reg, m) in self.regs.iter_mut().zip(merged) {
                *reg = match (*reg, m) {
                    (_, CasePage::Unset) => *reg,
                    (Reg::Unknown, CasePage::Page(p)) => Reg::Page(p),
                    (Reg::Page(q), CasePage::Page(p)) if p == q => *reg,
                    _ => Reg::Unknown,
                };
            }
            return;
        }
        let mut found = !held.is_empty();
        // Reached by a dispatch, or a backward branch, that held no page.
        let mut bare_case = self.known_backward.bare.contains(&i);
        let mut merged = [CasePage::Unset; 32];
        for &(r, page) in &held {
            if let Some(slot) = merged.get_mut(usize::from(r)) {
                *slot = merge_page(*slot, CasePage::Page(page));
            }
        }
        for id in tables {
            let Some(pages) = self.table_pages.get(id) else {
                continue;
            };
            if pages.iter().all(|p| *p == CasePage::Unset) {
                bare_case = true;
                continue;
            }
            found = true;
            for (slot, &p) in merged.iter_mut().zip(pages) {
                *slot = merge_page(*slot, p);
            }
        }
        if found {
            let mut fresh = [Reg::Unknown; 32];
            for (slot, p) in fresh.iter_mut().zip(merged) {
                if let CasePage::Page(page) = p {
                    *slot = Reg::Page(page);
                }
            }
            self.regs = fresh;
        }
        let bare = bare_case
            || self
                .bare
                .get(i as usize / 64)
                .is_some_and(|b| b & (1 << (i % 64)) != 0);
        if bare && !found {
            // Reached by a branch that held no page (and none that held
            // one): start with none.
            self.regs = [Reg::Unknown; 32];
            found = true;
        }
        if !found {
            if self.entered_blind.len() < MAX_SNAPSHOTS {
                self.entered_blind.push(i);
            }
            let Some(pages) = &self.at_indirect else {
                return;
            };
            let mut fresh = [Reg::Unknown; 32];
            for &(r, page) in pages {
                if let Some(slot) = fresh.get_mut(usize::from(r)) {
                    *slot = Reg::Page(page);
                }
            }
            self.regs = fresh;
        }
        self.bounds = [0; 32];
    }

    /// The pages currently held, as (register, page).
    fn pages(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.regs
            .iter()
            .enumerate()
            .filter_map(|(r, reg)| match *reg {
                Reg::Page(p) => Some((r as u8, p)),
                _ => None,
            })
    }

    /// Remember the pages held at a forward branch to `target`.
    fn snapshot(&mut self, pc: u64, target: u64) {
        if target <= pc || !self.inside(target) || self.snapshot_count >= MAX_SNAPSHOTS {
            return;
        }
        let at = (target.wrapping_sub(self.rva) / 4) as u32;
        let held: Vec<(u8, u64)> = self.pages().collect();
        if !held.is_empty() {
            self.snapshot_count = self.snapshot_count.saturating_add(held.len());
            self.snapshots.entry(at).or_default().extend(held);
            self.next_snapshot = self.next_snapshot.min(at);
        } else {
            // A branch that holds no page says so too: its target must not
            // inherit the pages of the path textually before it.
            if self.bare.is_empty() {
                self.bare = vec![0; (self.code.len() / 4).div_ceil(64)];
            }
            if let Some(b) = self.bare.get_mut(at as usize / 64) {
                *b |= 1 << (at % 64);
            }
        }
    }

    /// Remember the pages held at a backward branch to `target`, for a
    /// second scan (see [`normalize`]).
    fn backward_snapshot(&mut self, pc: u64, target: u64) {
        if target > pc || !self.inside(target) || target.wrapping_sub(self.rva) % 4 != 0 {
            return;
        }
        if self.seen_backward.records >= MAX_SNAPSHOTS {
            return;
        }
        let at = (target.wrapping_sub(self.rva) / 4) as u32;
        let held: Vec<(u8, u64)> = self.pages().collect();
        let seen = &mut self.seen_backward;
        seen.records = seen.records.saturating_add(held.len().max(1));
        if held.is_empty() {
            seen.bare.insert(at);
        } else {
            seen.pages.entry(at).or_default().extend(held);
        }
    }

    /// Re-establish bounds that a conditional branch promised for word `i`.
    fn apply_pending(&mut self, i: u32) {
        if i < self.next_pending {
            return;
        }
        let bounds = &mut self.bounds;
        self.pending.retain(|&(at, reg, bound)| {
            if at == i {
                if let Some(b) = bounds.get_mut(reg as usize) {
                    *b = bound;
                }
                false
            } else {
                at > i
            }
        });
        self.next_pending = self.pending.iter().map(|p| p.0).min().unwrap_or(u32::MAX);
    }

    /// Interpret one decoded instruction and update the register state.
    fn step(&mut self, i: u32, pc: u64, w: u32, insn: &Instruction) -> Event {
        let rd = w & 31;
        let rn = ((w >> 5) & 31) as usize;
        // Flags.
        let cmp = if w & 0x7f80_001f == 0x7100_001f {
            // CMP (SUBS to ZR, immediate).
            let imm = (w >> 10) & 0xfff;
            let imm = if w & (1 << 22) != 0 { imm << 12 } else { imm };
            Some((rn as u32, imm.saturating_add(1)))
        } else {
            None
        };

        let mut new_state: Option<(u32, Reg)> = None;
        let ev = if w & 0x7c00_0000 == 0x1400_0000 {
            // B, BL.
            let imm = sign_extend(u64::from(w & 0x03ff_ffff), 26) << 2;
            Event::Target {
                tag: TAG_BRANCH,
                masked: w & 0xfc00_0000,
                target: pc.wrapping_add(imm),
                load: 0,
            }
        } else if w & 0xff00_0000 == 0x5400_0000 {
            // B.cond: a bound check promises a range at the target or next.
            let target = imm19_target(pc, w);
            if let Some((reg, bound)) = self.last_cmp {
                self.promise(i, pc, target, w & 0xf, reg, bound);
            }
            Event::Target {
                tag: TAG_BRANCH,
                masked: w & 0xff00_001f,
                target,
                load: 0,
            }
        } else if w & 0x7e00_0000 == 0x3400_0000 {
            // CBZ, CBNZ.
            Event::Target {
                tag: TAG_BRANCH,
                masked: w & 0xff00_001f,
                target: imm19_target(pc, w),
                load: 0,
            }
        } else if w & 0x7e00_0000 == 0x3600_0000 {
            // TBZ, TBNZ.
            let imm = sign_extend(u64::from((w >> 5) & 0x3fff), 14) << 2;
            Event::Target {
                tag: TAG_BRANCH,
                masked: w & 0xfff8_001f,
                target: pc.wrapping_add(imm),
                load: 0,
            }
        } else if w & 0x1f00_0000 == 0x1000_0000 {
            // ADR, ADRP.
            let imm = u64::from(((w >> 3) & 0x1f_fffc) | ((w >> 29) & 3));
            let imm = sign_extend(imm, 21);
            if w & 0x8000_0000 == 0 {
                let target = pc.wrapping_add(imm);
                new_state = Some((
                    rd,
                    Reg::Addr {
                        addr: target,
                        at: None,
                    },
                ));
                Event::Target {
                    tag: TAG_ADR,
                    masked: w & 0x9f00_001f,
                    target,
                    load: 0,
                }
            } else {
                let page = (pc & !0xfff).wrapping_add(imm << 12);
                new_state = Some((rd, Reg::Page(page)));
                Event::Adrp(w & 0x9f00_001f)
            }
        } else if w & 0x3b00_0000 == 0x1800_0000 {
            // LDR/LDRSW/PRFM (literal).
            let target = imm19_target(pc, w);
            let size = literal_size(w);
            if size > 0 && self.inside(target) {
                Event::PoolLoad {
                    masked: w & 0xff00_001f,
                    offset: target.wrapping_sub(self.rva) as usize,
                    size,
                }
            } else {
                Event::Target {
                    tag: TAG_LITERAL,
                    masked: w & 0xff00_001f,
                    target,
                    load: size,
                }
            }
        } else if let Some(ev) = self.consumer(i, w, &mut new_state) {
            ev
        } else if let Some(ev) = self.table_access(w, &mut new_state) {
            if let Event::JumpTable { table, .. } = ev {
                self.table_in_code(i, &table);
                self.table_cases(pc, &table);
            }
            ev
        } else {
            Event::Plain(w)
        };

        // Control flow: what a forward branch's target inherits, and whether
        // the next word can be reached by falling through.
        if let Event::Target {
            tag: TAG_BRANCH,
            target,
            ..
        } = ev
        {
            if w & 0xfc00_0000 != 0x9400_0000 {
                self.snapshot(pc, target);
                self.backward_snapshot(pc, target);
            }
        }
        let indirect = matches!(
            insn.opcode,
            Opcode::BR | Opcode::BRAA | Opcode::BRAAZ | Opcode::BRAB | Opcode::BRABZ
        );
        if indirect {
            let pages = self.pages().collect();
            self.at_indirect = Some(pages);
        }
        self.dead = indirect
            || w & 0xfc00_0000 == 0x1400_0000
            || matches!(
                insn.opcode,
                Opcode::RET | Opcode::RETAA | Opcode::RETAB | Opcode::ERET
            );

        // Register writes, then what the instruction itself established.
        let writes = gpr_writes(w, insn);
        let mut writes = writes & 0x7fff_ffff;
        while writes != 0 {
            let r = writes.trailing_zeros() as usize;
            writes &= writes.wrapping_sub(1);
            if let Some(reg) = self.regs.get_mut(r) {
                *reg = Reg::Unknown;
            }
            if let Some(b) = self.bounds.get_mut(r) {
                *b = 0;
            }
        }
        if let Some((r, state)) = new_state {
            if let Some(slot) = self.regs.get_mut(r as usize).filter(|_| r < 31) {
                *slot = state;
            }
        }
        if let Some(bound) = mask_bound(w) {
            if let Some(b) = self.bounds.get_mut(rd as usize) {
                *b = bound;
            }
        }
        if let Some((reg, bound)) = cmp {
            if let Some(b) = self.bounds.get_mut(reg as usize) {
                *b = bound;
            }
            self.last_cmp = Some((reg, bound));
        } else if sets_flags(insn)
            || matches!(
                ev,
                Event::Target {
                    tag: TAG_BRANCH,
                    ..
                }
            )
        {
            self.last_cmp = None;
        }
        ev
    }

    /// Record the bound that a `B.cond` after `CMP reg, #(bound-1)` makes
    /// true: at the branch target for "lower or same" conditions, at the
    /// next word for "higher" ones.
    fn promise(&mut self, i: u32, pc: u64, target: u64, cond: u32, reg: u32, bound: u32) {
        let at = match cond {
            // LS, LO (CC): taken when in range.
            0b1001 | 0b0011 => {
                if !self.inside(target) || target <= pc || target.wrapping_sub(self.rva) % 4 != 0 {
                    return;
                }
                (target.wrapping_sub(self.rva) / 4) as u32
            }
            // HI, HS (CS): taken when out of range; in range after it.
            0b1000 | 0b0010 => i.saturating_add(1),
            _ => return,
        };
        let bound = if cond == 0b0011 || cond == 0b0010 {
            // LO/HS compare against the bound itself.
            bound.saturating_sub(1)
        } else {
            bound
        };
        if self.pending.len() < 64 {
            self.pending.push((at, reg, bound));
            self.next_pending = self.next_pending.min(at);
        }
    }

    /// An instruction that adds an immediate to an `ADRP` page.
    fn consumer(&self, i: u32, w: u32, new_state: &mut Option<(u32, Reg)>) -> Option<Event> {
        let rn = ((w >> 5) & 31) as usize;
        let Reg::Page(page) = *self.regs.get(rn)? else {
            return None;
        };
        let simd = w & (1 << 26) != 0;
        let (offset, masked, load): (u64, u32, u8) = if w & 0xff80_0000 == 0x9100_0000 {
            // ADD Xd, Xn, #imm{, LSL #12}.
            let imm = u64::from((w >> 10) & 0xfff);
            let imm = if w & (1 << 22) != 0 { imm << 12 } else { imm };
            let target = page.wrapping_add(imm);
            *new_state = Some((
                w & 31,
                Reg::Addr {
                    addr: target,
                    at: Some(i),
                },
            ));
            (imm, w & !0x003f_fc00, 0)
        } else if w & 0x3b00_0000 == 0x3900_0000 {
            // LDR/STR (unsigned offset), any size, GPR or SIMD/FP.
            let opc = (w >> 22) & 3;
            let mut scale = w >> 30;
            if simd && opc >= 2 {
                scale = 4; // Q register
            }
            let imm = u64::from((w >> 10) & 0xfff) << scale;
            let load = if opc != 0 && !(w >> 30 == 3 && opc == 2 && !simd) {
                1u8 << scale
            } else {
                0
            };
            (imm, w & !0x003f_fc00, load)
        } else if w & 0x3b20_0c00 == 0x3800_0000 {
            // LDUR/STUR (unscaled), any size.
            let imm = sign_extend(u64::from((w >> 12) & 0x1ff), 9);
            (imm, w & !0x001f_f000, 0)
        } else if w & 0x3b80_0000 == 0x2900_0000 {
            // LDP/STP (signed offset).
            let opc = w >> 30;
            let scale = if simd {
                opc.saturating_add(2)
            } else {
                (opc >> 1).saturating_add(2)
            };
            let imm = sign_extend(u64::from((w >> 15) & 0x7f), 7) << scale;
            (imm, w & !0x003f_8000, 0)
        } else {
            return None;
        };
        Some(Event::Target {
            tag: TAG_CONSUMER,
            masked,
            target: page.wrapping_add(offset),
            load,
        })
    }

    /// A jump table placed inside the part, after word `i`: its words are
    /// data from now on (its entries are relative, so their bytes compare).
    fn table_in_code(&mut self, i: u32, table: &JumpTable) {
        let start = table.entry.table;
        if !self.inside(start) {
            return;
        }
        let first = (start.wrapping_sub(self.rva) / 4) as u32;
        let end = start
            .saturating_add(table.len())
            .min(self.rva.saturating_add(self.code.len() as u64));
        let last = ((end.saturating_sub(self.rva)).div_ceil(4)) as u32;
        if first <= i {
            return;
        }
        self.data.extend(first..last);
    }

    /// Record the pages held at a jump table's dispatch (at `pc`) for each
    /// of its cases, as for a forward branch to each: a case is entered in
    /// the state of its own dispatch, not of whichever indirect branch comes
    /// last before it (a function with two switches has two). A table's
    /// entries are walked at its first dispatch only; another dispatch of
    /// the same table merges its pages into the table's (a register with
    /// two different pages holds none), so the work stays linear however
    /// many dispatches share a table.
    fn table_cases(&mut self, pc: u64, table: &JumpTable) {
        let mut pages = [CasePage::Unset; 32];
        for (r, page) in self.pages() {
            if let Some(slot) = pages.get_mut(usize::from(r)) {
                *slot = CasePage::Page(page);
            }
        }
        if let Some(&id) = self.table_ids.get(&table.entry.table) {
            if let Some(known) = self.table_pages.get_mut(id) {
                for (slot, p) in known.iter_mut().zip(pages) {
                    *slot = merge_page(*slot, p);
                }
            }
            return;
        }
        let id = self.table_pages.len();
        self.table_ids.insert(table.entry.table, id);
        self.table_pages.push(pages);
        let size = usize::from(table.entry.size);
        let Some(bytes) = self.image.bytes_at(table.entry.table, table.len()) else {
            return;
        };
        for raw in bytes.chunks_exact(size.max(1)) {
            let target = table.target(raw);
            if target <= pc || !self.inside(target) || target.wrapping_sub(self.rva) % 4 != 0 {
                continue;
            }
            let at = (target.wrapping_sub(self.rva) / 4) as u32;
            let ids = self.cases.entry(at).or_default();
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
    }

    /// Jump table entry loads and dispatches.
    fn table_access(&self, w: u32, new_state: &mut Option<(u32, Reg)>) -> Option<Event> {
        let rn = ((w >> 5) & 31) as usize;
        let rm = ((w >> 16) & 31) as usize;
        if w & 0x3f20_0c00 == 0x3820_0800 {
            // LDR* (register offset), GPR destination.
            let opc = (w >> 22) & 3;
            let size = w >> 30;
            if opc == 0 || (size == 3 && opc != 1) || (size == 2 && opc == 3) {
                return None; // store, PRFM, unallocated
            }
            let Reg::Addr { addr, at } = *self.regs.get(rn)? else {
                return None;
            };
            let count = self.bounds.get(rm).copied().unwrap_or(0);
            if count == 0 || count > MAX_TABLE_ENTRIES {
                return None;
            }
            *new_state = Some((
                w & 31,
                Reg::Entry(Entry {
                    table: addr,
                    count,
                    size: 1 << size,
                    signed: opc >= 2,
                    dest_w: opc == 3,
                    at,
                }),
            ));
            return None; // the load itself hashes as its raw word
        }
        let (extend, shift) = if w & 0xffe0_0000 == 0x8b20_0000 {
            // ADD Xd, Xn|SP, Rm, <extend> #imm3.
            let imm3 = ((w >> 10) & 7) as u8;
            if imm3 > 4 {
                return None;
            }
            (((w >> 13) & 7) as u8, imm3)
        } else if w & 0xffe0_0000 == 0x8b00_0000 {
            // ADD Xd, Xn, Xm, LSL #imm6.
            (3, ((w >> 10) & 0x3f) as u8)
        } else {
            return None;
        };
        let Reg::Entry(entry) = *self.regs.get(rm)? else {
            return None;
        };
        let Reg::Addr { addr: base, .. } = *self.regs.get(rn)? else {
            return None;
        };
        *new_state = Some((w & 31, Reg::Unknown));
        Some(Event::JumpTable {
            word: w,
            table: JumpTable {
                entry,
                base,
                extend,
                shift,
            },
        })
    }
}

/// Normalise the part at `rva` (bytes `code`) of group `group`,
/// pushing one [`super::NormInsn`] per 4-byte word (and one for a trailing
/// partial word), except that `NOP`s go to [`Normalized::nops`]. References
/// into the group's own code are recorded for [`super::normalize_group`].
pub(crate) fn normalize<'a>(scope: Scope<'a, '_, '_>, code: &[u8], out: &mut Normalized<'a>) {
    // A block entered only by branches from later code (a loop body placed
    // after an unconditional branch) learns its pages from those branches,
    // which the linear pass meets too late: then the part is scanned again,
    // knowing them.
    if let Some(backward) = pass(scope, code, out, Backward::default()) {
        out.clear();
        pass(scope, code, out, backward);
    }
}

/// One scan of a part into `out`, with what the backward branches of an
/// earlier scan held (`backward`). Returns what this scan's backward
/// branches held, when a block they lead to was entered without it.
fn pass<'a>(
    scope: Scope<'a, '_, '_>,
    code: &[u8],
    out: &mut Normalized<'a>,
    backward: Backward,
) -> Option<Backward> {
    let (index, group, rva) = (scope.index, scope.group, scope.rva);
    // Words that a load-time relocation patches are data.
    let relocs = index.relocations_in(rva.saturating_sub(7), (code.len() as u64).saturating_add(7));
    let end = rva.saturating_add(code.len() as u64);
    let mut extra = Vec::new();
    for r in relocs {
        let start = r.rva.max(rva);
        let stop = r.rva.saturating_add(u64::from(r.width.max(1))).min(end);
        if start < stop {
            let first = start.wrapping_sub(rva) / 4;
            let last = stop.wrapping_sub(rva).wrapping_sub(1) / 4;
            extra.extend((first..=last).map(|k| k as u32));
        }
    }
    out.insns.reserve(code.len().div_ceil(4));
    let mut rewrites: Vec<usize> = Vec::new();
    // Jump tables already written out, by address: a table that several
    // dispatches share is written once, the others name it by its number.
    let mut tables: HashMap<u64, u32> = HashMap::new();
    let mut scanner = Scanner::new(index.image, code, rva, extra);
    let rerun = backward.is_empty();
    scanner.known_backward = backward;
    scanner.run(|i, ev| {
        let off = (i as usize) << 2;
        out.discard();
        match ev {
            Event::Raw => {
                let bytes = code
                    .get(off..off.saturating_add(4).min(code.len()))
                    .unwrap_or(&[]);
                out.push_raw(off, bytes);
                return;
            }
            Event::Plain(NOP) => {
                out.push_nop(off, 4);
                return;
            }
            Event::Plain(w) => out.write_u32(w),
            Event::Data => {
                if out.want_fields {
                    let at = rva.saturating_add(off as u64);
                    for r in index.relocations_in(at, 4) {
                        let kind = if r.width == 8 {
                            FieldKind::Reloc(RelocKind::Abs64)
                        } else {
                            FieldKind::Abs32
                        };
                        let target = match r.target {
                            hotpatch_formats::RelocTarget::Rva(t) => t,
                            hotpatch_formats::RelocTarget::Symbol { .. } => 0,
                        };
                        out.field(r.rva.wrapping_sub(rva) as usize, kind, target, 0);
                    }
                }
                TAG_DATA.hash(out);
                hash_bytes(index, group, rva, code, off, 4, out);
            }
            Event::Adrp(masked) => {
                if out.want_fields {
                    let w = le32(code.get(off..).unwrap_or(&[]));
                    let pc = rva.wrapping_add(off as u64);
                    let imm = sign_extend(u64::from(((w >> 3) & 0x1f_fffc) | ((w >> 29) & 3)), 21);
                    let page = (pc & !0xfff).wrapping_add(imm << 12);
                    out.reg_field(
                        off,
                        FieldKind::Reloc(RelocKind::A64AdrpPage21),
                        page,
                        0,
                        Some((w & 31) as u8),
                    );
                }
                (TAG_ADRP, masked).hash(out)
            }
            Event::Target {
                tag,
                masked,
                target,
                load,
            } => {
                if out.want_fields {
                    let (kind, reg) = target_field(tag, masked);
                    out.reg_field(off, kind, target, 0, reg);
                }
                (tag, masked).hash(out);
                let outside = target < rva || target >= end;
                let r = if target >= rva && target < end && load == 0 {
                    (0, scope.resolve(target))
                } else if tag == TAG_BRANCH {
                    // Stubs and veneers are followed by the index.
                    r_plain(index.resolve(target, Some(group)))
                } else if load > 0 {
                    if let Some(value) = constant_value(index, target, load) {
                        // Anonymous bytes: an anchor (see below).
                        if outside {
                            out.anchors.push(target);
                        }
                        (VIA_VALUE, value).hash(out);
                        out.push(off, 4);
                        return;
                    }
                    resolve_loaded(index, group, target)
                } else {
                    (0, index.resolve(target, Some(group)))
                };
                // The anchors: every address outside this part and outside
                // every function cuts anonymous data. The target is
                // in a function exactly when it resolved to one directly (a
                // stub or slot is followed only from anonymous bytes).
                let in_function = matches!(
                    r,
                    (
                        0,
                        SymRef::Function { .. } | SymRef::Unnamed { .. } | SymRef::Local { .. }
                    )
                );
                if outside && !in_function {
                    out.anchors.push(target);
                }
                r.0.hash(out);
                hash_ref(&r.1, out);
                out.note(&r.1);
            }
            Event::PoolLoad {
                masked,
                offset,
                size,
            } => {
                (TAG_POOL_LOAD, masked).hash(out);
                hash_bytes(index, group, rva, code, offset, usize::from(size), out);
            }
            Event::JumpTable { word, table } => {
                out.anchors.push(table.entry.table);
                out.anchors
                    .push(table.entry.table.wrapping_add(table.len()));
                (TAG_JUMP_TABLE, word, table.entry.count, table.entry.size).hash(out);
                let seen = tables.len() as u32;
                if out.want_fields && !tables.contains_key(&table.entry.table) {
                    // Entries are relative to an anchor in the code: the
                    // table moves as bytes.
                    out.owned_tables.push(super::OwnedTable {
                        rva: table.entry.table,
                        entries: Vec::new(),
                        size: table.len(),
                    });
                }
                let number = *tables.entry(table.entry.table).or_insert(seen);
                if number != seen {
                    // The same table again: its entries are written once.
                    (TAG_TABLE_AGAIN, number).hash(out);
                    if let Some(at) = table.entry.at {
                        rewrites.push(at as usize);
                    }
                    out.push(off, 4);
                    return;
                }
                let size = u64::from(table.entry.size);
                match index.image.bytes_at(table.entry.table, table.len()) {
                    Some(bytes) => {
                        for raw in bytes.chunks_exact(size as usize) {
                            let r = scope.resolve(table.target(raw));
                            hash_ref(&r, out);
                            out.note(&r);
                        }
                    }
                    None => {
                        let r = index.resolve(table.entry.table, Some(group));
                        1u8.hash(out);
                        hash_ref(&r, out);
                    }
                }
                if let Some(at) = table.entry.at {
                    rewrites.push(at as usize);
                }
            }
        }
        out.push(off, 4);
    });
    // The ADD that formed a jump table's address: drop its (layout-dependent)
    // target, keep the instruction's shape.
    rewrites.sort_unstable();
    rewrites.dedup();
    let forms: Vec<(usize, Canon)> = rewrites
        .iter()
        .filter_map(|&at| {
            let off = at.saturating_mul(4);
            let w = le32(code.get(off..off.saturating_add(4))?);
            let mut h = Canon::default();
            (TAG_JUMP_TABLE_BASE, w & !0x003f_fc00).hash(&mut h);
            Some((off, h))
        })
        .collect();
    out.rehash(&forms);
    if !rerun {
        return None;
    }
    let seen = std::mem::take(&mut scanner.seen_backward);
    scanner
        .entered_blind
        .iter()
        .any(|i| seen.pages.contains_key(i) || seen.bare.contains(i))
        .then_some(seen)
}

/// What backward branches held: the pages at each branch to an earlier
/// word of the part (by target word), and the targets of those that held
/// none.
#[derive(Debug, Default)]
struct Backward {
    /// Pages held, by target word: (register, page).
    pages: BTreeMap<u32, Vec<(u8, u64)>>,
    /// Targets of backward branches that held no page.
    bare: BTreeSet<u32>,
    /// How many records (pages or bare targets) it holds.
    records: usize,
}

impl Backward {
    fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.bare.is_empty()
    }
}

/// Hash `len` bytes at part offset `off` as data: bytes a relocation patches
/// are replaced by the relocation's resolved target.
#[allow(clippy::too_many_arguments)]
fn hash_bytes<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    rva: u64,
    code: &[u8],
    off: usize,
    len: usize,
    out: &mut Normalized<'a>,
) {
    let Some(bytes) = code.get(off..off.saturating_add(len)) else {
        // Outside the part (should not happen): the offset is all we have.
        (0xffu8, off, len).hash(out);
        return;
    };
    let at = rva.saturating_add(off as u64);
    let relocs = index.relocations_in(at.saturating_sub(7), (len as u64).saturating_add(7));
    if relocs
        .iter()
        .all(|r| r.rva.saturating_add(u64::from(r.width)) <= at)
    {
        bytes.hash(out);
        return;
    }
    let mut masked = [0u8; 16];
    let n = bytes.len().min(16);
    masked.iter_mut().zip(bytes).for_each(|(m, b)| *m = *b);
    for r in relocs {
        let lo = r.rva.max(at);
        let hi = r
            .rva
            .saturating_add(u64::from(r.width))
            .min(at.saturating_add(n as u64));
        for a in lo..hi {
            if let Some(b) = masked.get_mut(a.wrapping_sub(at) as usize) {
                *b = 0;
            }
        }
        if r.rva >= at {
            let t = index.resolve_reloc(r, Some(group));
            (r.rva.wrapping_sub(at), VIA_RELOC).hash(out);
            hash_ref(&t, out);
            out.note(&t);
        }
    }
    masked.get(..n).unwrap_or(&[]).hash(out);
}

/// The bytes a load of `len` bytes at `target` reads, when `target` lies in
/// anonymous read-only data that no relocation patches: a constant whose
/// value, not its position among its neighbours, is what the code depends on.
fn constant_value<'d>(index: &ImageIndex<'_, 'd>, target: u64, len: u8) -> Option<&'d [u8]> {
    if index.function_at(target).is_some() || index.data_at(target).is_some() {
        return None;
    }
    let block = index.block(target)?;
    if block.writable || block.executable {
        return None;
    }
    let len = u64::from(len);
    if !index
        .relocations_in(target.saturating_sub(7), len + 7)
        .iter()
        .all(|r| {
            r.rva.saturating_add(u64::from(r.width)) <= target
                || r.rva >= target.saturating_add(len)
        })
    {
        return None;
    }
    index.image.bytes_at(target, len)
}

/// Resolve a load's target: a named object or function as itself; an
/// anonymous slot that a relocation fills (GOT entry, pointer literal) as
/// what the relocation points at.
fn resolve_loaded<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    target: u64,
) -> (u8, SymRef<'a>) {
    let r = index.resolve(target, Some(group));
    if matches!(
        r,
        SymRef::Anon { .. } | SymRef::Deferred(_) | SymRef::Unmapped(_)
    ) {
        if let Some(rel) = index.relocation_in(target, 1) {
            return (VIA_RELOC, index.resolve_reloc(rel, Some(group)));
        }
    }
    (0, r)
}

/// How the address field of an instruction that refers to an address is
/// encoded (its tag and the word with the field cleared), and the page
/// register an `ADRP` user adds to.
fn target_field(tag: u8, masked: u32) -> (FieldKind, Option<u8>) {
    let kind = match tag {
        TAG_BRANCH if masked & 0x7c00_0000 == 0x1400_0000 => RelocKind::A64Branch26,
        TAG_BRANCH if masked & 0x7e00_0000 == 0x3600_0000 => RelocKind::A64TestBranch14,
        TAG_BRANCH => RelocKind::A64CondBranch19,
        TAG_ADR => RelocKind::A64Adr,
        TAG_LITERAL => RelocKind::A64LdrLiteral19,
        TAG_CONSUMER => {
            let reg = Some(((masked >> 5) & 31) as u8);
            let simd = masked & (1 << 26) != 0;
            let size = masked >> 30;
            let kind = if masked & 0xff80_0000 == 0x9100_0000 {
                if masked & (1 << 22) != 0 {
                    return (FieldKind::A64Unsupported, reg);
                }
                RelocKind::A64Lo12 { scale: 0 }
            } else if masked & 0x3b00_0000 == 0x3900_0000 {
                let opc = (masked >> 22) & 3;
                let scale = if simd && opc >= 2 { 4 } else { size };
                RelocKind::A64Lo12 { scale: scale as u8 }
            } else if masked & 0x3b80_0000 == 0x2900_0000 {
                let scale = if simd {
                    size.saturating_add(2)
                } else {
                    (size >> 1).saturating_add(2)
                };
                RelocKind::A64PairLo12 { scale: scale as u8 }
            } else {
                return (FieldKind::A64Unsupported, reg);
            };
            return (FieldKind::Reloc(kind), reg);
        }
        _ => return (FieldKind::A64Unsupported, None),
    };
    (FieldKind::Reloc(kind), None)
}

/// A reference reached directly.
fn r_plain(r: SymRef<'_>) -> (u8, SymRef<'_>) {
    (0, r)
}

#[cfg(test)]
pub(crate) mod synth {
    //! Hand-assembled AArch64 code in synthetic images, placed at different
    //! addresses, to check that placement never matters and content does.
    use hotpatch_formats::{Arch, DataObject, Format, Image, RelocTarget, Relocation, Visibility};

    pub(crate) use crate::diff::index;
    use crate::norm::{normalize_part, Normalized};
    use crate::testutil::{image, section};

    /// `ADRP xd, target` at `pc`.
    pub fn adrp(rd: u32, pc: u64, target: u64) -> u32 {
        let imm = ((target >> 12).wrapping_sub(pc >> 12)) as u32 & 0x1f_ffff;
        0x9000_0000 | ((imm & 3) << 29) | ((imm >> 2) << 5) | rd
    }
    /// `ADR xd, target` at `pc`.
    pub fn adr(rd: u32, pc: u64, target: u64) -> u32 {
        let imm = target.wrapping_sub(pc) as u32 & 0x1f_ffff;
        0x1000_0000 | ((imm & 3) << 29) | ((imm >> 2) << 5) | rd
    }
    /// `ADD xd, xn, #imm`.
    pub fn add_imm(rd: u32, rn: u32, imm: u64) -> u32 {
        0x9100_0000 | ((imm as u32 & 0xfff) << 10) | (rn << 5) | rd
    }
    /// `LDR wt, [xn, #imm]` (imm a multiple of 4).
    pub fn ldr_w(rt: u32, rn: u32, imm: u64) -> u32 {
        0xb940_0000 | (((imm as u32 & 0xfff) / 4) << 10) | (rn << 5) | rt
    }
    /// `LDR xt, [xn, #imm]` (imm a multiple of 8).
    pub fn ldr_x(rt: u32, rn: u32, imm: u64) -> u32 {
        0xf940_0000 | (((imm as u32 & 0xfff) / 8) << 10) | (rn << 5) | rt
    }
    /// `LDR xt, <literal at target>` at `pc`.
    pub fn ldr_lit(rt: u32, pc: u64, target: u64) -> u32 {
        let imm = (target.wrapping_sub(pc) as u32 >> 2) & 0x7_ffff;
        0x5800_0000 | (imm << 5) | rt
    }
    /// `B.cond target` at `pc`.
    pub fn bcond(cond: u32, pc: u64, target: u64) -> u32 {
        let imm = (target.wrapping_sub(pc) as u32 >> 2) & 0x7_ffff;
        0x5400_0000 | (imm << 5) | cond
    }
    /// `BL target` at `pc`.
    pub fn bl(pc: u64, target: u64) -> u32 {
        0x9400_0000 | ((target.wrapping_sub(pc) as u32 >> 2) & 0x03ff_ffff)
    }
    /// `MOVZ xd, #imm`.
    pub fn movz(rd: u32, imm: u32) -> u32 {
        0xd280_0000 | ((imm & 0xffff) << 5) | rd
    }
    /// `RET`.
    pub const RET: u32 = 0xd65f_03c0;
    /// `NOP`.
    pub const NOP: u32 = 0xd503_201f;

    /// A synthetic image: `.text` (functions), `.rodata`, `.data`, `.got`.
    pub struct Synth {
        /// `.text` RVA and words.
        pub text: (u64, Vec<u32>),
        /// `.rodata` RVA and bytes.
        pub rodata: (u64, Vec<u8>),
        /// `.data` RVA and bytes.
        pub data: (u64, Vec<u8>),
        /// Functions: name, RVA, size.
        pub functions: Vec<(&'static str, u64, u64)>,
        /// Data objects: name, RVA, size.
        pub objects: Vec<(&'static str, u64, u64)>,
        /// Load-time relocations.
        pub relocations: Vec<Relocation>,
    }

    impl Synth {
        /// Empty sections at the given RVAs.
        pub fn new(text: u64, rodata: u64, data: u64) -> Self {
            Synth {
                text: (text, Vec::new()),
                rodata: (rodata, Vec::new()),
                data: (data, Vec::new()),
                functions: Vec::new(),
                objects: Vec::new(),
                relocations: Vec::new(),
            }
        }

        /// The `.text` bytes.
        pub fn text_bytes(&self) -> Vec<u8> {
            self.text.1.iter().flat_map(|w| w.to_le_bytes()).collect()
        }

        /// The image over `text` (the bytes of [`Synth::text_bytes`]).
        pub fn image<'d>(&'d self, text: &'d [u8]) -> Image<'d> {
            let sections = vec![
                section(".text", self.text.0, text, false, true),
                section(".rodata", self.rodata.0, &self.rodata.1, false, false),
                section(".data", self.data.0, &self.data.1, true, false),
            ];
            Image {
                data: self
                    .objects
                    .iter()
                    .map(|&(name, rva, size)| DataObject {
                        name: name.to_string(),
                        rva,
                        size,
                        section: ".data".to_string(),
                        unit: None,
                        visibility: Visibility::Global,
                    })
                    .collect(),
                relocations: self.relocations.clone(),
                ..image(Format::Elf, Arch::Aarch64, sections, &self.functions)
            }
        }
    }

    /// The normalised hashes of function `name` and its data references.
    pub fn norm(s: &Synth, name: &str) -> (Vec<u64>, Vec<String>) {
        let text = s.text_bytes();
        let img = s.image(&text);
        let ix = index(&img);
        let g = ix
            .groups
            .iter()
            .position(|g| g.key.name == name)
            .unwrap_or_else(|| panic!("no function {name}"));
        let mut out = Normalized::default();
        normalize_part(&ix, g, 0, &mut out);
        let refs = out.data_refs.iter().map(|k| k.to_string()).collect();
        (out.insn_digests(), refs)
    }

    /// Put `words` (built by `f(pc of word 0)`) at `rva` in `.text`.
    pub fn place(s: &mut Synth, name: &'static str, rva: u64, f: impl Fn(u64) -> Vec<u32>) {
        let words = f(rva);
        let start = ((rva - s.text.0) / 4) as usize;
        if s.text.1.len() < start + words.len() {
            s.text.1.resize(start + words.len(), NOP);
        }
        s.text.1[start..start + words.len()].copy_from_slice(&words);
        s.functions.push((name, rva, 4 * words.len() as u64));
    }

    /// Put `bytes` at `rva` in `.rodata`.
    pub fn put_ro(s: &mut Synth, rva: u64, bytes: &[u8]) {
        let start = (rva - s.rodata.0) as usize;
        if s.rodata.1.len() < start + bytes.len() {
            s.rodata.1.resize(start + bytes.len(), 0);
        }
        s.rodata.1[start..start + bytes.len()].copy_from_slice(bytes);
    }

    /// A data object `name` of `size` bytes at `rva` in `.data`.
    pub fn put_data(s: &mut Synth, name: &'static str, rva: u64, size: u64) {
        let end = (rva - s.data.0 + size) as usize;
        if s.data.1.len() < end {
            s.data.1.resize(end, 0);
        }
        s.objects.push((name, rva, size));
    }

    /// A relocation of `width` bytes at `rva` pointing at `target`.
    pub fn reloc(rva: u64, width: u8, target: RelocTarget) -> Relocation {
        Relocation { rva, width, target }
    }
}

#[cfg(test)]
mod tests {
    use super::synth::*;
    use super::{Event, PageFlow, Scanner};
    use crate::testutil::{corpus, read};
    use hotpatch_formats::read::{load_file, parse};
    use hotpatch_formats::RelocTarget;

    /// The anchors one function of a corpus image contributes: normalised
    /// against an unfinished index.
    fn refs_of(path: &std::path::Path, name: &str) -> Vec<u64> {
        let (bytes, opts) = read(path);
        let img = parse(&bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
        let idx = crate::index::ImageIndex::new(&img);
        let g = idx
            .groups
            .iter()
            .position(|g| g.key.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let mut out = Vec::new();
        crate::norm::normalize_group(&idx, g, &mut out);
        out.iter().flat_map(|n| n.anchors.iter().copied()).collect()
    }

    /// gcc 12 aarch64 (05-jump-table, ELF): `cmp w0, #0xd; b.ls` guards
    /// `adrp; add; ldrb w3, [x3, w0, uxtw]; adr; add x3, x0, w3, sxtb #2;
    /// br x3`. The table (14 byte entries at .rodata 0x47c) is bounded by
    /// anchors at both of its ends.
    #[test]
    fn jump_table_gcc_elf_byte_entries() {
        let dir = corpus().join("05-jump-table/bin/aarch64-linux");
        let refs = refs_of(&dir.join("v1.so"), "vm_exec");
        assert!(
            refs.contains(&0x47c) && refs.contains(&(0x47c + 14)),
            "{refs:x?}"
        );
        let refs = refs_of(&dir.join("v2.so"), "vm_exec");
        assert!(
            refs.contains(&0x48c) && refs.contains(&(0x48c + 14)),
            "{refs:x?}"
        );
    }

    /// clang-19 aarch64-pc-windows-msvc (05-jump-table, PE): `cmp x0, #0xd;
    /// b.hi` then `adrp x8; add x8; adr x9; ldrb w10, [x8, x0]; add x9, x9,
    /// x10, lsl #2; br x9`: 14 byte entries at the start of .rdata. Without
    /// the end anchor the table's block would run into the debug directory.
    #[test]
    fn jump_table_clang_pe_byte_entries() {
        let dir = corpus().join("05-jump-table/bin/aarch64-windows");
        let refs = refs_of(&dir.join("v1.dll"), "vm_exec");
        assert!(
            refs.contains(&0x2000) && refs.contains(&0x200e),
            "{refs:x?}"
        );
    }

    /// The gcc shape, hand-assembled: unchanged code and table at other
    /// addresses compare equal; a changed entry does not.
    #[test]
    fn jump_table_gcc_shape_moves_and_changes() {
        let code = |table: u64| {
            move |pc: u64| {
                vec![
                    0x7100_0c1f,                  // cmp w0, #3
                    bcond(8, pc + 4, pc + 64),    // b.hi default
                    adrp(1, pc + 8, table),       // adrp x1, table
                    add_imm(1, 1, table & 0xfff), // add x1, x1, :lo12:table
                    0x3860_4821,                  // ldrb w1, [x1, w0, uxtw]
                    adr(2, pc + 20, pc + 32),     // adr x2, anchor
                    0x8b21_8841,                  // add x1, x2, w1, sxtb #2
                    0xd61f_0020,                  // br x1
                    movz(0, 1),
                    RET,
                    movz(0, 2),
                    RET,
                    movz(0, 3),
                    RET,
                    movz(0, 4),
                    RET,
                    0x9280_0000, // mov x0, #-1
                    RET,
                ]
            }
        };
        let build = |f: u64, t: u64, entries: [u8; 4]| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            place(&mut s, "f", f, code(t));
            put_ro(&mut s, t, &entries);
            // Unrelated bytes right after the table (nothing refers to
            // them): they must not leak into the table's comparison.
            put_ro(
                &mut s,
                t + 4,
                if f == 0x1000 { b"other\0" } else { b"OTHER\0" },
            );
            s
        };
        let a = build(0x1000, 0x8ff0, [0, 2, 4, 6]);
        let b = build(0x1234, 0x9008, [0, 2, 4, 6]);
        let c = build(0x1234, 0x9008, [0, 2, 6, 4]);
        assert_eq!(norm(&a, "f").0, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
    }

    /// LLVM's uncompressed form: 4-byte entries relative to the table itself
    /// (`ldrsw x9, [x8, x0, lsl #2]; add x8, x8, x9; br x8`). The entries
    /// change with the distance between code and table, the targets do not.
    #[test]
    fn jump_table_table_relative_word_entries() {
        let code = |table: u64| {
            move |pc: u64| {
                vec![
                    0xf100_0c1f,                  // cmp x0, #3
                    bcond(8, pc + 4, pc + 60),    // b.hi default
                    adrp(8, pc + 8, table),       // adrp x8, table
                    add_imm(8, 8, table & 0xfff), // add x8, x8, :lo12:table
                    0xb8a0_7909,                  // ldrsw x9, [x8, x0, lsl #2]
                    0x8b09_0108,                  // add x8, x8, x9
                    0xd61f_0100,                  // br x8
                    movz(0, 1),
                    RET,
                    movz(0, 2),
                    RET,
                    movz(0, 3),
                    RET,
                    movz(0, 4),
                    RET,
                    0x9280_0000, // mov x0, #-1
                    RET,
                ]
            }
        };
        let build = |f: u64, t: u64, cases: [u64; 4]| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            place(&mut s, "f", f, code(t));
            let entries: Vec<u8> = cases
                .iter()
                .flat_map(|c| ((f + c).wrapping_sub(t) as u32).to_le_bytes())
                .collect();
            put_ro(&mut s, t, &entries);
            s
        };
        let a = build(0x1000, 0x8ff0, [28, 36, 44, 52]);
        let b = build(0x1408, 0x9100, [28, 36, 44, 52]);
        let c = build(0x1408, 0x9100, [28, 44, 36, 52]);
        assert_eq!(norm(&a, "f").0, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
    }

    /// A jump table placed in the code right after the dispatch (as some
    /// toolchains do): its words are data, not decoded instructions, and its
    /// entries still decide the comparison.
    #[test]
    fn jump_table_inside_code() {
        let build = |f: u64, entries: [u8; 4]| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            place(&mut s, "f", f, move |pc| {
                let mut w = vec![
                    0x7100_0c1f,               // cmp w0, #3
                    bcond(8, pc + 4, pc + 64), // b.hi default
                    adr(1, pc + 8, pc + 28),   // adr x1, table
                    0x3860_4821,               // ldrb w1, [x1, w0, uxtw]
                    adr(2, pc + 16, pc + 32),  // adr x2, anchor
                    0x8b21_8841,               // add x1, x2, w1, sxtb #2
                    0xd61f_0020,               // br x1
                    u32::from_le_bytes(entries),
                    movz(0, 1), // anchor + 0
                    RET,
                    movz(0, 2), // anchor + 8
                    RET,
                    movz(0, 3), // anchor + 16
                    RET,
                    NOP,
                    NOP,
                    0x9280_0000, // default (+64): mov x0, #-1
                    RET,
                ];
                w.resize(28, NOP);
                w.extend([movz(0, 4), RET]); // anchor + 80
                w
            });
            s
        };
        // The last entry (20) makes the table word 0x14040200, which would
        // decode as a `B` far outside the function, whose target moves with
        // the function: only as data does it compare equal.
        let (a, b, c) = (
            build(0x1000, [0, 2, 4, 20]),
            build(0x1404, [0, 2, 4, 20]),
            build(0x1404, [0, 4, 2, 20]),
        );
        assert_eq!(norm(&a, "f").0, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
    }

    /// `ADRP` + `LDR` with the object at addresses whose page/lo12 split
    /// differs compares equal; another object does not; the object is noted.
    #[test]
    fn adrp_consumer_resolves_full_target() {
        let build = |f: u64, obj: u64, use_other: bool| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "counter", obj, 8);
            put_data(&mut s, "other", obj + 8, 8);
            let t = if use_other { obj + 8 } else { obj };
            place(&mut s, "f", f, move |pc| {
                vec![
                    adrp(8, pc, t),
                    ldr_w(0, 8, t & 0xfff),
                    add_imm(1, 8, t & 0xfff),
                    ldr_x(2, 8, t & 0xfff),
                    RET,
                ]
            });
            s
        };
        let a = build(0x1000, 0xcff8, false);
        let b = build(0x2004, 0xd010, false);
        let c = build(0x2004, 0xd010, true);
        let (ha, ra) = norm(&a, "f");
        assert_eq!(ha, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
        assert!(ra.iter().any(|r| r == "counter"), "{ra:?}");
    }

    /// GCC keeps an `ADRP` page live across a branch and adds the low bits
    /// in place on each path (`add x3, x3, :lo12:sym` twice). The second
    /// path, placed after the first one's `ret`, inherits the page from the
    /// branch, not the address the first path left in the register.
    #[test]
    fn adrp_page_flows_along_branches() {
        let build = |f: u64, obj: u64| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "counter", obj, 16);
            place(&mut s, "f", f, move |pc| {
                vec![
                    adrp(3, pc, obj),
                    0xb400_0080,                // cbz x0, +16 (word 5)
                    add_imm(3, 3, obj & 0xfff), // add x3, x3, :lo12:counter
                    ldr_x(0, 3, 0),
                    RET,
                    add_imm(3, 3, obj & 0xfff), // add x3, x3, :lo12:counter
                    ldr_x(0, 3, 8),
                    RET,
                ]
            });
            s
        };
        let a = build(0x1000, 0xc010);
        let b = build(0x1404, 0xd3f0);
        assert_eq!(norm(&a, "f").0, norm(&b, "f").0);
    }

    /// Code after a `RET` entered only by a forward branch taken while no
    /// register held a page starts with no pages, not with those of the path
    /// textually before it (GCC 12, generated `ui_map_04692`: a jump table's
    /// cases then took `add x20, x20, #0xf` for an `:lo12:` of a stale page).
    #[test]
    fn page_is_not_inherited_through_a_branch_that_held_none() {
        let build = |f: u64, obj: u64| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "counter", obj, 16);
            place(&mut s, "f", f, move |pc| {
                vec![
                    adrp(20, pc, obj),
                    0xb500_00a1, // cbnz x1, +20 (word 6): x20 holds the page
                    add_imm(20, 20, obj & 0xfff),
                    ldr_x(20, 20, 0),
                    0xb400_0080, // cbz x0, +16 (word 8): no page held
                    RET,
                    movz(0, 1),
                    0x17ff_fffe, // b word 5
                    add_imm(20, 20, 0xf),
                    RET,
                ]
            });
            s
        };
        assert_eq!(
            norm(&build(0x1000, 0xc010), "f").0,
            norm(&build(0x1404, 0xd3f0), "f").0
        );
    }

    /// Two switches: a case of the first is entered in the state of the
    /// first's dispatch, where `x2` holds no page, even though the second's
    /// dispatch (the last indirect branch before it) holds one in `x2`
    /// (GCC 12, generated aarch64 `log_hash_18590`: the first table's case
    /// `add x2, x2, #0x67` was taken for an `:lo12:` of the second path's
    /// page, and the function compared as changed whenever that page moved).
    /// A case of the second table still resolves `x2`'s page.
    #[test]
    fn jump_table_cases_enter_with_their_own_dispatch_state() {
        let build = |f: u64, obj: u64, t1: u64, t2: u64| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "table", obj, 0x100);
            // Case offsets from the anchor (word 19), in words: case A at
            // 0, case B at 2.
            put_ro(&mut s, t1, &[0, 0]);
            put_ro(&mut s, t2, &[2, 2]);
            place(&mut s, "f", f, move |pc| {
                let w = |k: u64| pc + 4 * k;
                vec![
                    adrp(2, w(0), obj),         // 0: x2 = page of `table`
                    0x7100_041f,                // 1: cmp w0, #1
                    bcond(9, w(2), w(13)),      // 2: b.ls D2 (x2 a page)
                    movz(2, 5),                 // 3: x2 = 5
                    0x7100_047f,                // 4: cmp w3, #1
                    bcond(9, w(5), w(7)),       // 5: b.ls D1 (no page)
                    RET,                        // 6
                    adrp(1, w(7), t1),          // 7: D1
                    add_imm(1, 1, t1 & 0xfff),  // 8
                    0x3863_4821,                // 9: ldrb w1, [x1, w3, uxtw]
                    adr(4, w(10), w(19)),       // 10: adr x4, cases
                    0x8b21_8881,                // 11: add x1, x4, w1, sxtb #2
                    0xd61f_0020,                // 12: br x1
                    adrp(5, w(13), t2),         // 13: D2
                    add_imm(5, 5, t2 & 0xfff),  // 14
                    0x3860_48a5,                // 15: ldrb w5, [x5, w0, uxtw]
                    adr(4, w(16), w(19)),       // 16: adr x4, cases
                    0x8b25_8885,                // 17: add x5, x4, w5, sxtb #2
                    0xd61f_00a0,                // 18: br x5
                    add_imm(2, 2, 0x67),        // 19: case A: x2 += 0x67
                    RET,                        // 20
                    add_imm(3, 2, obj & 0xfff), // 21: case B: x3 = &table
                    RET,                        // 22
                ]
            });
            s
        };
        let a = norm(&build(0x1000, 0xc010, 0x8100, 0x8200), "f");
        let b = norm(&build(0x1404, 0xdff0, 0x8f00, 0x8a00), "f");
        assert_eq!(a.0, b.0);
        // Case B's consumer is `table` itself (by name, in both builds).
        assert_eq!(a.1, ["table"]);
        assert_eq!(b.1, ["table"]);
    }

    /// One jump table reached from many dispatches (a crafted function:
    /// `K` copies of `cmp; b.hi; adrp; add; ldrb; adr; add; br` on one table
    /// of `N` entries). The table is written out once, not once per
    /// dispatch, so the work is linear in the function: the references the
    /// part records grow with `K + N`, not `K * N`.
    #[test]
    fn jump_table_reached_from_many_dispatches_is_walked_once() {
        const K: u64 = 2000;
        const N: u64 = 2000;
        let table = 0x10_0000;
        let mut s = Synth::new(0x1000, table, 0x20_0000);
        // Byte entries of 0: every case is the first word after the cases'
        // anchor.
        put_ro(&mut s, table, &[0; N as usize]);
        place(&mut s, "f", 0x1000, |pc| {
            let cases = pc + 4 * (8 * K);
            let mut words = Vec::new();
            for k in 0..K {
                let w = |i: u64| pc + 4 * (8 * k + i);
                words.extend([
                    0x7100_001f | (((N - 1) as u32) << 10), // cmp w0, #N-1
                    bcond(8, w(1), cases),                  // b.hi cases
                    adrp(1, w(2), table),
                    add_imm(1, 1, table & 0xfff),
                    0x3860_4821, // ldrb w1, [x1, w0, uxtw]
                    adr(4, w(5), cases),
                    0x8b21_8881, // add x1, x4, w1, sxtb #2
                    0xd61f_0020, // br x1
                ]);
            }
            words.push(RET);
            words
        });
        let text = s.text_bytes();
        let img = s.image(&text);
        let ix = index(&img);
        let g = ix.groups.iter().position(|g| g.key.name == "f").unwrap();
        let mut out = crate::norm::Normalized::default();
        crate::norm::normalize_part(&ix, g, 0, &mut out);
        // Every dispatch is recognised: all but the first name the table.
        let again = out
            .words
            .iter()
            .filter(|&&w| w == u64::from(super::TAG_TABLE_AGAIN))
            .count() as u64;
        assert_eq!(again, K - 1);
        // N entries once, plus the branches and `adr`s of every copy.
        assert!(
            (out.places.len() as u64) < N + 3 * K,
            "{} places",
            out.places.len()
        );
    }

    /// Every AArch64 address field the normaliser records for a packager
    /// reads back, with its kind at its own address, as its target (the
    /// page, for an `ADRP`; the low 12 bits, for its users), and every page
    /// user has an `ADRP` of the same register and page in its function:
    /// on every function of every AArch64 corpus image, ELF and PE.
    #[test]
    fn address_fields_read_back_as_their_targets() {
        use crate::norm::{normalize_group_with_fields, FieldKind};
        use hotpatch_formats::package::{RelocKind, Site};
        use hotpatch_formats::read::parse;
        let mut checked = 0;
        for scenario in std::fs::read_dir(crate::testutil::corpus()).unwrap() {
            let scenario = scenario.unwrap().path();
            for target in ["aarch64-linux", "aarch64-windows"] {
                let Ok(files) = std::fs::read_dir(scenario.join("bin").join(target)) else {
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
                        let pages: Vec<(u8, u64)> = parts
                            .iter()
                            .flat_map(|n| &n.fields)
                            .filter(|f| f.kind == FieldKind::Reloc(RelocKind::A64AdrpPage21))
                            .map(|f| (f.reg.unwrap(), f.target))
                            .collect();
                        for (p, n) in parts.iter().enumerate() {
                            let part = &idx.parts(g)[p];
                            let code = img.bytes_at(part.rva, part.size).unwrap();
                            for f in &n.fields {
                                let FieldKind::Reloc(kind) = f.kind else {
                                    continue;
                                };
                                let at = f.offset as usize;
                                let site = Site {
                                    address: part.rva + u64::from(f.offset),
                                    image_base: img.preferred_base,
                                };
                                let got = kind.read(&code[at..], site).unwrap();
                                let want = match kind {
                                    RelocKind::A64Lo12 { .. } | RelocKind::A64PairLo12 { .. } => {
                                        let page = f.target & !0xfff;
                                        assert!(
                                            pages.contains(&(f.reg.unwrap(), page)),
                                            "{} {:?}: no ADRP of x{} page {page:#x}",
                                            path.display(),
                                            f,
                                            f.reg.unwrap()
                                        );
                                        f.target & 0xfff
                                    }
                                    RelocKind::Abs64 => f.target + img.preferred_base,
                                    _ => f.target,
                                };
                                assert_eq!(got, want, "{} {:?}", path.display(), f);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// A register overwritten after its `ADRP` is no longer a page: an
    /// immediate offset from it is compared as written.
    #[test]
    fn overwritten_adrp_register_is_forgotten() {
        let build = |imm: u64| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "counter", 0xc000, 8);
            place(&mut s, "f", 0x1000, move |pc| {
                vec![
                    adrp(8, pc, 0xc000),
                    0xaa00_03e8, // mov x8, x0
                    ldr_w(0, 8, imm),
                    RET,
                ]
            });
            s
        };
        assert_ne!(norm(&build(8), "f").0, norm(&build(16), "f").0);
    }

    /// Calls compare by callee, not by distance.
    #[test]
    fn calls_compare_by_callee() {
        let build = |f: u64, g: u64, h: u64, call_h: bool| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            place(&mut s, "g", g, |_| vec![RET]);
            place(&mut s, "h", h, |_| vec![RET]);
            let t = if call_h { h } else { g };
            place(&mut s, "f", f, move |pc| vec![bl(pc, t), RET]);
            s
        };
        let a = build(0x1000, 0x1100, 0x1200, false);
        let b = build(0x1400, 0x1000, 0x1100, false);
        let c = build(0x1400, 0x1000, 0x1100, true);
        assert_eq!(norm(&a, "f").0, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
    }

    /// A literal pool inside the function: the load hashes the value, and
    /// the pool's words are data (one token per word), not instructions.
    #[test]
    fn literal_pool_is_data() {
        let build = |f: u64, value: u64| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            place(&mut s, "f", f, move |pc| {
                vec![
                    ldr_lit(0, pc, pc + 8),
                    RET,
                    value as u32,
                    (value >> 32) as u32,
                ]
            });
            s
        };
        let a = build(0x1000, 0x1122_3344_5566_7788);
        let b = build(0x1804, 0x1122_3344_5566_7788);
        let c = build(0x1804, 0x1122_3344_5566_7789);
        let (ha, _) = norm(&a, "f");
        assert_eq!(ha.len(), 4);
        assert_eq!(ha, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
    }

    /// A relocated absolute pointer in a literal pool (as in a PE image)
    /// compares by what it points at, not by its bytes.
    #[test]
    fn relocated_literal_compares_by_target() {
        let build = |f: u64, obj: u64, other: bool| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "counter", obj, 8);
            put_data(&mut s, "other", obj + 8, 8);
            let t = if other { obj + 8 } else { obj };
            let abs = 0x1_8000_0000u64 + t;
            place(&mut s, "f", f, move |pc| {
                vec![ldr_lit(0, pc, pc + 8), RET, abs as u32, (abs >> 32) as u32]
            });
            s.relocations.push(reloc(f + 8, 8, RelocTarget::Rva(t)));
            s
        };
        let a = build(0x1000, 0xc000, false);
        let b = build(0x1804, 0xc100, false);
        let c = build(0x1804, 0xc100, true);
        let (ha, ra) = norm(&a, "f");
        assert_eq!(ha, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
        assert!(ra.iter().any(|r| r == "counter"), "{ra:?}");
    }

    /// A call through a PLT entry compares by the symbol of its GOT slot.
    #[test]
    fn plt_call_compares_by_symbol() {
        let build = |f: u64, plt: u64, slot: u64, name: &str| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            put_data(&mut s, "pad", 0xc000, 8);
            s.data.1.resize((slot - 0xc000 + 8) as usize, 0);
            place(&mut s, "f", f, move |pc| vec![bl(pc, plt), RET]);
            let stub = [
                adrp(16, plt, slot),
                ldr_x(17, 16, slot & 0xfff),
                add_imm(16, 16, slot & 0xfff),
                0xd61f_0220, // br x17
            ];
            let start = ((plt - s.text.0) / 4) as usize;
            s.text.1.resize(start + 4, NOP);
            s.text.1[start..].copy_from_slice(&stub);
            s.relocations.push(reloc(
                slot,
                8,
                RelocTarget::Symbol {
                    name: name.to_string(),
                    addend: 0,
                },
            ));
            s
        };
        let a = build(0x1000, 0x1100, 0xc018, "ext");
        let b = build(0x1010, 0x1200, 0xc020, "ext");
        let c = build(0x1010, 0x1200, 0xc020, "ext2");
        assert_eq!(norm(&a, "f").0, norm(&b, "f").0);
        assert_ne!(norm(&b, "f").0, norm(&c, "f").0);
    }

    /// `CBZ xt, target` at `pc`.
    fn cbz(rt: u32, pc: u64, target: u64) -> u32 {
        0xb400_0000 | (((target.wrapping_sub(pc) as u32 >> 2) & 0x7_ffff) << 5) | rt
    }

    /// `long f(long n)`: `mov x1, #0; adr x3, L; cbz x0, EXIT; NOP * pad;
    /// L: OP x1, x1, x0; subs x0, x0, #1; b.ne L; mov x0, x1; ret`, every
    /// target computed for the layout. `op` is the loop's arithmetic (`ADD`
    /// or `SUB` shifted register); `exit_to_loop` sends `cbz` to `L` instead
    /// of the `mov` after the loop.
    fn loop_fn(pad: usize, op: u32, exit_to_loop: bool) -> impl Fn(u64) -> Vec<u32> {
        move |pc| {
            let head = pc + 12 + 4 * pad as u64;
            let exit = if exit_to_loop { head } else { head + 12 };
            let mut w = vec![movz(1, 0), adr(3, pc + 4, head), cbz(0, pc + 8, exit)];
            w.extend(std::iter::repeat_n(NOP, pad));
            w.extend([op, 0xf100_0400, bcond(1, head + 8, head), 0xaa01_03e0, RET]);
            w
        }
    }

    /// `ADD x1, x1, x0`.
    const ADD: u32 = 0x8b00_0021;
    /// `SUB x1, x1, x0`.
    const SUB: u32 = 0xcb00_0021;

    /// The hashes of `f` built by `code`, placed at `at`.
    fn loop_hashes(at: u64, code: impl Fn(u64) -> Vec<u32>) -> Vec<u64> {
        let mut s = Synth::new(0x1000, 0x8000, 0xc000);
        place(&mut s, "f", at, code);
        norm(&s, "f").0
    }

    /// GCC 12 without `-ffunction-sections` aligns functions to 4 and loop
    /// heads to 8: an unchanged function gains or loses a `NOP` before its
    /// loop when an earlier function of its unit changes size. With and
    /// without it (branches and `ADR` re-targeted, placed elsewhere) the
    /// function compares equal; a real change next to the padding differs.
    #[test]
    fn alignment_nops_inside_unchanged_function_compare_equal() {
        let plain = loop_hashes(0x1000, loop_fn(0, ADD, false));
        assert_eq!(plain, loop_hashes(0x1404, loop_fn(1, ADD, false)));
        assert_eq!(plain, loop_hashes(0x1208, loop_fn(3, ADD, false)));
        assert_ne!(plain, loop_hashes(0x1404, loop_fn(1, SUB, false)));
        // Other hints are not padding (`YIELD`).
        let mut s = Synth::new(0x1000, 0x8000, 0xc000);
        place(&mut s, "f", 0x1404, |pc| {
            let mut w = loop_fn(1, ADD, false)(pc);
            w[3] = 0xd503_203f;
            w
        });
        assert_ne!(plain, norm(&s, "f").0);
    }

    /// Padding that appears together with a branch to another instruction:
    /// the position-based comparison still sees the new target.
    #[test]
    fn nop_only_change_does_not_hide_branch_target_change() {
        let plain = loop_hashes(0x1000, loop_fn(0, ADD, false));
        let retargeted = loop_hashes(0x1000, loop_fn(1, ADD, true));
        assert_ne!(plain, retargeted);
        assert_eq!(loop_hashes(0x1000, loop_fn(0, ADD, true)), retargeted);
        // Three NOPs put `L` at the byte offset the old exit had: still the
        // loop head, not the exit.
        assert_ne!(plain, loop_hashes(0x1000, loop_fn(3, ADD, true)));
    }

    /// A literal pool after padding: the load compares by the pool's place
    /// and value, the `NOP` word inside the pool is data, not padding.
    #[test]
    fn nop_word_in_literal_pool_is_data() {
        let build = |pad: usize, value: u32| {
            move |pc: u64| {
                let pool = pc + 8 + 4 * pad as u64;
                let mut w = vec![0x1800_0000 | (((pool - pc) as u32 >> 2) << 5), RET];
                w.extend(std::iter::repeat_n(NOP, pad));
                w.push(value);
                w
            }
        };
        let plain = loop_hashes(0x1000, build(0, NOP));
        assert_eq!(plain.len(), 3);
        assert_eq!(plain, loop_hashes(0x1104, build(1, NOP)));
        assert_ne!(plain, loop_hashes(0x1104, build(1, RET)));
    }

    /// Arbitrary bytes never panic, give one token per word plus one for a
    /// trailing partial word, and compare equal wherever they are placed
    /// when they contain no PC-relative forms.
    #[test]
    fn arbitrary_bytes_are_covered() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut words = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words.push(x as u32);
        }
        let mut s = Synth::new(0x1000, 0x8000_0000, 0x9000_0000);
        place(&mut s, "f", 0x1000, |_| words.clone());
        let mut text = s.text_bytes();
        text.extend_from_slice(&[0xaa, 0xbb]);
        s.functions[0].2 += 2;
        let img = s.image(&text);
        let ix = super::synth::index(&img);
        let mut out = crate::norm::Normalized::default();
        crate::norm::normalize_part(&ix, 0, 0, &mut out);
        assert_eq!(out.insns.len(), 20_001);
        // Scanning at the very top of the address space wraps, never
        // overflows.
        let mut refs = Vec::new();
        for rva in [0, u64::MAX - 8, !3u64] {
            Scanner::new(&img, &text, rva, Vec::new()).run(|_, ev| {
                if let Event::Target { target, .. } = ev {
                    refs.push(target);
                }
            });
        }
        assert!(!refs.is_empty());
        assert_eq!(out.insns.last().map(|i| i.len), Some(2));
        // Undecodable words compare by their bytes.
        let raw = |w: u32| {
            let mut s = Synth::new(0x1000, 0x8000, 0xc000);
            place(&mut s, "f", 0x1000, move |_| vec![w, RET]);
            norm(&s, "f").0
        };
        assert_eq!(raw(0xffff_ffff), raw(0xffff_ffff));
        assert_ne!(raw(0xffff_ffff), raw(0xffff_fffe));
    }

    /// The committed corpus: reading it must work (the other tests rely on it).
    #[test]
    fn corpus_is_readable() {
        let p = corpus().join("12-relink-order/bin/aarch64-linux/v1.so");
        let bytes = load_file(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(parse(&bytes, &hotpatch_formats::ReadOptions::new(&p)).is_ok());
    }

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// `STR xt, [xn, #imm]` (imm a multiple of 8).
    fn str_x(rt: u32, rn: u32, imm: u64) -> u32 {
        0xf900_0000 | (((imm as u32 & 0xfff) / 8) << 10) | (rn << 5) | rt
    }

    /// The pairing behind the fix for 07-new-global on aarch64-windows:
    /// an `ADRP` whose register dies in straight-line code serves exactly
    /// the users before that point; anything that could carry its page
    /// further, or bring another page to its users, leaves it unproven.
    #[test]
    fn page_flow_proves_only_straight_line_adrp_users() {
        let p = 0x3000;
        // adrp x10; add x10, x10, #8; ret: one user, which kills x10.
        let code = words(&[adrp(10, 0, p), add_imm(10, 10, 8), RET]);
        assert_eq!(
            PageFlow::new(&code, [], 0).sole_users(0, &[4]),
            Some(vec![4])
        );
        // Two users, the second of which overwrites x10; a NOP between.
        let code = words(&[
            adrp(10, 0, p),
            add_imm(11, 10, 8),
            NOP,
            ldr_x(10, 10, 16),
            RET,
        ]);
        let flow = PageFlow::new(&code, [], 0);
        assert_eq!(flow.sole_users(0, &[4, 12]), Some(vec![4, 12]));
        // Not an ADRP, or a user list that misses an instruction naming x10.
        assert_eq!(flow.sole_users(4, &[4, 12]), None);
        assert_eq!(flow.sole_users(0, &[4]), None);
        // A branch before the register dies: the page may flow on.
        let code = words(&[
            adrp(10, 0, p),
            bcond(0, 4, 16),
            add_imm(10, 10, 8),
            RET,
            RET,
        ]);
        assert_eq!(PageFlow::new(&code, [], 0).sole_users(0, &[8]), None);
        // A user that later code branches to may see another page.
        let code = words(&[
            adrp(10, 0, p),
            add_imm(10, 10, 8),
            RET,
            adrp(10, 12, p),
            bcond(0, 16, 4),
            RET,
        ]);
        let flow = PageFlow::new(&code, [], 0);
        assert_eq!(flow.sole_users(0, &[4]), None);
        // ... or that the caller knows is entered from elsewhere (a case
        // of a jump table, a branch from a `.cold` part).
        let code = words(&[adrp(10, 0, p), add_imm(10, 10, 8), RET]);
        assert_eq!(PageFlow::new(&code, [4], 1).sole_users(0, &[4]), None);
        // A store of the page itself lets it escape.
        let code = words(&[adrp(10, 0, p), str_x(10, 10, 8), add_imm(10, 10, 8), RET]);
        assert_eq!(PageFlow::new(&code, [], 0).sole_users(0, &[4, 8]), None);
        // An indirect branch with no known table may land anywhere.
        let br_x9 = 0xd61f_0120;
        let code = words(&[adrp(10, 0, p), add_imm(10, 10, 8), br_x9]);
        assert_eq!(PageFlow::new(&code, [], 0).sole_users(0, &[4]), None);
        assert_eq!(
            PageFlow::new(&code, [], 1).sole_users(0, &[4]),
            Some(vec![4])
        );
        // Another ADRP, or a MOVZ, into the register ends its value;
        // a MOVK reads it.
        let code = words(&[adrp(10, 0, p), ldr_w(0, 10, 4), adrp(10, 8, p), RET]);
        assert_eq!(
            PageFlow::new(&code, [], 0).sole_users(0, &[4]),
            Some(vec![4])
        );
        let code = words(&[adrp(10, 0, p), ldr_w(0, 10, 4), movz(10, 1), RET]);
        assert_eq!(
            PageFlow::new(&code, [], 0).sole_users(0, &[4]),
            Some(vec![4])
        );
        let movk_x10 = 0xf280_002a;
        let code = words(&[adrp(10, 0, p), ldr_w(0, 10, 4), movk_x10, RET]);
        assert_eq!(PageFlow::new(&code, [], 0).sole_users(0, &[4]), None);
        // Running off the end of the part.
        let code = words(&[adrp(10, 0, p), add_imm(11, 10, 8)]);
        assert_eq!(PageFlow::new(&code, [], 0).sole_users(0, &[4]), None);
    }
}
