//! `hotpatch apply PKG --pid PID`: a package applied to (or reverted from)
//! a running Linux process. A thin layer over `hotpatch_applier`'s engine
//! and its `Process` target.

use std::path::PathBuf;

use clap::Args;

/// `hotpatch apply`.
#[derive(Args)]
pub struct ApplyArgs {
    /// The signed package.
    package: PathBuf,
    /// The process to patch.
    #[arg(long, value_name = "PID")]
    pid: u32,
    /// The trust policy the package must satisfy (TOML).
    #[arg(long, value_name = "TRUST.toml")]
    trust: PathBuf,
    /// Undo what this package changed in the process, from the state record.
    #[arg(long)]
    revert: bool,
    /// Where state records are kept (for rollback, re-pointing and revert).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/hotpatch")]
    state_dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub fn apply(_args: ApplyArgs) -> anyhow::Result<()> {
    Err(anyhow::anyhow!(
        "apply --pid: live processes are patched on Linux x86-64 and AArch64 only"
    ))
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub use live::apply;

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod live {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use anyhow::{anyhow, Result};
    use hotpatch_applier::{Applied, Engine, Process, Reverted};
    use hotpatch_formats::package::Timestamp;
    use hotpatch_signer::TrustPolicy;
    use serde::Serialize;

    use super::ApplyArgs;
    use crate::packaging::read_package;

    /// Phase times, in microseconds: `verify` is the package's
    /// verification (signatures, trust, digests) and the target's
    /// (identity: the SHA-256 of the mapped file; state records; the
    /// SHA-256 of every range to overwrite), split in the two fields after
    /// it; `plan` places (memory mapped and protected in the process) and
    /// links; `write` is the apply phase without the pause, so the four
    /// add up to `total`.
    #[derive(Serialize)]
    struct Split {
        verify_us: u64,
        verify_package_us: u64,
        verify_target_us: u64,
        plan_us: u64,
        write_us: u64,
        pause_us: u64,
        total_us: u64,
    }

    #[derive(Serialize)]
    struct Report<'a> {
        pid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        applied: Option<&'a Applied>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        reverted: &'a [Reverted],
        /// Threads stopped in the last stop, and for how long: in all, then
        /// split into stopping them (until every one is held) and holding
        /// them (the writes), and how many stops it took (a thread in the
        /// way makes the engine resume and stop again).
        threads_stopped: usize,
        pause_us: u64,
        pause_stopping_us: u64,
        pause_held_us: u64,
        pause_resuming_us: u64,
        stops: u32,
        /// Whether the tool ran at real-time priority through the stop.
        realtime: bool,
        /// System calls injected into the process (mmap, mprotect,
        /// munmap), how many times a thread was stopped for them outside
        /// the pause, and how long it was held in all.
        syscalls: u32,
        syscall_stops: u32,
        syscall_held_us: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        timings: Option<Split>,
        /// Memory of earlier applies left mapped (start, size).
        retired: Vec<(u64, u64)>,
    }

    fn us(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }

    fn ms(us: u64) -> String {
        format!("{}.{:03} ms", us / 1000, us % 1000)
    }

    /// Apply or revert the package in the process.
    pub fn apply(args: ApplyArgs) -> Result<()> {
        let name = args.package.display().to_string();
        let policy = TrustPolicy::load(&args.trust)?;
        let bytes = read_package(&args.package)?;
        let mut process = Process::attach(args.pid, &args.state_dir)?;
        let mut engine = Engine::new();
        let t0 = Instant::now();
        let outcome = if args.revert {
            revert(&mut engine, &mut process, &bytes, &policy).map(|r| (None, r))
        } else {
            engine
                .apply(&mut process, &bytes, &policy, Timestamp::now())
                .map(|a| (Some(a), Vec::new()))
                .map_err(|e| anyhow!(e))
        };
        let total = t0.elapsed();
        let (applied, reverted) = match outcome {
            Ok(x) => x,
            Err(e) => {
                let pid = args.pid;
                if !process.alive() {
                    let removed = process.discard_state_if_gone();
                    drop(process);
                    return Err(anyhow!(
                        "{name}: process {pid} exited during the {}{}: {e}",
                        if args.revert { "revert" } else { "apply" },
                        if removed {
                            "; its state record was removed"
                        } else {
                            ""
                        }
                    ));
                }
                return Err(anyhow!("{name}: {e}"));
            }
        };
        let p = process.last_pause().unwrap_or_default();
        let sys = process.syscalls();
        let pause = p.total;
        let timings = applied.as_ref().map(|a| {
            let t = a.timings;
            Split {
                verify_us: us(t.verify.saturating_add(t.check)),
                verify_package_us: us(t.verify),
                verify_target_us: us(t.check),
                plan_us: us(t.plan),
                write_us: us(t.apply.saturating_sub(pause)),
                pause_us: us(pause),
                total_us: us(total),
            }
        });
        let report = Report {
            pid: process.pid(),
            applied: applied.as_ref(),
            reverted: &reverted,
            threads_stopped: p.threads,
            pause_us: us(pause),
            pause_stopping_us: us(p.stopping),
            pause_held_us: us(p.held),
            pause_resuming_us: us(p.resuming),
            realtime: p.realtime,
            syscalls: sys.calls,
            syscall_stops: sys.stops,
            syscall_held_us: us(sys.held),
            stops: p.stops,
            timings,
            retired: process.retired().to_vec(),
        };
        drop(process);
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
            return Ok(());
        }
        if let Some(a) = report.applied {
            writeln!(out, "{a}")?;
        }
        for r in report.reverted {
            write!(out, "{r}")?;
        }
        writeln!(
            out,
            "pause: {} thread(s) of process {} stopped for {} (stopping them {}, held {}, resuming {}; {} stop(s){})",
            report.threads_stopped,
            report.pid,
            ms(report.pause_us),
            ms(report.pause_stopping_us),
            ms(report.pause_held_us),
            ms(report.pause_resuming_us),
            report.stops,
            if report.realtime {
                ", at real-time priority"
            } else {
                ""
            }
        )?;
        if report.syscalls > 0 {
            writeln!(
                out,
                "system calls: {} injected, on {} thread stop(s) outside the pause, held {} in all",
                report.syscalls,
                report.syscall_stops,
                ms(report.syscall_held_us)
            )?;
        }
        if let Some(t) = &report.timings {
            writeln!(
                out,
                "time: verify {} (package {}, target {}), plan {}, write {}, pause {}; total {}",
                ms(t.verify_us),
                ms(t.verify_package_us),
                ms(t.verify_target_us),
                ms(t.plan_us),
                ms(t.write_us),
                ms(t.pause_us),
                ms(t.total_us)
            )?;
        }
        for (a, s) in &report.retired {
            writeln!(
                out,
                "kept mapped: {a:#x}+{s:#x} of an earlier apply (a thread may still run in it)"
            )?;
        }
        Ok(())
    }

    /// Revert what `package` changed: each of its images must carry it.
    fn revert(
        engine: &mut Engine,
        process: &mut Process,
        package: &[u8],
        policy: &TrustPolicy,
    ) -> Result<Vec<Reverted>> {
        let verified = hotpatch_signer::verify(package, policy, Timestamp::now())
            .map_err(|e| anyhow!("verification failed: {e}"))?;
        let manifest = verified.manifest();
        let mut out = Vec::new();
        for t in &manifest.targets {
            let record = engine.state(process, &t.name)?;
            let carried = record
                .as_ref()
                .and_then(|r| r.applied.as_ref())
                .map(|a| a.package_id.clone());
            match carried {
                Some(id) if id == manifest.package_id => {}
                Some(id) => {
                    return Err(anyhow!(
                        "process {}: image `{}` carries package {id}, not {}",
                        process.pid(),
                        t.name,
                        manifest.package_id
                    ))
                }
                None => {
                    return Err(anyhow!(
                        "process {}: image `{}`: package {} is not applied",
                        process.pid(),
                        t.name,
                        manifest.package_id
                    ))
                }
            }
            out.push(engine.revert(process, &t.name)?);
        }
        Ok(out)
    }
}
