//! Structural matching of functions whose names are only their addresses.
//!
//! A stripped ELF image names each function after its address
//! (`sub_<rva>`, see [`Group::unnamed`](crate::index::Group::unnamed)), and
//! addresses move between builds, so such names match nothing: the diff
//! never pairs functions by them. This module pairs the unnamed functions of
//! two builds by what they are, the way BinDiff and Diaphora do:
//!
//! 1. **Fingerprints.** Every function is normalised as the diff
//!    normalises it ([`norm::normalize_group`]), and its exact form (every
//!    instruction's words, its places in its own code, and its references)
//!    is hashed (128 bits), with every reference to another *unnamed*
//!    function replaced by a placeholder. Named references (exports,
//!    imports, data, string literals by their text) stay exact. Two
//!    functions with the same fingerprint have the same code up to which
//!    unnamed functions they refer to.
//! 2. **Anchors.** A fingerprint that exactly one unmatched function of
//!    each build has pairs them (`unique-structure`).
//! 3. **Call graph.** From every matched pair (functions matched by name
//!    are pairs too), the functions the two refer to are aligned in order
//!    from both ends, and unmatched functions at the same place in both
//!    lists pair (`call-graph`); so do callees, and callers, whose
//!    fingerprint (or else whose named references) is unique among the
//!    pair's unmatched neighbours, and a last unmatched callee or caller on
//!    each side.
//! 4. **Address order.** The linker keeps functions in the order of their
//!    sources. Between two matched neighbours (taken from the longest run
//!    of matched pairs in the same order in both builds, so that a function
//!    the update moved does not count), the unmatched functions pair: those
//!    with a fingerprint unique in the gap, then in order when both sides
//!    have as many, else from each end while unambiguous.
//! 5. Steps 3 and 4 repeat until nothing new is found.
//!
//! A candidate whose code differs (the fix itself, usually) is accepted
//! only when it is similar: about as many instructions and function
//! references, and at least half of its named references in common. A
//! function the fix rewrote beyond that is still paired when two
//! independent contexts single it out (two matched neighbours whose only
//! unmatched callee or caller it is, or one of those and an address-order
//! gap holding nothing else): their evidence is kept, with a `dissimilar:`
//! note. Every pair carries its evidence and a [`Confidence`]; none is
//! certain. The diff then gives each pair one identity in both builds
//! ([`ImageIndex::set_identity`]) and compares it exactly, callees
//! included.
//!
//! Work is near-linear: fingerprints go to hash buckets, only
//! neighbourhoods are compared, each pair's neighbourhood is searched a
//! bounded number of times, and the gaps are disjoint.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use rayon::prelude::*;
use serde::Serialize;

use crate::index::{ImageIndex, SymRef};
use crate::norm::{self, InsnHasher, Normalized};

/// What first paired two unnamed functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// The same fingerprint, which no other unmatched function of either
    /// build has.
    UniqueStructure,
    /// Their place among the functions a matched pair refers to, or among
    /// its callers.
    CallGraph,
    /// Their place between two matched neighbours in address order.
    AddressOrder,
}

impl How {
    /// The kebab-case name used in JSON and in the text report.
    pub fn as_str(self) -> &'static str {
        match self {
            How::UniqueStructure => "unique-structure",
            How::CallGraph => "call-graph",
            How::AddressOrder => "address-order",
        }
    }
}

/// How sure a structural match is. None is certain: the names that would
/// prove it are gone.
///
/// - `high`: the same code (unnamed callees aside), and either unique in
///   both builds or placed alike by both the call graph and the address
///   order;
/// - `medium`: the same code, among copies, placed by one kind of
///   context; or different code that both the call graph and the address
///   order place alike;
/// - `low`: different code placed by one kind of context only (similar
///   code in one neighbourhood, or any code in two neighbourhoods of that
///   kind).
///
/// The call graph agrees when the pair's matched callers are partners of
/// each other (at least one, and none that is not); the address order
/// agrees when the nearest matched functions before and after it are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Different code, one kind of context.
    Low,
    /// Same code among duplicates, or different code with two kinds of
    /// context.
    Medium,
    /// Same code, unique or placed by both kinds of context.
    High,
}

impl Confidence {
    /// The lower-case name used in JSON and in the text report.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// How a baseline function and an update function without names were
/// paired: the report's `match` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Match<'i> {
    /// What first paired them.
    pub how: How,
    /// How sure the pairing is.
    pub confidence: Confidence,
    /// Whether their fingerprints are equal: the same normalised code,
    /// with references to unnamed functions as placeholders. (The diff
    /// still compares them exactly, callees included.)
    pub identical: bool,
    /// The update's name for the function (the entry's `name` is the
    /// baseline's).
    pub updated_name: &'i str,
    /// Every piece of evidence, each starting with its kind
    /// (`unique-structure`, `call-graph`, `address-order`, `similar`).
    pub evidence: Vec<String>,
}

/// One pair the matcher proposes: group `baseline` of the baseline index
/// and group `update` of the update's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal<'i> {
    /// The baseline group.
    pub baseline: usize,
    /// The update group.
    pub update: usize,
    /// How and why.
    pub found: Match<'i>,
}

/// A function another one refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A named function: the fingerprint of its key and part (the same in
    /// both builds) and its group in its own index.
    Named(u64, Option<u32>),
    /// An unnamed function: its group in its own index.
    Unnamed(u32),
    /// An import: the hash of its name.
    External(u64),
}

/// What matching knows of one function.
#[derive(Clone, Debug, Default)]
struct Node {
    /// Exact structure, unnamed references as placeholders.
    fp: u128,
    /// Hash of [`Node::tokens`]: the named things it refers to.
    weak: u64,
    /// Instructions, `NOP`s left out.
    insns: u32,
    /// The named things it refers to (functions, imports, data, string
    /// literals), hashed, sorted.
    tokens: Vec<u64>,
    /// The functions it refers to, in order.
    refs: Vec<Target>,
}

/// A hasher of two independent 64-bit lanes: a 128-bit fingerprint, so
/// that two different functions of a large image practically never share
/// one by chance. (It only proposes pairs: the diff compares every pair
/// exactly.)
#[derive(Default)]
struct Wide {
    a: InsnHasher,
    b: InsnHasher,
}

impl Wide {
    fn new() -> Self {
        let mut w = Wide::default();
        w.b.write_u64(0x9e37_79b9_7f4a_7c15);
        w
    }

    fn finish128(&self) -> u128 {
        (u128::from(self.a.finish()) << 64) | u128::from(self.b.finish())
    }
}

impl Hasher for Wide {
    fn write(&mut self, bytes: &[u8]) {
        self.a.write(bytes);
        self.b.write(bytes);
    }

    fn write_u64(&mut self, i: u64) {
        self.a.write_u64(i);
        self.b.write_u64(i);
    }

    fn finish(&self) -> u64 {
        self.a.finish()
    }
}

/// A 64-bit hash of `x`.
fn hash64(x: impl Hash) -> u64 {
    let mut h = InsnHasher::default();
    x.hash(&mut h);
    h.finish()
}

/// Hash a reference for a fingerprint: exact for everything named, a
/// placeholder (with the offset) for an unnamed function.
fn hash_target(r: &SymRef<'_>, h: &mut Wide) {
    match *r {
        SymRef::Local { part, offset } => (8u8, part, offset).hash(h),
        SymRef::Function {
            fingerprint,
            offset,
            ..
        } => (1u8, fingerprint, offset).hash(h),
        SymRef::Unnamed { offset, .. } => (2u8, offset).hash(h),
        SymRef::Data {
            fingerprint,
            offset,
            ..
        } => (3u8, fingerprint, offset).hash(h),
        SymRef::Anon { digest, offset } => (4u8, digest.short(), offset).hash(h),
        SymRef::External { name, addend } => (5u8, name, addend).hash(h),
        SymRef::Unmapped(v) => (6u8, v).hash(h),
        SymRef::Deferred(_) => 7u8.hash(h),
    }
}

/// Summarise group `g` of `idx`, normalised into `parts`.
fn summarise(idx: &ImageIndex<'_, '_>, g: usize, parts: &[Normalized<'_>]) -> Node {
    let mut h = Wide::new();
    let mut node = Node::default();
    let signatures = idx.parts(g);
    parts.len().hash(&mut h);
    let mut insns = 0usize;
    for (p, n) in parts.iter().enumerate() {
        signatures.get(p).map(|s| &*s.signature).hash(&mut h);
        n.insns.len().hash(&mut h);
        insns = insns.saturating_add(n.insns.len());
        for i in &n.insns {
            n.words_of(i).hash(&mut h);
        }
        n.refs.len().hash(&mut h);
        for (at, r) in &n.refs {
            at.hash(&mut h);
            hash_target(r, &mut h);
            match *r {
                SymRef::Function {
                    key, fingerprint, ..
                } => {
                    let group = idx.group(key).and_then(|g| u32::try_from(g).ok());
                    node.refs.push(Target::Named(fingerprint, group));
                    node.tokens.push(fingerprint);
                }
                SymRef::Unnamed { group, .. } => node.refs.push(Target::Unnamed(group)),
                SymRef::External { name, .. } => {
                    let t = hash64((5u8, name));
                    node.refs.push(Target::External(t));
                    node.tokens.push(t);
                }
                SymRef::Data { fingerprint, .. } => node.tokens.push(fingerprint),
                _ => {}
            }
        }
        n.places.hash(&mut h);
        n.late.hash(&mut h);
        n.deferred.len().hash(&mut h);
        for d in &n.deferred {
            d.insn.hash(&mut h);
            match idx.string_at(d.rva) {
                Some(text) => {
                    (1u8, text).hash(&mut h);
                    node.tokens.push(hash64((9u8, text)));
                }
                None => 0u8.hash(&mut h),
            }
        }
        for (_, len) in &n.tables {
            len.hash(&mut h);
        }
    }
    node.fp = h.finish128();
    node.insns = u32::try_from(insns).unwrap_or(u32::MAX);
    node.tokens.sort_unstable();
    node.weak = hash64(&node.tokens);
    node
}

/// How many elements two sorted lists share (as multisets).
fn common(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0usize, 0usize, 0usize);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => i = i.saturating_add(1),
            std::cmp::Ordering::Greater => j = j.saturating_add(1),
            std::cmp::Ordering::Equal => {
                n = n.saturating_add(1);
                i = i.saturating_add(1);
                j = j.saturating_add(1);
            }
        }
    }
    n
}

/// Whether `hi` is within the size class of `lo`: at most twice as large,
/// plus eight.
fn close(x: usize, y: usize) -> bool {
    let (lo, hi) = (x.min(y), x.max(y));
    hi <= lo.saturating_mul(2).saturating_add(8)
}

/// Whether two functions whose code differs are still alike enough for a
/// context to pair them: their instruction counts and function references
/// within a size class of each other (at most twice, plus eight), and at
/// least half of the named things the busier one refers to (functions,
/// imports, data, string literals) shared.
fn similar(a: &Node, b: &Node) -> bool {
    let shared = common(&a.tokens, &b.tokens);
    let most = a.tokens.len().max(b.tokens.len());
    close(a.insns as usize, b.insns as usize)
        && close(a.refs.len(), b.refs.len())
        && shared.saturating_mul(2) >= most
}

/// The `similar:` (or `dissimilar:`, for a pair that several
/// neighbourhoods placed alike however much it changed) evidence for two
/// functions whose code differs.
fn similarity(a: &Node, b: &Node) -> String {
    let most = a.tokens.len().max(b.tokens.len());
    format!(
        "{}: {} → {} instructions, {} → {} function references, {} of {most} named references shared",
        if similar(a, b) { "similar" } else { "dissimilar" },
        a.insns,
        b.insns,
        a.refs.len(),
        b.refs.len(),
        common(&a.tokens, &b.tokens)
    )
}

/// The positions in `seq` of a longest strictly increasing subsequence
/// (always the same one for the same input), in `O(n log n)`.
fn longest_increasing(seq: &[usize]) -> Vec<usize> {
    // tails[k]: position of the smallest last element of an increasing run
    // of length k + 1; back[i]: the position before i in its run.
    let mut tails: Vec<usize> = Vec::new();
    let mut back: Vec<usize> = vec![usize::MAX; seq.len()];
    for (i, x) in seq.iter().enumerate() {
        let k = tails.partition_point(|&t| seq.get(t).is_some_and(|y| y < x));
        if let (Some(&t), Some(b)) = (k.checked_sub(1).and_then(|p| tails.get(p)), back.get_mut(i))
        {
            *b = t;
        }
        match tails.get_mut(k) {
            Some(slot) => *slot = i,
            None => tails.push(i),
        }
    }
    let mut out = Vec::with_capacity(tails.len());
    let mut cur = tails.last().copied();
    while let Some(c) = cur {
        out.push(c);
        cur = back.get(c).copied().filter(|&b| b != usize::MAX);
    }
    out.reverse();
    out
}

/// "No partner": the marker in [`Side::partner`].
const NONE: u32 = u32::MAX;

/// The voter of an address-order gap (see [`Matcher::sole`]): no group.
const GAP_VOTER: u32 = u32::MAX - 1;

/// How many times one matched pair's neighbourhood is searched again after
/// a neighbour was matched (keeps the work linear around hub functions).
const MAX_VISITS: u8 = 4;

/// One build, as matching sees it.
struct Side<'a, 'i, 'd> {
    idx: &'a ImageIndex<'i, 'd>,
    nodes: Vec<Node>,
    /// For each group, the groups that refer to it (sorted, once each).
    callers: Vec<Vec<u32>>,
    /// Groups in address order (of their first part).
    order: Vec<u32>,
    /// For each group, its position in `order`.
    pos: Vec<u32>,
    /// For each group, its partner in the other build, or [`NONE`].
    partner: Vec<u32>,
    /// Whether a group may be matched structurally: unnamed and unmatched
    /// by name.
    candidate: Vec<bool>,
}

impl<'a, 'i, 'd> Side<'a, 'i, 'd> {
    fn new(idx: &'a ImageIndex<'i, 'd>, unmatched: &[usize]) -> Self {
        let n = idx.groups.len();
        let nodes: Vec<Node> = (0..n)
            .into_par_iter()
            .map_init(Vec::new, |scratch: &mut Vec<Normalized<'a>>, g| {
                norm::normalize_group(idx, g, scratch);
                summarise(idx, g, scratch)
            })
            .collect();
        let mut callers: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (g, node) in nodes.iter().enumerate() {
            let g = u32::try_from(g).unwrap_or(NONE);
            for t in &node.refs {
                let callee = match *t {
                    Target::Unnamed(c) | Target::Named(_, Some(c)) => c,
                    _ => continue,
                };
                if callee != g {
                    if let Some(list) = callers.get_mut(callee as usize) {
                        list.push(g);
                    }
                }
            }
        }
        for list in &mut callers {
            list.sort_unstable();
            list.dedup();
        }
        let mut order: Vec<u32> = (0..n).filter_map(|g| u32::try_from(g).ok()).collect();
        let start = |g: u32| idx.parts(g as usize).first().map_or(u64::MAX, |p| p.rva);
        order.sort_by_key(|&g| (start(g), g));
        let mut pos = vec![0u32; n];
        for (i, &g) in order.iter().enumerate() {
            if let Some(p) = pos.get_mut(g as usize) {
                *p = u32::try_from(i).unwrap_or(NONE);
            }
        }
        let mut candidate = vec![false; n];
        for &g in unmatched {
            if idx.is_unnamed(g) {
                if let Some(c) = candidate.get_mut(g) {
                    *c = true;
                }
            }
        }
        Side {
            idx,
            nodes,
            callers,
            order,
            pos,
            partner: vec![NONE; n],
            candidate,
        }
    }

    fn node(&self, g: u32) -> Option<&Node> {
        self.nodes.get(g as usize)
    }

    fn partner(&self, g: u32) -> Option<u32> {
        self.partner.get(g as usize).copied().filter(|&p| p != NONE)
    }

    /// Whether `g` may still be matched: a candidate without a partner.
    fn open(&self, g: u32) -> bool {
        self.candidate.get(g as usize).copied().unwrap_or(false) && self.partner(g).is_none()
    }

    fn fp(&self, g: u32) -> u128 {
        self.node(g).map_or(0, |n| n.fp)
    }

    fn weak(&self, g: u32) -> u64 {
        self.node(g).map_or(0, |n| n.weak)
    }
}

/// One vote for a pair (see [`Matcher::sole`]): who cast it, what kind of
/// context it is, and its evidence.
type Vote = (u32, How, String);

/// A pair in the making.
struct Found {
    b: u32,
    u: u32,
    how: How,
    evidence: Vec<String>,
}

/// An entry of an aligned reference list: fixed (the same thing in both
/// builds, hashed) or still open (an unmatched unnamed function).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Fixed(u64),
    Open(u32),
    /// Something that cannot be compared (an unnamed function that is not
    /// a candidate): matches nothing.
    Opaque,
}

/// The matcher's state.
struct Matcher<'a, 'i, 'd> {
    base: Side<'a, 'i, 'd>,
    upd: Side<'a, 'i, 'd>,
    found: Vec<Found>,
    /// Pairs whose neighbourhoods are to be searched.
    queue: VecDeque<(u32, u32)>,
    /// How often each baseline group's pair was searched.
    visits: Vec<u8>,
    /// Pairs of different code that are the only open neighbours of some
    /// matched pair on both sides, with each such pair's evidence (by its
    /// baseline group): two or more different ones pair them (see
    /// [`Matcher::votes`]).
    votes: BTreeMap<(u32, u32), Vec<Vote>>,
}

/// `(b, u)` for every key that exactly one of `bs` and one of `us` has, in
/// the order of `bs`. The lists hold each group once.
fn unique_pairs<K: Hash + Eq>(
    bs: &[u32],
    us: &[u32],
    kb: impl Fn(u32) -> K,
    ku: impl Fn(u32) -> K,
) -> Vec<(u32, u32)> {
    let mut count: HashMap<K, (u32, u32, u32)> = HashMap::with_capacity(bs.len());
    for &b in bs {
        let e = count.entry(kb(b)).or_insert((0, 0, NONE));
        e.0 = e.0.saturating_add(1);
    }
    for &u in us {
        if let Some(e) = count.get_mut(&ku(u)) {
            e.1 = e.1.saturating_add(1);
            e.2 = u;
        }
    }
    bs.iter()
        .filter_map(|&b| {
            let &(nb, nu, u) = count.get(&kb(b))?;
            (nb == 1 && nu == 1).then_some((b, u))
        })
        .collect()
}

impl<'a, 'i, 'd> Matcher<'a, 'i, 'd> {
    /// `` `a` `` for a pair with one name, `` `a` ↔ `b` `` otherwise.
    fn label(&self, b: u32, u: u32) -> String {
        let (kb, ku) = (self.base.idx.key(b as usize), self.upd.idx.key(u as usize));
        if kb == ku {
            format!("`{kb}`")
        } else {
            format!("`{kb}` ↔ `{ku}`")
        }
    }

    fn identical(&self, b: u32, u: u32) -> bool {
        self.base.fp(b) == self.upd.fp(u)
    }

    fn similar(&self, b: u32, u: u32) -> bool {
        match (self.base.node(b), self.upd.node(u)) {
            (Some(x), Some(y)) => similar(x, y),
            _ => false,
        }
    }

    /// Pair `b` and `u` if both are still open; `false` if not.
    fn accept(&mut self, b: u32, u: u32, how: How, evidence: String) -> bool {
        self.accept_all(b, u, how, vec![evidence])
    }

    /// [`Matcher::accept`] with several pieces of evidence.
    fn accept_all(&mut self, b: u32, u: u32, how: How, evidence: Vec<String>) -> bool {
        if !self.base.open(b) || !self.upd.open(u) {
            return false;
        }
        if let Some(p) = self.base.partner.get_mut(b as usize) {
            *p = u;
        }
        if let Some(p) = self.upd.partner.get_mut(u as usize) {
            *p = b;
        }
        self.found.push(Found {
            b,
            u,
            how,
            evidence,
        });
        self.queue.push_back((b, u));
        // Their matched callers may now align further.
        for &c in self.base.callers.get(b as usize).map_or(&[][..], |v| v) {
            if let Some(p) = self.base.partner(c) {
                self.queue.push_back((c, p));
            }
        }
        true
    }

    /// Pair `b` and `u` if they are the same code, or similar enough.
    fn accept_if_alike(&mut self, b: u32, u: u32, how: How, evidence: String) -> bool {
        (self.identical(b, u) || self.similar(b, u)) && self.accept(b, u, how, evidence)
    }

    /// `p` and `q` are the only open neighbours of something matched on
    /// both sides (`voter`: the baseline group of a matched pair, or
    /// [`GAP_VOTER`] for an address-order gap): pair them if they are
    /// alike, else count the vote.
    fn sole(&mut self, p: u32, q: u32, voter: u32, how: How, evidence: String) {
        if self.identical(p, q) || self.similar(p, q) {
            self.accept(p, q, how, evidence);
            return;
        }
        let list = self.votes.entry((p, q)).or_default();
        if !list.iter().any(|(v, _, _)| *v == voter) {
            list.push((voter, how, evidence));
        }
    }

    /// Pair the functions of different code that two or more matched
    /// pairs each left as their only open neighbours: several independent
    /// neighbourhoods agree, however much the code changed. Returns
    /// whether any were paired.
    fn votes(&mut self) -> bool {
        let ready: Vec<((u32, u32), How, Vec<String>)> = self
            .votes
            .iter()
            .filter(|((p, q), v)| v.len() >= 2 && self.base.open(*p) && self.upd.open(*q))
            .map(|(&k, v)| {
                let how = v.iter().map(|(_, h, _)| *h).min().unwrap_or(How::CallGraph);
                (k, how, v.iter().map(|(_, _, e)| e.clone()).collect())
            })
            .collect();
        let mut any = false;
        for ((p, q), how, evidence) in ready {
            any |= self.accept_all(p, q, how, evidence);
        }
        any
    }

    /// Phase 1: fingerprints unique among all candidates of both builds.
    fn anchors(&mut self) {
        let open = |s: &Side<'_, '_, '_>| -> Vec<u32> {
            s.order.iter().copied().filter(|&g| s.open(g)).collect()
        };
        let (bs, us) = (open(&self.base), open(&self.upd));
        let pairs = unique_pairs(&bs, &us, |b| self.base.fp(b), |u| self.upd.fp(u));
        for (b, u) in pairs {
            self.accept(
                b,
                u,
                How::UniqueStructure,
                "unique-structure: the same normalised code (unnamed callees aside), which no other unmatched function of either build has".into(),
            );
        }
    }

    /// The token of `t` on one side, for aligning reference lists.
    fn token(&self, update: bool, t: Target) -> Tok {
        match t {
            Target::Named(fp, _) => Tok::Fixed(fp),
            Target::External(h) => Tok::Fixed(h),
            Target::Unnamed(g) => {
                let side = if update { &self.upd } else { &self.base };
                match side.partner(g) {
                    // The pair's identity: its baseline group.
                    Some(p) => Tok::Fixed(hash64((0xa1u8, if update { p } else { g }))),
                    None if side.open(g) => Tok::Open(g),
                    None => Tok::Opaque,
                }
            }
        }
    }

    /// Search the neighbourhood of the matched pair `(b, u)`.
    fn neighbourhood(&mut self, b: u32, u: u32) {
        let Some(v) = self.visits.get_mut(b as usize) else {
            return;
        };
        if *v >= MAX_VISITS {
            return;
        }
        *v = v.saturating_add(1);
        let label = self.label(b, u);
        self.callees_in_order(b, u, &label);
        self.callees_unique(b, u, &label);
        self.callers(b, u, &label);
    }

    /// Align the reference lists of `b` and `u` from both ends; open
    /// functions at the same place pair.
    fn callees_in_order(&mut self, b: u32, u: u32, label: &str) {
        let (Some(nb), Some(nu)) = (self.base.node(b), self.upd.node(u)) else {
            return;
        };
        let tb: Vec<Tok> = nb.refs.iter().map(|&t| self.token(false, t)).collect();
        let tu: Vec<Tok> = nu.refs.iter().map(|&t| self.token(true, t)).collect();
        let fits = |x: Tok, y: Tok| match (x, y) {
            (Tok::Fixed(a), Tok::Fixed(b)) => a == b,
            (Tok::Open(_), Tok::Open(_)) => true,
            _ => false,
        };
        let mut aligned: Vec<(usize, u32, u32)> = Vec::new();
        let mut k = 0usize;
        while let (Some(&x), Some(&y)) = (tb.get(k), tu.get(k)) {
            if !fits(x, y) {
                break;
            }
            if let (Tok::Open(p), Tok::Open(q)) = (x, y) {
                aligned.push((k, p, q));
            }
            k = k.saturating_add(1);
        }
        let prefix = k;
        let (mut i, mut j) = (tb.len(), tu.len());
        while i > prefix && j > prefix {
            let (ii, jj) = (i.saturating_sub(1), j.saturating_sub(1));
            let (Some(&x), Some(&y)) = (tb.get(ii), tu.get(jj)) else {
                break;
            };
            if !fits(x, y) {
                break;
            }
            if let (Tok::Open(p), Tok::Open(q)) = (x, y) {
                aligned.push((ii, p, q));
            }
            (i, j) = (ii, jj);
        }
        // A function aligned with two different partners is ambiguous.
        let mut seen: HashMap<u32, u32> = HashMap::new();
        let mut seen_u: HashMap<u32, u32> = HashMap::new();
        let mut bad_b: HashSet<u32> = HashSet::new();
        let mut bad_u: HashSet<u32> = HashSet::new();
        for &(_, p, q) in &aligned {
            if *seen.entry(p).or_insert(q) != q {
                bad_b.insert(p);
            }
            if *seen_u.entry(q).or_insert(p) != p {
                bad_u.insert(q);
            }
        }
        aligned.sort_unstable();
        for (k, p, q) in aligned {
            if bad_b.contains(&p) || bad_u.contains(&q) {
                continue;
            }
            let evidence = format!(
                "call-graph: function reference #{} of {label}, in both builds",
                k.saturating_add(1)
            );
            self.accept_if_alike(p, q, How::CallGraph, evidence);
        }
    }

    /// Open callees of `b` and `u` whose fingerprint (or else named
    /// references) are unique among them.
    fn callees_unique(&mut self, b: u32, u: u32, label: &str) {
        let open = |s: &Side<'_, '_, '_>, g: u32| -> Vec<u32> {
            let mut v: Vec<u32> = s
                .node(g)
                .map(|n| {
                    n.refs
                        .iter()
                        .filter_map(|t| match *t {
                            Target::Unnamed(c) if s.open(c) => Some(c),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (bs, us) = (open(&self.base, b), open(&self.upd, u));
        let (rb, ru) = self.pair_within(
            &bs,
            &us,
            &format!("{label} refers to it, and to no other unmatched function with its code"),
            &format!("{label} refers to it, and to no other unmatched function with its named references"),
        );
        if let ([p], [q]) = (rb.as_slice(), ru.as_slice()) {
            self.sole(
                *p,
                *q,
                b,
                How::CallGraph,
                format!(
                    "call-graph: the only unmatched function {label} refers to, in both builds"
                ),
            );
        }
    }

    /// Pair the open functions of `bs` and `us` (each once) whose
    /// fingerprint is unique among them, then those whose named
    /// references are unique among the rest and that are similar. Returns
    /// the rest.
    fn pair_within(
        &mut self,
        bs: &[u32],
        us: &[u32],
        same: &str,
        alike: &str,
    ) -> (Vec<u32>, Vec<u32>) {
        if bs.is_empty() || us.is_empty() {
            return (bs.to_vec(), us.to_vec());
        }
        for (p, q) in unique_pairs(bs, us, |g| self.base.fp(g), |g| self.upd.fp(g)) {
            self.accept(p, q, How::CallGraph, format!("call-graph: {same}"));
        }
        let rest_b: Vec<u32> = bs.iter().copied().filter(|&g| self.base.open(g)).collect();
        let rest_u: Vec<u32> = us.iter().copied().filter(|&g| self.upd.open(g)).collect();
        for (p, q) in unique_pairs(
            &rest_b,
            &rest_u,
            |g| self.base.weak(g),
            |g| self.upd.weak(g),
        ) {
            self.accept_if_alike(p, q, How::CallGraph, format!("call-graph: {alike}"));
        }
        (
            rest_b.into_iter().filter(|&g| self.base.open(g)).collect(),
            rest_u.into_iter().filter(|&g| self.upd.open(g)).collect(),
        )
    }

    /// Open callers of `b` and `u`: unique fingerprints, unique named
    /// references, then a last one on each side if similar.
    fn callers(&mut self, b: u32, u: u32, label: &str) {
        let open = |s: &Side<'_, '_, '_>, g: u32| -> Vec<u32> {
            s.callers
                .get(g as usize)
                .map(|v| v.iter().copied().filter(|&c| s.open(c)).collect())
                .unwrap_or_default()
        };
        let (bs, us) = (open(&self.base, b), open(&self.upd, u));
        let (rb, ru) = self.pair_within(
            &bs,
            &us,
            &format!("refers to {label}, as no other unmatched function with its code does"),
            &format!(
                "refers to {label}, as no other unmatched function with its named references does"
            ),
        );
        if let ([p], [q]) = (rb.as_slice(), ru.as_slice()) {
            self.sole(
                *p,
                *q,
                b,
                How::CallGraph,
                format!("call-graph: the only unmatched function that refers to {label}, in both builds"),
            );
        }
    }

    /// Run the neighbourhood searches until the queue is empty.
    fn propagate(&mut self) {
        while let Some((b, u)) = self.queue.pop_front() {
            self.neighbourhood(b, u);
        }
    }

    /// Phase 3: the open functions between matched neighbours in address
    /// order. Returns whether anything was matched.
    fn address_order(&mut self) -> bool {
        let before = self.found.len();
        // How many matched functions precede each position, per side.
        let prefix = |s: &Side<'_, '_, '_>| -> Vec<u32> {
            let mut acc = 0u32;
            let mut out = Vec::with_capacity(s.order.len().saturating_add(1));
            out.push(0);
            for &g in &s.order {
                if s.partner(g).is_some() {
                    acc = acc.saturating_add(1);
                }
                out.push(acc);
            }
            out
        };
        let (pb, pu) = (prefix(&self.base), prefix(&self.upd));
        // Functions that moved elsewhere may lie in a gap (the update
        // reordered a few functions); many mean the gap says little.
        let moved = |p: &[u32], lo: usize, hi: usize| {
            let inside = p
                .get(hi)
                .copied()
                .unwrap_or(0)
                .saturating_sub(p.get(lo).copied().unwrap_or(0));
            inside > MAX_MOVED
        };
        // (base range, update range, lower neighbour pair, upper one).
        type Gap = (
            usize,
            usize,
            usize,
            usize,
            Option<(u32, u32)>,
            Option<(u32, u32)>,
        );
        // The matched pairs in baseline order, and the longest run of them
        // that is in the same order in the update: the neighbours that
        // bound the gaps (the others moved). Gaps are then disjoint on
        // both sides.
        let matched: Vec<(usize, usize, u32, u32)> = self
            .base
            .order
            .iter()
            .enumerate()
            .filter_map(|(i, &g)| {
                let u = self.base.partner(g)?;
                let j = self.upd.pos.get(u as usize).copied()? as usize;
                Some((i, j, g, u))
            })
            .collect();
        let js: Vec<usize> = matched.iter().map(|m| m.1).collect();
        let bounds: Vec<(usize, usize, u32, u32)> = longest_increasing(&js)
            .into_iter()
            .filter_map(|k| matched.get(k).copied())
            .collect();
        let (eb, eu) = (self.base.order.len(), self.upd.order.len());
        let mut gaps: Vec<Gap> = Vec::new();
        let mut prev: Option<(usize, usize, u32, u32)> = None;
        for next in bounds.iter().copied().map(Some).chain([None]) {
            let (lb, lu, low) = match prev {
                Some((i, j, g, u)) => (i.saturating_add(1), j.saturating_add(1), Some((g, u))),
                None => (0, 0, None),
            };
            let (hb, hu, high) = match next {
                Some((i, j, g, u)) => (i, j, Some((g, u))),
                None => (eb, eu, None),
            };
            if hb > lb && hu > lu && !moved(&pb, lb, hb) && !moved(&pu, lu, hu) {
                gaps.push((lb, hb, lu, hu, low, high));
            }
            prev = next;
        }
        for (lb, hb, lu, hu, low, high) in gaps {
            let bs: Vec<u32> = self
                .base
                .order
                .get(lb..hb)
                .unwrap_or(&[])
                .iter()
                .copied()
                .filter(|&g| self.base.open(g))
                .collect();
            let us: Vec<u32> = self
                .upd
                .order
                .get(lu..hu)
                .unwrap_or(&[])
                .iter()
                .copied()
                .filter(|&g| self.upd.open(g))
                .collect();
            if bs.is_empty() || us.is_empty() {
                continue;
            }
            let place = match (low, high) {
                (Some((a, b)), Some((c, d))) => {
                    format!("between {} and {}", self.label(a, b), self.label(c, d))
                }
                (Some((a, b)), None) => {
                    format!("after {}, the last matched function", self.label(a, b))
                }
                (None, Some((c, d))) => {
                    format!("before {}, the first matched function", self.label(c, d))
                }
                (None, None) => "with no matched function at all".into(),
            };
            self.gap(&bs, &us, &place);
        }
        self.found.len() > before
    }

    /// Pair the open functions of one address-order gap.
    fn gap(&mut self, bs: &[u32], us: &[u32], place: &str) {
        for (p, q) in unique_pairs(bs, us, |g| self.base.fp(g), |g| self.upd.fp(g)) {
            self.accept(
                p,
                q,
                How::AddressOrder,
                format!("address-order: {place}, the only unmatched function with its code there in both builds"),
            );
        }
        let bs: Vec<u32> = bs.iter().copied().filter(|&g| self.base.open(g)).collect();
        let us: Vec<u32> = us.iter().copied().filter(|&g| self.upd.open(g)).collect();
        let n = bs.len();
        if let ([p], [q]) = (bs.as_slice(), us.as_slice()) {
            self.sole(
                *p,
                *q,
                GAP_VOTER,
                How::AddressOrder,
                format!("address-order: {place}, the only unmatched function there in both builds"),
            );
            return;
        }
        if n == us.len() {
            for (k, (&p, &q)) in bs.iter().zip(&us).enumerate() {
                self.accept_if_alike(
                    p,
                    q,
                    How::AddressOrder,
                    format!(
                        "address-order: {place}, unmatched function {} of {n} in both builds",
                        k.saturating_add(1)
                    ),
                );
            }
            return;
        }
        // Different counts: pair from each end while the pairs are alike
        // and unambiguous. Code that both sides of the gap have equally
        // often pairs in order; code that one side has more often could
        // pair with any of its copies. Different code is ambiguous when
        // either one's code is found on the other side too.
        let count = |side: &Side<'_, '_, '_>, list: &[u32]| {
            let mut n: HashMap<u128, usize> = HashMap::with_capacity(list.len());
            for &g in list {
                let c = n.entry(side.fp(g)).or_insert(0);
                *c = c.saturating_add(1);
            }
            n
        };
        let (on_b, on_u) = (count(&self.base, &bs), count(&self.upd, &us));
        let on = |n: &HashMap<u128, usize>, fp: u128| n.get(&fp).copied().unwrap_or(0);
        let unambiguous = |p: u32, q: u32| {
            let (fp, fq) = (self.base.fp(p), self.upd.fp(q));
            if fp == fq {
                on(&on_b, fp) == on(&on_u, fp)
            } else {
                on(&on_u, fp) == 0 && on(&on_b, fq) == 0
            }
        };
        let mut k = 0usize;
        let mut pairs: Vec<(u32, u32, String)> = Vec::new();
        while let (Some(&p), Some(&q)) = (bs.get(k), us.get(k)) {
            if !unambiguous(p, q) || !(self.identical(p, q) || self.similar(p, q)) {
                break;
            }
            pairs.push((
                p,
                q,
                format!(
                    "address-order: {place}, unmatched function {} from the start in both builds",
                    k.saturating_add(1)
                ),
            ));
            k = k.saturating_add(1);
        }
        let (mut i, mut j, mut from_end) = (bs.len(), us.len(), 1usize);
        while i > k && j > k {
            let (ii, jj) = (i.saturating_sub(1), j.saturating_sub(1));
            let (Some(&p), Some(&q)) = (bs.get(ii), us.get(jj)) else {
                break;
            };
            if !unambiguous(p, q) || !(self.identical(p, q) || self.similar(p, q)) {
                break;
            }
            pairs.push((
                p,
                q,
                format!("address-order: {place}, unmatched function {from_end} from the end in both builds"),
            ));
            (i, j, from_end) = (ii, jj, from_end.saturating_add(1));
        }
        for (p, q, evidence) in pairs {
            self.accept(p, q, How::AddressOrder, evidence);
        }
    }

    /// The nearest matched function before and after each group in address
    /// order, per side: `(before, after)`.
    fn matched_neighbours(s: &Side<'_, '_, '_>) -> Vec<(u32, u32)> {
        let mut out = vec![(NONE, NONE); s.order.len()];
        let mut last = NONE;
        for &g in &s.order {
            if let Some(o) = out.get_mut(g as usize) {
                o.0 = last;
            }
            if s.partner(g).is_some() {
                last = g;
            }
        }
        last = NONE;
        for &g in s.order.iter().rev() {
            if let Some(o) = out.get_mut(g as usize) {
                o.1 = last;
            }
            if s.partner(g).is_some() {
                last = g;
            }
        }
        out
    }

    /// The proposals, with the supporting evidence each has once matching
    /// is over, and their confidence.
    fn finish(self) -> Vec<Proposal<'i>> {
        let nb = Self::matched_neighbours(&self.base);
        let nu = Self::matched_neighbours(&self.upd);
        // How many functions of both builds share each fingerprint.
        let mut shared: HashMap<u128, u32> = HashMap::new();
        for s in [&self.base, &self.upd] {
            for (g, node) in s.nodes.iter().enumerate() {
                if s.candidate.get(g).copied().unwrap_or(false) {
                    let c = shared.entry(node.fp).or_insert(0);
                    *c = c.saturating_add(1);
                }
            }
        }
        let mut out = Vec::with_capacity(self.found.len());
        for f in &self.found {
            let (b, u) = (f.b, f.u);
            let mut evidence = f.evidence.clone();
            // The kinds of evidence that paired them.
            let had = |kind: &str| f.evidence.iter().any(|e| e.starts_with(kind));
            let (had_order, had_graph) = (had("address-order:"), had("call-graph:"));
            let identical = self.identical(b, u);
            let unique = shared.get(&self.base.fp(b)).copied() == Some(2) && identical;
            // Address order: the nearest matched neighbours are partners.
            let (Some(&(bb, ba)), Some(&(ub, ua))) = (nb.get(b as usize), nu.get(u as usize))
            else {
                continue;
            };
            let partner = |g: u32| {
                if g == NONE {
                    NONE
                } else {
                    self.base.partner(g).unwrap_or(NONE)
                }
            };
            let order = partner(bb) == ub && partner(ba) == ua && (bb != NONE || ba != NONE);
            if order && !had_order {
                let between = match (bb, ba) {
                    (NONE, a) => format!("before {}", self.label(a, ua)),
                    (a, NONE) => format!("after {}", self.label(a, ub)),
                    (a, c) => format!("between {} and {}", self.label(a, ub), self.label(c, ua)),
                };
                evidence.push(format!(
                    "address-order: {between} in both builds, nothing matched in between"
                ));
            }
            // Call graph: matched callers of one whose partners are callers
            // of the other, and those that are not.
            let cu = self.upd.callers.get(u as usize).map_or(&[][..], |v| v);
            let (mut agree, mut disagree) = (0usize, 0usize);
            for &c in self.base.callers.get(b as usize).map_or(&[][..], |v| v) {
                if let Some(p) = self.base.partner(c) {
                    if cu.binary_search(&p).is_ok() {
                        agree = agree.saturating_add(1);
                    } else {
                        disagree = disagree.saturating_add(1);
                    }
                }
            }
            for &c in cu {
                if let Some(p) = self.upd.partner(c) {
                    let cb = self.base.callers.get(b as usize).map_or(&[][..], |v| v);
                    if cb.binary_search(&p).is_err() {
                        disagree = disagree.saturating_add(1);
                    }
                }
            }
            let graph = agree > 0 && disagree == 0;
            if agree > 0 && !had_graph {
                evidence.push(format!(
                    "call-graph: {agree} matched caller{} to it in both builds{}",
                    if agree == 1 { " refers" } else { "s refer" },
                    if disagree > 0 {
                        format!(", {disagree} only in one")
                    } else {
                        String::new()
                    }
                ));
            }
            if !identical {
                if let (Some(x), Some(y)) = (self.base.node(b), self.upd.node(u)) {
                    evidence.push(similarity(x, y));
                }
            }
            let both = (order || had_order) && (graph || had_graph);
            let confidence = match (identical, unique || both) {
                (true, true) => Confidence::High,
                (true, false) => Confidence::Medium,
                (false, _) if both => Confidence::Medium,
                (false, _) => Confidence::Low,
            };
            out.push(Proposal {
                baseline: b as usize,
                update: u as usize,
                found: Match {
                    how: f.how,
                    confidence,
                    identical,
                    updated_name: self.upd.idx.key(u as usize).name,
                    evidence,
                },
            });
        }
        out.sort_by_key(|p| p.baseline);
        out
    }
}

/// How many matched functions whose partners lie elsewhere an update gap
/// may hold (see [`Matcher::address_order`]).
const MAX_MOVED: u32 = 8;

/// How many rounds of address order and neighbourhood searches run at
/// most (each is linear; real pairs settle in two or three).
const MAX_ROUNDS: usize = 16;

/// Pair the unnamed functions of `removed` (baseline groups left unmatched
/// by name) with those of `added` (update groups), given the pairs already
/// matched by name. Returns the proposed pairs, sorted by baseline group,
/// each with its evidence. Functions that are named are never proposed.
pub fn match_unnamed<'i>(
    base: &ImageIndex<'i, '_>,
    upd: &ImageIndex<'i, '_>,
    pairs: &[(usize, usize)],
    removed: &[usize],
    added: &[usize],
) -> Vec<Proposal<'i>> {
    if !removed.iter().any(|&g| base.is_unnamed(g)) || !added.iter().any(|&g| upd.is_unnamed(g)) {
        return Vec::new();
    }
    let (bs, us) = rayon::join(|| Side::new(base, removed), || Side::new(upd, added));
    let n = bs.nodes.len();
    let mut m = Matcher {
        base: bs,
        upd: us,
        found: Vec::new(),
        queue: VecDeque::new(),
        visits: vec![0; n],
        votes: BTreeMap::new(),
    };
    for &(b, u) in pairs {
        let (Ok(b), Ok(u)) = (u32::try_from(b), u32::try_from(u)) else {
            continue;
        };
        if let Some(p) = m.base.partner.get_mut(b as usize) {
            *p = u;
        }
        if let Some(p) = m.upd.partner.get_mut(u as usize) {
            *p = b;
        }
        m.queue.push_back((b, u));
    }
    m.anchors();
    for _ in 0..MAX_ROUNDS {
        m.propagate();
        if !m.votes() && !m.address_order() {
            break;
        }
    }
    m.propagate();
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{diff, Diff, Status};
    use crate::testutil::{image, section};
    use hotpatch_formats::{Arch, Format, Function, Image, Visibility};

    /// One instruction or call of a synthetic function.
    #[derive(Clone)]
    enum Op {
        /// Raw x86-64 bytes.
        Code(&'static [u8]),
        /// `call rel32` to function `n` of the same image.
        Call(usize),
    }
    use Op::{Call, Code};

    /// `mov eax, n`.
    fn mov(n: u8) -> Op {
        Code(Box::leak(vec![0xb8, n, 0, 0, 0].into_boxed_slice()))
    }
    const RET: Op = Code(&[0xc3]);
    const PUSH: Op = Code(&[0x53]);
    const POP: Op = Code(&[0x5b]);

    /// A stripped x86-64 ELF image: `.text` at 0x1000 holding `bodies` at
    /// the given RVAs, each a function named after its address.
    fn stripped(bodies: &[(u64, Vec<Op>)]) -> Image<'static> {
        let mut code = vec![0xccu8; 0x400];
        let mut functions = Vec::new();
        for (rva, ops) in bodies {
            let mut at = (*rva - 0x1000) as usize;
            for op in ops {
                match op {
                    Code(b) => {
                        code[at..at + b.len()].copy_from_slice(b);
                        at += b.len();
                    }
                    Call(n) => {
                        let target = bodies[*n].0 as i64;
                        let next = 0x1000 + at as i64 + 5;
                        code[at] = 0xe8;
                        code[at + 1..at + 5]
                            .copy_from_slice(&((target - next) as i32).to_le_bytes());
                        at += 5;
                    }
                }
            }
            functions.push(Function {
                name: format!("sub_{rva:x}"),
                rva: *rva,
                size: (0x1000 + at as u64) - rva,
                unit: None,
                visibility: Visibility::Global,
                extent: hotpatch_formats::Extent::Stripped,
            });
        }
        let code: &'static [u8] = Box::leak(code.into_boxed_slice());
        let mut img = image(
            Format::Elf,
            Arch::X86_64,
            vec![section(".text", 0x1000, code, false, true)],
            &[],
        );
        img.functions = functions;
        img.stripped = true;
        img
    }

    /// `(baseline name, update name, status, how, confidence)` of every
    /// function, in report order (`-` where absent).
    fn outcome(d: &Diff<'_>) -> Vec<(String, String, Status, String, String)> {
        d.functions
            .iter()
            .map(|e| {
                let (upd, how, conf) = match &e.matched {
                    Some(m) => (
                        m.updated_name.to_string(),
                        m.how.as_str().to_string(),
                        m.confidence.as_str().to_string(),
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                (e.name.to_string(), upd, e.status, how, conf)
            })
            .collect()
    }

    fn row(
        b: &str,
        u: &str,
        s: Status,
        how: &str,
        conf: &str,
    ) -> (String, String, Status, String, String) {
        (b.into(), u.into(), s, how.into(), conf.into())
    }

    /// Four functions that only moved (by 0x20, so that the update's
    /// `sub_1020` is the baseline's `sub_1000`): names that are addresses
    /// pair nothing, each function's unique code pairs it, and the calls
    /// between them compare equal once paired, so nothing changed.
    #[test]
    fn functions_renamed_by_their_new_address_match_by_unique_structure() {
        let bodies = |at: u64| {
            vec![
                (at, vec![PUSH, Call(1), Call(2), POP, RET]),
                (at + 0x20, vec![mov(1), Code(&[0x83, 0xc0, 0x05]), RET]),
                (at + 0x40, vec![mov(2), Call(1), RET]),
                (at + 0x60, vec![mov(7), RET]),
            ]
        };
        let (a, b) = (stripped(&bodies(0x1000)), stripped(&bodies(0x1020)));
        let d = diff(&a, &b).unwrap();
        let u = Status::Unchanged;
        assert_eq!(
            outcome(&d),
            [
                row("sub_1000", "sub_1020", u, "unique-structure", "high"),
                row("sub_1020", "sub_1040", u, "unique-structure", "high"),
                row("sub_1040", "sub_1060", u, "unique-structure", "high"),
                row("sub_1060", "sub_1080", u, "unique-structure", "high"),
            ]
        );
        let s = d.structural.as_ref().unwrap();
        assert_eq!((s.matched, s.high, s.medium, s.low), (4, 4, 0, 0));
        assert!(s.unmatched_baseline.is_empty() && s.unmatched_update.is_empty());
        // A name that is an address is no alias.
        assert!(d.functions.iter().all(|e| e.aliases.is_empty()));
        let m = d.functions[0].matched.as_ref().unwrap();
        assert!(m.identical);
        assert!(m.evidence[0].starts_with("unique-structure: "));
    }

    /// The fix: `sub_1020` gains an instruction. Its code is no longer
    /// unique to both builds, but its caller and its place pin it: it is
    /// matched by the call graph, reported changed, and not called sure.
    #[test]
    fn changed_function_is_pinned_by_its_caller_and_its_place() {
        let bodies = |fixed: bool| {
            let f1 = if fixed {
                vec![mov(1), Code(&[0x83, 0xc0, 0x03]), RET]
            } else {
                vec![mov(1), RET]
            };
            vec![
                (0x1000, vec![PUSH, Call(1), Call(2), POP, RET]),
                (0x1020, f1),
                (0x1040, vec![mov(2), RET]),
            ]
        };
        let (a, b) = (stripped(&bodies(false)), stripped(&bodies(true)));
        let d = diff(&a, &b).unwrap();
        assert_eq!(
            outcome(&d),
            [
                row(
                    "sub_1020",
                    "sub_1020",
                    Status::Changed,
                    "call-graph",
                    "medium"
                ),
                row(
                    "sub_1000",
                    "sub_1000",
                    Status::Unchanged,
                    "unique-structure",
                    "high"
                ),
                row(
                    "sub_1040",
                    "sub_1040",
                    Status::Unchanged,
                    "unique-structure",
                    "high"
                ),
            ]
        );
        let m = d.functions[0].matched.as_ref().unwrap();
        assert!(!m.identical);
        assert_eq!(
            m.evidence,
            [
                "call-graph: function reference #1 of `sub_1000`, in both builds",
                "address-order: between `sub_1000` and `sub_1040` in both builds, nothing matched in between",
                "similar: 2 → 3 instructions, 0 → 0 function references, 0 of 0 named references shared",
            ]
        );
        assert!(d.functions[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("different instruction"));
    }

    /// The fix rewrote `sub_1020` into something much larger, so that it
    /// is not similar any more; but both of its callers refer to it and to
    /// no other unmatched function, in both builds. Two neighbourhoods
    /// agree: it is matched, changed, and its evidence says it is
    /// dissimilar.
    #[test]
    fn rewritten_function_is_matched_when_two_neighbourhoods_agree() {
        let big: Vec<Op> = (0..12).map(|k| mov(0x40 + k)).chain([RET]).collect();
        let bodies = |x: Vec<Op>| {
            vec![
                (0x1000, vec![PUSH, Call(2), POP, RET]),
                (0x1010, vec![mov(3), Call(2), RET]),
                (0x1020, x),
            ]
        };
        let (a, b) = (stripped(&bodies(vec![mov(1), RET])), stripped(&bodies(big)));
        let d = diff(&a, &b).unwrap();
        let u = Status::Unchanged;
        assert_eq!(
            outcome(&d),
            [
                row(
                    "sub_1020",
                    "sub_1020",
                    Status::Changed,
                    "call-graph",
                    "medium"
                ),
                row("sub_1000", "sub_1000", u, "unique-structure", "high"),
                row("sub_1010", "sub_1010", u, "unique-structure", "high"),
            ]
        );
        assert_eq!(
            d.functions[0].matched.as_ref().unwrap().evidence,
            [
                "call-graph: the only unmatched function `sub_1000` refers to, in both builds",
                "call-graph: the only unmatched function `sub_1010` refers to, in both builds",
                "address-order: after `sub_1010` in both builds, nothing matched in between",
                "dissimilar: 2 → 13 instructions, 0 → 0 function references, 0 of 0 named references shared",
            ]
        );
    }

    /// Two copies of one function in the baseline, three in the update,
    /// with nothing to tell them apart: none is matched, all are listed.
    /// With as many copies on each side, address order pairs them, but
    /// only with medium confidence.
    #[test]
    fn ambiguous_duplicates_are_left_unmatched() {
        let copies = |n: u64| -> Vec<(u64, Vec<Op>)> {
            (0..n)
                .map(|k| (0x1000 + 0x10 * k, vec![mov(9), RET]))
                .collect()
        };
        let (two, three) = (stripped(&copies(2)), stripped(&copies(3)));
        let d = diff(&two, &three).unwrap();
        let s = d.structural.as_ref().unwrap();
        assert_eq!(s.matched, 0);
        assert_eq!(s.unmatched_baseline, ["sub_1000", "sub_1010"]);
        assert_eq!(s.unmatched_update, ["sub_1000", "sub_1010", "sub_1020"]);
        let statuses: Vec<Status> = d.functions.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Added,
                Status::Added,
                Status::Added,
                Status::Removed,
                Status::Removed
            ]
        );
        let again = stripped(&copies(2));
        let d = diff(&two, &again).unwrap();
        let u = Status::Unchanged;
        assert_eq!(
            outcome(&d),
            [
                row("sub_1000", "sub_1000", u, "address-order", "medium"),
                row("sub_1010", "sub_1010", u, "address-order", "medium"),
            ]
        );
    }

    /// A new function takes the address of one that moved on: the shared
    /// name `sub_1020` pairs nothing. The moved one is found by its code,
    /// so its caller, which still calls it, is unchanged; the new one is
    /// added.
    #[test]
    fn same_address_different_function_is_not_paired_by_name() {
        let base = stripped(&[
            (0x1000, vec![PUSH, Call(1), POP, RET]),
            (0x1020, vec![mov(1), RET]),
        ]);
        let upd = stripped(&[
            (0x1000, vec![PUSH, Call(2), POP, RET]),
            (
                0x1020,
                vec![Code(&[0x31, 0xc0, 0x31, 0xd2, 0x31, 0xc9]), RET],
            ),
            (0x1040, vec![mov(1), RET]),
        ]);
        let d = diff(&base, &upd).unwrap();
        let (a, u) = (Status::Added, Status::Unchanged);
        assert_eq!(
            outcome(&d),
            [
                row("sub_1020", "-", a, "-", "-"),
                row("sub_1000", "sub_1000", u, "unique-structure", "high"),
                row("sub_1020", "sub_1040", u, "unique-structure", "high"),
            ]
        );
        assert_eq!(
            d.structural.as_ref().unwrap().unmatched_update,
            ["sub_1020"]
        );
    }

    /// Images with names never reach the matcher: no `structural` summary.
    #[test]
    fn named_images_are_not_matched_structurally() {
        let mut a = stripped(&[(0x1000, vec![mov(1), RET])]);
        a.stripped = false;
        let b = a.clone();
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.structural, None);
        assert!(d.functions.iter().all(|e| e.matched.is_none()));
    }

    #[test]
    fn similarity_needs_the_size_class_and_half_the_named_references() {
        let node = |insns: u32, tokens: &[u64]| Node {
            insns,
            tokens: tokens.to_vec(),
            ..Node::default()
        };
        assert!(similar(&node(10, &[1, 2]), &node(28, &[1, 3])));
        assert!(!similar(&node(10, &[1, 2]), &node(29, &[1, 2])));
        assert!(!similar(&node(10, &[1, 2, 3]), &node(10, &[1, 4, 5])));
        assert!(!similar(&node(10, &[1]), &node(10, &[])));
        assert!(similar(&node(3, &[]), &node(11, &[])));
    }

    #[test]
    fn longest_increasing_run_leaves_out_what_moved() {
        assert_eq!(longest_increasing(&[0, 1, 9, 2, 3, 4]), [0, 1, 3, 4, 5]);
        assert_eq!(longest_increasing(&[5, 0, 1, 2]), [1, 2, 3]);
        assert_eq!(longest_increasing(&[]), Vec::<usize>::new());
        assert_eq!(longest_increasing(&[3, 3, 3]), [2]);
    }

    #[test]
    fn unique_pairs_pairs_only_keys_unique_on_both_sides() {
        let bs = [1, 2, 3, 4];
        let us = [10, 20, 30, 40, 50];
        let kb = |g: u32| [7, 8, 8, 9][g as usize - 1];
        let ku = |g: u32| [9, 8, 7, 6, 6][(g / 10) as usize - 1];
        assert_eq!(unique_pairs(&bs, &us, kb, ku), [(1, 30), (4, 10)]);
    }
}
