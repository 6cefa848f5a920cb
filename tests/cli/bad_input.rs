//! Bad input: one line on stderr naming the file and the problem, exit code 1,
//! nothing on stdout, never a panic.

use std::path::{Path, PathBuf};

use crate::common::{corpus_images, hotpatch, CorpusImage};
use crate::{test_elf, test_msf};

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

/// A PE image without a PDB beside it, and none given, is read as a
/// stripped image (functions from `.pdata` and the exports); one with
/// nothing to read functions from says so, naming the PDB it looked for.
#[test]
fn pe_without_pdb_beside_it_is_read_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let img = first("x86_64-windows");
    let p = copy_with(dir.path(), "lonely.dll", &std::fs::read(&img.path).unwrap());
    let out = hotpatch(["symbols", &s(&p)]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "{}: PE x86_64, 4 functions (no PDB: boundaries from .pdata and the exports)\n",
            s(&p)
        )),
        "{text}"
    );
    // The same image with its exception and export directories emptied
    // (data directories 0 and 3 of the PE32+ optional header).
    let mut bytes = std::fs::read(&img.path).unwrap();
    let pe = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    let dirs = pe + 4 + 20 + 112;
    for d in [0usize, 3] {
        bytes[dirs + d * 8..dirs + d * 8 + 8].fill(0);
    }
    let p = copy_with(dir.path(), "bare.dll", &bytes);
    fails(
        &["symbols", &s(&p)],
        &p,
        &["no PDB was given", &s(&p.with_extension("pdb")), "--pdb"],
    );
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

/// A corpus image of one scenario, target and version.
fn image(scenario: &str, target: &str, version: &str) -> CorpusImage {
    corpus_images()
        .into_iter()
        .find(|i| i.scenario == scenario && i.target == target && i.version == version)
        .unwrap()
}

#[test]
fn elf_data_object_with_a_huge_size_is_refused() {
    // Before: a 1 TiB size made the diff allocate that much (exit 134) and a
    // size near 2^64 panicked with "capacity overflow".
    let dir = tempfile::tempdir().unwrap();
    for target in ["x86_64-linux", "aarch64-linux"] {
        let v1 = image("08-struct-grows", target, "v1");
        let good = std::fs::read(image("08-struct-grows", target, "v2").path).unwrap();
        let session = test_elf::symbol(&good, "session");
        let data = test_elf::section(&good, ".data");
        for size in [1u64 << 40, u64::MAX - 7] {
            let mut bytes = good.clone();
            test_elf::set_size(&mut bytes, &session, size);
            let p = copy_with(dir.path(), &format!("{target}-{size}.so"), &bytes);
            let want = format!(
                "{}: malformed ELF image: .symtab: data object `session` ({:#x}, {size} bytes) extends past its section .data ({:#x}..{:#x})",
                s(&p),
                session.value,
                data.addr,
                data.addr + data.size
            );
            let err = fails(&["symbols", &s(&p)], &p, &[]);
            assert_eq!(err.trim_end(), format!("hotpatch: error: {want}"));
            let err = fails(
                &["diff", "--baseline", &s(&v1.path), "--updated", &s(&p)],
                &p,
                &[],
            );
            assert_eq!(err.trim_end(), format!("hotpatch: error: {want}"));
        }
    }
}

/// The TPI record offset of the full (not forward) definition of `name`.
fn struct_record(tpi: &[u8], name: &[u8]) -> usize {
    let header = u32::from_le_bytes(tpi[4..8].try_into().unwrap()) as usize;
    let mut at = header;
    while at < tpi.len() {
        let len = u16::from_le_bytes([tpi[at], tpi[at + 1]]) as usize;
        let kind = u16::from_le_bytes([tpi[at + 2], tpi[at + 3]]);
        let props = u16::from_le_bytes([tpi[at + 6], tpi[at + 7]]);
        // LF_STRUCTURE, not a forward reference, a direct size, then the name.
        if kind == 0x1505
            && props & 0x80 == 0
            && tpi[at + 20..].starts_with(&[0x20, 0])
            && tpi[at + 22..].starts_with(name)
        {
            return at;
        }
        at += 2 + len;
    }
    panic!("no structure {name:?}");
}

/// The offset in the global symbol stream of the `S_GDATA32` for `name`.
fn gdata_record(globals: &[u8], name: &[u8]) -> usize {
    let mut at = 0;
    while at < globals.len() {
        let len = u16::from_le_bytes([globals[at], globals[at + 1]]) as usize;
        let kind = u16::from_le_bytes([globals[at + 2], globals[at + 3]]);
        if kind == 0x110d && globals[at + 14..].starts_with(name) {
            return at;
        }
        at += 2 + len;
    }
    panic!("no S_GDATA32 {name:?}");
}

/// The DBI stream's symbol record stream index.
fn globals_stream(dbi: &[u8]) -> usize {
    u16::from_le_bytes([dbi[20], dbi[21]]) as usize
}

#[test]
fn pe_data_object_whose_type_overruns_its_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["x86_64-windows", "aarch64-windows"] {
        let img = image("08-struct-grows", target, "v2");
        let mut pdb = std::fs::read(img.pdb.as_ref().unwrap()).unwrap();
        let msf = test_msf::Msf::parse(&pdb);
        let tpi = msf.read(&pdb, 2);
        // `struct session_state` grows from 32 bytes to 0x7fff.
        let rec = struct_record(&tpi, b"session_state\0");
        msf.write(&mut pdb, 2, rec + 20, &0x7fffu16.to_le_bytes());
        let p = copy_with(dir.path(), &format!("{target}-type.pdb"), &pdb);
        fails(
            &["symbols", &s(&img.path), "--pdb", &s(&p)],
            &p,
            &[
                "malformed PDB: global symbol stream: symbol record at offset",
                "data object `session` (0x3000, 32767 bytes) extends past its section .data (0x3000..",
            ],
        );

        // The same symbol moved far past its section.
        let mut pdb = std::fs::read(img.pdb.as_ref().unwrap()).unwrap();
        let dbi = msf.read(&pdb, 3);
        let globals = globals_stream(&dbi);
        let rec = gdata_record(&msf.read(&pdb, globals), b"session\0");
        msf.write(&mut pdb, globals, rec + 8, &0x7fff_0000u32.to_le_bytes());
        let p = copy_with(dir.path(), &format!("{target}-offset.pdb"), &pdb);
        fails(
            &["symbols", &s(&img.path), "--pdb", &s(&p)],
            &p,
            &["data object `session` (0x7fff3000, 0 bytes) extends past its section .data"],
        );

        // A section contribution that overruns its section.
        let mut pdb = std::fs::read(img.pdb.as_ref().unwrap()).unwrap();
        let modules = u32::from_le_bytes(dbi[24..28].try_into().unwrap()) as usize;
        let first = 64 + modules + 4;
        msf.write(&mut pdb, 3, first + 8, &0x4000_0000u32.to_le_bytes());
        let p = copy_with(dir.path(), &format!("{target}-contribution.pdb"), &pdb);
        fails(
            &["symbols", &s(&img.path), "--pdb", &s(&p)],
            &p,
            &[
                "DBI section contribution 0: section contribution (",
                "1073741824 bytes) extends past its section",
            ],
        );
    }
}

/// File offset of the section table and the number of sections of a PE.
fn pe_section_table(bytes: &[u8]) -> (usize, usize) {
    let nt = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    let count = u16::from_le_bytes([bytes[nt + 6], bytes[nt + 7]]) as usize;
    let optional = u16::from_le_bytes([bytes[nt + 20], bytes[nt + 21]]) as usize;
    (nt + 24 + optional, count)
}

#[test]
fn damaged_dll_text_size_blames_the_dll_not_its_pdb() {
    // Before: a DLL whose .text size was damaged was reported as a
    // malformed PDB, though the PDB was intact.
    let dir = tempfile::tempdir().unwrap();
    for target in ["x86_64-windows", "aarch64-windows"] {
        let img = image("08-struct-grows", target, "v2");
        let pdb = s(img.pdb.as_ref().unwrap());
        let good = std::fs::read(&img.path).unwrap();
        let (table, _) = pe_section_table(&good);
        let size = u32::from_le_bytes(good[table + 8..table + 12].try_into().unwrap());
        // Shrunk by one byte: the layout still looks right (sections are
        // page-aligned), the exports are still inside, and only the PDB's
        // own copy of the section table tells which file is wrong.
        let mut bytes = good.clone();
        bytes[table + 8..table + 12].copy_from_slice(&(size - 1).to_le_bytes());
        let p = copy_with(dir.path(), &format!("{target}-short.dll"), &bytes);
        let err = fails(
            &["symbols", &s(&p), "--pdb", &pdb],
            &p,
            &[
                &format!(
                    "malformed PE image: section 1 `.text` is 0x1000..{:#x}, but its PDB {pdb} recorded it as 0x1000..{:#x} at link time and places function `sess_frames`",
                    0x1000 + size - 1,
                    0x1000 + size
                ),
                "the image's section table is damaged",
            ],
        );
        assert!(!err.contains("malformed PDB"), "{err}");
        // Shrunk further, past an export: the image alone shows it.
        let mut bytes = good.clone();
        bytes[table + 8..table + 12].copy_from_slice(&0x10u32.to_le_bytes());
        let p = copy_with(dir.path(), &format!("{target}-shorter.dll"), &bytes);
        fails(
            &["symbols", &s(&p), "--pdb", &pdb],
            &p,
            &["malformed PE image: export `sess_", "outside every section"],
        );
        // Grown over the next section.
        let mut bytes = good.clone();
        bytes[table + 8..table + 12].copy_from_slice(&0x1800u32.to_le_bytes());
        let p = copy_with(dir.path(), &format!("{target}-long.dll"), &bytes);
        fails(
            &["symbols", &s(&p), "--pdb", &pdb],
            &p,
            &[
                "malformed PE image: section 2",
                "starts at RVA 0x2000, but section 1 `.text` (0x1000..0x2800) ends at 0x3000 once aligned",
            ],
        );
        // In a diff, as the updated image.
        let v1 = image("08-struct-grows", target, "v1");
        fails(
            &[
                "diff",
                "--baseline",
                &s(&v1.path),
                "--updated",
                &s(&p),
                "--updated-pdb",
                &pdb,
            ],
            &p,
            &["malformed PE image"],
        );
    }
}

#[test]
fn names_from_the_input_are_escaped_in_errors_and_output() {
    let dir = tempfile::tempdir().unwrap();
    // ELF: a function renamed with a terminal escape, a newline and an
    // invalid byte.
    let good = std::fs::read(image("08-struct-grows", "x86_64-linux", "v1").path).unwrap();
    let f = test_elf::symbol(&good, "sess_frames");
    let mut bytes = good.clone();
    test_elf::rename(&mut bytes, &f, b"\x1b[2J\n\xff");
    let p = copy_with(dir.path(), "names.so", &bytes);
    let out = crate::common::hotpatch_ok(["symbols", &s(&p)]);
    assert!(out.contains("\\x1b[2J\\x0a\\xff "), "{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    let json = crate::common::hotpatch_ok(["symbols", "--json", &s(&p)]);
    assert!(json.contains(r#""name": "\\x1b[2J\\x0a\\xff""#), "{json}");
    let f = test_elf::symbol(&bytes, "\u{1b}[2J\n\u{fffd}");
    test_elf::set_size(&mut bytes, &f, 1 << 30);
    let p = copy_with(dir.path(), "names-big.so", &bytes);
    let err = fails(&["symbols", &s(&p)], &p, &["function `\\x1b[2J\\x0a\\xff`"]);
    assert!(!err.contains('\u{1b}'), "{err:?}");

    // PE: a PDB module name with a terminal escape, a newline and a bidi
    // override, and that module's symbol size damaged.
    let img = image("08-struct-grows", "x86_64-windows", "v2");
    let mut pdb = std::fs::read(img.pdb.as_ref().unwrap()).unwrap();
    let msf = test_msf::Msf::parse(&pdb);
    let dbi = msf.read(&pdb, 3);
    assert_eq!(&dbi[128..139], b"session.obj");
    msf.write(&mut pdb, 3, 128, "\u{1b}[2J\n\u{202e}obj".as_bytes());
    msf.write(&mut pdb, 3, 100, &0x00ff_ffffu32.to_le_bytes());
    let p = copy_with(dir.path(), "names.pdb", &pdb);
    let err = fails(
        &["symbols", &s(&img.path), "--pdb", &s(&p)],
        &p,
        &["module 0 `\\x1b[2J\\x0a\\u{202e}obj`: its symbol substream is 16777215 bytes"],
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{202e}'),
        "{err:?}"
    );
}

/// Run `hotpatch` with its address space limited to `mib` MiB.
fn hotpatch_limited(mib: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {}; exec \"$0\" \"$@\"", mib * 1024))
        .arg(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .output()
        .unwrap()
}

/// A sparse file of `len` bytes that starts with `head`.
fn sparse(dir: &Path, name: &str, head: &[u8], len: u64) -> PathBuf {
    use std::io::Write;
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(head).unwrap();
    f.set_len(len).unwrap();
    p
}

#[test]
fn huge_files_are_refused_before_they_are_read() {
    // Before: a 3 GB non-image was read whole (18 s, 3 GB of memory) before
    // it was refused. Under a 1 GiB address-space limit, reading it would
    // fail to allocate and abort.
    let dir = tempfile::tempdir().unwrap();
    let text = sparse(dir.path(), "big.txt", b"", 3 << 30);
    let out = hotpatch_limited(1024, &["symbols", &s(&text)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "hotpatch: error: {}: not a PE or ELF image (it starts with bytes 00 00 00 00)",
            s(&text)
        )
    );
    let elf = sparse(dir.path(), "big.so", b"\x7fELF", (4 << 30) + 1);
    let out = hotpatch_limited(1024, &["symbols", &s(&elf)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the file is 4294967297 bytes, over the 4 GiB (4294967296-byte) limit for images"
        ),
        "{stderr}"
    );
    // A PDB that is not one, however large.
    let img = first("x86_64-windows");
    let pdb = sparse(dir.path(), "big.pdb", b"", 3 << 30);
    let out = hotpatch_limited(1024, &["symbols", &s(&img.path), "--pdb", &s(&pdb)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: malformed PDB: not a PDB file", s(&pdb))),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
