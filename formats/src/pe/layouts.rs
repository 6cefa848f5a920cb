//! Struct, union and class layouts, and the types each function uses, from
//! the PDB (see [`crate::types`] for the model's conventions).
//!
//! Layouts come from the type stream (TPI): every `LF_STRUCTURE`,
//! `LF_CLASS`, `LF_INTERFACE` and `LF_UNION` that is a definition (forward
//! references are skipped; lld merges identical records, so each distinct
//! definition appears once) and has a name (`<unnamed-tag>` placeholders are
//! anonymous), with the members of its `LF_FIELDLIST` (and the lists that
//! `LF_INDEX` continues it with): `LF_MEMBER` (its size from its type,
//! through forward references; `LF_BITFIELD` for bit-fields), `LF_BCLASS`
//! (a field `base <class>`) and `LF_VFUNCTAB` (a field `vfptr`). Virtual
//! base classes (`LF_VBCLASS`, `LF_IVBCLASS`) have no fixed offset and are
//! left out; static members, methods, nested types and friends are not
//! fields. Members with no name whose type is a record are flattened.
//!
//! Uses come from the procedure records of every module's symbols:
//! `S_GPROC32`/`S_LPROC32` (their `LF_PROCEDURE` or `LF_MFUNCTION` type:
//! return type, `this` and arguments) and the `_ID` and `_DPC` variants
//! (through the item stream's `LF_FUNC_ID`/`LF_MFUNC_ID`), and every
//! `S_LOCAL`, `S_REGREL32`, `S_BPREL32`, `S_CONSTANT` and `S_LDATA32` in their
//! scope, including inside `S_BLOCK32` and `S_INLINESITE` (whose inlinee's
//! signature counts too). CodeView has no typedef records, so chains go
//! through `LF_POINTER`, `LF_MODIFIER` and `LF_ARRAY` to a record.
//!
//! The streams are decoded by this crate, not by the `pdb` crate's parsers
//! (see [`super::symbols`]): [`super::symbols::read`] finds the type and
//! item streams and walks every module's symbol records once, handing each
//! record to a [`Reader`] as well as using it for functions and data.

use std::collections::HashMap;

use super::cursor::Cursor;
use super::types::{aggregate, numeric, TypeTable};
use super::SectionInfo;
use crate::image::{Field, TypeInfo, TypeKind, TypeLayout, TypeUse};
use crate::name::escape_name;
use crate::types::{is_placeholder_name, Found, MAX_CHAIN, MAX_FLATTEN, MAX_MEMBERS};

/// The first index of a record in the type and item streams.
const FIRST_NON_PRIMITIVE: u32 = 0x1000;

// Type leaves.
/// `LF_MODIFIER`.
const LF_MODIFIER: u16 = 0x1001;
/// `LF_POINTER`.
const LF_POINTER: u16 = 0x1002;
/// `LF_PROCEDURE`.
const LF_PROCEDURE: u16 = 0x1008;
/// `LF_MFUNCTION`.
const LF_MFUNCTION: u16 = 0x1009;
/// `LF_ARGLIST`.
const LF_ARGLIST: u16 = 0x1201;
/// `LF_FIELDLIST`.
const LF_FIELDLIST: u16 = 0x1203;
/// `LF_BITFIELD`.
const LF_BITFIELD: u16 = 0x1205;
/// `LF_ARRAY`.
const LF_ARRAY: u16 = 0x1503;
/// `LF_CLASS`.
const LF_CLASS: u16 = 0x1504;
/// `LF_STRUCTURE`.
const LF_STRUCTURE: u16 = 0x1505;
/// `LF_UNION`.
const LF_UNION: u16 = 0x1506;
/// `LF_INTERFACE`.
const LF_INTERFACE: u16 = 0x1519;
/// `LF_FUNC_ID` (item stream).
const LF_FUNC_ID: u16 = 0x1601;
/// `LF_MFUNC_ID` (item stream).
const LF_MFUNC_ID: u16 = 0x1602;

// Field list members.
/// `LF_BCLASS`.
const LF_BCLASS: u16 = 0x1400;
/// `LF_VBCLASS`.
const LF_VBCLASS: u16 = 0x1401;
/// `LF_IVBCLASS`.
const LF_IVBCLASS: u16 = 0x1402;
/// `LF_INDEX`.
const LF_INDEX: u16 = 0x1404;
/// `LF_VFUNCTAB`.
const LF_VFUNCTAB: u16 = 0x1409;
/// `LF_FRIENDCLS`.
const LF_FRIENDCLS: u16 = 0x140b;
/// `LF_VFUNCOFF`.
const LF_VFUNCOFF: u16 = 0x140c;
/// `LF_ENUMERATE`.
const LF_ENUMERATE: u16 = 0x1502;
/// `LF_FRIENDFCN`.
const LF_FRIENDFCN: u16 = 0x150c;
/// `LF_MEMBER`.
const LF_MEMBER: u16 = 0x150d;
/// `LF_STMEMBER`.
const LF_STMEMBER: u16 = 0x150e;
/// `LF_METHOD`.
const LF_METHOD: u16 = 0x150f;
/// `LF_NESTTYPE`.
const LF_NESTTYPE: u16 = 0x1510;
/// `LF_ONEMETHOD`.
const LF_ONEMETHOD: u16 = 0x1511;
/// `LF_NESTTYPEEX`.
const LF_NESTTYPEEX: u16 = 0x1512;
/// `LF_MEMBERMODIFY`.
const LF_MEMBERMODIFY: u16 = 0x1513;
/// `LF_BINTERFACE`.
const LF_BINTERFACE: u16 = 0x151a;
/// Field-list padding bytes are `0xf0 | n`: skip `n` bytes.
const LF_PAD0: u8 = 0xf0;

// Symbols.
/// `S_END`.
const S_END: u16 = 0x0006;
/// `S_THUNK32`.
const S_THUNK32: u16 = 0x1102;
/// `S_BLOCK32`.
const S_BLOCK32: u16 = 0x1103;
/// `S_WITH32`.
const S_WITH32: u16 = 0x1104;
/// `S_CONSTANT`.
const S_CONSTANT: u16 = 0x1107;
/// `S_BPREL32`.
const S_BPREL32: u16 = 0x110b;
/// `S_LDATA32`.
const S_LDATA32: u16 = 0x110c;
/// `S_LPROC32`.
const S_LPROC32: u16 = 0x110f;
/// `S_GPROC32`.
const S_GPROC32: u16 = 0x1110;
/// `S_REGREL32`.
const S_REGREL32: u16 = 0x1111;
/// `S_GMANPROC`.
const S_GMANPROC: u16 = 0x112a;
/// `S_LMANPROC`.
const S_LMANPROC: u16 = 0x112b;
/// `S_SEPCODE`.
const S_SEPCODE: u16 = 0x1132;
/// `S_LOCAL`.
const S_LOCAL: u16 = 0x113e;
/// `S_LPROC32_ID`.
const S_LPROC32_ID: u16 = 0x1146;
/// `S_GPROC32_ID`.
const S_GPROC32_ID: u16 = 0x1147;
/// `S_INLINESITE`.
const S_INLINESITE: u16 = 0x114d;
/// `S_INLINESITE_END`.
const S_INLINESITE_END: u16 = 0x114e;
/// `S_PROC_ID_END`.
const S_PROC_ID_END: u16 = 0x114f;
/// `S_LPROC32_DPC`.
const S_LPROC32_DPC: u16 = 0x1155;
/// `S_LPROC32_DPC_ID`.
const S_LPROC32_DPC_ID: u16 = 0x1156;
/// `S_INLINESITE2`.
const S_INLINESITE2: u16 = 0x115d;

/// How deep symbol scopes may nest. Compilers nest blocks and inline sites
/// a few dozen levels at most.
const MAX_SCOPES: usize = 1024;

/// Pointer size of every target of this reader.
const POINTER_SIZE: u64 = 8;

/// Layouts and type uses of one PDB, read while [`super::symbols::read`]
/// walks the module streams: [`Reader::module`] before each module's
/// records, [`Reader::symbol`] for each record, [`Reader::finish`] at the
/// end. Errors describe the damage; the caller adds the PDB's path and where
/// the record is.
pub(super) struct Reader<'t, 'a> {
    /// The type stream (TPI), indexed.
    model: Types<'t, 'a>,
    /// The item stream (IPI).
    ids: &'t TypeTable<'a>,
    /// The image's sections, in table order.
    sections: &'t [SectionInfo],
    /// Record names by type index.
    names: NameCache,
    /// The current module's scan.
    scan: ModuleScan,
    /// The uses of the modules scanned so far.
    uses: Vec<TypeUse>,
}

impl<'t, 'a> Reader<'t, 'a> {
    /// A reader of the type stream `types` and item stream `ids`, or `None`
    /// when the type stream holds no records (the PDB has no type
    /// information: [`Found::absent`]).
    pub(super) fn new(
        types: &'t TypeTable<'a>,
        ids: &'t TypeTable<'a>,
        sections: &'t [SectionInfo],
    ) -> Option<Self> {
        types.records().next()?;
        Some(Reader {
            model: Types::new(types),
            ids,
            sections,
            names: NameCache::default(),
            scan: ModuleScan::default(),
            uses: Vec::new(),
        })
    }

    /// Start the next module: the uses of the last one are complete.
    pub(super) fn module(&mut self) {
        self.end_module();
    }

    /// Take one symbol record of the current module (its kind and the bytes
    /// after the kind).
    pub(super) fn symbol(&mut self, kind: u16, body: &[u8]) -> std::result::Result<(), String> {
        self.scan
            .symbol(&self.model, self.ids, self.sections, kind, body)
    }

    /// Collect the last module's uses and forget its scan.
    fn end_module(&mut self) {
        self.scan.uses(&self.model, &mut self.names, &mut self.uses);
        self.scan.clear();
    }

    /// The layouts of the type stream and the uses of every module.
    pub(super) fn finish(mut self) -> std::result::Result<Found, String> {
        self.end_module();
        let layouts = self.model.layouts()?;
        Ok(Found {
            info: TypeInfo::Read,
            types: layouts,
            uses: self.uses,
            lines: Vec::new(),
        })
    }
}

/// The type stream, indexed for layouts and type chains.
struct Types<'t, 'a> {
    /// The records.
    table: &'t TypeTable<'a>,
    /// Definitions by name (a unique name when the record has one is not
    /// needed: only anonymous members are looked up, by their record).
    definitions: HashMap<&'a [u8], Option<u32>>,
}

impl<'t, 'a> Types<'t, 'a> {
    /// Index the definitions of `table`.
    fn new(table: &'t TypeTable<'a>) -> Self {
        let mut definitions: HashMap<&'a [u8], Option<u32>> = HashMap::new();
        for (index, kind, body) in table.records() {
            if !matches!(kind, LF_CLASS | LF_STRUCTURE | LF_INTERFACE | LF_UNION) {
                continue;
            }
            let Some(agg) = aggregate(kind, body) else {
                continue;
            };
            if agg.forward {
                continue;
            }
            definitions
                .entry(agg.name)
                .and_modify(|d| {
                    // Two definitions with one name: which one a forward
                    // reference means is unknown.
                    *d = None;
                })
                .or_insert(Some(index));
        }
        Types { table, definitions }
    }

    /// The definition of the record at `index`: itself, or for a forward
    /// reference the one definition with its name.
    fn definition(&self, index: u32) -> Option<(u16, &'a [u8])> {
        let (kind, body) = self.table.record(index)?;
        let agg = aggregate(kind, body)?;
        if !agg.forward {
            return Some((kind, body));
        }
        let def = (*self.definitions.get(agg.name)?)?;
        self.table.record(def)
    }

    /// The record a chain of modifiers, pointers and arrays from `index`
    /// ends in: its kind and bytes.
    fn record_of(&self, mut index: u32, through_pointers: bool) -> Option<(u16, &'a [u8])> {
        for _ in 0..MAX_CHAIN {
            if index < FIRST_NON_PRIMITIVE {
                return None;
            }
            let (kind, body) = self.table.record(index)?;
            let mut c = Cursor::new(body);
            index = match kind {
                LF_CLASS | LF_STRUCTURE | LF_INTERFACE | LF_UNION => return Some((kind, body)),
                LF_MODIFIER => c.u32()?,
                LF_POINTER | LF_ARRAY if through_pointers => c.u32()?,
                _ => return None,
            };
        }
        None
    }

    /// The name of the record type `index` reaches, if it is a named record.
    fn record_name_of(&self, index: u32) -> Option<String> {
        let (kind, body) = self.record_of(index, true)?;
        let agg = aggregate(kind, body)?;
        (!is_placeholder_name(agg.name)).then(|| escape_name(agg.name))
    }

    /// Every named record definition as a layout.
    fn layouts(&self) -> std::result::Result<Vec<TypeLayout>, String> {
        let mut out = Vec::new();
        for (index, kind, body) in self.table.records() {
            let kind_of = match kind {
                LF_STRUCTURE => TypeKind::Struct,
                LF_CLASS | LF_INTERFACE => TypeKind::Class,
                LF_UNION => TypeKind::Union,
                _ => continue,
            };
            let agg = aggregate(kind, body).ok_or_else(|| {
                format!(
                    "type record {index:#x} (a {}) is truncated",
                    kind_of.keyword()
                )
            })?;
            if agg.forward || is_placeholder_name(agg.name) {
                continue;
            }
            let size = agg.size.ok_or_else(|| {
                format!(
                    "type record {index:#x} (a {}) has an unreadable size",
                    kind_of.keyword()
                )
            })?;
            let mut fields = Vec::new();
            let mut budget = MAX_MEMBERS;
            self.fields(agg.fields, 0, 0, &mut fields, &mut budget)
                .map_err(|e| format!("type record {index:#x} `{}`: {e}", escape_name(agg.name)))?;
            out.push(TypeLayout {
                name: escape_name(agg.name),
                kind: kind_of,
                size,
                fields,
            });
        }
        Ok(out)
    }

    /// The fields of field list `list` (and its continuations), at `base`
    /// bytes into the outermost record, into `out`. Each member record read
    /// takes one from `budget`.
    fn fields(
        &self,
        list: u32,
        base: u64,
        depth: usize,
        out: &mut Vec<Field>,
        budget: &mut usize,
    ) -> std::result::Result<(), String> {
        let mut next = Some(list);
        let mut hops = 0usize;
        while let Some(list) = next.take() {
            if list == 0 {
                break;
            }
            hops = hops.saturating_add(1);
            if hops > MAX_CHAIN {
                return Err(format!(
                    "its field list continues through more than {MAX_CHAIN} LF_INDEX records"
                ));
            }
            let (kind, body) = self
                .table
                .record(list)
                .ok_or_else(|| format!("its field list {list:#x} is not in the type stream"))?;
            if kind != LF_FIELDLIST {
                return Err(format!(
                    "its field list {list:#x} is a record of kind {kind:#06x}"
                ));
            }
            let mut c = Cursor::new(body);
            let truncated = || format!("field list {list:#x} is truncated");
            while let Some(&first) = body.get(c.pos()) {
                if first >= LF_PAD0 {
                    let n = usize::from(first & 0x0f).max(1);
                    if c.take(n).is_none() {
                        break;
                    }
                    continue;
                }
                let leaf = c.u16().ok_or_else(truncated)?;
                *budget = budget.checked_sub(1).ok_or_else(|| {
                    format!(
                        "more than {MAX_MEMBERS} members, counting those of its anonymous members"
                    )
                })?;
                match leaf {
                    LF_MEMBER => {
                        let _attr = c.u16().ok_or_else(truncated)?;
                        let ty = c.u32().ok_or_else(truncated)?;
                        let offset = numeric(&mut c).ok_or_else(truncated)?;
                        let name = c.cstr().ok_or_else(truncated)?;
                        let Some(at) = base.checked_add(offset) else {
                            continue;
                        };
                        self.member(ty, at, name, depth, out, budget)?;
                    }
                    LF_BCLASS | LF_BINTERFACE => {
                        let _attr = c.u16().ok_or_else(truncated)?;
                        let ty = c.u32().ok_or_else(truncated)?;
                        let offset = numeric(&mut c).ok_or_else(truncated)?;
                        let class = self
                            .record_of(ty, false)
                            .and_then(|(k, b)| aggregate(k, b))
                            .map_or_else(|| "?".into(), |a| escape_name(a.name));
                        out.push(Field {
                            offset: base.saturating_add(offset),
                            bit: None,
                            size: self.table.size_of(ty).unwrap_or(0),
                            name: format!("base {class}"),
                        });
                    }
                    LF_VBCLASS | LF_IVBCLASS => {
                        let _attr = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                        let _vbptr = c.u32().ok_or_else(truncated)?;
                        numeric(&mut c).ok_or_else(truncated)?;
                        numeric(&mut c).ok_or_else(truncated)?;
                    }
                    LF_VFUNCTAB => {
                        let _pad = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                        out.push(Field {
                            offset: base,
                            bit: None,
                            size: POINTER_SIZE,
                            name: "vfptr".into(),
                        });
                    }
                    LF_INDEX => {
                        let _pad = c.u16().ok_or_else(truncated)?;
                        next = Some(c.u32().ok_or_else(truncated)?);
                    }
                    LF_STMEMBER | LF_NESTTYPEEX | LF_MEMBERMODIFY => {
                        let _attr = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                        c.cstr().ok_or_else(truncated)?;
                    }
                    LF_METHOD => {
                        let _count = c.u16().ok_or_else(truncated)?;
                        let _list = c.u32().ok_or_else(truncated)?;
                        c.cstr().ok_or_else(truncated)?;
                    }
                    LF_ONEMETHOD => {
                        let attr = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                        // Introducing virtual methods carry a vtable offset.
                        if matches!((attr >> 2) & 7, 4 | 6) {
                            c.u32().ok_or_else(truncated)?;
                        }
                        c.cstr().ok_or_else(truncated)?;
                    }
                    LF_NESTTYPE | LF_FRIENDFCN => {
                        let _pad = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                        c.cstr().ok_or_else(truncated)?;
                    }
                    LF_FRIENDCLS => {
                        let _pad = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                    }
                    LF_VFUNCOFF => {
                        let _pad = c.u16().ok_or_else(truncated)?;
                        let _ty = c.u32().ok_or_else(truncated)?;
                        let _off = c.u32().ok_or_else(truncated)?;
                    }
                    LF_ENUMERATE => {
                        let _attr = c.u16().ok_or_else(truncated)?;
                        numeric(&mut c).ok_or_else(truncated)?;
                        c.cstr().ok_or_else(truncated)?;
                    }
                    other => {
                        return Err(format!(
                            "field list {list:#x} has a member record of unknown kind {other:#06x}"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// One `LF_MEMBER` of type `ty` at byte `at`, into `out`.
    fn member(
        &self,
        ty: u32,
        at: u64,
        name: &[u8],
        depth: usize,
        out: &mut Vec<Field>,
        budget: &mut usize,
    ) -> std::result::Result<(), String> {
        if let Some((LF_BITFIELD, body)) = self.table.record(ty) {
            let mut c = Cursor::new(body);
            let (Some(under), Some(&[width, position])) = (c.u32(), c.take(2)) else {
                return Err(format!("bit-field type {ty:#x} is truncated"));
            };
            let first = at
                .checked_mul(8)
                .and_then(|b| b.checked_add(u64::from(position)));
            if let Some(first) = first {
                out.push(Field {
                    offset: first / 8,
                    bit: Some((u32::try_from(first % 8).unwrap_or(0), u32::from(width))),
                    size: self.table.size_of(under).unwrap_or(0),
                    name: escape_name(name),
                });
            }
            return Ok(());
        }
        if name.is_empty() && depth < MAX_FLATTEN {
            // An anonymous member: its members are the record's.
            if let Some((kind, body)) = self.record_of(ty, false).and_then(|(k, b)| {
                let agg = aggregate(k, b)?;
                if agg.forward {
                    let idx = (*self.definitions.get(agg.name)?)?;
                    self.definition(idx)
                } else {
                    Some((k, b))
                }
            }) {
                if let Some(agg) = aggregate(kind, body) {
                    return self.fields(agg.fields, at, depth.saturating_add(1), out, budget);
                }
            }
        }
        out.push(Field {
            offset: at,
            bit: None,
            size: self.table.size_of(ty).unwrap_or(0),
            name: escape_name(name),
        });
        Ok(())
    }

    /// The return type, `this` type and argument types of procedure type
    /// `index` (`LF_PROCEDURE` or `LF_MFUNCTION`), each handed to `out`.
    fn signature(&self, index: u32, mut out: impl FnMut(u32)) {
        let Some((kind, body)) = self.table.record(index) else {
            return;
        };
        let mut c = Cursor::new(body);
        let args = match kind {
            LF_PROCEDURE => {
                let (Some(ret), Some(_), Some(args)) = (c.u32(), c.take(4), c.u32()) else {
                    return;
                };
                out(ret);
                args
            }
            LF_MFUNCTION => {
                let (Some(ret), Some(_class), Some(this), Some(_), Some(args)) =
                    (c.u32(), c.u32(), c.u32(), c.take(4), c.u32())
                else {
                    return;
                };
                out(ret);
                out(this);
                args
            }
            _ => return,
        };
        let Some((LF_ARGLIST, body)) = self.table.record(args) else {
            return;
        };
        let mut c = Cursor::new(body);
        let Some(count) = c.u32() else {
            return;
        };
        for _ in 0..count {
            match c.u32() {
                Some(t) => out(t),
                None => break,
            }
        }
    }
}

/// The names of the records type indexes reach, computed once per index.
#[derive(Debug, Default)]
struct NameCache {
    /// Per type index (from `0x1000`): 0 not yet looked up, 1 no named
    /// record, `n + 2` the name `names[n]`.
    slots: Vec<u32>,
    /// Names, each once.
    names: Vec<String>,
    /// Index into `names` by name.
    by_name: HashMap<String, u32>,
}

impl NameCache {
    /// The name id of the record type `index` reaches, if a named one.
    fn id(&mut self, types: &Types<'_, '_>, index: u32) -> Option<u32> {
        let slot = usize::try_from(index.checked_sub(FIRST_NON_PRIMITIVE)?).ok()?;
        // Only an index that names a record of the stream gets a slot: the
        // table is bounded by the stream's record count.
        types.table.record(index)?;
        if slot >= self.slots.len() {
            self.slots.resize(slot.saturating_add(1), 0);
        }
        let id = match *self.slots.get(slot)? {
            0 => match types.record_name_of(index) {
                Some(name) => self.intern(name),
                None => {
                    if let Some(s) = self.slots.get_mut(slot) {
                        *s = 1;
                    }
                    return None;
                }
            },
            1 => return None,
            n => n.checked_sub(2)?,
        };
        if let Some(s) = self.slots.get_mut(slot) {
            *s = id.saturating_add(2);
        }
        Some(id)
    }

    /// The id of `name`, adding it if new.
    fn intern(&mut self, name: String) -> u32 {
        if let Some(&id) = self.by_name.get(&name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.clone());
        self.by_name.insert(name, id);
        id
    }
}

/// The state of one module's symbol scan.
#[derive(Debug, Default)]
struct ModuleScan {
    /// Entry RVAs of the procedures found so far (`None` when the linker
    /// discarded one).
    functions: Vec<Option<u64>>,
    /// Type indexes the procedures use (signature, locals, inlinees'
    /// signatures): the procedure (index into `functions`) and the type.
    types: Vec<(usize, u32)>,
    /// Open scopes, innermost last: the procedure each belongs to.
    scopes: Vec<Option<usize>>,
}

impl ModuleScan {
    /// Forget the last module.
    fn clear(&mut self) {
        self.functions.clear();
        self.types.clear();
        self.scopes.clear();
    }

    /// The type uses of the module's procedures with code, into `out`.
    fn uses(&mut self, types: &Types<'_, '_>, names: &mut NameCache, out: &mut Vec<TypeUse>) {
        // Procedures nested in procedures interleave their types.
        if !self.types.is_sorted_by_key(|t| t.0) {
            self.types.sort_by_key(|t| t.0);
        }
        let mut ids: Vec<u32> = Vec::new();
        for group in self.types.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(f, _)) = group.first() else {
                continue;
            };
            let Some(Some(rva)) = self.functions.get(f).copied() else {
                continue;
            };
            ids.clear();
            ids.extend(group.iter().filter_map(|&(_, t)| names.id(types, t)));
            if ids.is_empty() {
                continue;
            }
            ids.sort_unstable();
            ids.dedup();
            let mut used: Vec<String> = ids
                .iter()
                .filter_map(|&id| names.names.get(id as usize).cloned())
                .collect();
            used.sort_unstable();
            out.push(TypeUse { rva, types: used });
        }
    }

    /// The procedure the current scope belongs to.
    fn current(&self) -> Option<usize> {
        *self.scopes.last()?
    }

    /// Open a scope of procedure `f`.
    fn open(&mut self, f: Option<usize>) -> std::result::Result<(), String> {
        if self.scopes.len() >= MAX_SCOPES {
            return Err(format!("scopes nest deeper than {MAX_SCOPES} levels"));
        }
        self.scopes.push(f);
        Ok(())
    }

    /// Add a type index to the current procedure.
    fn add(&mut self, ty: u32) {
        if let Some(f) = self.current() {
            self.types.push((f, ty));
        }
    }

    /// Add the signature of procedure type `ty` to procedure `f`.
    fn add_signature(&mut self, types: &Types<'_, '_>, f: usize, ty: u32) {
        types.signature(ty, |t| self.types.push((f, t)));
    }

    /// Take one symbol record: its kind and the bytes after it.
    fn symbol(
        &mut self,
        types: &Types<'_, '_>,
        ids: &TypeTable<'_>,
        sections: &[SectionInfo],
        kind: u16,
        body: &[u8],
    ) -> std::result::Result<(), String> {
        let mut c = Cursor::new(body);
        let truncated = || format!("a record of kind {kind:#06x} is truncated");
        match kind {
            S_GPROC32 | S_LPROC32 | S_GPROC32_ID | S_LPROC32_ID | S_LPROC32_DPC
            | S_LPROC32_DPC_ID => {
                // parent, end, next, length, debug start, debug end.
                c.take(24).ok_or_else(truncated)?;
                let ty = c.u32().ok_or_else(truncated)?;
                let offset = c.u32().ok_or_else(truncated)?;
                let section = c.u16().ok_or_else(truncated)?;
                let rva = usize::from(section)
                    .checked_sub(1)
                    .and_then(|i| sections.get(i))
                    .filter(|s| u64::from(offset) < s.size)
                    .and_then(|s| s.rva.checked_add(u64::from(offset)));
                self.functions.push(rva);
                let f = self.functions.len().saturating_sub(1);
                let signature = if matches!(kind, S_GPROC32_ID | S_LPROC32_ID | S_LPROC32_DPC_ID) {
                    function_type(ids, ty)
                } else {
                    Some(ty)
                };
                if let Some(t) = signature {
                    self.add_signature(types, f, t);
                }
                self.open(Some(f))?;
            }
            S_INLINESITE | S_INLINESITE2 => {
                let _parent = c.u32().ok_or_else(truncated)?;
                let _end = c.u32().ok_or_else(truncated)?;
                let inlinee = c.u32().ok_or_else(truncated)?;
                let f = self.current();
                if let (Some(t), Some(f)) = (function_type(ids, inlinee), f) {
                    self.add_signature(types, f, t);
                }
                self.open(f)?;
            }
            S_BLOCK32 | S_WITH32 | S_SEPCODE => {
                let f = self.current();
                self.open(f)?;
            }
            S_THUNK32 | S_GMANPROC | S_LMANPROC => self.open(None)?,
            S_END | S_PROC_ID_END | S_INLINESITE_END => {
                self.scopes.pop();
            }
            S_LOCAL | S_CONSTANT | S_LDATA32 => {
                let ty = c.u32().ok_or_else(truncated)?;
                self.add(ty);
            }
            S_REGREL32 | S_BPREL32 => {
                let _offset = c.u32().ok_or_else(truncated)?;
                let ty = c.u32().ok_or_else(truncated)?;
                self.add(ty);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The procedure type of an `LF_FUNC_ID` or `LF_MFUNC_ID` item.
fn function_type(ids: &TypeTable<'_>, id: u32) -> Option<u32> {
    let (kind, body) = ids.record(id)?;
    let mut c = Cursor::new(body);
    match kind {
        LF_FUNC_ID | LF_MFUNC_ID => {
            let _scope_or_parent = c.u32()?;
            c.u32()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A TPI-layout stream from records (each: kind and body).
    fn stream(records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&20040203u32.to_le_bytes());
        out.extend_from_slice(&56u32.to_le_bytes());
        out.extend_from_slice(&0x1000u32.to_le_bytes());
        let end = 0x1000 + records.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
        out.resize(56, 0);
        for (kind, body) in records {
            let len = (body.len() + 2) as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(body);
        }
        out
    }

    fn u16s(v: u16) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }
    fn u32s(v: u32) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }
    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn member(ty: u32, offset: u16, name: &str) -> Vec<u8> {
        [u16s(LF_MEMBER), u16s(3), u32s(ty), u16s(offset), cstr(name)].concat()
    }

    fn structure(kind: u16, props: u16, fields: u32, size: u16, name: &str) -> Vec<u8> {
        let mut b = [u16s(0), u16s(props), u32s(fields)].concat();
        if kind != LF_UNION {
            b.extend(u32s(0));
            b.extend(u32s(0));
        }
        b.extend(u16s(size));
        b.extend(cstr(name));
        b
    }

    fn layouts_of(records: &[(u16, Vec<u8>)]) -> std::result::Result<Vec<TypeLayout>, String> {
        let s = stream(records);
        let table = TypeTable::parse(&s).unwrap();
        Types::new(&table).layouts()
    }

    #[test]
    fn field_lists_bitfields_continuations_and_anonymous_members() {
        let list1 = [
            member(0x74, 0, "a"),
            vec![0xf2, 0xf1], // padding
            member(0x1001, 4, "b"),
            [
                u16s(LF_ONEMETHOD),
                u16s(4 << 2),
                u32s(0),
                u32s(0),
                cstr("vf"),
            ]
            .concat(),
            [u16s(LF_VFUNCTAB), u16s(0), u32s(0)].concat(),
            [u16s(LF_BCLASS), u16s(3), u32s(0x1006), u16s(16)].concat(),
            [u16s(LF_STMEMBER), u16s(3), u32s(0x74), cstr("st")].concat(),
            [u16s(LF_INDEX), u16s(0), u32s(0x1003)].concat(),
        ]
        .concat();
        let list2 = [member(0x23, 8, "c"), member(0x1005, 24, "")].concat();
        let inner = [member(0x74, 0, "x"), member(0x74, 4, "y")].concat();
        let records = vec![
            (LF_FIELDLIST, list1),                                       // 0x1000
            (LF_BITFIELD, [u32s(0x75), vec![3, 5]].concat()),            // 0x1001
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1000, 40, "S")), // 0x1002
            (LF_FIELDLIST, list2),                                       // 0x1003
            (LF_FIELDLIST, inner),                                       // 0x1004
            (
                LF_UNION,
                structure(LF_UNION, 0, 0x1004, 8, "S::<unnamed-tag>"),
            ), // 0x1005
            (LF_CLASS, structure(LF_CLASS, 0x80, 0, 0, "B")),            // 0x1006
            (LF_CLASS, structure(LF_CLASS, 0, 0, 4, "B")),               // 0x1007
        ];
        let layouts = layouts_of(&records).unwrap();
        let names: Vec<_> = layouts
            .iter()
            .map(|l| (l.name.as_str(), l.kind, l.size))
            .collect();
        assert_eq!(
            names,
            [("S", TypeKind::Struct, 40), ("B", TypeKind::Class, 4)]
        );
        let got: Vec<_> = layouts[0]
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.offset, f.size, f.bit))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 0, 4, None),
                ("b", 4, 4, Some((5, 3))),
                ("vfptr", 0, 8, None),
                ("base B", 16, 4, None),
                ("c", 8, 8, None),
                ("x", 24, 4, None),
                ("y", 28, 4, None),
            ]
        );
    }

    #[test]
    fn type_and_member_names_with_control_characters_are_escaped() {
        let records = vec![
            (LF_FIELDLIST, member(0x74, 0, "m\u{202e}x")),
            (
                LF_STRUCTURE,
                structure(LF_STRUCTURE, 0, 0x1000, 4, "evil\x1b[2J"),
            ),
        ];
        let layouts = layouts_of(&records).unwrap();
        assert_eq!(layouts.len(), 1);
        assert_eq!(layouts[0].name, "evil\\x1b[2J");
        assert_eq!(layouts[0].fields[0].name, "m\\u{202e}x");
    }

    #[test]
    fn damaged_field_lists_are_errors() {
        // A continuation that loops back to itself.
        let looping = vec![
            (
                LF_FIELDLIST,
                [u16s(LF_INDEX), u16s(0), u32s(0x1000)].concat(),
            ),
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1000, 4, "L")),
        ];
        let e = layouts_of(&looping).unwrap_err();
        assert!(e.contains("more than 64 LF_INDEX"), "{e}");
        // An unknown member kind.
        let unknown = vec![
            (LF_FIELDLIST, [u16s(0x1599), u16s(0)].concat()),
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1000, 4, "U")),
        ];
        let e = layouts_of(&unknown).unwrap_err();
        assert!(
            e.contains("unknown kind 0x1599") && e.contains("`U`"),
            "{e}"
        );
        // A truncated member, and a field list that is not one.
        let truncated = vec![
            (LF_FIELDLIST, [u16s(LF_MEMBER), u16s(3)].concat()),
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1000, 4, "T")),
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1001, 4, "N")),
        ];
        assert!(layouts_of(&truncated).unwrap_err().contains("truncated"));
        let wrong = vec![
            (LF_BITFIELD, [u32s(0x75), vec![3, 5]].concat()),
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1000, 4, "W")),
        ];
        assert!(layouts_of(&wrong)
            .unwrap_err()
            .contains("is a record of kind"));
    }

    #[test]
    fn exploding_anonymous_members_are_an_error() {
        // 0x1000: a list of 100 anonymous members of type 0x1001 (itself).
        let list: Vec<u8> = (0..100).flat_map(|_| member(0x1001, 0, "")).collect();
        let records = vec![
            (LF_FIELDLIST, list),
            (LF_UNION, structure(LF_UNION, 0, 0x1000, 8, "U")),
        ];
        let e = layouts_of(&records).unwrap_err();
        assert!(e.contains("more than 65536 members"), "{e}");
    }

    #[test]
    fn random_records_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let kinds = [
            LF_FIELDLIST,
            LF_STRUCTURE,
            LF_UNION,
            LF_CLASS,
            LF_BITFIELD,
            LF_POINTER,
            LF_MODIFIER,
            LF_ARRAY,
            LF_PROCEDURE,
            LF_MFUNCTION,
            LF_ARGLIST,
        ];
        for _ in 0..2000 {
            let records: Vec<(u16, Vec<u8>)> = (0..6)
                .map(|_| {
                    let kind = kinds[(next() % kinds.len() as u64) as usize];
                    let len = (next() % 40) as usize;
                    let body = (0..len)
                        .map(|_| {
                            // Mostly small type indexes, so references land.
                            let r = next();
                            if r % 3 == 0 {
                                0x10
                            } else {
                                r as u8
                            }
                        })
                        .collect();
                    (kind, body)
                })
                .collect();
            let s = stream(&records);
            let table = TypeTable::parse(&s).unwrap();
            let types = Types::new(&table);
            let _ = types.layouts();
            let mut out = Vec::new();
            for i in 0x1000..0x1008 {
                types.signature(i, |t| out.push(t));
                let _ = types.record_name_of(i);
            }
        }
    }

    /// A symbol record: kind and body (the length is added by the iterator).
    fn sym(kind: u16, body: Vec<u8>) -> (u16, Vec<u8>) {
        (kind, body)
    }

    #[test]
    fn procedures_locals_blocks_and_inline_sites() {
        // Types: S (0x1001 forward ref, 0x1002 definition), S* (0x1003),
        // const S* (0x1005), T (0x1006), an arglist (S*, int) and a
        // procedure returning T*.
        let records = vec![
            (LF_FIELDLIST, member(0x74, 0, "v")), // 0x1000
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0x80, 0, 0, "S")), // 0x1001
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0, 0x1000, 4, "S")), // 0x1002
            (LF_POINTER, [u32s(0x1001), u32s(0x1000c)].concat()), // 0x1003
            (LF_MODIFIER, [u32s(0x1001), u16s(1)].concat()), // 0x1004
            (LF_POINTER, [u32s(0x1004), u32s(0x1000c)].concat()), // 0x1005
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0x80, 0, 0, "T")), // 0x1006
            (LF_POINTER, [u32s(0x1006), u32s(0x1000c)].concat()), // 0x1007
            (LF_ARGLIST, [u32s(2), u32s(0x1003), u32s(0x74)].concat()), // 0x1008
            (
                LF_PROCEDURE,
                [u32s(0x1007), vec![0, 0], u16s(2), u32s(0x1008)].concat(),
            ), // 0x1009
            (LF_ARGLIST, [u32s(0)].concat()),     // 0x100a
            (
                LF_PROCEDURE,
                [u32s(0x74), vec![0, 0], u16s(0), u32s(0x100a)].concat(),
            ), // 0x100b
            (LF_STRUCTURE, structure(LF_STRUCTURE, 0x80, 0, 0, "U")), // 0x100c
            (
                LF_ARRAY,
                [u32s(0x100c), u32s(0x23), u16s(8), cstr("")].concat(),
            ), // 0x100d
            (LF_ARGLIST, [u32s(1), u32s(0x100d)].concat()), // 0x100e
            (
                LF_PROCEDURE,
                [u32s(0x74), vec![0, 0], u16s(1), u32s(0x100e)].concat(),
            ), // 0x100f
        ];
        let s = stream(&records);
        let table = TypeTable::parse(&s).unwrap();
        let types = Types::new(&table);
        // Items: an LF_FUNC_ID for the inlinee (type 0x100f) and one for
        // the _ID procedure (type 0x100b).
        let items = stream(&[
            (LF_FUNC_ID, [u32s(0), u32s(0x100f), cstr("inl")].concat()),
            (LF_FUNC_ID, [u32s(0), u32s(0x100b), cstr("g")].concat()),
        ]);
        let ids = TypeTable::parse_named(&items, "id stream (IPI)").unwrap();
        let sections = [SectionInfo {
            name: ".text".into(),
            rva: 0x1000,
            size: 0x100,
        }];
        let proc_ = |kind: u16, ty: u32, offset: u32, section: u16| {
            sym(
                kind,
                [
                    vec![0; 24],
                    u32s(ty),
                    u32s(offset),
                    u16s(section),
                    vec![0],
                    cstr("f"),
                ]
                .concat(),
            )
        };
        let local = |ty: u32| sym(S_LOCAL, [u32s(ty), u16s(0), cstr("l")].concat());
        let symbols = vec![
            proc_(S_GPROC32, 0x1009, 0x10, 1),
            sym(S_BLOCK32, vec![0; 20]),
            local(0x1005),
            sym(S_END, Vec::new()),
            sym(S_INLINESITE, [u32s(0), u32s(0), u32s(0x1000)].concat()),
            sym(S_INLINESITE_END, Vec::new()),
            sym(S_END, Vec::new()),
            // Outside any procedure: ignored.
            local(0x1003),
            proc_(S_LPROC32_ID, 0x1001, 0x40, 1),
            sym(
                S_REGREL32,
                [u32s(8), u32s(0x1007), u16s(0), cstr("r")].concat(),
            ),
            sym(S_PROC_ID_END, Vec::new()),
            // Discarded by the linker (section 0): no entry.
            proc_(S_GPROC32, 0x1009, 0, 0),
            sym(S_END, Vec::new()),
            // An unbalanced end does no harm.
            sym(S_END, Vec::new()),
        ];
        let mut scan = ModuleScan::default();
        for (kind, body) in &symbols {
            scan.symbol(&types, &ids, &sections, *kind, body).unwrap();
        }
        let got: Vec<(Option<u64>, BTreeSet<String>)> = scan
            .functions
            .iter()
            .enumerate()
            .map(|(i, &rva)| {
                (
                    rva,
                    scan.types
                        .iter()
                        .filter(|t| t.0 == i)
                        .filter_map(|&(_, t)| types.record_name_of(t))
                        .collect(),
                )
            })
            .collect();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            got,
            [
                (Some(0x1010), set(&["S", "T", "U"])),
                (Some(0x1040), set(&["T"])),
                (None, set(&["S", "T"])),
            ]
        );
        // The uses of the procedures with code, each type named once.
        let mut names = NameCache::default();
        let mut uses = Vec::new();
        scan.uses(&types, &mut names, &mut uses);
        assert_eq!(
            uses,
            [
                TypeUse {
                    rva: 0x1010,
                    types: vec!["S".into(), "T".into(), "U".into()]
                },
                TypeUse {
                    rva: 0x1040,
                    types: vec!["T".into()]
                },
            ]
        );
        assert_eq!(names.names, ["T", "S", "U"]);
        // Truncated records are errors.
        let mut scan = ModuleScan::default();
        let (kind, body) = proc_(S_GPROC32, 0x1009, 0x10, 1);
        scan.symbol(&types, &ids, &sections, kind, &body).unwrap();
        assert!(scan
            .symbol(&types, &ids, &sections, S_LOCAL, &[1, 2])
            .unwrap_err()
            .contains("truncated"));
        // Nesting is bounded.
        let mut scan = ModuleScan::default();
        let block = [0; 20];
        let mut err = None;
        for _ in 0..=MAX_SCOPES {
            if let Err(e) = scan.symbol(&types, &ids, &sections, S_BLOCK32, &block) {
                err = Some(e);
            }
        }
        assert!(err.unwrap().contains("nest deeper"));
    }
}
