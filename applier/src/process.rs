//! A live Linux process as a [`Target`]: threads stopped through ptrace
//! (the `nix` crate), memory read and written through `/proc/PID/mem`, and
//! memory mapped, protected and unmapped in the process by system calls
//! injected into one of its threads.
//!
//! Linux only, on x86-64 and AArch64, for a process of the same
//! architecture as this tool.
//!
//! # Threads
//! Linux ptrace is per thread: the thread that stops a tracee must be the
//! one that resumes it. So a [`Process`] is neither `Send` nor `Sync`: keep
//! it on the thread that created it.
//!
//! [`Target::stop`] seizes every thread of the process (`PTRACE_SEIZE`,
//! which does not stop it), scanning `/proc/PID/task` again until no new
//! thread appears; then the pause begins: it interrupts every thread
//! (`PTRACE_INTERRUPT`), waits until each is in a ptrace stop, and scans
//! once more for a thread created just before its creator stopped.
//! [`Target::patch`] writes the redirects in as few `/proc/PID/mem` reads
//! and writes as there are runs of neighbouring pages.
//! [`Target::resume`] detaches every thread, delivering any signal that
//! arrived while it was stopped. Dropping a [`Process`] resumes whatever is
//! still stopped, so an error leaves the process running.
//!
//! While a [`Process`] is open, the thread that opened it runs at real-time
//! priority (SCHED_FIFO 1) when allowed (root, or CAP_SYS_NICE): each thread
//! of the target runs again as soon as it is detached, and with more busy
//! threads than cores the first ones resumed would otherwise take the CPU
//! from the tool before it resumes the rest (tens of milliseconds instead of
//! tens of microseconds). Raising it only for the stop is not enough: a
//! tracee still switching out on this CPU then delays its detach by a
//! scheduler tick. That is the crate's only unsafe code (`priority`: libc
//! calls that nix does not wrap).
//!
//! # Injected system calls
//! `mmap`, `mprotect` and `munmap` run in the process itself: one thread is
//! stopped, its registers saved, set to the system call and pointed at an
//! existing `syscall` (x86-64) or `svc #0` (AArch64) instruction in the
//! process's executable memory (the vDSO first); one single step runs it,
//! and the registers are restored. Calls that follow one another (the
//! engine's `mmap` and `mprotect`s) run on the same thread, stopped once
//! and resumed by the next other operation (see `worker_candidates` for
//! which thread). Nothing is written into the process's
//! code, so other threads, still running, are never exposed to a temporary
//! instruction. A thread stopped inside a system call restarts it as the
//! kernel would (on x86-64 through the saved `orig_rax`; on AArch64 the
//! kernel has already rewound its PC).
//!
//! # Freeing
//! Memory that an earlier apply mapped is never unmapped (see
//! [`Target::free`] on [`Process`]): the code a package replaced stays
//! mapped, since a thread may still run in it or return into it.
//!
//! # Caches
//! Writes through `/proc/PID/mem` into executable mappings are made visible
//! to instruction fetch by the kernel itself (`copy_to_user_page` flushes
//! the instruction cache of an executable mapping on AArch64), so
//! [`Target::flush_code`] has nothing to do, and new code may be written
//! after its memory was made executable.
//!
//! # State records
//! Records live in a state directory (default [`DEFAULT_STATE_DIR`]), one
//! folder per process instance: `process-PID-START/` where `START` is the
//! process's start time in clock ticks since boot, so a later process that
//! reuses the PID never sees them. Each record is written to a temporary file
//! and renamed over the old one, so a reader sees the old record or the new
//! one, whole. They are not synced to disk: the engine writes them while the
//! threads are stopped, and a record only describes a process that a power
//! loss ends anyway. Folders of processes that no longer exist are removed
//! when a [`Process`] is opened.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotpatch_formats::package::{BuildIdentity, ImageIdentity, Sha256Digest};
use hotpatch_formats::{Arch, Format};
use nix::errno::Errno;
use nix::libc;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, Object};
use sha2::{Digest, Sha256};

use crate::target::{Located, Patch, Protection, Target, TargetError, ThreadPc};

/// Where state records go unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hotpatch";

/// How many times [`Target::stop`] scans `/proc/PID/task` for threads that
/// appeared while it was stopping the others before it gives up.
const MAX_TASK_SCANS: usize = 64;

/// The ELF machine this tool runs on, and so the only one it patches.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = object::elf::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = object::elf::EM_AARCH64;
#[cfg(target_arch = "x86_64")]
const HOST_ARCH: Arch = Arch::X86_64;
#[cfg(target_arch = "aarch64")]
const HOST_ARCH: Arch = Arch::Aarch64;

/// The system call instruction: `syscall` / `svc #0`.
#[cfg(target_arch = "x86_64")]
const SYSCALL_INSN: &[u8] = &[0x0f, 0x05];
#[cfg(target_arch = "aarch64")]
const SYSCALL_INSN: &[u8] = &[0x01, 0x00, 0x00, 0xd4];

/// Alignment of an instruction.
#[cfg(target_arch = "x86_64")]
const INSN_ALIGN: usize = 1;
#[cfg(target_arch = "aarch64")]
const INSN_ALIGN: usize = 4;

/// The highest user address plus one (47-bit x86-64, 48-bit AArch64).
#[cfg(target_arch = "x86_64")]
const USER_TOP: u64 = 0x7fff_ffff_f000;
#[cfg(target_arch = "aarch64")]
const USER_TOP: u64 = 0xffff_ffff_f000;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp` flags as printed.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Device major number.
    pub dev_major: u64,
    /// Device minor number.
    pub dev_minor: u64,
    /// Inode (0 for anonymous memory).
    pub inode: u64,
    /// The path or pseudo-name (`[vdso]`), if any.
    pub path: Option<String>,
}

impl Mapping {
    fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

/// Parse the text of `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<Mapping>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("line {}: malformed mapping {line:?}", n.saturating_add(1));
        let mut rest = line;
        let mut field = || -> Option<&str> {
            let t = rest.trim_start();
            let end = t.find(' ').unwrap_or(t.len());
            let (f, r) = t.split_at(end);
            rest = r;
            (!f.is_empty()).then_some(f)
        };
        let range = field().ok_or_else(bad)?;
        let perms = field().ok_or_else(bad)?.to_string();
        let offset = field().ok_or_else(bad)?;
        let dev = field().ok_or_else(bad)?;
        let inode = field().ok_or_else(bad)?;
        let (start, end) = range.split_once('-').ok_or_else(bad)?;
        let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
        let path = rest.trim_start();
        out.push(Mapping {
            start: hex(start)?,
            end: hex(end)?,
            perms,
            offset: hex(offset)?,
            dev_major: hex(major)?,
            dev_minor: hex(minor)?,
            inode: inode.parse().map_err(|_| bad())?,
            path: (!path.is_empty()).then(|| path.to_string()),
        });
    }
    Ok(out)
}

/// One stop of every thread, from the first interrupt to the last detach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pause {
    /// Threads held.
    pub threads: usize,
    /// From the first interrupt to the last detach: the longest any thread
    /// was stopped.
    pub total: Duration,
    /// From the first interrupt until every thread was held and its PC
    /// read (each thread must be scheduled once to enter its stop).
    pub stopping: Duration,
    /// From then until the resume began: the work done with every thread
    /// held (the redirect writes and the state record).
    pub held: Duration,
    /// Detaching the threads, one by one: each runs again as soon as it is
    /// detached, so on a machine with fewer cores than threads the ones
    /// detached first can delay the rest.
    pub resuming: Duration,
    /// Stops since the process was opened (retries included).
    pub stops: u32,
    /// Whether this tool ran at real-time priority (SCHED_FIFO) through
    /// the stop, so the threads it resumed first could not delay the rest
    /// (it needs root or CAP_SYS_NICE; without, it runs as it was).
    pub realtime: bool,
}

/// The system calls injected into a process since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Syscalls {
    /// How many ran.
    pub calls: u32,
    /// How many times a thread was stopped for them outside a stop of
    /// every thread (calls that follow one another share one).
    pub stops: u32,
    /// How long those threads were held, in all.
    pub held: Duration,
}

/// A thread this process holds in a ptrace stop.
#[derive(Debug)]
struct Held {
    tid: Pid,
    /// A signal that arrived while it was stopped, delivered on detach.
    pending: Option<Signal>,
}

/// The thread stopped to run injected system calls outside a stop of
/// every thread, and since when.
#[derive(Debug)]
struct Worker {
    held: Held,
    since: Instant,
}

/// A live Linux process, as a [`Target`].
#[derive(Debug)]
pub struct Process {
    pid: Pid,
    mem: File,
    start_time: u64,
    page_size: u64,
    state_dir: PathBuf,
    /// Threads stopped by [`Target::stop`], in the order they stopped.
    held: Vec<Held>,
    /// When the current stop began, and when every thread was held.
    stop_began: Option<Instant>,
    all_held: Option<Instant>,
    /// The last completed stop.
    last_pause: Option<Pause>,
    /// Stops since [`Process::attach`].
    stops: u32,
    /// This thread's scheduling before a stop raised it, to restore.
    boosted: Option<priority::Saved>,
    /// A system call instruction in the process.
    gadget: Option<u64>,
    /// The thread running injected system calls, kept stopped while they
    /// follow one another: any other operation resumes it first.
    worker: Option<Worker>,
    /// What was injected so far.
    syscalls: Syscalls,
    /// `/proc/PID/maps` as last read, until this tool maps or unmaps
    /// memory (other threads may map memory meanwhile: an `mmap` that
    /// finds its place taken reads it again).
    maps_cache: Option<Vec<Mapping>>,
    /// `vm.mmap_min_addr` (at least a page).
    mmap_min: u64,
    /// Reused buffer of [`Target::patch`].
    scratch: Vec<u8>,
    /// Ranges this instance mapped, which it may unmap again.
    allocated: BTreeSet<(u64, u64)>,
    /// Ranges mapped by an earlier apply that [`Target::free`] left mapped.
    retired: Vec<(u64, u64)>,
    /// ptrace ties a tracee to the tracer thread: not `Send`, not `Sync`.
    _one_thread: PhantomData<*const ()>,
}

impl Process {
    /// Open process `pid`, keeping state records under `state_dir`.
    ///
    /// Checks that the process exists, runs this tool's architecture, and
    /// that its memory can be opened (which needs the same permission as
    /// ptrace). Removes state folders of processes that no longer exist.
    pub fn attach(pid: u32, state_dir: impl Into<PathBuf>) -> Result<Process, TargetError> {
        let target = format!("process {pid}");
        let other = |detail: String| TargetError::Other {
            target: target.clone(),
            detail,
        };
        let raw = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| other("not a process id".into()))?;
        let start_time = read_start_time(pid).ok_or_else(|| other("no such process".into()))?;
        check_arch(pid).map_err(&other)?;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| {
                other(if e.kind() == ErrorKind::PermissionDenied {
                    format!("cannot open its memory: permission denied{}", yama_hint())
                } else {
                    format!("cannot open its memory: {e}")
                })
            })?;
        let page_size = read_page_size(pid).unwrap_or(4096);
        let mmap_min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0x10000)
            .max(page_size);
        let state_dir = state_dir.into();
        remove_stale_state(&state_dir);
        // Real-time priority while the process is open: every thread runs
        // again as soon as it is detached, and with more busy threads than
        // cores the first ones resumed would otherwise take the CPU from
        // this tool before it resumes the rest; and a tracee that stops on
        // this CPU must have finished switching out before it can be
        // detached, which a priority raised only for the stop delays by a
        // scheduler tick.
        let boosted = priority::raise();
        Ok(Process {
            pid: Pid::from_raw(raw),
            mem,
            start_time,
            page_size,
            state_dir,
            held: Vec::new(),
            stop_began: None,
            all_held: None,
            last_pause: None,
            stops: 0,
            boosted,
            gadget: None,
            worker: None,
            syscalls: Syscalls::default(),
            maps_cache: None,
            mmap_min,
            scratch: Vec::new(),
            allocated: BTreeSet::new(),
            retired: Vec::new(),
            _one_thread: PhantomData,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// The last completed stop: how long, and how many threads.
    pub fn last_pause(&self) -> Option<Pause> {
        self.last_pause
    }

    /// The system calls injected so far, and how long threads were held
    /// for them (outside stops of every thread).
    pub fn syscalls(&self) -> Syscalls {
        let mut s = self.syscalls;
        if let Some(w) = &self.worker {
            s.held = s.held.saturating_add(w.since.elapsed());
        }
        s
    }

    /// The ranges [`Target::free`] left mapped (start, size): memory of an
    /// earlier apply, which a thread may still run in or return into.
    pub fn retired(&self) -> &[(u64, u64)] {
        &self.retired
    }

    /// Whether the process (this instance of the PID) still exists.
    pub fn alive(&self) -> bool {
        read_start_time(self.pid()) == Some(self.start_time)
    }

    /// The folder holding this process's state records.
    pub fn state_path(&self) -> PathBuf {
        self.state_dir
            .join(format!("process-{}-{}", self.pid(), self.start_time))
    }

    /// Remove this process's state folder if the process is gone (after an
    /// apply that failed because it exited). Returns whether it removed one.
    pub fn discard_state_if_gone(&self) -> bool {
        let path = self.state_path();
        !self.alive() && path.exists() && std::fs::remove_dir_all(&path).is_ok()
    }

    /// The mappings of the process now.
    pub fn maps(&self) -> Result<Vec<Mapping>, TargetError> {
        let text = std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .map_err(|e| self.gone_or(format!("cannot read its mappings: {e}")))?;
        parse_maps(&text).map_err(|e| self.other(format!("/proc/{}/maps: {e}", self.pid())))
    }

    fn other(&self, detail: String) -> TargetError {
        TargetError::Other {
            target: self.describe(),
            detail,
        }
    }

    /// `detail`, or "exited" if the process no longer exists.
    fn gone_or(&self, detail: String) -> TargetError {
        if self.alive() {
            self.other(detail)
        } else {
            self.other("the process exited".into())
        }
    }

    fn ptrace_error(&self, what: &str, tid: Pid, e: Errno) -> TargetError {
        match e {
            Errno::EPERM => self.other(format!(
                "cannot {what} thread {tid}: permission denied{}",
                yama_hint()
            )),
            _ => self.gone_or(format!("cannot {what} thread {tid}: {}", e.desc())),
        }
    }

    /// The thread ids in `/proc/PID/task` now.
    fn tasks(&self) -> Result<BTreeSet<i32>, TargetError> {
        let dir = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map_err(|_| self.gone_or("cannot list its threads".into()))?;
        Ok(dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// Seize `tids` (which does not stop them). Threads that exited
    /// meanwhile are skipped. On failure, the ones seized are let go.
    fn seize(&mut self, tids: &[Pid]) -> Result<Vec<Pid>, TargetError> {
        let mut seized = Vec::with_capacity(tids.len());
        for &tid in tids {
            match ptrace::seize(tid, ptrace::Options::empty()) {
                Ok(()) => seized.push(tid),
                Err(Errno::ESRCH) => {}
                // An exited thread: a main thread whose process lives on,
                // or one on its way out.
                Err(Errno::EPERM) if thread_is_zombie(self.pid(), tid.as_raw()) => {}
                Err(e) => {
                    self.abandon(seized);
                    return Err(self.ptrace_error("attach to", tid, e));
                }
            }
        }
        Ok(seized)
    }

    /// Interrupt seized threads `tids`, then wait for each to stop.
    /// Threads that exited meanwhile are skipped. Returns the ones now
    /// held; on failure, lets every one go.
    fn interrupt_all(&mut self, tids: Vec<Pid>) -> Result<Vec<Held>, TargetError> {
        let mut seized = Vec::with_capacity(tids.len());
        let mut failure = None;
        for tid in tids {
            match ptrace::interrupt(tid) {
                Ok(()) => seized.push(tid),
                Err(Errno::ESRCH) => {}
                Err(e) => {
                    failure.get_or_insert(self.ptrace_error("interrupt", tid, e));
                    seized.push(tid);
                }
            }
        }
        if let Some(e) = failure {
            self.abandon(seized);
            return Err(e);
        }
        let mut failure = None;
        // The main thread last: it is the one a dying process reports last.
        seized.sort_by_key(|t| *t == self.pid);
        let before = self.held.len();
        for tid in seized {
            match self.wait_stop(tid) {
                // Held at once, so that waiting for the main thread knows
                // which others this tracer holds.
                Ok(Some(pending)) => self.held.push(Held { tid, pending }),
                Ok(None) => {} // the thread exited
                Err(e) => {
                    failure.get_or_insert(self.ptrace_error("stop", tid, e));
                }
            }
        }
        let held = self.held.split_off(before);
        if let Some(e) = failure {
            Self::detach_held(held);
            return Err(e);
        }
        Ok(held)
    }

    /// Seize and interrupt `tids`, then wait for each to stop.
    fn seize_all(&mut self, tids: &[Pid]) -> Result<Vec<Held>, TargetError> {
        let seized = self.seize(tids)?;
        self.interrupt_all(seized)
    }

    /// Seize every thread of the process without stopping it, rescanning
    /// `/proc/PID/task` until no new thread appears. On failure the
    /// threads seized so far are let go.
    fn seize_every_thread(&mut self) -> Result<Vec<Pid>, TargetError> {
        let mut seized: Vec<Pid> = Vec::new();
        let mut scans = 0usize;
        let outcome = loop {
            let new = match self.new_tasks(&seized) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if new.is_empty() {
                break Ok(());
            }
            scans = scans.saturating_add(1);
            if scans > MAX_TASK_SCANS {
                break Err(self.threads_keep_appearing());
            }
            match self.seize(&new) {
                Ok(s) => seized.extend(s),
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok(()) => Ok(seized),
            Err(e) => {
                self.abandon(seized);
                Err(e)
            }
        }
    }

    /// The pause: interrupt every seized thread and wait for each, hold
    /// any thread created just before its creator stopped, and read every
    /// held thread's PC. The caller resumes the threads on failure.
    fn stop_seized(&mut self, seized: Vec<Pid>) -> Result<Vec<ThreadPc>, TargetError> {
        if self.stop_began.is_none() {
            self.stop_began = Some(Instant::now());
        }
        let held = self.interrupt_all(seized)?;
        self.held.extend(held);
        let mut scans = 0usize;
        loop {
            let new = self.new_tasks(&[])?;
            if new.is_empty() {
                break;
            }
            scans = scans.saturating_add(1);
            if scans > MAX_TASK_SCANS {
                return Err(self.threads_keep_appearing());
            }
            let held = self.seize_all(&new)?;
            self.held.extend(held);
        }
        if self.held.is_empty() {
            return Err(self.gone_or("it has no thread to stop".into()));
        }
        let mut pcs = Vec::with_capacity(self.held.len());
        for h in &self.held {
            let r = ptrace::getregs(h.tid)
                .map_err(|e| self.ptrace_error("read registers of", h.tid, e))?;
            pcs.push(ThreadPc {
                tid: h.tid.as_raw().unsigned_abs().into(),
                pc: regs::next_pc(&r),
            });
        }
        self.all_held = Some(Instant::now());
        Ok(pcs)
    }

    /// The error for a process whose thread list keeps growing.
    fn threads_keep_appearing(&self) -> TargetError {
        self.other(format!(
            "threads kept appearing after {MAX_TASK_SCANS} scans of its thread list"
        ))
    }

    /// Let go of seized threads that may be running: a tracee can only be
    /// detached from a stop, so interrupt each, wait for it, and detach it
    /// (best effort: a thread that exited needs nothing).
    fn abandon(&self, mut tids: Vec<Pid>) {
        // The main thread last, as when stopping.
        tids.sort_by_key(|t| *t == self.pid);
        let mut stopping = Vec::with_capacity(tids.len());
        for tid in tids {
            match ptrace::interrupt(tid) {
                Ok(()) => stopping.push(tid),
                Err(_) => {
                    let _ = ptrace::detach(tid, None);
                }
            }
        }
        for tid in stopping {
            if let Ok(Some(pending)) = self.wait_stop(tid) {
                let _ = ptrace::detach(tid, pending);
            }
        }
    }

    /// Wait for a change of state of traced thread `tid`.
    ///
    /// The kernel does not report a traced main thread while other threads
    /// of its process are zombies that only their tracer can reap: so when
    /// the process dies, a blocking wait for its main thread while this
    /// tracer holds others would never return. Other threads report their
    /// death at once, so they are waited for blocking (no polling, which on
    /// a loaded machine costs whole time slices); the main thread too when
    /// no other thread is held. Otherwise it is polled, failing with
    /// `ESRCH` once no thread of the process lives.
    fn wait_thread(&self, tid: Pid) -> Result<WaitStatus, Errno> {
        let others_held = self.held.iter().any(|h| h.tid != tid);
        if tid != self.pid || !others_held {
            loop {
                match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                    Err(Errno::EINTR) => continue,
                    other => return other,
                }
            }
        }
        let mut polls = 0u32;
        loop {
            match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                other => return other,
            }
            polls = polls.saturating_add(1);
            if polls % 16 == 0 && !self.alive() {
                return Err(Errno::ESRCH);
            }
            std::thread::sleep(Duration::from_micros(10));
        }
    }

    /// Wait until seized thread `tid` is in a ptrace stop. `Ok(Some(sig))`:
    /// it is stopped, with `sig` to deliver on resume when a signal stop
    /// came first; `Ok(None)`: it exited.
    fn wait_stop(&self, tid: Pid) -> Result<Option<Option<Signal>>, Errno> {
        loop {
            match self.wait_thread(tid) {
                Ok(WaitStatus::PtraceEvent(_, _, _)) => return Ok(Some(None)),
                Ok(WaitStatus::Stopped(_, sig)) => return Ok(Some(Some(sig))),
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => return Ok(None),
                Ok(_) => continue,
                Err(Errno::ECHILD) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn detach_held(held: Vec<Held>) {
        for h in held {
            let _ = ptrace::detach(h.tid, h.pending);
        }
    }

    /// Threads of the process neither held nor in `also` (exited ones
    /// among them are skipped when seized).
    fn new_tasks(&self, also: &[Pid]) -> Result<Vec<Pid>, TargetError> {
        let known: BTreeSet<i32> = self
            .held
            .iter()
            .map(|h| h.tid.as_raw())
            .chain(also.iter().map(|t| t.as_raw()))
            .collect();
        Ok(self
            .tasks()?
            .into_iter()
            .filter(|t| !known.contains(t))
            .map(Pid::from_raw)
            .collect())
    }

    /// The error of a read or write of `len` bytes at `address`.
    fn access_error(&self, address: u64, len: usize, e: &std::io::Error) -> TargetError {
        if self.alive() {
            TargetError::Access {
                target: self.describe(),
                address,
                len: len as u64,
                detail: io_detail(e),
            }
        } else {
            self.other("the process exited".into())
        }
    }

    /// [`Target::patch`] over ordered patches, with `buf` for the runs'
    /// bytes.
    fn patch_runs(&self, patches: &[Patch<'_>], buf: &mut Vec<u8>) -> Result<(), TargetError> {
        let page = self.page_size;
        // Read every run and check every patch's old bytes.
        buf.clear();
        let mut i = 0;
        while let Some((j, start, end)) = next_run(patches, i, page) {
            let at = buf.len();
            buf.resize(at.saturating_add(usize_of(end.saturating_sub(start))), 0);
            let run = buf.get_mut(at..).unwrap_or_default();
            self.mem
                .read_exact_at(run, start)
                .map_err(|e| self.access_error(start, run.len(), &e))?;
            for p in patches.get(i..j).unwrap_or_default() {
                let old = in_run(p.address, start, p.old.len()).and_then(|r| run.get(r));
                if old != Some(p.old) {
                    return Err(TargetError::Changed {
                        target: self.describe(),
                        address: p.address,
                        len: p.old.len() as u64,
                    });
                }
            }
            i = j;
        }
        // Lay the new bytes over them and write each run back.
        let mut i = 0;
        let mut at = 0usize;
        while let Some((j, start, end)) = next_run(patches, i, page) {
            let len = usize_of(end.saturating_sub(start));
            let run = buf.get_mut(at..at.saturating_add(len)).unwrap_or_default();
            for p in patches.get(i..j).unwrap_or_default() {
                if let Some(slot) =
                    in_run(p.address, start, p.new.len()).and_then(|r| run.get_mut(r))
                {
                    slot.copy_from_slice(p.new);
                }
            }
            self.mem
                .write_all_at(run, start)
                .map_err(|e| self.access_error(start, len, &e))?;
            at = at.saturating_add(len);
            i = j;
        }
        Ok(())
    }

    /// Find a system call instruction in executable memory, the vDSO first.
    fn find_gadget(&mut self) -> Result<u64, TargetError> {
        if let Some(g) = self.gadget {
            return Ok(g);
        }
        let mut maps: Vec<Mapping> = self
            .cached_maps()?
            .iter()
            .filter(|m| m.executable() && m.path.as_deref() != Some("[vsyscall]"))
            .cloned()
            .collect();
        maps.sort_by_key(|m| {
            (
                m.path.as_deref() != Some("[vdso]"),
                m.end.saturating_sub(m.start),
            )
        });
        for m in maps {
            let len = usize::try_from(m.end.saturating_sub(m.start)).unwrap_or(0);
            let mut buf = vec![0u8; len];
            if self.mem.read_exact_at(&mut buf, m.start).is_err() {
                continue;
            }
            let at = buf
                .windows(SYSCALL_INSN.len())
                .enumerate()
                .step_by(INSN_ALIGN)
                .find(|(_, w)| *w == SYSCALL_INSN)
                .map(|(i, _)| i);
            // The offset lies inside the mapping: the sum cannot overflow
            // (a mapping where it would is skipped).
            if let Some(g) = at.and_then(|i| m.start.checked_add(i as u64)) {
                self.gadget = Some(g);
                return Ok(g);
            }
        }
        Err(self.gone_or("no system call instruction in its executable memory".into()))
    }

    /// Run system call `nr` with `args` in the process and return its raw
    /// result (a negative errno on failure).
    ///
    /// Inside a stop it runs on a held thread. Otherwise on the worker: a
    /// thread stopped for the first such call and kept stopped while calls
    /// follow one another (the engine allocates and protects in one go);
    /// any other operation resumes it ([`Process::release_worker`]).
    fn remote_syscall(&mut self, nr: libc::c_long, args: [u64; 6]) -> Result<i64, TargetError> {
        let gadget = self.find_gadget()?;
        self.syscalls.calls = self.syscalls.calls.saturating_add(1);
        // A thread other than the main one, whose death is reported at
        // once (see `wait_thread`).
        let pick = self
            .held
            .iter()
            .position(|h| h.tid != self.pid)
            .or(if self.held.is_empty() { None } else { Some(0) });
        if let Some(i) = pick {
            // Inside a stop: borrow a held thread and leave it held.
            let tid = self.held.get(i).map_or(self.pid, |h| h.tid);
            let (result, pending) = self.syscall_on(tid, gadget, nr, args)?;
            if let (Some(h), Some(p)) = (self.held.get_mut(i), pending) {
                h.pending.get_or_insert(p);
            }
            return Ok(result);
        }
        let tid = self.borrow_worker()?;
        match self.syscall_on(tid, gadget, nr, args) {
            Ok((result, pending)) => {
                if let (Some(w), Some(p)) = (self.worker.as_mut(), pending) {
                    w.held.pending.get_or_insert(p);
                }
                Ok(result)
            }
            Err(e) => {
                self.release_worker();
                Err(e)
            }
        }
    }

    /// The worker thread, stopping one if none is held.
    fn borrow_worker(&mut self) -> Result<Pid, TargetError> {
        if let Some(w) = &self.worker {
            return Ok(w.held.tid);
        }
        let mut last = None;
        for tid in self.worker_candidates()? {
            let mut held = match self.seize_all(&[tid]) {
                Ok(h) => h,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let Some(h) = held.pop() else { continue };
            self.syscalls.stops = self.syscalls.stops.saturating_add(1);
            self.worker = Some(Worker {
                held: h,
                since: Instant::now(),
            });
            return Ok(tid);
        }
        Err(last.unwrap_or_else(|| self.gone_or("no thread can run a system call".into())))
    }

    /// Threads that can run an injected system call, best first. On
    /// x86-64, threads asleep in a system call: they take no CPU time from
    /// the program, a sleeper is scheduled at once when woken (a busy
    /// thread on a loaded machine waits for its turn, at each stop and
    /// each step), and the kernel restarts their call exactly as it would
    /// have (through `orig_rax`; a call that returns `EINTR` when stopped
    /// does so for any ptrace stop). On AArch64 running threads first: the
    /// kernel rewinds an interrupted call before the stop, and one that
    /// restarts through `restart_syscall` would start over instead. Then
    /// the rest; threads in uninterruptible sleep last; among equals the
    /// main thread after the others (but the first of the best kind found
    /// ends the search).
    fn worker_candidates(&self) -> Result<Vec<Pid>, TargetError> {
        let sleeper_rank = if cfg!(target_arch = "x86_64") { 0 } else { 2 };
        let best = sleeper_rank.min(1);
        let mut ranked: Vec<(u8, bool, i32)> = Vec::new();
        for t in self.tasks()? {
            let main = t == self.pid.as_raw();
            let rank = match thread_state(self.pid(), t) {
                None | Some('Z' | 'X') => continue,
                Some('S') => sleeper_rank,
                Some('R') => 1,
                Some('D') => 4,
                Some(_) => 3,
            };
            ranked.push((rank, main, t));
            // The first of the best kind will do.
            if rank == best {
                break;
            }
        }
        ranked.sort_unstable();
        Ok(ranked
            .into_iter()
            .map(|(_, _, t)| Pid::from_raw(t))
            .collect())
    }

    /// Resume the worker, if one is held.
    fn release_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            self.syscalls.held = self.syscalls.held.saturating_add(w.since.elapsed());
            let _ = ptrace::detach(w.held.tid, w.held.pending);
        }
    }

    /// The mappings as last read (see `maps_cache`).
    fn cached_maps(&mut self) -> Result<&[Mapping], TargetError> {
        if self.maps_cache.is_none() {
            self.maps_cache = Some(self.maps()?);
        }
        Ok(self.maps_cache.as_deref().unwrap_or_default())
    }

    /// Run one system call on stopped thread `tid`; return the result and
    /// a signal that arrived meanwhile (to deliver later).
    fn syscall_on(
        &self,
        tid: Pid,
        gadget: u64,
        nr: libc::c_long,
        args: [u64; 6],
    ) -> Result<(i64, Option<Signal>), TargetError> {
        // Where the call returns to, before any register changes.
        let after = gadget
            .checked_add(SYSCALL_INSN.len() as u64)
            .ok_or_else(|| {
                self.other(format!(
                    "the system call instruction at {gadget:#x} ends past the address space"
                ))
            })?;
        let saved =
            ptrace::getregs(tid).map_err(|e| self.ptrace_error("read registers of", tid, e))?;
        let call = regs::for_syscall(&saved, gadget, nr, args);
        ptrace::setregs(tid, call).map_err(|e| self.ptrace_error("set registers of", tid, e))?;
        let mut pending = None;
        let outcome = loop {
            if let Err(e) = ptrace::step(tid, None) {
                break Err(self.ptrace_error("step", tid, e));
            }
            match self.wait_thread(tid) {
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {
                    match ptrace::getregs(tid) {
                        Ok(r) if regs::pc(&r) == after => break Ok(regs::result(&r)),
                        // A trap before the call ran: step again.
                        Ok(_) => continue,
                        Err(e) => break Err(self.ptrace_error("read registers of", tid, e)),
                    }
                }
                // A signal arrived before the call ran: keep it for later.
                Ok(WaitStatus::Stopped(_, sig)) => {
                    pending.get_or_insert(sig);
                }
                // A group stop or our earlier interrupt: step again.
                Ok(WaitStatus::PtraceEvent(..)) => {}
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    return Err(self.other("the process exited".into()));
                }
                Ok(_) => {}
                Err(e) => break Err(self.ptrace_error("wait for", tid, e)),
            }
        };
        let restored = ptrace::setregs(tid, saved);
        let result = outcome?;
        restored.map_err(|e| self.ptrace_error("restore registers of", tid, e))?;
        Ok((result, pending))
    }

    /// Free gaps of the address space, clamped to `[lo, hi)`.
    fn gaps(&mut self, lo: u64, hi: u64) -> Result<Vec<(u64, u64)>, TargetError> {
        let min = self.mmap_min;
        let mut spans: Vec<(u64, u64)> = self
            .cached_maps()?
            .iter()
            .map(|m| (m.start, m.end))
            .collect();
        spans.sort_unstable();
        spans.push((USER_TOP, USER_TOP));
        let mut gaps = Vec::new();
        let mut at = min;
        for (start, end) in spans {
            if start > at {
                let (s, e) = (at.max(lo), start.min(hi));
                if s < e {
                    gaps.push((s, e));
                }
            }
            at = at.max(end);
        }
        Ok(gaps)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.release_worker();
        let held = std::mem::take(&mut self.held);
        Self::detach_held(held);
        if let Some(saved) = self.boosted.take() {
            priority::restore(saved);
        }
    }
}

/// Real-time scheduling of the calling thread for the length of a stop:
/// the only unsafe code of the crate (libc calls that nix does not wrap).
#[allow(unsafe_code)]
mod priority {
    use nix::libc;

    /// A thread's scheduling policy and parameters.
    #[derive(Debug)]
    pub struct Saved {
        policy: libc::c_int,
        param: libc::sched_param,
    }

    /// Raise the calling thread to SCHED_FIFO priority 1 (above every
    /// normal thread, below every other real-time one). `None` when not
    /// permitted (or already real-time): it then runs as it was.
    pub fn raise() -> Option<Saved> {
        // SAFETY: sched_getscheduler takes a thread id (0: the caller) and
        // touches no memory.
        let policy = unsafe { libc::sched_getscheduler(0) };
        if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
            return None;
        }
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a live, writable sched_param on this frame,
        // which the call fills in.
        if unsafe { libc::sched_getparam(0, &mut param) } != 0 {
            return None;
        }
        let fifo = libc::sched_param { sched_priority: 1 };
        // SAFETY: `fifo` is a live sched_param the call only reads.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) } != 0 {
            return None;
        }
        Some(Saved { policy, param })
    }

    /// Put the calling thread back as it was.
    pub fn restore(saved: Saved) {
        // SAFETY: `saved.param` is a live sched_param the call only reads.
        unsafe {
            libc::sched_setscheduler(0, saved.policy, &saved.param);
        }
    }
}

impl Target for Process {
    fn describe(&self) -> String {
        format!("process {}", self.pid())
    }

    fn locate(&mut self, name: &str, identity: &ImageIdentity) -> Result<Located, TargetError> {
        self.release_worker();
        let maps = self.maps()?;
        // Placement and the system call instruction start from this read.
        self.maps_cache = Some(maps.clone());
        // Files mapped with some executable part, by (device, inode).
        let mut files: BTreeMap<(u64, u64, u64), Vec<&Mapping>> = BTreeMap::new();
        for m in &maps {
            if m.inode != 0 && m.path.as_deref().is_some_and(|p| p.starts_with('/')) {
                files
                    .entry((m.dev_major, m.dev_minor, m.inode))
                    .or_default()
                    .push(m);
            }
        }
        files.retain(|_, ms| ms.iter().any(|m| m.executable()));
        let basename = |m: &Mapping| {
            m.path
                .as_deref()
                .map(|p| p.trim_end_matches(" (deleted)"))
                .and_then(|p| p.rsplit('/').next())
                .map(str::to_string)
        };
        let by_name: Vec<&Vec<&Mapping>> = files
            .values()
            .filter(|ms| ms.first().and_then(|m| basename(m)).as_deref() == Some(name))
            .collect();
        let want_build_id = match &identity.build {
            BuildIdentity::Elf { build_id } => build_id.as_ref().map(|b| b.0.clone()),
            BuildIdentity::Pe { .. } => None,
        };
        // Among same-named files prefer the exact build; failing a name,
        // look for the build among every mapped file.
        let mut first_named = None;
        for ms in &by_name {
            let file = self.open_mapped(ms)?;
            if file.sha256 == identity.sha256 {
                return self.located(ms, &file, "by file name and SHA-256");
            }
            first_named.get_or_insert((*ms, file));
        }
        if by_name.is_empty() {
            for ms in files.values() {
                let Ok(file) = self.open_mapped(ms) else {
                    continue;
                };
                if want_build_id.is_some() && file.build_id == want_build_id {
                    return self.located(ms, &file, "by ELF build-id");
                }
                if file.sha256 == identity.sha256 {
                    return self.located(ms, &file, "by SHA-256");
                }
            }
        }
        match first_named {
            // The name matches but not the build: report what is there,
            // and the engine refuses on the digest.
            Some((ms, file)) => self.located(ms, &file, "by file name (a different build)"),
            None => Err(TargetError::NotLoaded {
                name: name.to_string(),
                target: self.describe(),
            }),
        }
    }

    fn page_size(&self) -> u64 {
        self.page_size
    }

    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), TargetError> {
        self.release_worker();
        self.mem
            .read_exact_at(buf, address)
            .map_err(|e| self.access_error(address, buf.len(), &e))
    }

    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), TargetError> {
        self.release_worker();
        self.mem
            .write_all_at(bytes, address)
            .map_err(|e| self.access_error(address, bytes.len(), &e))
    }

    /// Patches that share a page, or lie on neighbouring pages, go in one
    /// run: one read of the run's bytes, checked against every `old`, and
    /// (once every run checked) one write of the run with every `new` laid
    /// over them. The bytes between patches are written back as they were
    /// read, with every thread stopped. A hundred redirects in one text
    /// section take a few system calls instead of hundreds.
    fn patch(&mut self, patches: &[Patch<'_>]) -> Result<(), TargetError> {
        self.release_worker();
        let ordered = patches.windows(2).all(|w| match w {
            [a, b] => a.address.saturating_add(a.old.len() as u64) <= b.address,
            _ => true,
        });
        if let Some(p) = patches.iter().find(|p| p.new.len() != p.old.len()) {
            return Err(self.other(format!(
                "patch at {:#x}: {} bytes to replace {}",
                p.address,
                p.new.len(),
                p.old.len()
            )));
        }
        if !ordered {
            return Err(self.other("patches overlap or are out of order".into()));
        }
        let mut buf = std::mem::take(&mut self.scratch);
        let result = self.patch_runs(patches, &mut buf);
        self.scratch = buf;
        result
    }

    fn allocate(&mut self, lo: u64, hi: u64, size: u64) -> Result<u64, TargetError> {
        let page = self.page_size;
        let target = self.describe();
        let no_room = || TargetError::NoRoom {
            target: target.clone(),
            size,
            lo,
            hi,
        };
        if size == 0 || size.checked_rem(page) != Some(0) {
            return Err(self.other(format!(
                "allocation of {size} bytes is not a whole number of {page}-byte pages"
            )));
        }
        // Each half is at most half of u64::MAX: the sum cannot saturate.
        let mid = (lo / 2).saturating_add(hi / 2);
        let mut tried = BTreeSet::new();
        // The address space changes under us (other threads map memory):
        // look again after each refusal, a bounded number of times.
        for _ in 0..8 {
            let mut candidates = Vec::new();
            for (s, e) in self.gaps(lo, hi)? {
                // A gap with no page start below the end of the address
                // space has no room.
                let Some(first) = s.div_ceil(page).checked_mul(page) else {
                    continue;
                };
                let Some(last) = e.checked_sub(size).map(|l| round_down(l, page)) else {
                    continue;
                };
                if first <= last {
                    // The end of the gap nearest the middle of the range.
                    let pick = if mid <= first {
                        first
                    } else if mid >= last {
                        last
                    } else {
                        round_down(mid, page)
                    };
                    candidates.push(pick);
                }
            }
            candidates.retain(|c| !tried.contains(c));
            candidates.sort_by_key(|c| c.abs_diff(mid));
            let Some(&hint) = candidates.first() else {
                return Err(no_room());
            };
            tried.insert(hint);
            let r = self.remote_syscall(
                libc::SYS_mmap,
                [
                    hint,
                    size,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                    u64::MAX,
                    0,
                ],
            )?;
            if (-4095..0).contains(&r) {
                // EEXIST (taken meanwhile), ENOMEM (a stack guard gap):
                // the next candidate, from the mappings read again.
                self.maps_cache = None;
                continue;
            }
            self.maps_cache = None;
            let got = r as u64;
            if got == hint && got >= lo && got.saturating_add(size) <= hi {
                self.allocated.insert((got, size));
                return Ok(got);
            }
            // A kernel without MAP_FIXED_NOREPLACE treats it as a hint.
            let _ = self.remote_syscall(libc::SYS_munmap, [got, size, 0, 0, 0, 0]);
        }
        Err(no_room())
    }

    /// Unmap a range this instance mapped (an apply that failed and is
    /// rolled back: no thread ever ran its code). A range an earlier apply
    /// mapped is left mapped and listed in [`Process::retired`]: a thread
    /// may still be running in the replaced code, or hold a return address
    /// into it on its stack, and unmapping it would crash the process.
    fn free(&mut self, address: u64, size: u64) -> Result<(), TargetError> {
        if !self.allocated.remove(&(address, size)) {
            self.retired.push((address, size));
            return Ok(());
        }
        self.maps_cache = None;
        let r = self.remote_syscall(libc::SYS_munmap, [address, size, 0, 0, 0, 0])?;
        if r < 0 {
            return Err(self.other(format!(
                "munmap({address:#x}, {size}) failed: {}",
                Errno::from_raw(r.saturating_neg() as i32).desc()
            )));
        }
        Ok(())
    }

    fn protect(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<(), TargetError> {
        let mut prot = libc::PROT_NONE;
        if protection.read {
            prot |= libc::PROT_READ;
        }
        if protection.write {
            prot |= libc::PROT_WRITE;
        }
        if protection.execute {
            prot |= libc::PROT_EXEC;
        }
        let r = self.remote_syscall(libc::SYS_mprotect, [address, size, prot as u64, 0, 0, 0])?;
        if r < 0 {
            return Err(self.other(format!(
                "mprotect({address:#x}, {size}) failed: {}",
                Errno::from_raw(r.saturating_neg() as i32).desc()
            )));
        }
        Ok(())
    }

    fn retires_freed_code(&self) -> bool {
        true
    }

    /// Every thread is seized first (`PTRACE_SEIZE` does not stop it),
    /// rescanning `/proc/PID/task` until no new thread appears; then the
    /// pause begins: every thread is interrupted, then each is waited
    /// for, and the list is scanned once more for a thread created just
    /// before its creator stopped.
    fn stop(&mut self) -> Result<Vec<ThreadPc>, TargetError> {
        self.release_worker();
        let stopped = self
            .seize_every_thread()
            .and_then(|seized| self.stop_seized(seized));
        // Whatever failed, every thread held so far runs again.
        if stopped.is_err() {
            let _ = self.resume();
        }
        stopped
    }

    fn resume(&mut self) -> Result<(), TargetError> {
        let held = std::mem::take(&mut self.held);
        let threads = held.len();
        let resume_began = Instant::now();
        Self::detach_held(held);
        let realtime = self.boosted.is_some();
        if let Some(began) = self.stop_began.take() {
            let now = Instant::now();
            let all_held = self.all_held.take().unwrap_or(resume_began);
            self.stops = self.stops.saturating_add(1);
            self.last_pause = Some(Pause {
                threads,
                total: now.saturating_duration_since(began),
                stopping: all_held.saturating_duration_since(began),
                held: resume_began.saturating_duration_since(all_held),
                resuming: now.saturating_duration_since(resume_began),
                stops: self.stops,
                realtime,
            });
        }
        Ok(())
    }

    fn load_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, TargetError> {
        self.release_worker();
        let path = self.state_path().join(state_file_name(key));
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.other(format!("cannot read state record {}: {e}", path.display()))),
        }
    }

    fn store_state(&mut self, key: &str, record: Option<&[u8]>) -> Result<(), TargetError> {
        self.release_worker();
        let dir = self.state_path();
        let path = dir.join(state_file_name(key));
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            self.other(format!("cannot {what} {}: {e}", p.display()))
        };
        match record {
            Some(bytes) => {
                std::fs::create_dir_all(&dir).map_err(|e| fail("create", &dir, e))?;
                let tmp = dir.join(format!(
                    ".{}.tmp{}",
                    state_file_name(key),
                    std::process::id()
                ));
                let written = (|| {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)?;
                    f.write_all(bytes)?;
                    std::fs::rename(&tmp, &path)
                })();
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(fail("write", &path, e));
                }
            }
            None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(fail("remove", &path, e)),
                }
                // The folder goes with its last record.
                let _ = std::fs::remove_dir(&dir);
            }
        }
        Ok(())
    }
}

/// A mapped file, read and identified.
struct MappedFile {
    path: String,
    sha256: Sha256Digest,
    build_id: Option<Vec<u8>>,
    /// Lowest-address PT_LOAD: (p_offset, p_vaddr).
    first_load: (u64, u64),
    /// Executable PT_LOADs: (p_vaddr, p_memsz).
    exec_loads: Vec<(u64, u64)>,
}

impl Process {
    /// Open the file behind mappings `ms` (all of one inode): through
    /// `/proc/PID/map_files` (the very file mapped, even if it was replaced
    /// or deleted on disk), or else through the process's root by path,
    /// checking the inode.
    fn open_mapped(&self, ms: &[&Mapping]) -> Result<MappedFile, TargetError> {
        let Some(m) = ms.first() else {
            return Err(self.other("no mapping".into()));
        };
        let path = m.path.clone().unwrap_or_default();
        let via_map_files = format!("/proc/{}/map_files/{:x}-{:x}", self.pid(), m.start, m.end);
        let via_root = format!("/proc/{}/root{}", self.pid(), path);
        let data = match std::fs::read(&via_map_files) {
            Ok(d) => d,
            Err(_) => {
                let mut f = File::open(&via_root)
                    .map_err(|e| self.other(format!("cannot open mapped file {path}: {e}")))?;
                let meta = f
                    .metadata()
                    .map_err(|e| self.other(format!("cannot open mapped file {path}: {e}")))?;
                if meta.ino() != m.inode {
                    return Err(self.other(format!(
                        "mapped file {path} was replaced on disk and its mapped copy cannot be read"
                    )));
                }
                let mut d = Vec::new();
                f.read_to_end(&mut d)
                    .map_err(|e| self.other(format!("cannot read mapped file {path}: {e}")))?;
                d
            }
        };
        let bad = |what: &str| self.other(format!("mapped file {path}: {what}"));
        let elf = object::read::elf::ElfFile64::<Endianness>::parse(&*data)
            .map_err(|e| bad(&format!("not a 64-bit ELF file: {e}")))?;
        let endian = elf.endian();
        let machine = elf.elf_header().e_machine(endian);
        if machine != HOST_MACHINE {
            return Err(bad(&format!("ELF machine {machine} is not this tool's")));
        }
        let loads: Vec<_> = elf
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .collect();
        let first_load = loads
            .iter()
            .min_by_key(|p| p.p_vaddr(endian))
            .map(|p| (p.p_offset(endian), p.p_vaddr(endian)))
            .ok_or_else(|| bad("no PT_LOAD segment"))?;
        let exec_loads = loads
            .iter()
            .filter(|p| p.p_flags(endian) & object::elf::PF_X != 0)
            .map(|p| (p.p_vaddr(endian), p.p_memsz(endian)))
            .collect();
        let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
        Ok(MappedFile {
            path: path.trim_end_matches(" (deleted)").to_string(),
            sha256: Sha256Digest(Sha256::digest(&data).into()),
            build_id,
            first_load,
            exec_loads,
        })
    }

    /// Where `file`, mapped as `ms`, has its RVA 0: the first PT_LOAD is
    /// mapped from its page-aligned file offset at base + its page-aligned
    /// address. Checks that every executable segment lies in an executable
    /// mapping of the same file.
    fn located(
        &self,
        ms: &[&Mapping],
        file: &MappedFile,
        how: &str,
    ) -> Result<Located, TargetError> {
        let (p_offset, p_vaddr) = file.first_load;
        let page = self.page_size;
        let map_offset = round_down(p_offset, page);
        let first = ms
            .iter()
            .filter(|m| m.offset == map_offset)
            .min_by_key(|m| m.start)
            .ok_or_else(|| {
                self.other(format!(
                    "{}: no mapping of its first segment (file offset {map_offset:#x})",
                    file.path
                ))
            })?;
        let base = first
            .start
            .checked_add(p_offset.saturating_sub(map_offset))
            .and_then(|a| a.checked_sub(p_vaddr))
            .filter(|b| b.checked_rem(page) == Some(0))
            .ok_or_else(|| {
                self.other(format!(
                    "{}: its first segment at {:#x} does not match its address {p_vaddr:#x}",
                    file.path, first.start
                ))
            })?;
        for &(vaddr, memsz) in &file.exec_loads {
            let s = base.saturating_add(vaddr);
            let e = s.saturating_add(memsz);
            if !ms
                .iter()
                .any(|m| m.executable() && m.start <= s && e <= m.end)
            {
                return Err(self.other(format!(
                    "{}: its code at {s:#x}-{e:#x} is not mapped executable",
                    file.path
                )));
            }
        }
        let (lo, hi) = (
            ms.iter().map(|m| m.start).min().unwrap_or(first.start),
            ms.iter().map(|m| m.end).max().unwrap_or(first.end),
        );
        Ok(Located {
            base,
            file_sha256: file.sha256,
            format: Format::Elf,
            arch: HOST_ARCH,
            how: format!(
                "{} mapped at {lo:#x}-{hi:#x}, base {base:#x}, matched {how}",
                file.path
            ),
        })
    }
}

/// The run of ordered `patches` that starts at index `i`: the index after
/// its last patch, its first address and its end. A run takes every
/// following patch that begins less than a page after the end of the one
/// before, so it spans only pages that hold a patch.
fn next_run(patches: &[Patch<'_>], i: usize, page: u64) -> Option<(usize, u64, u64)> {
    let first = patches.get(i)?;
    let start = first.address;
    let mut end = start.saturating_add(first.old.len() as u64);
    let mut j = i.saturating_add(1);
    while let Some(p) = patches.get(j) {
        if p.address.saturating_sub(end) >= page {
            break;
        }
        end = end.max(p.address.saturating_add(p.old.len() as u64));
        j = j.saturating_add(1);
    }
    Some((j, start, end))
}

/// Where the `len` bytes at `address` lie in a run read from `start`;
/// `None` if they do not start in it.
fn in_run(address: u64, start: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let o = usize::try_from(address.checked_sub(start)?).ok()?;
    Some(o..o.checked_add(len)?)
}

/// `n` rounded down to a multiple of `page` (`n` for a zero page).
fn round_down(n: u64, page: u64) -> u64 {
    // The remainder is at most `n`: the subtraction cannot saturate.
    n.saturating_sub(n.checked_rem(page).unwrap_or(0))
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Process start time (field 22 of `/proc/PID/stat`), while one of its
/// threads still lives.
fn read_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at field 3.
    let start = fields.get(22 - 3)?.parse().ok()?;
    // The main thread may have exited while others run on.
    let live = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|tid| !thread_is_zombie(pid, tid));
    live.then_some(start)
}

/// Whether thread `tid` is a zombie (an exited main thread whose process
/// lives on).
fn thread_is_zombie(pid: u32, tid: i32) -> bool {
    thread_state(pid, tid).is_none_or(|c| c == 'Z' || c == 'X')
}

/// The state letter of thread `tid` (field 3 of its `stat`: `R` running,
/// `S` asleep, `D` uninterruptible, `t` traced, `Z` zombie...).
fn thread_state(pid: u32, tid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    s.get(s.rfind(')')?.checked_add(2)?..)?.chars().next()
}

/// The process's page size, from its auxiliary vector.
fn read_page_size(pid: u32) -> Option<u64> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    auxv.chunks_exact(16).find_map(|c| {
        let (k, v) = c.split_at(8);
        let k = u64::from_ne_bytes(k.try_into().ok()?);
        let v = u64::from_ne_bytes(v.try_into().ok()?);
        (k == libc::AT_PAGESZ).then_some(v)
    })
}

/// The process must be a 64-bit ELF process of this tool's architecture.
fn check_arch(pid: u32) -> Result<(), String> {
    let mut head = [0u8; 20];
    let Ok(mut f) = File::open(format!("/proc/{pid}/exe")) else {
        // No readable executable (a kernel thread, or no permission): the
        // memory check that follows says what is wrong.
        return Ok(());
    };
    if f.read_exact(&mut head).is_err() || head.get(..4) != Some(b"\x7fELF") {
        return Err("its executable is not an ELF file".into());
    }
    let class = head.get(4).copied();
    let machine = head
        .get(18..20)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes);
    if class != Some(2) || machine != Some(HOST_MACHINE) {
        return Err(format!(
            "it is not a 64-bit {} process",
            if HOST_MACHINE == object::elf::EM_X86_64 {
                "x86-64"
            } else {
                "AArch64"
            }
        ));
    }
    Ok(())
}

/// What to add to a permission error.
fn yama_hint() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(s) if s.trim() != "0" => format!(
            " (kernel.yama.ptrace_scope is {}: run as root, or have the process allow it with prctl(PR_SET_PTRACER))",
            s.trim()
        ),
        _ => " (run as the process's user or as root)".into(),
    }
}

fn io_detail(e: &std::io::Error) -> String {
    if e.kind() == ErrorKind::UnexpectedEof {
        "not mapped".into()
    } else {
        e.to_string()
    }
}

/// A state record's file name: the key if it is plain, else its hex.
fn state_file_name(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if plain {
        format!("{key}.state")
    } else {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{}.state", hex.get(..200).unwrap_or(&hex))
    }
}

/// Remove `process-PID-START` folders whose process is gone.
fn remove_stale_state(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("process-")) else {
            continue;
        };
        let Some((pid, start)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if read_start_time(pid) != Some(start) && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Register access per architecture.
mod regs {
    use nix::libc;
    use nix::libc::user_regs_struct as Regs;

    /// Registers that run system call `nr` at `gadget`.
    #[cfg(target_arch = "x86_64")]
    pub fn for_syscall(saved: &Regs, gadget: u64, nr: libc::c_long, args: [u64; 6]) -> Regs {
        let mut r = *saved;
        r.rip = gadget;
        r.rax = nr as u64;
        // No syscall restart on the way back to user space.
        r.orig_rax = u64::MAX;
        let [a, b, c, d, e, f] = args;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a, b, c, d, e, f);
        r
    }

    /// Registers that run system call `nr` at `gadget`.
    #[cfg(target_arch = "aarch64")]
    pub fn for_syscall(saved: &Regs, gadget: u64, nr: libc::c_long, args: [u64; 6]) -> Regs {
        let mut r = *saved;
        r.pc = gadget;
        if let Some(x8) = r.regs.get_mut(8) {
            *x8 = nr as u64;
        }
        for (reg, a) in r.regs.iter_mut().zip(args) {
            *reg = a;
        }
        r
    }

    /// The program counter.
    #[cfg(target_arch = "x86_64")]
    pub fn pc(r: &Regs) -> u64 {
        r.rip
    }

    /// The program counter.
    #[cfg(target_arch = "aarch64")]
    pub fn pc(r: &Regs) -> u64 {
        r.pc
    }

    /// The instruction the thread runs next: on x86-64, a system call
    /// interrupted to restart runs its `syscall` instruction again.
    #[cfg(target_arch = "x86_64")]
    pub fn next_pc(r: &Regs) -> u64 {
        const ERESTARTSYS: i64 = 512;
        const ERESTART_RESTARTBLOCK: i64 = 516;
        let ret = r.rax as i64;
        if (r.orig_rax as i64) >= 0 && (-ERESTART_RESTARTBLOCK..=-ERESTARTSYS).contains(&ret) {
            r.rip.wrapping_sub(2)
        } else {
            r.rip
        }
    }

    /// The instruction the thread runs next (the kernel has already
    /// rewound an interrupted system call on AArch64).
    #[cfg(target_arch = "aarch64")]
    pub fn next_pc(r: &Regs) -> u64 {
        r.pc
    }

    /// A system call's raw result.
    #[cfg(target_arch = "x86_64")]
    pub fn result(r: &Regs) -> i64 {
        r.rax as i64
    }

    /// A system call's raw result.
    #[cfg(target_arch = "aarch64")]
    pub fn result(r: &Regs) -> i64 {
        r.regs.first().copied().unwrap_or(u64::MAX) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_spaces_in_paths() {
        let text = "7f0000000000-7f0000001000 r-xp 00001000 fd:01 1234  /opt/my lib/v1.so\n\
                    7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n\
                    7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n";
        let m = parse_maps(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x7f00_0000_0000);
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(
            (m[0].dev_major, m[0].dev_minor, m[0].inode),
            (0xfd, 1, 1234)
        );
        assert_eq!(m[0].path.as_deref(), Some("/opt/my lib/v1.so"));
        assert!(m[0].executable());
        assert_eq!(m[1].path.as_deref(), Some("[stack]"));
        assert_eq!(m[2].path, None);
        assert!(parse_maps("zz-10 r-xp 0 0:0 0\n").is_err());
    }

    #[test]
    fn state_file_names_are_plain_or_hex() {
        assert_eq!(state_file_name("v1.so"), "v1.so.state");
        assert_eq!(state_file_name("../x"), "x2e2e2f78.state");
        assert_eq!(state_file_name(".hidden"), "x2e68696464656e.state");
    }
}
