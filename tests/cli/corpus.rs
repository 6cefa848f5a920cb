//! The corpus itself: every `expected.toml` is complete and consistent, and
//! every image exports exactly the entry points it declares.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::common::{corpus_images, expected, hotpatch_ok, scenarios, versions, TARGETS};

#[test]
fn expected_files_are_consistent() {
    for dir in scenarios() {
        let exp = expected(&dir);
        let versions = versions(&dir);
        let name = dir.display();
        assert!(!exp.description.trim().is_empty(), "{name}: no description");
        assert!(!exp.exports.is_empty(), "{name}: no exports");
        let updates: Vec<&str> = exp.update.iter().map(|u| u.version.as_str()).collect();
        assert_eq!(
            updates,
            versions[1..].to_vec(),
            "{name}: one [[update]] per version after v1"
        );
        for u in &exp.update {
            for t in u.targets.keys() {
                assert!(TARGETS.contains(&t.as_str()), "{name}: unknown target {t}");
            }
            for (t, o) in std::iter::once(("all", None))
                .chain(u.targets.iter().map(|(t, o)| (t.as_str(), Some(o))))
            {
                let changed = o
                    .and_then(|o| o.changed.as_ref())
                    .unwrap_or(&u.sets.changed);
                let lines = o
                    .and_then(|o| o.lines_only.as_ref())
                    .unwrap_or(&u.sets.lines_only);
                for f in lines {
                    assert!(
                        changed.contains(f),
                        "{name} {} {t}: lines_only {f} is not in changed",
                        u.version
                    );
                }
            }
            let blocked = !u.sets.hotpatchable;
            assert_eq!(
                blocked,
                !u.sets.blockers.is_empty(),
                "{name} {}: verdict vs blockers",
                u.version
            );
            for (t, o) in &u.targets {
                let hp = o.hotpatchable.unwrap_or(u.sets.hotpatchable);
                let blockers = o.blockers.as_ref().unwrap_or(&u.sets.blockers);
                assert_eq!(
                    !hp,
                    !blockers.is_empty(),
                    "{name} {} {t}: verdict vs blockers",
                    u.version
                );
            }
        }
        for (i, v) in exp.vector.iter().enumerate() {
            assert!(v.args.len() <= 4, "{name}: vector {i} has over 4 arguments");
            assert!(
                exp.exports.contains(&v.call),
                "{name}: vector {i} calls unexported {}",
                v.call
            );
            let have: Vec<&String> = v.expect.keys().collect();
            let mut want: Vec<&String> = versions.iter().collect();
            want.sort();
            assert_eq!(
                have, want,
                "{name}: vector {i} needs a result for every version"
            );
        }
    }
}

#[derive(Deserialize)]
struct SymbolsJson {
    functions: Vec<FunctionJson>,
}

#[derive(Deserialize)]
struct FunctionJson {
    name: String,
    visibility: String,
}

#[test]
fn images_export_exactly_the_declared_entry_points() {
    // Per scenario and target: each version exports a subset of the declared
    // entry points, and all versions together export exactly them.
    let mut union: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for img in corpus_images() {
        let exp = expected(&crate::common::root().join("corpus").join(&img.scenario));
        let mut args = vec![
            "symbols".to_string(),
            "--json".into(),
            img.path.display().to_string(),
        ];
        if let Some(pdb) = &img.pdb {
            args.extend(["--pdb".to_string(), pdb.display().to_string()]);
        }
        let parsed: SymbolsJson = serde_json::from_str(&hotpatch_ok(&args)).unwrap();
        let exported: BTreeSet<String> = parsed
            .functions
            .into_iter()
            .filter(|f| f.visibility == "exported")
            .map(|f| f.name)
            .collect();
        let declared: BTreeSet<String> = exp.exports.iter().cloned().collect();
        assert!(
            exported.is_subset(&declared),
            "{}: exports {exported:?}, expected.toml declares {declared:?}",
            img.path.display()
        );
        union
            .entry((img.scenario.clone(), img.target.clone()))
            .or_default()
            .extend(exported);
    }
    for ((scenario, target), exported) in union {
        let exp = expected(&crate::common::root().join("corpus").join(&scenario));
        let declared: BTreeSet<String> = exp.exports.iter().cloned().collect();
        assert_eq!(exported, declared, "{scenario} {target}");
    }
}
