//! Bad input: one line on stderr naming the file and the problem, exit code 1,
//! nothing on stdout, never a panic.

use std::path::{Path, PathBuf};

use crate::common::{corpus_images, hotpatch, CorpusImage};

/// Run `hotpatch symbols` and check the failure shape; return stderr.
fn fails(args: &[&str], names: &Path, words: &[&str]) -> String {
    let out = hotpatch(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "args {args:?}: stderr {stderr}");
    assert!(
        out.stdout.is_empty(),
        "partial output on stdout for {args:?}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.contains(&names.display().to_string()),
        "`{stderr}` does not name {}",
        names.display()
    );
    for w in words {
        assert!(stderr.contains(w), "`{stderr}` does not say `{w}`");
    }
    stderr
}

fn first(target: &str) -> CorpusImage {
    corpus_images()
        .into_iter()
        .find(|i| i.target == target && i.version == "v1")
        .unwrap()
}

fn copy_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn truncated_pe_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = first("x86_64-windows");
    let bytes = std::fs::read(&img.path).unwrap();
    for len in [2usize, 64, 300, 1024, bytes.len() / 2] {
        let p = copy_with(dir.path(), &format!("t{len}.dll"), &bytes[..len]);
        let pdb = s(img.pdb.as_ref().unwrap());
        fails(&["symbols", &s(&p), "--pdb", &pdb], &p, &["malformed"]);
    }
}

#[test]
fn truncated_elf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["x86_64-linux", "aarch64-linux"] {
        let bytes = std::fs::read(first(target).path).unwrap();
        for len in [4usize, 20, 64, 200, bytes.len() / 2, bytes.len() - 1] {
            let p = copy_with(dir.path(), &format!("{target}-{len}.so"), &bytes[..len]);
            fails(&["symbols", &s(&p)], &p, &["malformed"]);
        }
    }
}

#[test]
fn non_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_with(dir.path(), "notes.txt", b"this is not an image\n");
    fails(&["symbols", &s(&p)], &p, &["not a PE or ELF image"]);
    let p = copy_with(dir.path(), "empty.so", b"");
    fails(&["symbols", &s(&p)], &p, &["empty"]);
}

#[test]
fn missing_image_is_refused() {
    let p = Path::new("corpus/no-such-scenario/v1.so");
    fails(&["symbols", &s(p)], p, &["cannot read"]);
}

#[test]
fn pdb_from_another_build_is_refused() {
    for target in ["x86_64-windows", "aarch64-windows"] {
        let v1 = first(target);
        let other = corpus_images()
            .into_iter()
            .find(|i| i.target == target && i.scenario == v1.scenario && i.version == "v2")
            .unwrap();
        let pdb = other.pdb.unwrap();
        let err = fails(
            &["symbols", &s(&v1.path), "--pdb", &s(&pdb)],
            &pdb,
            &["does not match", "GUID", "age"],
        );
        assert!(err.contains(&s(&v1.path)), "{err}");
    }
}

#[test]
fn missing_pdb_is_refused() {
    let img = first("x86_64-windows");
    let p = Path::new("no/such/file.pdb");
    fails(
        &["symbols", &s(&img.path), "--pdb", &s(p)],
        p,
        &["cannot read"],
    );
}

#[test]
fn pe_without_pdb_beside_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = first("x86_64-windows");
    let p = copy_with(dir.path(), "lonely.dll", &std::fs::read(&img.path).unwrap());
    fails(&["symbols", &s(&p)], &p, &["no PDB found", "--pdb"]);
}

#[test]
fn damaged_pdb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = first("x86_64-windows");
    let pdb_bytes = std::fs::read(img.pdb.as_ref().unwrap()).unwrap();
    let truncated = copy_with(dir.path(), "trunc.pdb", &pdb_bytes[..pdb_bytes.len() / 3]);
    fails(
        &["symbols", &s(&img.path), "--pdb", &s(&truncated)],
        &truncated,
        &["PDB"],
    );
    let garbage = copy_with(dir.path(), "garbage.pdb", b"Microsoft C/C++ but not really");
    fails(
        &["symbols", &s(&img.path), "--pdb", &s(&garbage)],
        &garbage,
        &["PDB"],
    );
}

#[test]
fn unsupported_pe_machine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = first("x86_64-windows");
    let mut bytes = std::fs::read(&img.path).unwrap();
    let e_lfanew = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    // IMAGE_FILE_HEADER.Machine = IMAGE_FILE_MACHINE_I386.
    bytes[e_lfanew + 4..e_lfanew + 6].copy_from_slice(&0x14cu16.to_le_bytes());
    let p = copy_with(dir.path(), "i386.dll", &bytes);
    let pdb = s(img.pdb.as_ref().unwrap());
    fails(
        &["symbols", &s(&p), "--pdb", &pdb],
        &p,
        &["unsupported machine", "0x14c"],
    );
}

#[test]
fn unsupported_elf_machine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(first("x86_64-linux").path).unwrap();
    // e_machine = EM_386.
    bytes[18..20].copy_from_slice(&3u16.to_le_bytes());
    let p = copy_with(dir.path(), "i386.so", &bytes);
    fails(&["symbols", &s(&p)], &p, &["unsupported machine", "EM_386"]);
    // EI_CLASS = ELFCLASS32.
    let mut bytes = std::fs::read(first("aarch64-linux").path).unwrap();
    bytes[4] = 1;
    let p = copy_with(dir.path(), "elf32.so", &bytes);
    fails(&["symbols", &s(&p)], &p, &["unsupported machine", "32-bit"]);
}

#[test]
fn diff_of_different_architectures_is_refused() {
    let a = first("x86_64-linux").path;
    let b = first("aarch64-linux").path;
    let err = fails(
        &["diff", "--baseline", &s(&a), "--updated", &s(&b)],
        &a,
        &["x86_64", "aarch64"],
    );
    assert!(err.contains(&s(&b)), "{err}");
}

#[test]
fn diff_with_bad_updated_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = first("x86_64-linux").path;
    let bytes = std::fs::read(&a).unwrap();
    let p = copy_with(dir.path(), "half.so", &bytes[..bytes.len() / 2]);
    fails(
        &["diff", "--baseline", &s(&a), "--updated", &s(&p)],
        &p,
        &["malformed"],
    );
    let pdb = Path::new("no/such/v2.pdb");
    let pe = first("x86_64-windows");
    fails(
        &[
            "diff",
            "--baseline",
            &s(&pe.path),
            "--updated",
            &s(&pe.path),
            "--updated-pdb",
            &s(pdb),
        ],
        pdb,
        &["cannot read"],
    );
}
