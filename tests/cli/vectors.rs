//! The `expected.toml` vectors hold on the real x86_64-linux corpus images.
//!
//! Each version's shared object is loaded into this test process with the
//! system's dynamic loader, and its exported entry points are called with the
//! vectors, in file order, on that one instance. All four targets run them in
//! the emulated VM too: `replay.rs` (every hotpatchable update, through
//! `hotpatch replay`) and `emulator/tests/corpus.rs` (every version).

use crate::common::{expected, scenarios, versions};

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn vectors_hold_on_x86_64_linux_images() {
    use libloading::{Library, Symbol};

    let mut calls = 0usize;
    for dir in scenarios() {
        let exp = expected(&dir);
        assert!(!exp.vector.is_empty(), "{}: no vectors", dir.display());
        let versions = versions(&dir);
        for v in &versions {
            let path = dir.join("bin/x86_64-linux").join(format!("{v}.so"));
            // SAFETY: the corpus images are freestanding (no imports, no
            // initialisers) and their entry points all have the C signature
            // `long long f(long long, ...)` with as many arguments as the vector
            // gives, which `expected.toml` documents for every scenario.
            let lib = unsafe { Library::new(&path) }
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (i, vec) in exp.vector.iter().enumerate() {
                let want = *vec.expect.get(v).unwrap_or_else(|| {
                    panic!("{}: vector {i} has no result for {v}", dir.display())
                });
                let name = vec.call.as_bytes();
                let a = &vec.args;
                // SAFETY: see above; the symbol is looked up by its exported name
                // and called with its declared arity.
                let got = unsafe {
                    match a.len() {
                        0 => lib
                            .get::<extern "C" fn() -> i64>(name)
                            .map(|f: Symbol<_>| f()),
                        1 => lib
                            .get::<extern "C" fn(i64) -> i64>(name)
                            .map(|f: Symbol<_>| f(a[0])),
                        2 => lib
                            .get::<extern "C" fn(i64, i64) -> i64>(name)
                            .map(|f: Symbol<_>| f(a[0], a[1])),
                        3 => lib
                            .get::<extern "C" fn(i64, i64, i64) -> i64>(name)
                            .map(|f: Symbol<_>| f(a[0], a[1], a[2])),
                        4 => lib
                            .get::<extern "C" fn(i64, i64, i64, i64) -> i64>(name)
                            .map(|f: Symbol<_>| f(a[0], a[1], a[2], a[3])),
                        n => panic!("{}: vector {i} has {n} arguments", dir.display()),
                    }
                }
                .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), vec.call));
                assert_eq!(
                    got,
                    want,
                    "{} vector {i}: {}({:?})",
                    path.display(),
                    vec.call,
                    vec.args
                );
                calls += 1;
            }
        }
        // The fix must be observable: some vector distinguishes v1 from each
        // update, unless the scenario is the unchanged rebuild.
        for u in &exp.update {
            let differs = exp
                .vector
                .iter()
                .any(|vec| vec.expect.get("v1") != vec.expect.get(&u.version));
            let no_change =
                u.sets.changed.is_empty() && u.sets.added.is_empty() && u.sets.removed.is_empty();
            assert!(
                differs || no_change,
                "{}: no vector tells v1 from {}",
                dir.display(),
                u.version
            );
        }
    }
    assert!(calls > 50, "only {calls} calls");
}
