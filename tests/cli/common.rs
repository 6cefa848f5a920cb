//! Shared helpers: running the CLI, finding corpus images and tools, and the
//! `expected.toml` model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run the `hotpatch` binary with `args`.
pub fn hotpatch<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("failed to start the hotpatch binary")
}

/// Run `hotpatch` and require success; return stdout.
pub fn hotpatch_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = hotpatch(args);
    assert!(
        out.status.success(),
        "hotpatch failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is not UTF-8")
}

/// An external tool, which must be installed (the README's test command
/// installs it). A missing tool fails the test: a check that cannot run must
/// not pass.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed; run the README's test command, which installs it");
}

/// Run an external tool and return its stdout, failing the test on error.
pub fn run_tool(name: &str, args: &[&str]) -> String {
    run_tool_in(&root(), name, args)
}

/// Run an external tool in `dir` and return its stdout, failing the test on
/// error.
pub fn run_tool_in(dir: &Path, name: &str, args: &[&str]) -> String {
    let out = Command::new(tool(name))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The four corpus targets.
pub const TARGETS: [&str; 4] = [
    "x86_64-windows",
    "aarch64-windows",
    "x86_64-linux",
    "aarch64-linux",
];

/// One built corpus image.
#[derive(Clone, Debug)]
pub struct CorpusImage {
    /// Scenario folder name.
    pub scenario: String,
    /// Target name.
    pub target: String,
    /// Version (`v1`, `v2`, ...).
    pub version: String,
    /// The image file.
    pub path: PathBuf,
    /// The PDB, for PE targets of a scenario shipped with PDBs (`None` for
    /// one shipped stripped).
    pub pdb: Option<PathBuf>,
    /// Whether its scenario is shipped stripped (see [`shipped_stripped`]).
    pub stripped: bool,
}

impl CorpusImage {
    /// Whether this is an ELF image.
    pub fn is_elf(&self) -> bool {
        self.target.ends_with("-linux")
    }
}

/// Scenario folders, sorted.
pub fn scenarios() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("corpus"))
        .expect("corpus/ is missing")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.toml").is_file())
        .collect();
    out.sort();
    assert!(
        out.len() >= 13,
        "expected at least 13 corpus scenarios, found {}",
        out.len()
    );
    out
}

/// Whether a scenario is shipped stripped, as distributions ship libraries:
/// its folder holds the `shipped-stripped` marker that `corpus/build.sh`
/// reads. Its ELF images have no `.symtab` or DWARF, and its PE images ship
/// without their PDB (and are read without one).
pub fn shipped_stripped(scenario: &Path) -> bool {
    scenario.join("shipped-stripped").is_file()
}

/// The image of `version` of a scenario for `target`, and its PDB (PE
/// targets of a scenario not shipped stripped).
pub fn image_files(scenario: &Path, target: &str, version: &str) -> (PathBuf, Option<PathBuf>) {
    let bin = scenario.join("bin").join(target);
    if !target.ends_with("-windows") {
        (bin.join(format!("{version}.so")), None)
    } else if shipped_stripped(scenario) {
        (bin.join(format!("{version}.dll")), None)
    } else {
        (
            bin.join(format!("{version}.dll")),
            Some(bin.join(format!("{version}.pdb"))),
        )
    }
}

/// Every built image of the corpus, for every target. Fails if a scenario
/// lacks a target or a version its sources have, if a PE image lacks its
/// PDB, or if a scenario shipped stripped ships one.
pub fn corpus_images() -> Vec<CorpusImage> {
    let mut images = Vec::new();
    for dir in scenarios() {
        let scenario = dir.file_name().unwrap().to_string_lossy().into_owned();
        let versions = versions(&dir);
        let stripped = shipped_stripped(&dir);
        for target in TARGETS {
            for version in &versions {
                let (path, pdb) = image_files(&dir, target, version);
                assert!(path.is_file(), "missing corpus image {}", path.display());
                if let Some(p) = &pdb {
                    assert!(p.is_file(), "missing corpus PDB {}", p.display());
                }
                if stripped {
                    let beside = path.with_extension("pdb");
                    assert!(
                        !beside.exists(),
                        "{}: a scenario shipped stripped ships no PDB",
                        beside.display()
                    );
                }
                images.push(CorpusImage {
                    scenario: scenario.clone(),
                    target: target.to_string(),
                    version: version.clone(),
                    path,
                    pdb,
                    stripped,
                });
            }
        }
    }
    images
}

/// The versions of a scenario, from its `src/` folder, sorted (`v1` first).
pub fn versions(scenario: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(scenario.join("src"))
        .unwrap_or_else(|e| panic!("{}: {e}", scenario.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort_by_key(|s| s.trim_start_matches('v').parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(
        v.first().map(String::as_str),
        Some("v1"),
        "{}",
        scenario.display()
    );
    v
}

/// `corpus/<scenario>/expected.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// One line.
    pub description: String,
    /// Exported entry points.
    pub exports: Vec<String>,
    /// Updates, each compared with v1.
    #[serde(default)]
    pub update: Vec<Update>,
    /// Input/output vectors, run in order on one instance per version.
    #[serde(default)]
    pub vector: Vec<Vector>,
}

/// The expected diff of one update against v1.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// `v2`, `v3`, ...
    pub version: String,
    /// The fields that apply to every target unless overridden.
    #[serde(flatten)]
    pub sets: Sets,
    /// Per-target overrides.
    #[serde(default)]
    pub targets: BTreeMap<String, SetsOverride>,
}

/// Expected sets and verdict.
#[allow(dead_code)] // Read by the diff tests.
#[derive(Clone, Debug, Deserialize)]
pub struct Sets {
    /// Changed functions.
    pub changed: Vec<String>,
    /// Added functions.
    pub added: Vec<String>,
    /// Removed functions.
    pub removed: Vec<String>,
    /// Changed data objects.
    #[serde(default)]
    pub data_changed: Vec<String>,
    /// Added data objects.
    #[serde(default)]
    pub data_added: Vec<String>,
    /// Verdict.
    pub hotpatchable: bool,
    /// Objects that block the update.
    #[serde(default)]
    pub blockers: Vec<String>,
    /// The blocker kind of listed objects (`type:conn` =
    /// `type-layout-changed`), for the objects the key names one for.
    #[serde(default)]
    pub blocker_kinds: BTreeMap<String, String>,
    /// Struct, union and class types whose layout changed, whether they
    /// block or not.
    #[serde(default)]
    pub types_changed: Vec<String>,
    /// Reviewed overrides the release engineer records for this update.
    #[serde(default)]
    pub allow: Vec<Allow>,
    /// Blockers that an `allow` entry waives: reported, not blocking.
    #[serde(default)]
    pub overridden: Vec<String>,
    /// The changed functions whose only change is `__LINE__` immediates
    /// moved with their source (a subset of `changed`).
    #[serde(default)]
    pub lines_only: Vec<String>,
}

/// A reviewed override of one blocker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// The blocked object, as in `blockers` (`type:NAME` for a type).
    pub object: String,
    /// Why it is safe, in the engineer's words.
    pub reason: String,
}

/// A per-target override of [`Sets`].
#[allow(dead_code)] // Read by the diff tests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetsOverride {
    /// Changed functions.
    pub changed: Option<Vec<String>>,
    /// Added functions.
    pub added: Option<Vec<String>>,
    /// Removed functions.
    pub removed: Option<Vec<String>>,
    /// Changed data objects.
    pub data_changed: Option<Vec<String>>,
    /// Added data objects.
    pub data_added: Option<Vec<String>>,
    /// Verdict.
    pub hotpatchable: Option<bool>,
    /// Blockers.
    pub blockers: Option<Vec<String>>,
    /// Blocker kinds.
    pub blocker_kinds: Option<BTreeMap<String, String>>,
    /// Changed types.
    pub types_changed: Option<Vec<String>>,
    /// Overridden blockers.
    pub overridden: Option<Vec<String>>,
    /// Changed functions in line numbers only.
    pub lines_only: Option<Vec<String>>,
}

/// One call of an exported entry point and its result in each version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// The exported function.
    pub call: String,
    /// Its arguments (0 to 4).
    pub args: Vec<i64>,
    /// The result per version.
    pub expect: BTreeMap<String, i64>,
}

/// Read a scenario's `expected.toml`.
pub fn expected(scenario: &Path) -> Expected {
    let path = scenario.join("expected.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Require success; return stdout (stdout and stderr shown on failure).
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "hotpatch failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A failure: exit code `code`, exactly one line on stderr; returns it.
pub fn fails(o: &Output, code: i32) -> String {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    err.trim_end().to_string()
}
