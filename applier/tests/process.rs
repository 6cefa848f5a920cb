//! The live-process target on this machine: a multi-threaded C program,
//! built here with the system C compiler, that keeps calling a corpus image.
#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hotpatch_applier::{Patch, Process, Protection, Target, TargetError};
use hotpatch_formats::package::digest::HexBytes;
use hotpatch_formats::package::{BuildIdentity, ImageIdentity, Sha256Digest};
use object::{Object, ObjectSegment, ObjectSymbol};
use sha2::{Digest, Sha256};

/// The repository: beside this crate, or where `HOTPATCH_ROOT` says (the
/// ARM64 VM stages the corpus at a fixed path: the checkout's own may lie
/// under a directory the VM mounts over, such as `/tmp`).
fn root() -> PathBuf {
    match std::env::var_os("HOTPATCH_ROOT") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

#[cfg(target_arch = "x86_64")]
const CORPUS_TARGET: &str = "x86_64-linux";
#[cfg(target_arch = "aarch64")]
const CORPUS_TARGET: &str = "aarch64-linux";

fn corpus_image(version: &str) -> PathBuf {
    root()
        .join("corpus/13-cumulative-series/bin")
        .join(CORPUS_TARGET)
        .join(format!("{version}.so"))
}

/// Build the live test program once per test binary (or take a prebuilt
/// one from `HOTPATCH_LIVEPROG`, as in the ARM64 VM, which has no compiler).
fn liveprog() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(prebuilt) = std::env::var_os("HOTPATCH_LIVEPROG") {
                return PathBuf::from(prebuilt);
            }
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("liveprog");
            let status = Command::new("cc")
                .args(["-O2", "-Wall", "-Werror", "-pthread"])
                .arg(root().join("tests/live/liveprog.c"))
                .arg("-o")
                .arg(&out)
                .arg("-ldl")
                .status()
                .expect("cannot run cc");
            assert!(status.success(), "cc failed to build liveprog");
            out
        })
        .clone()
}

/// A running liveprog, killed when dropped.
struct Live {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Live {
    fn start(lib: &Path) -> Live {
        let mut child = Command::new(liveprog())
            .arg(lib)
            .args(["--push", "10:100", "--push", "11:4294967280"])
            .args(["--push", "12:4294967280", "--every", "5"])
            .args(["log_code:5", "log_bytes:2"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start liveprog");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut live = Live { child, out };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = live.line();
            if line.starts_with("ready ") {
                break;
            }
            assert!(Instant::now() < deadline, "liveprog never became ready");
        }
        live
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.out.read_line(&mut s).expect("reading liveprog");
        assert!(n > 0, "liveprog closed its output");
        s
    }

    /// The next line from each of the 4 workers, without the thread and
    /// round number.
    fn round(&mut self) -> Vec<String> {
        let mut seen = std::collections::BTreeMap::new();
        while seen.len() < 4 {
            let l = self.line();
            if let Some((t, rest)) = l.trim().split_once(' ') {
                let rest = rest.split_once(' ').map(|x| x.1).unwrap_or("").to_string();
                seen.insert(t.to_string(), rest);
            }
        }
        seen.into_values().collect()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn identity(path: &Path) -> ImageIdentity {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    ImageIdentity {
        sha256: Sha256Digest(Sha256::digest(&data).into()),
        build: BuildIdentity::Elf {
            build_id: file.build_id().unwrap().map(|b| HexBytes(b.to_vec())),
        },
    }
}

fn symbol(path: &Path, name: &str) -> (u64, u64) {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let s = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
    (s.address(), s.size())
}

fn file_bytes_at(path: &Path, vaddr: u64, len: usize) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    for seg in file.segments() {
        if seg.address() <= vaddr && vaddr + len as u64 <= seg.address() + seg.size() {
            let (off, _) = seg.file_range();
            let at = (off + vaddr - seg.address()) as usize;
            return data[at..at + len].to_vec();
        }
    }
    panic!("{vaddr:#x} is in no segment");
}

fn attach(pid: u32, dir: &Path) -> Process {
    Process::attach(pid, dir).unwrap_or_else(|e| panic!("attach: {e}"))
}

const V1_RESULTS: &str = "log_code(5)=0 log_bytes(2)=4294967280";

#[test]
fn locate_finds_the_mapping_by_name_and_its_base() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(live.pid(), state.path());
    let id = identity(&lib);
    let at = p.locate("v1.so", &id).unwrap();
    assert_eq!(at.file_sha256, id.sha256);
    assert!(at.how.contains("/v1.so mapped at "), "{}", at.how);
    assert!(
        at.how.ends_with("matched by file name and SHA-256"),
        "{}",
        at.how
    );
    assert_eq!(at.base % p.page_size(), 0);
    // The bytes at base + RVA are the function's bytes in the file.
    let (rva, size) = symbol(&lib, "log_code");
    let mut live_bytes = vec![0u8; size as usize];
    p.read(at.base + rva, &mut live_bytes).unwrap();
    assert_eq!(live_bytes, file_bytes_at(&lib, rva, size as usize));
    // The first mapping of the file starts at the base (its first PT_LOAD
    // is at offset 0, address 0).
    let maps = p.maps().unwrap();
    let first = maps
        .iter()
        .filter(|m| m.path.as_deref().is_some_and(|x| x.ends_with("/v1.so")))
        .min_by_key(|m| m.start)
        .unwrap();
    assert_eq!((first.start, first.offset), (at.base, 0));
    // Under another name: found by build-id.
    let by_id = p.locate("libaudit.so.1", &id).unwrap();
    assert_eq!(by_id.base, at.base);
    assert!(
        by_id.how.ends_with("matched by ELF build-id"),
        "{}",
        by_id.how
    );
    // A build that is not there.
    let other = identity(&corpus_image("v2"));
    match p.locate("v2.so", &other) {
        Err(TargetError::NotLoaded { name, .. }) => assert_eq!(name, "v2.so"),
        r => panic!("{r:?}"),
    }
    // The name matches, the build does not: the real digest comes back,
    // for the engine to refuse.
    let wrong = p.locate("v1.so", &other).unwrap();
    assert_eq!(wrong.file_sha256, id.sha256);
    assert!(wrong.how.ends_with("(a different build)"), "{}", wrong.how);
    drop(p);
    assert_eq!(live.round(), vec![V1_RESULTS; 4]);
}

#[test]
fn allocate_near_protect_and_free_in_the_running_process() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(live.pid(), state.path());
    let at = p.locate("v1.so", &identity(&lib)).unwrap();
    let page = p.page_size();
    let (lo, hi) = (at.base - (1 << 30), at.base + (1 << 30));
    let a = p.allocate(lo, hi, 2 * page).unwrap();
    assert!(
        a >= lo && a + 2 * page <= hi,
        "{a:#x} outside {lo:#x}..{hi:#x}"
    );
    assert_eq!(a % page, 0);
    let mapped = |p: &Process| {
        p.maps()
            .unwrap()
            .into_iter()
            .find(|m| m.start <= a && a < m.end)
            .map(|m| m.perms)
    };
    assert_eq!(mapped(&p).as_deref(), Some("rw-p"));
    let bytes: Vec<u8> = (0..=255u8).cycle().take(2 * page as usize).collect();
    p.write(a, &bytes).unwrap();
    let mut back = vec![0u8; bytes.len()];
    p.read(a, &mut back).unwrap();
    assert_eq!(back, bytes);
    p.protect(a, 2 * page, Protection::CODE).unwrap();
    assert_eq!(mapped(&p).as_deref(), Some("r-xp"));
    // Code pages are written through /proc/PID/mem all the same.
    p.write(a + 1, &[0xcc]).unwrap();
    p.read(a, &mut back[..2]).unwrap();
    assert_eq!(&back[..2], &[0, 0xcc]);
    p.free(a, 2 * page).unwrap();
    assert_eq!(mapped(&p), None);
    // A range with no room: inside the image itself.
    match p.allocate(at.base, at.base + page, page) {
        Err(TargetError::NoRoom { size, .. }) => assert_eq!(size, page),
        r => panic!("{r:?}"),
    }
    // Unmapped memory is an access error, not a panic.
    match p.read(a, &mut back[..4]) {
        Err(TargetError::Access { address, .. }) => assert_eq!(address, a),
        r => panic!("{r:?}"),
    }
    drop(p);
    // The workers kept their results throughout.
    assert_eq!(live.round(), vec![V1_RESULTS; 4]);
}

/// Memory calls that follow one another share one stopped thread; the
/// next other operation lets it go.
#[test]
fn consecutive_system_calls_share_one_stopped_thread() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(live.pid(), state.path());
    let at = p.locate("v1.so", &identity(&lib)).unwrap();
    let page = p.page_size();
    let a = p
        .allocate(at.base - (1 << 30), at.base + (1 << 30), 2 * page)
        .unwrap();
    p.protect(a, page, Protection::CODE).unwrap();
    p.protect(a + page, page, Protection::READ_ONLY).unwrap();
    let s = p.syscalls();
    assert_eq!((s.calls, s.stops), (3, 1), "{s:?}");
    // One thread is held meanwhile, and only one.
    let traced: Vec<u64> = std::fs::read_dir(format!("/proc/{}/task", live.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .filter(|t| {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/task/{t}/stat", live.pid())).unwrap();
            stat[stat.rfind(')').unwrap() + 2..].starts_with('t')
        })
        .collect();
    assert_eq!(traced.len(), 1, "{traced:?}");
    // A read lets it go; the next call stops a thread again.
    let mut b = [0u8; 1];
    p.read(a, &mut b).unwrap();
    p.free(a, 2 * page).unwrap();
    let s = p.syscalls();
    assert_eq!((s.calls, s.stops), (4, 2), "{s:?}");
    drop(p);
    assert_eq!(live.round(), vec![V1_RESULTS; 4]);
}

/// A patch batch checks every range before it writes any, and writes
/// ranges on one page or on neighbouring pages together with the bytes
/// between them unchanged.
#[test]
fn patches_are_checked_then_written_in_runs() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(live.pid(), state.path());
    let at = p.locate("v1.so", &identity(&lib)).unwrap();
    let page = p.page_size();
    let a = p
        .allocate(at.base - (1 << 30), at.base + (1 << 30), 4 * page)
        .unwrap();
    p.protect(a, 4 * page, Protection::CODE).unwrap();
    let fill: Vec<u8> = (0..4 * page).map(|i| (i % 251) as u8).collect();
    p.write(a, &fill).unwrap();
    let old = |off: u64, n: usize| fill[off as usize..off as usize + n].to_vec();
    // Two patches on the first page (one run), one straddling the second
    // and third pages (another), and one on the fourth, more than a page
    // after it (a third).
    let sites = [
        (8u64, 5usize),
        (100, 7),
        (2 * page - 3, 6),
        (3 * page + 600, 4),
    ];
    let news: Vec<Vec<u8>> = sites.iter().map(|&(_, n)| vec![0xe9; n]).collect();
    let olds: Vec<Vec<u8>> = sites.iter().map(|&(o, n)| old(o, n)).collect();
    let batch = |olds: &[Vec<u8>]| -> Vec<(u64, Vec<u8>)> {
        sites
            .iter()
            .zip(olds)
            .map(|(&(o, _), old)| (a + o, old.clone()))
            .collect()
    };
    fn list<'a>(b: &'a [(u64, Vec<u8>)], news: &'a [Vec<u8>]) -> Vec<Patch<'a>> {
        b.iter()
            .zip(news)
            .map(|((address, old), new)| Patch {
                address: *address,
                old,
                new,
            })
            .collect()
    }
    // A stale old value anywhere in the batch: nothing is written.
    let mut stale = olds.clone();
    stale[3][0] ^= 1;
    let b = batch(&stale);
    p.stop().unwrap();
    match p.patch(&list(&b, &news)) {
        Err(TargetError::Changed { address, len, .. }) => {
            assert_eq!((address, len), (a + 3 * page + 600, 4))
        }
        r => panic!("{r:?}"),
    }
    let mut back = vec![0u8; fill.len()];
    p.read(a, &mut back).unwrap();
    assert_eq!(back, fill, "nothing written");
    // The right old values: every patch lands, nothing else changes.
    let b = batch(&olds);
    p.patch(&list(&b, &news)).unwrap();
    p.resume().unwrap();
    let mut want = fill.clone();
    for &(o, n) in &sites {
        want[o as usize..o as usize + n].fill(0xe9);
    }
    p.read(a, &mut back).unwrap();
    assert_eq!(back, want);
    drop(p);
    assert_eq!(live.round(), vec![V1_RESULTS; 4]);
}

#[test]
fn stop_holds_every_thread_and_resume_lets_them_go() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(live.pid(), state.path());
    let pcs = p.stop().unwrap();
    let mut tids: Vec<u64> = pcs.iter().map(|t| t.tid).collect();
    tids.sort();
    let mut tasks: Vec<u64> = std::fs::read_dir(format!("/proc/{}/task", live.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    tasks.sort();
    assert_eq!(tids, tasks);
    assert_eq!(tids.len(), 5, "the main thread and 4 workers");
    // Each is in a ptrace stop ("t").
    for t in &tids {
        let stat = std::fs::read_to_string(format!("/proc/{}/task/{t}/stat", live.pid())).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
        assert_eq!(state, 't', "thread {t}");
    }
    // Inside the stop, an injected mmap runs on a held thread.
    let at = p.locate("v1.so", &identity(&lib)).unwrap();
    let page = p.page_size();
    let a = p
        .allocate(at.base - (1 << 30), at.base + (1 << 30), page)
        .unwrap();
    p.free(a, page).unwrap();
    // The PCs are real code addresses: every one lies in an executable
    // mapping.
    let maps = p.maps().unwrap();
    for t in &pcs {
        assert!(
            maps.iter()
                .any(|m| m.perms.as_bytes()[2] == b'x' && m.start <= t.pc && t.pc < m.end),
            "thread {} at {:#x}",
            t.tid,
            t.pc
        );
    }
    p.resume().unwrap();
    let pause = p.last_pause().unwrap();
    assert_eq!(pause.threads, 5);
    assert_eq!(pause.stops, 1);
    assert!(pause.total < Duration::from_secs(10));
    assert_eq!(pause.total, pause.stopping + pause.held + pause.resuming);
    // The stop is repeatable.
    for _ in 0..3 {
        assert_eq!(p.stop().unwrap().len(), 5);
        p.resume().unwrap();
    }
    drop(p);
    assert_eq!(live.round(), vec![V1_RESULTS; 4]);
}

#[test]
fn dropping_a_stopped_process_resumes_it() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(live.pid(), state.path());
    assert_eq!(p.stop().unwrap().len(), 5);
    drop(p);
    assert_eq!(live.round(), vec![V1_RESULTS; 4]);
}

#[test]
fn state_records_are_per_process_instance_and_atomic() {
    let lib = corpus_image("v1");
    let live = Live::start(&lib);
    let state = tempfile::tempdir().unwrap();
    // A stale folder of a process that no longer exists goes on attach.
    let stale = state.path().join("process-999999999-1");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("v1.so.state"), b"old").unwrap();
    std::fs::write(state.path().join("unrelated"), b"kept").unwrap();
    let mut p = attach(live.pid(), state.path());
    assert!(!stale.exists());
    assert!(state.path().join("unrelated").exists());
    assert_eq!(p.load_state("v1.so").unwrap(), None);
    p.store_state("v1.so", Some(b"one")).unwrap();
    p.store_state("v1.so", Some(b"two")).unwrap();
    assert_eq!(p.load_state("v1.so").unwrap().as_deref(), Some(&b"two"[..]));
    let dir = p.state_path();
    assert!(dir.starts_with(state.path()));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["v1.so.state"], "no temporary file is left");
    p.store_state("v1.so", None).unwrap();
    assert_eq!(p.load_state("v1.so").unwrap(), None);
    assert!(!dir.exists(), "the folder goes with its last record");
}

#[test]
fn a_process_that_exits_gives_a_clear_error() {
    let lib = corpus_image("v1");
    let mut live = Live::start(&lib);
    let pid = live.pid();
    let state = tempfile::tempdir().unwrap();
    let mut p = attach(pid, state.path());
    let at = p.locate("v1.so", &identity(&lib)).unwrap();
    p.store_state("v1.so", Some(b"x")).unwrap();
    live.child.kill().unwrap();
    live.child.wait().unwrap();
    let exited = format!("process {pid}: the process exited");
    assert_eq!(p.stop().unwrap_err().to_string(), exited);
    let mut b = [0u8; 4];
    assert_eq!(p.read(at.base, &mut b).unwrap_err().to_string(), exited);
    let e = p.allocate(at.base, at.base + (1 << 30), 4096).unwrap_err();
    assert_eq!(e.to_string(), exited);
    assert!(p.discard_state_if_gone());
    assert!(!p.state_path().exists());
    match Process::attach(pid, state.path()) {
        Err(e) => assert_eq!(e.to_string(), format!("process {pid}: no such process")),
        Ok(_) => panic!("attached to a dead process"),
    }
}
