//! Compiler and linker invocations for the four targets, and a small
//! parallel job runner (plain `std::process` children driven by threads).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    #[value(name = "x86_64-linux")]
    X86_64Linux,
    #[value(name = "aarch64-linux")]
    Aarch64Linux,
    #[value(name = "x86_64-windows")]
    X86_64Windows,
    #[value(name = "aarch64-windows")]
    Aarch64Windows,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::X86_64Linux => "x86_64-linux",
            Target::Aarch64Linux => "aarch64-linux",
            Target::X86_64Windows => "x86_64-windows",
            Target::Aarch64Windows => "aarch64-windows",
        }
    }

    pub fn is_pe(self) -> bool {
        matches!(self, Target::X86_64Windows | Target::Aarch64Windows)
    }

    pub fn compiler(self) -> &'static str {
        match self {
            Target::X86_64Linux => "gcc",
            Target::Aarch64Linux => "aarch64-linux-gnu-gcc",
            Target::X86_64Windows | Target::Aarch64Windows => "clang-19",
        }
    }

    pub fn linker(self) -> &'static str {
        if self.is_pe() {
            "lld-link-19"
        } else {
            self.compiler()
        }
    }

    pub fn object_ext(self) -> &'static str {
        if self.is_pe() {
            "obj"
        } else {
            "o"
        }
    }

    /// File name of the linked image of version `v` ("v1" or "v2").
    pub fn image_name(self, v: &str) -> String {
        if self.is_pe() {
            format!("{v}.dll")
        } else {
            format!("{v}.so")
        }
    }

    /// Every file name [`Self::link_command`] may produce for version `v`, on any target.
    pub fn all_outputs(v: &str) -> [String; 3] {
        [format!("{v}.so"), format!("{v}.dll"), format!("{v}.pdb")]
    }

    /// Compiler flags, without the input and output names. Only relative
    /// names reach the objects, so identical sources give identical objects
    /// wherever they are compiled.
    fn cflags(self, object_name: &str) -> Vec<String> {
        let mut f: Vec<&str> = vec![
            "-O2",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
        ];
        match self {
            Target::X86_64Linux | Target::Aarch64Linux => {
                // -ffunction-sections: the assembler relaxes branches (rel8
                // or rel32 on x86) over a whole section at once, and its
                // result for one function can depend on the code before it
                // in the section. One section per function makes the
                // encoding of an unchanged function independent of the
                // changed ones, so changed.txt stays exact.
                // -g: DWARF, as the corpus builds have, so that the diff
                // reads debug information of a realistic size (gcc does not
                // generate different code with it).
                f.extend([
                    "-g",
                    "-fPIC",
                    "-fvisibility=hidden",
                    "-fno-tree-loop-distribute-patterns",
                    "-fasynchronous-unwind-tables",
                    "-ffunction-sections",
                ]);
                f.push(if self == Target::X86_64Linux {
                    "-fcf-protection=none"
                } else {
                    "-mbranch-protection=none"
                });
            }
            Target::X86_64Windows | Target::Aarch64Windows => {
                f.push(if self == Target::X86_64Windows {
                    "--target=x86_64-pc-windows-msvc"
                } else {
                    "--target=aarch64-pc-windows-msvc"
                });
                if self == Target::X86_64Windows {
                    f.push("-fms-hotpatch");
                }
                // One COMDAT section per function (like MSVC /Gy), so that
                // /functionpadmin pads every function; no __chkstk calls; no
                // directory names or command lines in the CodeView records.
                f.extend([
                    "-g",
                    "-gcodeview",
                    "-gno-codeview-command-line",
                    "-ffile-compilation-dir=.",
                    "-ffunction-sections",
                    "-fdata-sections",
                    "-mno-stack-arg-probe",
                ]);
            }
        }
        let mut f: Vec<String> = f.into_iter().map(String::from).collect();
        if self.is_pe() {
            // S_OBJNAME would otherwise record the -o path.
            f.push("-Xclang".into());
            f.push(format!("-object-file-name={object_name}"));
        }
        f
    }

    /// The command that compiles `src_dir/file` into `obj_dir`.
    pub fn compile_command(self, src_dir: &Path, file: &str, obj_dir: &Path) -> Command {
        let stem = file.strip_suffix(".c").unwrap_or(file);
        let obj_name = format!("{stem}.{}", self.object_ext());
        let mut c = Command::new(self.compiler());
        c.current_dir(src_dir)
            .args(self.cflags(&obj_name))
            .arg("-c")
            .arg(file)
            .arg("-o")
            .arg(obj_dir.join(&obj_name));
        if !self.is_pe() {
            // The compiler records its working directory (the physical
            // path) in the DWARF: map it to ".", so that an object does not
            // depend on where, or for which version, it was compiled.
            if let Ok(dir) = std::fs::canonicalize(src_dir) {
                c.arg(format!("-ffile-prefix-map={}=.", dir.display()));
            }
        }
        c
    }

    /// The command that links `obj/<v>/<object>` for each of `objects` into
    /// `<image_name(v)>`, run in `out_dir` on relative names only: the PE
    /// linker records its command line and PDB name in the PDB.
    pub fn link_command(self, out_dir: &Path, objects: &[String], v: &str) -> Command {
        let mut c = Command::new(self.linker());
        c.current_dir(out_dir);
        if self.is_pe() {
            c.args([
                "/dll",
                "/noentry",
                "/nodefaultlib",
                "/debug",
                "/Brepro",
                "/incremental:no",
                // Keep every function (nothing is reachable from an entry
                // point) and never fold identical ones.
                "/opt:noref",
                "/opt:noicf",
                "/pdbsourcepath:.",
            ]);
            if self == Target::X86_64Windows {
                c.args(["/machine:x64", "/functionpadmin:6"]);
            } else {
                c.arg("/machine:arm64");
            }
            c.arg(format!("/pdb:{v}.pdb"))
                .arg(format!("/pdbaltpath:{v}.pdb"))
                .arg(format!("/out:{}", self.image_name(v)));
        } else {
            c.args(["-shared", "-nostdlib", "-Wl,--build-id=sha1", "-o"])
                .arg(self.image_name(v));
        }
        c.args(objects.iter().map(|o| format!("obj/{v}/{o}")));
        c
    }
}

/// A command line as a shell would show it, for error messages.
pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `c`; fails with a one-line message naming the command if it cannot
/// be started or exits unsuccessfully. Returns its stderr (warnings).
pub fn run(mut c: Command, why: &str) -> Result<String> {
    let out = match c.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{}` not found in PATH (needed {why})",
            c.get_program().to_string_lossy()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run `{}`", show(&c))),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .or_else(|| stderr.lines().next())
            .unwrap_or("")
            .trim();
        bail!(
            "`{}` failed ({}) in {}: {first}",
            show(&c),
            out.status,
            c.get_current_dir().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(stderr)
}

/// Checks that `tool` can be started at all, before any long work.
pub fn probe(tool: &str, why: &str) -> Result<()> {
    let mut c = Command::new(tool);
    c.arg("--version");
    run(c, why).map(|_| ())
}

/// Runs `jobs` at most `parallel` at a time; stops at the first failure.
/// Returns the concatenated stderr output of all commands (warnings).
pub fn run_all(jobs: Vec<(Command, String)>, parallel: usize) -> Result<String> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    let warnings: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let jobs: Vec<Mutex<Option<(Command, String)>>> =
        jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = jobs.get(i) else { return };
                let Some((cmd, why)) = slot.lock().unwrap_or_else(PoisonError::into_inner).take()
                else {
                    return;
                };
                match run(cmd, &why) {
                    Ok(w) if !w.is_empty() => warnings
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((i, w)),
                    Ok(_) => {}
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        errors
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .next()
    {
        return Err(e);
    }
    let mut w = warnings
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    w.sort_by_key(|(i, _)| *i);
    Ok(w.into_iter().map(|(_, s)| s).collect())
}
