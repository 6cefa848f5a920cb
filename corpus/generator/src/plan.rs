//! The abstract program: which functions exist, in which translation unit,
//! with what signature and body, and how the changed ones differ in v2.
//!
//! Everything here is a pure function of [`Params`]; rendering to C lives in
//! `emit.rs`.

use std::collections::BTreeMap;

use crate::rng::SplitMix64;

/// Why a plan cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Fewer functions than the smallest program.
    #[error("--functions must be at least {MIN_FUNCTIONS} (got {0})")]
    TooFewFunctions(usize),
    /// More changed functions than functions.
    #[error("--changed ({changed}) cannot exceed --functions ({functions})")]
    TooManyChanged {
        /// `--changed`.
        changed: usize,
        /// `--functions`.
        functions: usize,
    },
    /// A unit size of zero.
    #[error("--unit-size must be at least 1")]
    EmptyUnits,
    /// More functions than the generator makes.
    #[error("--functions {0} is over the limit of {MAX_FUNCTIONS}")]
    TooMany(usize),
    /// So many functions that laying them out overflows.
    #[error("--functions {0} is too large to lay out")]
    TooLarge(usize),
    /// An index the plan does not have: a bug in the generator, reported
    /// instead of a panic.
    #[error("internal error: the plan has no {what} {index}")]
    Missing {
        /// What was looked up (`function`, `unit`, ...).
        what: &'static str,
        /// Its index.
        index: usize,
    },
}

/// `items[index]`, or [`PlanError::Missing`] naming `what`.
pub fn nth<'a, T>(items: &'a [T], index: usize, what: &'static str) -> Result<&'a T, PlanError> {
    items.get(index).ok_or(PlanError::Missing { what, index })
}

/// One of `items`, chosen uniformly by `r`.
fn choose<T: Copy>(r: &mut SplitMix64, items: &[T], what: &'static str) -> Result<T, PlanError> {
    nth(items, r.index(items.len()), what).copied()
}

/// Generation parameters (everything that influences the sources).
#[derive(Debug, Clone)]
pub struct Params {
    pub functions: usize,
    pub changed: usize,
    pub seed: u64,
    pub unit_size: usize,
}

/// The smallest program the generator makes: two units are needed so that
/// every call can cross a unit boundary.
pub const MIN_FUNCTIONS: usize = 20;

/// The largest program the generator makes (200 times the benchmark's
/// 50,000 functions): the plan, and the sources, are held in memory.
pub const MAX_FUNCTIONS: usize = 10_000_000;

// Independent PRNG streams.
const STREAM_LAYOUT: u64 = 1;
const STREAM_BODY: u64 = 2;
const STREAM_CHANGES: u64 = 3;
const STREAM_MUTATION: u64 = 4;
const STREAM_UNIT: u64 = 5;

/// Function signatures. Callers need to know them to form a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// `u64 f(u64 a, u64 b)`
    Pair,
    /// `u32 f(u32 a)`
    Word,
    /// `u64 f(const u64 *p, u32 n)`
    Slice,
    /// `void f(u64 a)`
    Sink,
    /// `u64 f(u64 a, u64 b, u64 c, u64 d)`
    Quad,
}

/// Rough code-size class of a body; picks the number of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Tiny,
    Small,
    Medium,
    Large,
}

/// Array a loop reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The `p` parameter of a [`Sig::Slice`] function (32 elements).
    Param,
    /// The unit's zero-initialised `u64 gNNNN_a[64]`.
    UnitA,
    /// The unit's initialised `u32 gNNNN_b[128]`.
    UnitB,
    /// The unit's `static const u32 kNNNN[64]`.
    Table,
}

/// One case of a switch statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub value: u32,
    pub op: u8,
    pub k: u64,
}

/// A statement group of a body. Every block folds its result into the locals
/// `acc` and `y`, so nothing is dead and every constant reaches the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Straight-line arithmetic, one of several templates.
    Arith { op: u8, k: u64, s: u32 },
    /// `if ((acc & m) == v) {..} else {..}`.
    Cond { m: u64, v: u64, k: u64, s: u32 },
    /// A bounded loop over an array, optionally writing the unit's array.
    Loop {
        src: Src,
        trip: u32,
        k: u64,
        s: u32,
        write: bool,
    },
    /// A switch: dense ones (cases 0..n of a 4-bit selector) become jump
    /// tables, sparse ones compare trees.
    Switch {
        dense: bool,
        s: u32,
        cases: Vec<Case>,
        k: u64,
    },
    /// A direct call of a function in another unit.
    Call { callee: usize, k: u64 },
    /// Read-modify-write of a unit's global arrays (this unit or another).
    Global { unit: usize, k: u64, s: u32 },
    /// Reads of the unit's `static const` tables.
    Table { k: u64, s: u32 },
    /// An indirect call through the unit's function-pointer table.
    FnPtr { k: u64, s: u32 },
}

/// A function body: two prologue constants and the blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub k0: u64,
    pub k1: u64,
    pub blocks: Vec<Block>,
}

/// How a changed function differs in v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// One constant differs (usually the same code size).
    Constant,
    /// An extra `if` is inserted (a little larger).
    Condition,
    /// Several blocks are inserted (noticeably larger).
    Grow,
    /// Arithmetic blocks are removed (smaller).
    Shrink,
}

impl Mutation {
    pub fn name(self) -> &'static str {
        match self {
            Mutation::Constant => "constant",
            Mutation::Condition => "condition",
            Mutation::Grow => "grow",
            Mutation::Shrink => "shrink",
        }
    }
}

/// Static description of one function.
#[derive(Debug, Clone)]
pub struct Func {
    pub name: String,
    pub unit: usize,
    pub sig: Sig,
    pub size: Size,
    pub exported: bool,
}

/// The whole program.
#[derive(Debug)]
pub struct Plan {
    pub params: Params,
    pub funcs: Vec<Func>,
    /// Index range of each unit's functions.
    pub units: Vec<std::ops::Range<usize>>,
    /// Module name of each unit (used in file and function names).
    pub modules: Vec<&'static str>,
    /// Changed functions and how.
    pub changes: BTreeMap<usize, Mutation>,
}

const MODULES: &[&str] = &[
    "net", "fs", "vm", "sched", "crypto", "codec", "input", "gfx", "audio", "db", "json", "http",
    "tls", "zip", "img", "ui", "ipc", "log", "cfg", "rpc", "usb", "pci", "blk", "mm",
];

const VERBS: &[&str] = &[
    "init", "read", "write", "parse", "emit", "hash", "scan", "find", "update", "flush", "check",
    "merge", "split", "encode", "decode", "step", "reset", "probe", "map", "sync", "alloc", "free",
    "lookup", "insert",
];

impl Plan {
    /// Lays out the program. Fails on parameters that cannot be honoured.
    pub fn new(params: Params) -> Result<Plan, PlanError> {
        if params.functions < MIN_FUNCTIONS {
            return Err(PlanError::TooFewFunctions(params.functions));
        }
        if params.functions > MAX_FUNCTIONS {
            return Err(PlanError::TooMany(params.functions));
        }
        if params.changed > params.functions {
            return Err(PlanError::TooManyChanged {
                changed: params.changed,
                functions: params.functions,
            });
        }
        if params.unit_size == 0 {
            return Err(PlanError::EmptyUnits);
        }

        // At least two units, so that every call crosses a unit boundary.
        let n = params.functions;
        let unit_count = n.div_ceil(params.unit_size).max(2);
        // Unit `u` holds functions `u * n / units .. (u + 1) * n / units`.
        let bound = |u: usize| {
            u.checked_mul(n)
                .and_then(|x| x.checked_div(unit_count))
                .ok_or(PlanError::TooLarge(n))
        };
        let mut units = Vec::with_capacity(unit_count);
        let mut start = 0;
        for u in 1..=unit_count {
            let end = bound(u)?;
            units.push(start..end);
            start = end;
        }

        let mut layout = SplitMix64::derive(params.seed, STREAM_LAYOUT, 0);
        let modules: Vec<&'static str> = (0..unit_count)
            .map(|_| choose(&mut layout, MODULES, "module"))
            .collect::<Result<_, _>>()?;

        let mut funcs = Vec::with_capacity(n);
        for (u, (range, module)) in units.iter().zip(&modules).enumerate() {
            for i in range.clone() {
                let first = i == range.start;
                let verb = choose(&mut layout, VERBS, "verb")?;
                // The first function of a unit is a plain `Pair` function that
                // is never exported: it is always a valid fn-pointer target.
                let sig = if first {
                    Sig::Pair
                } else {
                    match layout.below(100) {
                        0..=39 => Sig::Pair,
                        40..=59 => Sig::Word,
                        60..=71 => Sig::Slice,
                        72..=84 => Sig::Quad,
                        _ => Sig::Sink,
                    }
                };
                let size = match layout.below(100) {
                    0..=19 => Size::Tiny,
                    20..=54 => Size::Small,
                    55..=87 => Size::Medium,
                    _ => Size::Large,
                };
                let exported = !first && layout.chance(1, 150);
                funcs.push(Func {
                    name: format!("{module}_{verb}_{i:05}"),
                    unit: u,
                    sig,
                    size,
                    exported,
                });
            }
        }
        // Always export at least one function (the last one).
        if !funcs.iter().any(|f| f.exported) {
            if let Some(last) = funcs.last_mut() {
                last.exported = true;
            }
        }

        // The changed set: a partial Fisher-Yates shuffle of all indices.
        let mut pick = SplitMix64::derive(params.seed, STREAM_CHANGES, 0);
        let mut order: Vec<usize> = (0..n).collect();
        let mut changes = BTreeMap::new();
        for k in 0..params.changed {
            // `k < changed <= n`: the rest of `order` is never empty.
            let j = n
                .checked_sub(k)
                .map(|rest| pick.index(rest))
                .and_then(|off| k.checked_add(off))
                .filter(|&j| j < n)
                .ok_or(PlanError::Missing {
                    what: "function",
                    index: k,
                })?;
            order.swap(k, j);
            let m = match pick.below(100) {
                0..=34 => Mutation::Constant,
                35..=54 => Mutation::Condition,
                55..=84 => Mutation::Grow,
                _ => Mutation::Shrink,
            };
            changes.insert(*nth(&order, k, "function")?, m);
        }

        Ok(Plan {
            params,
            funcs,
            units,
            modules,
            changes,
        })
    }

    /// Function `i`.
    pub fn func(&self, i: usize) -> Result<&Func, PlanError> {
        nth(&self.funcs, i, "function")
    }

    /// The index range of unit `u`'s functions.
    pub fn unit(&self, u: usize) -> Result<std::ops::Range<usize>, PlanError> {
        nth(&self.units, u, "unit").cloned()
    }

    /// Names of the changed functions, sorted: the content of `changed.txt`.
    pub fn changed_names(&self) -> Result<Vec<String>, PlanError> {
        let mut v: Vec<String> = self
            .changes
            .keys()
            .map(|&i| self.func(i).map(|f| f.name.clone()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    }

    /// Does unit `u` contain a changed function?
    pub fn unit_changed(&self, u: usize) -> bool {
        self.units
            .get(u)
            .is_some_and(|r| self.changes.range(r.clone()).next().is_some())
    }

    /// Data of a unit: initial values of `gNNNN_b`, contents of the two
    /// const tables, and the function-pointer table's targets.
    pub fn unit_data(&self, u: usize) -> Result<UnitData, PlanError> {
        let mut r = SplitMix64::derive(self.params.seed, STREAM_UNIT, u as u64);
        let init_b = (0..128).map(|_| r.next_u64() as u32).collect();
        let table = (0..64).map(|_| r.next_u64() as u32).collect();
        let bytes = (0..256).map(|_| r.next_u64() as u8).collect();
        let fnptrs = (0..8)
            .map(|_| self.pick_callee(&mut r, u, Some(Sig::Pair)))
            .collect::<Result<_, _>>()?;
        Ok(UnitData {
            init_b,
            table,
            bytes,
            fnptrs,
        })
    }

    /// A non-exported function in a unit other than `u` (with signature `sig`
    /// if given). Unit-first functions are always `Pair`, so this terminates.
    fn pick_callee(
        &self,
        r: &mut SplitMix64,
        u: usize,
        sig: Option<Sig>,
    ) -> Result<usize, PlanError> {
        let units = self.units.len();
        // There are always at least two units (see `new`).
        let others = units
            .checked_sub(1)
            .filter(|&n| n > 0)
            .ok_or(PlanError::Missing {
                what: "other unit than",
                index: u,
            })?;
        loop {
            // One of the other units: `u + 1 ..= u + units - 1`, modulo.
            let other = u
                .checked_add(1)
                .and_then(|x| x.checked_add(r.index(others)))
                .and_then(|x| x.checked_rem(units))
                .ok_or(PlanError::Missing {
                    what: "unit",
                    index: u,
                })?;
            let range = self.unit(other)?;
            for _ in 0..4 {
                let c =
                    range
                        .start
                        .checked_add(r.index(range.len()))
                        .ok_or(PlanError::Missing {
                            what: "function in unit",
                            index: other,
                        })?;
                let f = self.func(c)?;
                if !f.exported && sig.is_none_or(|s| s == f.sig) {
                    return Ok(c);
                }
            }
            if sig.is_none_or(|s| s == Sig::Pair) {
                return Ok(range.start);
            }
        }
    }

    /// The v1 body of function `i`.
    pub fn body_v1(&self, i: usize) -> Result<Body, PlanError> {
        let f = self.func(i)?;
        let mut r = SplitMix64::derive(self.params.seed, STREAM_BODY, i as u64);
        let k0 = constant(&mut r);
        let k1 = constant(&mut r);
        let (lo, hi) = match f.size {
            Size::Tiny => (0, 1),
            Size::Small => (1, 2),
            Size::Medium => (3, 6),
            Size::Large => (8, 15),
        };
        let count = r.range(lo, hi) as usize;
        let calls = match f.size {
            Size::Tiny => r.below(2),
            Size::Small => r.below(3),
            Size::Medium | Size::Large => r.range(1, 3),
        } as usize;
        let mut blocks = Vec::with_capacity(count.saturating_add(calls).saturating_add(2));
        for _ in 0..count {
            blocks.push(self.local_block(&mut r, f, false)?);
        }
        for _ in 0..calls {
            let callee = self.pick_callee(&mut r, f.unit, None)?;
            let at = r.index(blocks.len().saturating_add(1));
            blocks.insert(
                at,
                Block::Call {
                    callee,
                    k: constant(&mut r),
                },
            );
        }
        // The first function of a unit uses the unit's static tables, so
        // that they exist in every version whatever else changes.
        let first = i == self.unit(f.unit)?.start;
        if first || r.chance(1, 20) {
            let at = r.index(blocks.len().saturating_add(1));
            blocks.insert(
                at,
                Block::FnPtr {
                    k: constant(&mut r),
                    s: r.range(1, 40) as u32,
                },
            );
        }
        if first {
            blocks.push(Block::Table {
                k: multiplier(&mut r),
                s: r.range(1, 40) as u32,
            });
        }
        Ok(Body { k0, k1, blocks })
    }

    /// The body of function `i` in version 2 (`v2 == false` gives v1).
    pub fn body(&self, i: usize, v2: bool) -> Result<Body, PlanError> {
        let mut body = self.body_v1(i)?;
        if v2 {
            if let Some(&m) = self.changes.get(&i) {
                self.mutate(i, m, &mut body)?;
            }
        }
        Ok(body)
    }

    /// A block that references nothing outside the function's own unit
    /// (except, unless `unit_only`, another unit's globals).
    fn local_block(
        &self,
        r: &mut SplitMix64,
        f: &Func,
        unit_only: bool,
    ) -> Result<Block, PlanError> {
        Ok(match r.below(100) {
            0..=33 => {
                let op = r.below(ARITH_OPS) as u8;
                Block::Arith {
                    op,
                    k: if op == 0 { multiplier(r) } else { constant(r) },
                    s: r.range(1, 63) as u32,
                }
            }
            34..=39 => {
                let m = (r.next_u64() & 0xff0) | 0x101;
                Block::Cond {
                    m,
                    v: r.next_u64() & m,
                    k: multiplier(r),
                    s: r.range(1, 63) as u32,
                }
            }
            40..=43 => {
                let src = match r.below(if f.sig == Sig::Slice { 4 } else { 3 }) {
                    0 => Src::UnitA,
                    1 => Src::UnitB,
                    2 => Src::Table,
                    _ => Src::Param,
                };
                Block::Loop {
                    src,
                    trip: choose(r, &[3, 7, 15, 31], "trip count")?,
                    k: multiplier(r),
                    s: r.range(1, 40) as u32,
                    write: r.chance(1, 3),
                }
            }
            44..=79 => {
                let dense = r.chance(2, 3);
                let n = if dense { r.range(6, 12) } else { r.range(3, 7) };
                let mut cases: Vec<Case> = Vec::new();
                while cases.len() < n as usize {
                    let value = if dense {
                        cases.len() as u32
                    } else {
                        r.below(4096) as u32
                    };
                    if cases.iter().any(|c| c.value == value) {
                        continue;
                    }
                    let op = r.below(CASE_OPS) as u8;
                    cases.push(Case {
                        value,
                        op,
                        k: if case_multiplies(op) {
                            multiplier(r)
                        } else {
                            constant(r)
                        },
                    });
                }
                Block::Switch {
                    dense,
                    s: r.range(0, 60) as u32,
                    cases,
                    k: constant(r),
                }
            }
            80..=89 => {
                let unit = if unit_only || r.chance(2, 3) {
                    f.unit
                } else {
                    r.index(self.units.len())
                };
                Block::Global {
                    unit,
                    k: constant(r),
                    s: r.range(1, 56) as u32,
                }
            }
            _ => Block::Table {
                k: multiplier(r),
                s: r.range(1, 56) as u32,
            },
        })
    }

    /// Applies mutation `m` to the v1 body of function `i`. Mutations never
    /// add or remove references to anything outside the function's unit,
    /// and never touch data, so the rest of the unit compiles identically.
    fn mutate(&self, i: usize, m: Mutation, body: &mut Body) -> Result<(), PlanError> {
        let f = self.func(i)?;
        let mut r = SplitMix64::derive(self.params.seed, STREAM_MUTATION, i as u64);
        // Flip only low bits: visible through any truncation to 16 bits or more.
        let delta = r.range(1, 0xffff);
        let has_arith = body.blocks.iter().any(|b| matches!(b, Block::Arith { .. }));
        let m = if m == Mutation::Shrink && !has_arith {
            Mutation::Grow
        } else {
            m
        };
        match m {
            Mutation::Constant => {
                let slot = r.index(body.blocks.len().saturating_add(2));
                match slot {
                    0 => body.k0 ^= delta,
                    1 => body.k1 ^= delta,
                    _ => match slot
                        .checked_sub(2)
                        .and_then(|j| body.blocks.get_mut(j))
                        .ok_or(PlanError::Missing {
                            what: "block",
                            index: slot,
                        })? {
                        Block::Arith { k, .. }
                        | Block::Cond { k, .. }
                        | Block::Loop { k, .. }
                        | Block::Switch { k, .. }
                        | Block::Call { k, .. }
                        | Block::Global { k, .. }
                        | Block::Table { k, .. }
                        | Block::FnPtr { k, .. } => *k ^= delta,
                    },
                }
            }
            Mutation::Condition => {
                let m = (r.next_u64() & 0x3f0) | 0x3;
                let at = r.index(body.blocks.len().saturating_add(1));
                body.blocks.insert(
                    at,
                    Block::Cond {
                        m,
                        v: r.next_u64() & m,
                        k: multiplier(&mut r),
                        s: r.range(1, 63) as u32,
                    },
                );
            }
            Mutation::Grow => {
                for _ in 0..r.range(2, 5) {
                    let at = r.index(body.blocks.len().saturating_add(1));
                    let b = self.local_block(&mut r, f, true)?;
                    body.blocks.insert(at, b);
                }
            }
            Mutation::Shrink => {
                let arith: Vec<usize> = body
                    .blocks
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| matches!(b, Block::Arith { .. }))
                    .map(|(j, _)| j)
                    .collect();
                let drop = choose(&mut r, &arith, "arithmetic block")?;
                body.blocks.remove(drop);
            }
        }
        Ok(())
    }
}

/// Number of templates of [`Block::Arith`] and of switch cases (see emit.rs).
pub const ARITH_OPS: u64 = 7;
pub const CASE_OPS: u64 = 7;

/// Case templates that multiply by their constant (see emit.rs).
pub fn case_multiplies(op: u8) -> bool {
    op == 0 || op == 4
}

/// A constant used as a multiplier: at most 31 bits. (Each multiplication
/// by a full 64-bit constant costs GCC 12 milliseconds of compile time, in
/// its SLP vectorizer; with them the 50,000-function build was several
/// times slower.)
fn multiplier(r: &mut SplitMix64) -> u64 {
    let v = r.next_u64();
    if r.chance(1, 4) {
        (v & 0x7f) | 0x3
    } else {
        (v & 0x7fff_ffff) | 0x1_0001
    }
}

/// A random constant: a mix of 8-bit, 32-bit and full 64-bit values (the
/// last cost a `movabs`/`movk` sequence), always with some low bits set.
fn constant(r: &mut SplitMix64) -> u64 {
    let v = r.next_u64();
    match r.below(10) {
        0..=1 => (v & 0x7f) | 0x3,
        2..=5 => (v & 0x7fff_ffff) | 0x1_0001,
        _ => v | 0x1_0001,
    }
}

/// Per-unit data (see [`Plan::unit_data`]).
#[derive(Debug, Clone)]
pub struct UnitData {
    pub init_b: Vec<u32>,
    pub table: Vec<u32>,
    pub bytes: Vec<u8>,
    pub fnptrs: Vec<usize>,
}
