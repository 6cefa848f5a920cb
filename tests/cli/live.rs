//! `hotpatch apply --pid`: packages applied to a running multi-threaded
//! program (built here with gcc) that keeps calling a corpus image from 4
//! threads: its own output switches to the update's results under the same
//! PID, a cumulative update re-points, `--revert` goes back; a thread parked
//! inside the bytes a patch overwrites makes the apply fail, naming it, and
//! leaves the process as it was; a process that exits during an apply gives
//! a clear error and leaves no state behind.
//!
//! x86-64 Linux, natively. The same live test runs on ARM64 inside a real
//! ARM64 VM (`scripts/arm64-vm`, see `arm64_vm.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{fails, ok, root, tool};

/// Run `hotpatch` in `dir`.
fn hotpatch_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("failed to start hotpatch")
}

/// The live program, built once per test run.
fn liveprog() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-liveprog");
            let o = Command::new(tool("gcc"))
                .args(["-O2", "-Wall", "-Werror", "-pthread"])
                .arg(root().join("tests/live/liveprog.c"))
                .arg("-o")
                .arg(&out)
                .arg("-ldl")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            out
        })
        .clone()
}

/// A running live program, killed when dropped. Its output is read by a
/// thread, so a test never blocks on it past a deadline.
struct Live {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Live {
    fn start(lib: &Path, args: &[&str]) -> Live {
        let mut child = Command::new(liveprog())
            .arg(lib)
            .args(["--every", "5"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start the live program");
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut live = Live { child, lines };
        while !live.line().starts_with("ready ") {}
        live
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn pid_str(&self) -> String {
        self.pid().to_string()
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => panic!(
                "the live program printed nothing for 30 s (running: {})",
                self.running()
            ),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Forget what was printed so far.
    fn drain(&mut self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Wait until each worker has printed `expect` (its first line after a
    /// change may have been computed just before it), then require it of
    /// the next 3 lines of every worker.
    fn settles_on(&mut self, expect: &str) {
        self.drain();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 4 || seen.values().any(|n| *n < 4) {
            assert!(Instant::now() < deadline, "the workers never settled");
            let line = self.line();
            let Some((thread, rest)) = line.split_once(' ') else {
                continue;
            };
            let results = rest.split_once(' ').map_or("", |r| r.1);
            let n = seen.entry(thread.to_string()).or_insert(0);
            if *n == 0 && results != expect {
                continue; // computed before the change
            }
            assert_eq!(results, expect, "{thread}, line {} after the change", *n);
            *n += 1;
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key, a trust policy for product `live`, and signed packages built
/// from `(name, baseline, updated, release)`, in `dir`.
fn packages(dir: &Path, builds: &[(&str, &Path, &Path, &str)]) {
    ok(&hotpatch_in(dir, &["keygen", "-o", "k"]));
    ok(&hotpatch_in(
        dir,
        &[
            "trust",
            "new",
            "--key",
            "k.pub",
            "--product",
            "live",
            "-o",
            "trust.toml",
        ],
    ));
    for (name, base, upd, release) in builds {
        let out = format!("{name}.hpk");
        ok(&hotpatch_in(
            dir,
            &[
                "build",
                "--baseline",
                base.to_str().unwrap(),
                "--updated",
                upd.to_str().unwrap(),
                "--product",
                "live",
                "--release",
                release,
                "--baseline-release",
                "2026-04",
                "-o",
                &out,
            ],
        ));
        ok(&hotpatch_in(dir, &["sign", "--key", "k", &out]));
    }
}

fn apply(dir: &Path, live: &Live, package: &str, extra: &[&str]) -> Output {
    let pid = live.pid_str();
    let mut args = vec![
        "apply",
        package,
        "--pid",
        &pid,
        "--trust",
        "trust.toml",
        "--state-dir",
        "state",
    ];
    args.extend(extra);
    hotpatch_in(dir, &args)
}

fn corpus13(version: &str) -> PathBuf {
    root()
        .join("corpus/13-cumulative-series/bin/x86_64-linux")
        .join(format!("{version}.so"))
}

/// The corpus series v1 → v2 → v3 → revert, in a process that keeps
/// calling `log_code(5)` (v1 reads a never-written slot: 0; v2 and v3: -1)
/// and `log_bytes(2)` (v1, v2 wrap at 32 bits: 4294967280; v3:
/// 8589934576) after pushing 3 events, from 4 threads.
#[test]
fn live_process_switches_repoints_and_reverts_under_its_own_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v1 = corpus13("v1");
    packages(
        d,
        &[
            ("v2", &v1, &corpus13("v2"), "2026-05"),
            ("v3", &v1, &corpus13("v3"), "2026-06"),
        ],
    );
    let mut live = Live::start(
        &v1,
        &[
            "--push",
            "10:100",
            "--push",
            "11:4294967280",
            "--push",
            "12:4294967280",
            "log_code:5",
            "log_bytes:2",
        ],
    );
    let pid = live.pid();
    live.settles_on("log_code(5)=0 log_bytes(2)=4294967280");

    // v1 → v2, with the JSON report.
    let out = ok(&apply(d, &live, "v2.hpk", &["--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pid"], pid, "{out}");
    assert_eq!(
        v["threads_stopped"], 5,
        "the main thread and 4 workers: {out}"
    );
    let image = &v["applied"]["images"][0];
    assert_eq!(image["name"], "v1.so");
    let how = image["how"].as_str().unwrap();
    let path = v1.canonicalize().unwrap();
    assert!(
        how.starts_with(&format!("{} mapped at 0x", path.display())),
        "{how}"
    );
    assert!(how.ends_with("matched by file name and SHA-256"), "{how}");
    let names: Vec<&str> = image["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["log_code"]);
    let t = &v["timings"];
    let sum: u64 = ["verify_us", "plan_us", "write_us", "pause_us"]
        .iter()
        .map(|k| t[k].as_u64().unwrap())
        .sum();
    assert!(sum <= t["total_us"].as_u64().unwrap(), "{t}");
    assert_eq!(t["pause_us"], v["pause_us"]);
    live.settles_on("log_code(5)=-1 log_bytes(2)=4294967280");
    assert!(live.running());
    assert_eq!(live.pid(), pid);

    // v3 re-points log_code and adds log_bytes; text report.
    let out = ok(&apply(d, &live, "v3.hpk", &[]));
    assert!(
        out.contains("replaces live-2026-05 (sequence 1): 1 redirect(s) re-pointed"),
        "{out}"
    );
    assert!(out.contains("log_code: entry 0x"), "{out}");
    assert!(out.contains(", re-pointed)"), "{out}");
    assert!(
        out.contains(&format!("pause: 5 thread(s) of process {pid} stopped for ")),
        "{out}"
    );
    let time = out.lines().find(|l| l.starts_with("time: ")).unwrap();
    for part in ["verify ", ", plan ", ", write ", ", pause ", "; total "] {
        assert!(time.contains(part), "{time}");
    }
    // v2's code stays mapped: a thread may still be in it.
    assert!(out.contains("kept mapped: 0x"), "{out}");
    live.settles_on("log_code(5)=-1 log_bytes(2)=8589934576");

    // Reverting v2 while v3 is applied is refused; reverting v3 restores v1.
    let err = fails(&apply(d, &live, "v2.hpk", &["--revert"]), 1);
    assert_eq!(
        err,
        format!(
            "hotpatch: error: v2.hpk: process {pid}: image `v1.so` carries package live-2026-06, not live-2026-05"
        )
    );
    let out = ok(&apply(d, &live, "v3.hpk", &["--revert"]));
    assert!(
        out.contains(&format!(
            "process {pid}: image v1.so: reverted package live-2026-06 (sequence 2): 2 function(s) restored"
        )),
        "{out}"
    );
    live.settles_on("log_code(5)=0 log_bytes(2)=4294967280");
    // The code of v1.so in memory is byte for byte the file's again.
    let image_bytes = std::fs::read(&v1).unwrap();
    let text = text_segment(live.pid(), &path);
    assert_eq!(
        &image_bytes[text.offset as usize..][..text.bytes.len()],
        &text.bytes[..]
    );
    // The record keeps the highest sequence: v2 cannot come back.
    let err = fails(&apply(d, &live, "v2.hpk", &[]), 1);
    assert!(err.contains("rollback or repeat refused"), "{err}");
    assert!(live.running());
    assert_eq!(live.pid(), pid);
}

/// The executable mapping of `path` in process `pid`, read from its memory.
struct Text {
    offset: u64,
    bytes: Vec<u8>,
}

fn text_segment(pid: u32, path: &Path) -> Text {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains(" r-xp ") && l.ends_with(path.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not mapped executable:\n{maps}", path.display()));
    let mut f = line.split_whitespace();
    let (start, end) = f.next().unwrap().split_once('-').unwrap();
    let start = u64::from_str_radix(start, 16).unwrap();
    let end = u64::from_str_radix(end, 16).unwrap();
    let offset = u64::from_str_radix(f.nth(1).unwrap(), 16).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut bytes = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut bytes, start).unwrap();
    // The file may end inside the last page.
    let len = std::fs::metadata(path).unwrap().len();
    bytes.truncate(bytes.len().min((len - offset) as usize));
    Text { offset, bytes }
}

/// `libpark.so` v1, v2 and v3, built from tests/live/park.
fn park_libraries(dir: &Path) -> [PathBuf; 3] {
    ["v1", "v2", "v3"].map(|v| {
        let out = dir.join(v).join("libpark.so");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let o = Command::new(tool("gcc"))
            .args(["-g", "-O2", "-fPIC", "-shared", "-fvisibility=hidden"])
            .arg("-fcf-protection=none")
            .arg("-I")
            .arg(root().join("corpus/include"))
            .arg(root().join("tests/live/park").join(v).join("park.c"))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

/// The thread of `pid` named `name`.
fn thread_named(pid: u32, name: &str) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| e.file_name().to_str().unwrap().parse().unwrap())
        })
        .next()
        .unwrap_or_else(|| panic!("no thread named {name}"))
}

fn executable_mappings(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .map(str::to_string)
        .collect()
}

/// A thread busy in `spin`'s first 5 bytes blocks the package that patches
/// `spin`: the apply retries with backoff, then fails naming the thread and
/// the function, and the process runs on exactly as it was (the earlier
/// package still applied, the code bytes and mappings unchanged).
#[test]
fn a_thread_parked_in_the_overwritten_bytes_blocks_the_apply_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let [v1, v2, v3] = park_libraries(d);
    packages(
        d,
        &[("v2", &v1, &v2, "2026-05"), ("v3", &v1, &v3, "2026-06")],
    );
    let mut live = Live::start(&v1, &["--park", "spin", "value:1"]);
    let pid = live.pid();
    live.settles_on("value(1)=2");
    // v2 changes `value` only: the parked thread is no obstacle.
    ok(&apply(d, &live, "v2.hpk", &[]));
    live.settles_on("value(1)=3");
    let parked = thread_named(pid, "parked");
    let path = v1.canonicalize().unwrap();
    let code_before = text_segment(pid, &path).bytes;
    let maps_before = executable_mappings(pid);
    let state = d.join("state").join(
        std::fs::read_dir(d.join("state"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let record_before = std::fs::read(state.join("libpark.so.state")).unwrap();

    let started = Instant::now();
    let err = fails(&apply(d, &live, "v3.hpk", &[]), 1);
    let took = started.elapsed();
    let prefix = format!("hotpatch: error: v3.hpk: process {pid}: thread {parked} is at 0x");
    assert!(err.starts_with(&prefix), "{err}");
    assert!(
        err.ends_with(", inside the entry of `spin`, after 6 attempts"),
        "{err}"
    );
    // Bounded: 5 retries with a doubling backoff from 2 ms.
    assert!(took < Duration::from_secs(20), "{took:?}");
    // The process is as it was, and keeps working.
    assert!(live.running());
    assert_eq!(text_segment(pid, &path).bytes, code_before);
    assert_eq!(executable_mappings(pid), maps_before);
    assert_eq!(
        std::fs::read(state.join("libpark.so.state")).unwrap(),
        record_before
    );
    live.settles_on("value(1)=3");
    assert_eq!(thread_named(pid, "parked"), parked);
}

/// The process dies (SIGKILL) while an apply is under way: the apply fails
/// with one clear line, and the process's state record is gone.
#[test]
fn a_process_that_exits_during_apply_gives_a_clear_error_and_no_state() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let [v1, v2, v3] = park_libraries(d);
    packages(
        d,
        &[("v2", &v1, &v2, "2026-05"), ("v3", &v1, &v3, "2026-06")],
    );
    let mut live = Live::start(&v1, &["--park", "spin", "value:1"]);
    let pid = live.pid();
    ok(&apply(d, &live, "v2.hpk", &[]));
    live.settles_on("value(1)=3");
    let state_dir = d.join("state");
    assert_eq!(std::fs::read_dir(&state_dir).unwrap().count(), 1);
    let maps_before = executable_mappings(pid);

    // v3 is held up by the parked thread for its retries (tens of ms at
    // least, after the new code is mapped): kill the process as soon as
    // the new code appears in its address space.
    let mut apply_v3 = Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(["apply", "v3.hpk", "--pid", &pid.to_string()])
        .args(["--trust", "trust.toml", "--state-dir", "state"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // (It may merge with v2's code, mapped just beside it.)
        if executable_mappings(pid) != maps_before {
            break;
        }
        if apply_v3.try_wait().unwrap().is_some() {
            let out = apply_v3.wait_with_output().unwrap();
            panic!(
                "the apply ended before the process was killed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the new code never appeared");
        std::thread::sleep(Duration::from_micros(200));
    }
    live.child.kill().unwrap();
    // The apply must notice, and end (a hung apply is killed and fails).
    let deadline = Instant::now() + Duration::from_secs(60);
    while apply_v3.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = apply_v3.kill();
            let _ = apply_v3.wait();
            panic!("the apply hung after its process was killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    live.child.wait().unwrap();
    let out = apply_v3.wait_with_output().unwrap();
    let err = fails(&out, 1);
    assert!(
        err.starts_with(&format!(
            "hotpatch: error: v3.hpk: process {pid} exited during the apply; its state record was removed: "
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&state_dir).unwrap().count(),
        0,
        "no state is left"
    );
    // Applying to it now says it is gone.
    let err = fails(
        &hotpatch_in(
            d,
            &[
                "apply",
                "v3.hpk",
                "--pid",
                &pid.to_string(),
                "--trust",
                "trust.toml",
                "--state-dir",
                "state",
            ],
        ),
        1,
    );
    assert_eq!(
        err,
        format!("hotpatch: error: process {pid}: no such process")
    );
}
