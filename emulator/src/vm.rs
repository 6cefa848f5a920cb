//! The VM: one image loaded into a unicorn-engine machine, its exports
//! called with the platform's calling convention.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use unicorn_engine::unicorn_const::{Arch as UcArch, HookType, MemType, Mode, Prot};
use unicorn_engine::{RegisterARM64, RegisterX86, Unicorn};

use hotpatch_formats::package::Sha256Digest;
use hotpatch_formats::{Arch, DataObject, Format, Image, Permissions, ReadOptions};

use crate::error::{Error, Result};
use crate::loader::{self, Base, ImportStub, Region, RelocSlot, PAGE, STUB_SIZE};

/// The lowest address the VM maps or allocates (the first 64 KiB stay
/// unmapped, so null pointers fault).
pub const LOWEST_ADDRESS: u64 = 0x1_0000;
/// Images and [`Vm::allocate`]d ranges lie below this address; the VM's
/// own regions (trap stubs, sentinel, scratch, stack) lie above it.
pub const IMAGE_LIMIT: u64 = 0x7000_0000_0000;
/// The import trap stubs: one 16-byte slot per import,
/// mapped readable but not executable, so that a call into one stops.
pub const TRAP_BASE: u64 = 0x7000_0000_0000;
/// Size of the trap stub region.
pub const TRAP_SIZE: u64 = 0x1_0000;
/// The return address of every call: a mapped page; a call is finished
/// when the program counter reaches it.
pub const SENTINEL: u64 = 0x7000_0010_0000;
/// Where byte-buffer arguments are copied.
pub const SCRATCH_BASE: u64 = 0x7000_1000_0000;
/// Largest scratch region (all buffer arguments of one call together).
pub const SCRATCH_MAX: u64 = 64 << 20;
/// The stack region.
pub const STACK_BASE: u64 = 0x7000_2000_0000;
/// Size of the stack.
pub const STACK_SIZE: u64 = 1 << 20;
/// The highest address [`Vm::allocate`] may hand out (exclusive).
const ALLOC_LIMIT: u64 = IMAGE_LIMIT;

/// Default distance between the preferred base and the load base.
pub const DEFAULT_BIAS: u64 = 0x1234_0000;

/// A calling convention for [`Vm::call`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Convention {
    /// Windows x64: rcx, rdx, r8, r9, 32 bytes of shadow space.
    Win64,
    /// System V AMD64 (Linux x86-64): rdi, rsi, rdx, rcx, r8, r9.
    SysV,
    /// AAPCS64 (Linux and Windows on ARM64): x0–x7.
    Aapcs64,
}

impl Convention {
    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Win64 => "Windows x64",
            Convention::SysV => "System V AMD64",
            Convention::Aapcs64 => "AAPCS64",
        }
    }

    /// The convention of a platform: PE on x86-64 is Windows x64, ELF on
    /// x86-64 is System V, both formats on AArch64 are AAPCS64.
    pub fn of(format: Format, arch: Arch) -> Convention {
        match (arch, format) {
            (Arch::X86_64, Format::Pe) => Convention::Win64,
            (Arch::X86_64, Format::Elf) => Convention::SysV,
            (Arch::Aarch64, _) => Convention::Aapcs64,
        }
    }

    /// How many integer arguments it passes in registers.
    pub fn register_args(self) -> usize {
        self.registers().len()
    }

    fn registers(self) -> &'static [i32] {
        const WIN64: [i32; 4] = [
            RegisterX86::RCX as i32,
            RegisterX86::RDX as i32,
            RegisterX86::R8 as i32,
            RegisterX86::R9 as i32,
        ];
        const SYSV: [i32; 6] = [
            RegisterX86::RDI as i32,
            RegisterX86::RSI as i32,
            RegisterX86::RDX as i32,
            RegisterX86::RCX as i32,
            RegisterX86::R8 as i32,
            RegisterX86::R9 as i32,
        ];
        const AAPCS64: [i32; 8] = [
            RegisterARM64::X0 as i32,
            RegisterARM64::X1 as i32,
            RegisterARM64::X2 as i32,
            RegisterARM64::X3 as i32,
            RegisterARM64::X4 as i32,
            RegisterARM64::X5 as i32,
            RegisterARM64::X6 as i32,
            RegisterARM64::X7 as i32,
        ];
        match self {
            Convention::Win64 => &WIN64,
            Convention::SysV => &SYSV,
            Convention::Aapcs64 => &AAPCS64,
        }
    }
}

/// How to load an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where: by default the preferred base plus [`DEFAULT_BIAS`], so that
    /// every relocation must be applied for the image to work.
    pub base: Base,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            base: Base::Bias(DEFAULT_BIAS),
        }
    }
}

/// One argument of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An integer, passed in a register.
    Int(i64),
    /// A byte buffer, copied into the VM's scratch region and passed by
    /// pointer; its bytes after the call are in [`CallResult::buffers`].
    Bytes(Vec<u8>),
}

/// What a call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallResult {
    /// The whole 64-bit return register (rax or x0) as `i64`. The corpus
    /// entry points return `long long`, so no narrowing is applied; a
    /// caller of an `int` function takes `value as i32`.
    pub value: i64,
    /// The bytes of each [`Arg::Bytes`] argument after the call, in
    /// argument order (one entry per buffer argument; integers have none).
    pub buffers: Vec<Vec<u8>>,
}

/// A mapped range of VM memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedRegion {
    /// First address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Protection.
    pub perms: Permissions,
}

/// What the VM knows of the image it loaded.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The file name (no directory): what [`hotpatch_applier::Target::locate`]
    /// matches.
    pub name: String,
    /// The path it was loaded from, or the name; used in messages.
    pub label: String,
    /// Container format.
    pub format: Format,
    /// Architecture.
    pub arch: Arch,
    /// The calling convention of its exports.
    pub convention: Convention,
    /// Where RVA 0 lies.
    pub base: u64,
    /// The base the image was linked for.
    pub preferred_base: u64,
    /// Bytes from RVA 0 to the end of the last mapped page.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: Sha256Digest,
    /// The image's pages as loaded (RVAs), with their protections.
    pub regions: Vec<Region>,
    /// Exports by name → RVA.
    pub exports: BTreeMap<String, u64>,
    /// Imports, each with its trap stub.
    pub imports: Vec<ImportStub>,
    /// Every slot the loader adjusted (base relocations, ELF dynamic
    /// relocations, import slots), sorted by RVA.
    pub relocations: Vec<RelocSlot>,
}

impl LoadedImage {
    /// The relocated slots in `[rva, rva + len)`: the pointers inside a
    /// data object, for translating them between two images.
    pub fn relocations_in(&self, rva: u64, len: u64) -> &[RelocSlot] {
        let end = rva.saturating_add(len);
        let lo = self.relocations.partition_point(|s| s.rva < rva);
        let hi = self.relocations.partition_point(|s| s.rva < end);
        self.relocations.get(lo..hi).unwrap_or_default()
    }
}

/// What the hooks record during a call.
#[derive(Debug, Default)]
pub(crate) struct HookState {
    /// The last invalid memory access: kind, address, size.
    fault: Option<(MemType, u64, usize)>,
}

/// An emulated x86-64 or AArch64 machine holding one image.
///
/// See the crate documentation for the address-space layout.
pub struct Vm {
    uc: Unicorn<'static, HookState>,
    image: LoadedImage,
    file: Vec<u8>,
    path: Option<PathBuf>,
    scratch_size: u64,
    allocations: BTreeMap<u64, u64>,
    pub(crate) states: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("image", &self.image.label)
            .field("base", &format_args!("{:#x}", self.image.base))
            .finish_non_exhaustive()
    }
}

fn prot(p: Permissions) -> Prot {
    let mut out = Prot::NONE;
    if p.read {
        out |= Prot::READ;
    }
    if p.write {
        out |= Prot::WRITE;
    }
    if p.execute {
        out |= Prot::EXEC;
    }
    out
}

fn perms(p: u32) -> Permissions {
    Permissions {
        read: p & Prot::READ.0 != 0,
        write: p & Prot::WRITE.0 != 0,
        execute: p & Prot::EXEC.0 != 0,
    }
}

fn access_name(t: MemType) -> &'static str {
    match t {
        MemType::READ_UNMAPPED => "read of unmapped memory",
        MemType::WRITE_UNMAPPED => "write to unmapped memory",
        MemType::FETCH_UNMAPPED => "fetch from unmapped memory",
        MemType::READ_PROT => "read of unreadable memory",
        MemType::WRITE_PROT => "write to read-only memory",
        MemType::FETCH_PROT => "fetch from non-executable memory",
        _ => "memory access",
    }
}

impl Vm {
    /// Load the image file at `path` into a fresh VM.
    pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Vm> {
        let label = path.display().to_string();
        let file = hotpatch_formats::read::load_file(path).map_err(|e| Error::Io {
            image: label.clone(),
            detail: e.to_string(),
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| label.clone());
        let mut vm = Vm::build(name, label, file, opts)?;
        vm.path = Some(path.to_path_buf());
        Ok(vm)
    }

    /// Load an image from its bytes into a fresh VM. `name` is its file
    /// name, used in messages and by [`hotpatch_applier::Target::locate`].
    pub fn load(name: &str, file: Vec<u8>, opts: &LoadOptions) -> Result<Vm> {
        Vm::build(name.to_owned(), name.to_owned(), file, opts)
    }

    fn build(name: String, label: String, file: Vec<u8>, opts: &LoadOptions) -> Result<Vm> {
        let layout = loader::lay_out(&label, &file, opts.base, TRAP_BASE)?;
        let engine = |detail: String| Error::Engine {
            image: label.clone(),
            detail,
        };
        let (arch, mode) = match layout.arch {
            Arch::X86_64 => (UcArch::X86, Mode::MODE_64),
            Arch::Aarch64 => (UcArch::ARM64, Mode::ARM),
        };
        let mut uc = Unicorn::new_with_data(arch, mode, HookState::default()).map_err(|e| {
            engine(format!(
                "cannot create a {} machine: {e:?}",
                layout.arch.name()
            ))
        })?;
        if let Ok(p) = uc.ctl_get_page_size() {
            if u64::from(p) > PAGE {
                return Err(engine(format!("unexpected page size {p}")));
            }
        }
        let base = layout.base;
        for r in &layout.regions {
            let at = base.saturating_add(r.rva);
            uc.mem_map(at, r.size, prot(r.perms))
                .map_err(|e| engine(format!("cannot map {:#x}+{:#x}: {e:?}", at, r.size)))?;
            let s = usize::try_from(r.rva).unwrap_or(usize::MAX);
            let e = usize::try_from(r.rva.saturating_add(r.size)).unwrap_or(usize::MAX);
            let bytes = layout
                .bytes
                .get(s..e)
                .ok_or_else(|| engine(format!("region {:#x} outside the layout", r.rva)))?;
            uc.mem_write(at, bytes)
                .map_err(|e| engine(format!("cannot write {at:#x}: {e:?}")))?;
        }
        // The VM's own regions.
        let filler: &[u8] = match layout.arch {
            Arch::X86_64 => &[0x0f, 0x0b],              // ud2
            Arch::Aarch64 => &[0x00, 0x00, 0x20, 0xd4], // brk #0
        };
        let fill = |size: u64| -> Vec<u8> {
            filler
                .iter()
                .copied()
                .cycle()
                .take(usize::try_from(size).unwrap_or(0))
                .collect()
        };
        for (at, size, p, bytes) in [
            (TRAP_BASE, TRAP_SIZE, Prot::READ, fill(TRAP_SIZE)),
            (SENTINEL, PAGE, Prot::READ | Prot::EXEC, fill(PAGE)),
            (SCRATCH_BASE, PAGE, Prot::READ | Prot::WRITE, Vec::new()),
            (STACK_BASE, STACK_SIZE, Prot::READ | Prot::WRITE, Vec::new()),
        ] {
            uc.mem_map(at, size, p)
                .map_err(|e| engine(format!("cannot map {at:#x}+{size:#x}: {e:?}")))?;
            uc.mem_write(at, &bytes)
                .map_err(|e| engine(format!("cannot write {at:#x}: {e:?}")))?;
        }
        uc.add_mem_hook(
            HookType::MEM_INVALID,
            1,
            0,
            |uc: &mut Unicorn<'_, HookState>, t, address, size, _value| {
                uc.get_data_mut().fault = Some((t, address, size));
                false
            },
        )
        .map_err(|e| engine(format!("cannot add a memory hook: {e:?}")))?;

        let size = layout.bytes.len() as u64;
        let image = LoadedImage {
            name,
            label,
            format: layout.format,
            arch: layout.arch,
            convention: Convention::of(layout.format, layout.arch),
            base,
            preferred_base: layout.preferred_base,
            size,
            sha256: Sha256Digest(hotpatch_formats::read::sha256(&file)),
            regions: layout.regions,
            exports: layout.exports,
            imports: layout.imports,
            relocations: layout.slots,
        };
        Ok(Vm {
            uc,
            image,
            file,
            path: None,
            scratch_size: PAGE,
            allocations: BTreeMap::new(),
            states: HashMap::new(),
        })
    }

    /// The loaded image.
    pub fn image(&self) -> &LoadedImage {
        &self.image
    }

    /// The image file's bytes.
    pub fn file(&self) -> &[u8] {
        &self.file
    }

    /// Parse the loaded file with `hotpatch_formats` (for its functions and
    /// data objects). A PE image needs its PDB: `pdb`, or the one beside
    /// the file the VM was loaded from.
    pub fn parse(&self, pdb: Option<&Path>) -> Result<Image<'_>> {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.image.label));
        let mut opts = ReadOptions::new(path);
        if let Some(pdb) = pdb {
            opts = opts.with_pdb(pdb);
        }
        Ok(hotpatch_formats::read::parse(&self.file, &opts)?)
    }

    /// The absolute address of an export.
    pub fn export(&self, name: &str) -> Result<u64> {
        self.image
            .exports
            .get(name)
            .map(|rva| self.image.base.wrapping_add(*rva))
            .ok_or_else(|| Error::NoExport {
                image: self.image.label.clone(),
                name: name.to_owned(),
            })
    }

    fn engine(&self, detail: String) -> Error {
        Error::Engine {
            image: self.image.label.clone(),
            detail,
        }
    }

    fn access(&self, address: u64, len: u64, detail: impl Into<String>) -> Error {
        Error::Access {
            image: self.image.label.clone(),
            address,
            len,
            detail: detail.into(),
        }
    }

    /// Call the export `name` with `args`, allowing at most `budget`
    /// instructions. Arguments go in the convention's registers
    /// ([`Convention`]); the call returns to [`SENTINEL`].
    pub fn call(&mut self, name: &str, args: &[Arg], budget: u64) -> Result<CallResult> {
        let entry = self.export(name)?;
        self.call_address(entry, name, args, budget)
    }

    /// Call the code at `entry` (named `label` in messages) like
    /// [`Vm::call`].
    pub fn call_address(
        &mut self,
        entry: u64,
        label: &str,
        args: &[Arg],
        budget: u64,
    ) -> Result<CallResult> {
        let conv = self.image.convention;
        let regs = conv.registers();
        if args.len() > regs.len() {
            return Err(Error::TooManyArgs {
                image: self.image.label.clone(),
                export: label.to_owned(),
                convention: conv.name(),
                given: args.len(),
                max: regs.len(),
            });
        }
        // Copy buffers into the scratch region, 16-byte aligned.
        let mut need = 0u64;
        for a in args {
            if let Arg::Bytes(b) = a {
                need = need
                    .checked_add(padded(b.len()))
                    .ok_or_else(|| self.engine("buffer arguments too large".into()))?;
            }
        }
        if need > SCRATCH_MAX {
            return Err(self.engine(format!(
                "buffer arguments need {need} bytes, over the {SCRATCH_MAX}-byte scratch region"
            )));
        }
        let need = need.div_ceil(PAGE).max(1).saturating_mul(PAGE);
        if need > self.scratch_size {
            self.uc
                .mem_unmap(SCRATCH_BASE, self.scratch_size)
                .and_then(|()| {
                    self.uc
                        .mem_map(SCRATCH_BASE, need, Prot::READ | Prot::WRITE)
                })
                .map_err(|e| self.engine(format!("cannot grow the scratch region: {e:?}")))?;
            self.scratch_size = need;
        }
        let mut values = Vec::with_capacity(args.len());
        let mut buffers = Vec::new();
        let mut at = SCRATCH_BASE;
        for a in args {
            match a {
                Arg::Int(v) => values.push(*v as u64),
                Arg::Bytes(b) => {
                    self.uc.mem_write(at, b).map_err(|e| {
                        self.engine(format!("cannot copy a buffer argument: {e:?}"))
                    })?;
                    values.push(at);
                    buffers.push((at, b.len()));
                    at = at.saturating_add(padded(b.len()));
                }
            }
        }

        let top = STACK_BASE + STACK_SIZE - 0x100;
        let reg = |uc: &mut Unicorn<'static, HookState>, r: i32, v: u64| {
            uc.reg_write(r, v)
                .map_err(|e| format!("cannot set register {r}: {e:?}"))
        };
        let setup = (|| -> std::result::Result<(), String> {
            for (r, v) in regs.iter().zip(&values) {
                reg(&mut self.uc, *r, *v)?;
            }
            match conv {
                Convention::Win64 | Convention::SysV => {
                    // At entry rsp + 8 is 16-byte aligned and [rsp] is the
                    // return address; Windows leaves 32 bytes of shadow
                    // space above it.
                    let shadow = if conv == Convention::Win64 { 32 } else { 0 };
                    let rsp = top.saturating_sub(shadow).saturating_sub(8);
                    self.uc
                        .mem_write(rsp, &SENTINEL.to_le_bytes())
                        .map_err(|e| format!("cannot push the return address: {e:?}"))?;
                    reg(&mut self.uc, RegisterX86::RSP as i32, rsp)?;
                    reg(&mut self.uc, RegisterX86::RBP as i32, 0)?;
                }
                Convention::Aapcs64 => {
                    reg(&mut self.uc, RegisterARM64::SP as i32, top)?;
                    reg(&mut self.uc, RegisterARM64::LR as i32, SENTINEL)?;
                    reg(&mut self.uc, RegisterARM64::FP as i32, 0)?;
                }
            }
            Ok(())
        })();
        setup.map_err(|d| self.engine(d))?;

        self.uc.get_data_mut().fault = None;
        let count = usize::try_from(budget.max(1)).unwrap_or(usize::MAX);
        let run = self.uc.emu_start(entry, SENTINEL, 0, count);
        let pc = self.uc.pc_read().unwrap_or(0);
        let fault = self.uc.get_data_mut().fault.take();
        let trap = |addr: u64| -> Option<&ImportStub> {
            if !(TRAP_BASE..TRAP_BASE.saturating_add(TRAP_SIZE)).contains(&addr) {
                return None;
            }
            let n = usize::try_from(addr.saturating_sub(TRAP_BASE) / STUB_SIZE).ok()?;
            self.image.imports.get(n)
        };
        if let Some(imp) = fault
            .filter(|(t, _, _)| matches!(*t, MemType::FETCH_PROT | MemType::FETCH_UNMAPPED))
            .and_then(|(_, a, _)| trap(a))
            .or_else(|| trap(pc))
        {
            return Err(Error::ImportCalled {
                image: self.image.label.clone(),
                export: label.to_owned(),
                import: imp.name.clone(),
            });
        }
        match run {
            Ok(()) if pc == SENTINEL => {}
            Ok(()) => {
                return Err(Error::Budget {
                    image: self.image.label.clone(),
                    export: label.to_owned(),
                    budget: budget.max(1),
                    pc,
                })
            }
            Err(e) => {
                let detail = match fault {
                    Some((t, a, n)) => format!("{} ({n} bytes at {a:#x})", access_name(t)),
                    None => format!("{e:?}"),
                };
                return Err(Error::Fault {
                    image: self.image.label.clone(),
                    export: label.to_owned(),
                    pc,
                    detail,
                });
            }
        }
        let ret = match conv {
            Convention::Win64 | Convention::SysV => self.uc.reg_read(RegisterX86::RAX),
            Convention::Aapcs64 => self.uc.reg_read(RegisterARM64::X0),
        }
        .map_err(|e| self.engine(format!("cannot read the return value: {e:?}")))?;
        let mut out = Vec::with_capacity(buffers.len());
        for (at, len) in buffers {
            let mut b = vec![0u8; len];
            self.uc
                .mem_read(at, &mut b)
                .map_err(|e| self.engine(format!("cannot read back a buffer argument: {e:?}")))?;
            out.push(b);
        }
        Ok(CallResult {
            value: ret as i64,
            buffers: out,
        })
    }

    /// Every mapped range, sorted, adjacent ranges of equal protection
    /// merged (so that splitting and re-joining a range by protection
    /// changes nothing).
    pub fn regions(&self) -> Result<Vec<MappedRegion>> {
        let mut raw = self
            .uc
            .mem_regions()
            .map_err(|e| self.engine(format!("cannot list memory regions: {e:?}")))?;
        raw.sort_by_key(|r| r.begin);
        let mut out: Vec<MappedRegion> = Vec::new();
        for r in raw {
            let size = r.end.wrapping_sub(r.begin).wrapping_add(1);
            let p = perms(r.perms);
            match out.last_mut() {
                Some(last)
                    if last.address.checked_add(last.size) == Some(r.begin) && last.perms == p =>
                {
                    last.size = last.size.saturating_add(size);
                }
                _ => out.push(MappedRegion {
                    address: r.begin,
                    size,
                    perms: p,
                }),
            }
        }
        Ok(out)
    }

    /// SHA-256 over every mapped range ([`Vm::regions`]): its address,
    /// size, protection and bytes. Equal digests mean byte-identical
    /// memory with identical protections and mappings.
    pub fn memory_digest(&self) -> Result<Sha256Digest> {
        let mut h = Sha256::new();
        let mut chunk = vec![0u8; 1 << 20];
        for r in self.regions()? {
            h.update(r.address.to_le_bytes());
            h.update(r.size.to_le_bytes());
            h.update([u8::from(r.perms.read)
                | u8::from(r.perms.write) << 1
                | u8::from(r.perms.execute) << 2]);
            let mut at = r.address;
            let end = r.address.saturating_add(r.size);
            while at < end {
                let n =
                    usize::try_from(end.saturating_sub(at).min(chunk.len() as u64)).unwrap_or(0);
                let buf = chunk.get_mut(..n).unwrap_or_default();
                self.uc
                    .mem_read(at, buf)
                    .map_err(|e| self.access(at, n as u64, format!("{e:?}")))?;
                h.update(&*buf);
                at = at.saturating_add(n as u64);
            }
        }
        Ok(Sha256Digest(h.finalize().into()))
    }

    /// Whether `[address, address + len)` is entirely mapped.
    fn mapped(&self, address: u64, len: u64) -> Result<bool> {
        let Some(end) = address.checked_add(len) else {
            return Ok(false);
        };
        let mut at = address;
        for r in self.regions()? {
            if r.address <= at && at < r.address.saturating_add(r.size) {
                at = r.address.saturating_add(r.size);
                if at >= end {
                    return Ok(true);
                }
            }
        }
        Ok(at >= end)
    }

    /// Read `buf.len()` bytes at `address`, whatever their protection.
    pub fn read_into(&self, address: u64, buf: &mut [u8]) -> Result<()> {
        self.uc
            .mem_read(address, buf)
            .map_err(|e| self.access(address, buf.len() as u64, format!("{e:?}")))
    }

    /// Read `len` bytes at `address`.
    pub fn read(&self, address: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.read_into(address, &mut b)?;
        Ok(b)
    }

    /// Write `bytes` at `address`, whatever the protection (the VM is the
    /// operating system), and drop any translated code in the range so that
    /// new instructions run. Nothing is written unless the whole range is
    /// mapped.
    pub fn write(&mut self, address: u64, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        if !self.mapped(address, len)? {
            return Err(self.access(address, len, "not mapped"));
        }
        self.uc
            .mem_write(address, bytes)
            .map_err(|e| self.access(address, len, format!("{e:?}")))?;
        self.flush(address, len)
    }

    /// Drop translated code in `[address, address + len)`.
    pub fn flush(&mut self, address: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.uc
            .ctl_remove_cache(address, address.saturating_add(len))
            .map_err(|e| {
                self.engine(format!(
                    "cannot drop translated code at {address:#x}: {e:?}"
                ))
            })
    }

    /// The RVA of an absolute address, when it lies inside the image's span
    /// (for translating pointers found in memory).
    pub fn rva_of(&self, address: u64) -> Option<u64> {
        address
            .checked_sub(self.image.base)
            .filter(|rva| *rva < self.image.size)
    }

    /// The absolute address of an RVA of the image.
    pub fn address_of(&self, rva: u64) -> u64 {
        self.image.base.wrapping_add(rva)
    }

    /// Read `len` bytes at an RVA of the image.
    pub fn read_rva(&self, rva: u64, len: usize) -> Result<Vec<u8>> {
        self.read(self.image.base.wrapping_add(rva), len)
    }

    /// Write bytes at an RVA of the image (see [`Vm::write`]).
    pub fn write_rva(&mut self, rva: u64, bytes: &[u8]) -> Result<()> {
        self.write(self.image.base.wrapping_add(rva), bytes)
    }

    /// The current bytes of a data object (from the image's
    /// `hotpatch_formats` model, [`Vm::parse`]).
    pub fn read_data_object(&self, object: &DataObject) -> Result<Vec<u8>> {
        let len = usize::try_from(object.size)
            .map_err(|_| self.access(object.rva, object.size, "too large"))?;
        self.read_rva(object.rva, len)
    }

    /// Overwrite a data object; `bytes` must be exactly its size.
    pub fn write_data_object(&mut self, object: &DataObject, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 != object.size {
            return Err(self.access(
                self.image.base.wrapping_add(object.rva),
                bytes.len() as u64,
                format!(
                    "data object `{}` is {} bytes, not {}",
                    object.name,
                    object.size,
                    bytes.len()
                ),
            ));
        }
        self.write_rva(object.rva, bytes)
    }

    /// Map `size` bytes (page multiple), readable and writable, in free
    /// address space at or above `lo` and ending at or below `hi`; the
    /// lowest such range. The image's span, gaps between its segments
    /// included, is never free. Returns its start.
    pub fn allocate(&mut self, lo: u64, hi: u64, size: u64) -> Result<u64> {
        if size == 0 || size % PAGE != 0 {
            return Err(self.engine(format!(
                "cannot allocate {size:#x} bytes: not a positive multiple of the page size"
            )));
        }
        let lo = lo.max(LOWEST_ADDRESS).div_ceil(PAGE).saturating_mul(PAGE);
        let hi = hi.min(ALLOC_LIMIT);
        // Occupied: every mapping, and the image's whole span (the pages
        // between its segments are reserved, as an OS loader reserves them).
        let mut used: Vec<(u64, u64)> = self
            .regions()?
            .iter()
            .map(|r| (r.address, r.address.saturating_add(r.size)))
            .collect();
        used.push((
            self.image.base,
            self.image.base.saturating_add(self.image.size),
        ));
        used.sort_unstable();
        let mut at = lo;
        for (start, end_used) in used {
            let Some(end) = at.checked_add(size) else {
                break;
            };
            if end > hi {
                break;
            }
            if end_used <= at {
                continue;
            }
            if end <= start {
                break;
            }
            at = end_used;
        }
        match at.checked_add(size) {
            Some(end) if end <= hi && at >= lo => {
                self.uc
                    .mem_map(at, size, Prot::READ | Prot::WRITE)
                    .map_err(|e| self.engine(format!("cannot map {at:#x}+{size:#x}: {e:?}")))?;
                self.allocations.insert(at, size);
                Ok(at)
            }
            _ => Err(Error::NoRoom {
                image: self.image.label.clone(),
                size,
                lo,
                hi,
            }),
        }
    }

    /// Unmap a range [`Vm::allocate`] returned (exactly).
    pub fn free(&mut self, address: u64, size: u64) -> Result<()> {
        if self.allocations.get(&address) != Some(&size) {
            return Err(self.access(address, size, "not a range the VM allocated"));
        }
        self.uc
            .mem_unmap(address, size)
            .map_err(|e| self.access(address, size, format!("{e:?}")))?;
        self.allocations.remove(&address);
        self.flush(address, size)
    }

    /// Set the protection of a page-aligned range.
    pub fn protect(&mut self, address: u64, size: u64, perms: Permissions) -> Result<()> {
        if address % PAGE != 0 || size % PAGE != 0 {
            return Err(self.access(address, size, "not page aligned"));
        }
        if !self.mapped(address, size)? {
            return Err(self.access(address, size, "not mapped"));
        }
        self.uc
            .mem_protect(address, size, prot(perms))
            .map_err(|e| self.access(address, size, format!("{e:?}")))?;
        self.flush(address, size)
    }
}

/// Room for `len` bytes of call arguments on the stack: rounded up to 16
/// bytes, plus 16 between blocks.
fn padded(len: usize) -> u64 {
    (len as u64)
        .div_ceil(16)
        .saturating_mul(16)
        .saturating_add(16)
}
