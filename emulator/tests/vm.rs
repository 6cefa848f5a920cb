//! The VM's loader, calls, traps, budget, memory and `Target` behaviour,
//! on corpus images and on a small library compiled here that imports
//! `puts` and uses every kind of symbol relocation.

use std::path::{Path, PathBuf};
use std::process::Command;

use hotpatch_applier::{Protection, Target, TargetError};
use hotpatch_emulator::{
    Arg, Base, Error, LoadOptions, SlotTarget, Vm, DEFAULT_BIAS, IMAGE_LIMIT, PAGE,
};
use hotpatch_formats::package::{BuildIdentity, ImageIdentity, Sha256Digest};

const BUDGET: u64 = 1_000_000;
const TARGETS: [&str; 4] = [
    "x86_64-linux",
    "aarch64-linux",
    "x86_64-windows",
    "aarch64-windows",
];

fn corpus_image(scenario: &str, target: &str, version: &str) -> PathBuf {
    let ext = if target.ends_with("windows") {
        "dll"
    } else {
        "so"
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(scenario)
        .join("bin")
        .join(target)
        .join(format!("{version}.{ext}"))
}

fn load(path: &Path) -> Vm {
    Vm::load_file(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The library every test target builds: an import (`puts`), exported
/// data and functions reached through the GOT, the PLT and pointers in
/// data (ELF `GLOB_DAT`, `JUMP_SLOT`, `ABS64`; PE `DIR64`), a buffer
/// argument and an endless loop.
const LIB_C: &str = r#"
#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
__declspec(dllimport) int puts(const char *);
#else
#define EXPORT __attribute__((visibility("default")))
int puts(const char *);
#endif
EXPORT long long value = 5;
EXPORT long long *value_ptr = &value;
EXPORT long long helper(long long x) { return x * 3 + value; }
EXPORT long long (*helper_ptr)(long long) = helper;
EXPORT long long greet(long long x) { if (x) return puts("hello") + 100; return -7; }
EXPORT long long through_plt(long long x) { return helper(x) + 1; }
EXPORT long long through_ptr(long long x) { return helper_ptr(x) + *value_ptr; }
EXPORT long long upcase(unsigned char *p, long long n) {
    long long c = 0;
    for (long long i = 0; i < n; i++)
        if (p[i] >= 'a' && p[i] <= 'z') { p[i] -= 32; c++; }
    return c;
}
EXPORT long long spin(long long x) { volatile long long i = x; for (;;) i++; }
EXPORT long long sum6(long long a, long long b, long long c, long long d, long long e, long long f) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}
"#;

fn run(dir: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}); install it with scripts/ensure-tools.sh {tool}")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Build the test library for `target` in `dir`; returns its path.
fn build_lib(dir: &Path, target: &str) -> PathBuf {
    std::fs::write(dir.join("lib.c"), LIB_C).expect("write lib.c");
    let common = [
        "-O2",
        "-ffreestanding",
        "-fno-builtin",
        "-fno-stack-protector",
    ];
    match target {
        "x86_64-linux" | "aarch64-linux" => {
            let cc = if target == "x86_64-linux" {
                "gcc"
            } else {
                "aarch64-linux-gnu-gcc"
            };
            let mut args = common.to_vec();
            args.extend(["-fPIC", "-shared", "-nostdlib", "-o", "lib.so", "lib.c"]);
            run(dir, cc, &args);
            let relocs = run(dir, "readelf", &["-rW", "lib.so"]);
            let kinds: &[&str] = if target == "x86_64-linux" {
                &["R_X86_64_GLOB_DAT", "R_X86_64_JUMP_SLOT", "R_X86_64_64 "]
            } else {
                &[
                    "R_AARCH64_GLOB_DAT",
                    "R_AARCH64_JUMP_SLOT",
                    "R_AARCH64_ABS64",
                ]
            };
            for k in kinds {
                assert!(relocs.contains(k), "{target}: no {k} in\n{relocs}");
            }
            dir.join("lib.so")
        }
        _ => {
            let (triple, machine, dll_machine) = if target == "x86_64-windows" {
                (
                    "--target=x86_64-pc-windows-msvc",
                    "/machine:x64",
                    "i386:x86-64",
                )
            } else {
                (
                    "--target=aarch64-pc-windows-msvc",
                    "/machine:arm64",
                    "arm64",
                )
            };
            std::fs::write(
                dir.join("msvcrt.def"),
                "LIBRARY msvcrt.dll\nEXPORTS\nputs\n",
            )
            .expect("write msvcrt.def");
            run(
                dir,
                "llvm-dlltool-19",
                &["-m", dll_machine, "-d", "msvcrt.def", "-l", "msvcrt.lib"],
            );
            let mut args = common.to_vec();
            args.extend([triple, "-c", "lib.c", "-o", "lib.obj"]);
            run(dir, "clang-19", &args);
            run(
                dir,
                "lld-link-19",
                &[
                    "/dll",
                    "/noentry",
                    "/nodefaultlib",
                    machine,
                    "/out:lib.dll",
                    "lib.obj",
                    "msvcrt.lib",
                ],
            );
            dir.join("lib.dll")
        }
    }
}

fn ints(v: &[i64]) -> Vec<Arg> {
    v.iter().map(|&i| Arg::Int(i)).collect()
}

#[test]
fn built_library_runs_with_its_relocations_and_traps_its_import_on_every_target() {
    for target in TARGETS {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = build_lib(dir.path(), target);
        let mut vm = load(&path);
        let img = vm.image().clone();
        assert_eq!(img.base, img.preferred_base + DEFAULT_BIAS, "{target}");
        let names: Vec<&str> = img.imports.iter().map(|i| i.name.as_str()).collect();
        let want = if target.ends_with("windows") {
            "msvcrt.dll!puts"
        } else {
            "puts"
        };
        assert_eq!(names, [want], "{target}");
        // Relocated through the GOT, the PLT and pointers in data.
        assert_eq!(vm.call("helper", &ints(&[2]), BUDGET).unwrap().value, 11);
        assert_eq!(
            vm.call("through_plt", &ints(&[2]), BUDGET).unwrap().value,
            12
        );
        assert_eq!(
            vm.call("through_ptr", &ints(&[2]), BUDGET).unwrap().value,
            16
        );
        assert_eq!(vm.call("greet", &ints(&[0]), BUDGET).unwrap().value, -7);
        // Calling the import stops, naming it.
        let err = vm.call("greet", &ints(&[1]), BUDGET).unwrap_err();
        assert!(
            matches!(&err, Error::ImportCalled { import, export, .. } if import == want && export == "greet"),
            "{target}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(want) && msg.contains("lib."), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        // The VM still works after a trap.
        assert_eq!(vm.call("helper", &ints(&[0]), BUDGET).unwrap().value, 5);

        // A buffer goes in by pointer and comes back changed.
        let r = vm
            .call(
                "upcase",
                &[Arg::Bytes(b"Hello, vm!".to_vec()), Arg::Int(10)],
                BUDGET,
            )
            .unwrap();
        assert_eq!(r.value, 6, "{target}");
        assert_eq!(r.buffers, vec![b"HELLO, VM!".to_vec()], "{target}");

        // Six register arguments where the convention has them.
        let six = vm.call("sum6", &ints(&[1, 2, 3, 4, 5, 6]), BUDGET);
        if target == "x86_64-windows" {
            let err = six.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::TooManyArgs {
                        given: 6,
                        max: 4,
                        ..
                    }
                ),
                "{err}"
            );
        } else {
            assert_eq!(six.unwrap().value, 91, "{target}");
        }

        // An endless loop runs out of budget, with a clear message.
        let err = vm.call("spin", &ints(&[0]), 10_000).unwrap_err();
        assert!(
            matches!(err, Error::Budget { budget: 10_000, .. }),
            "{target}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("`spin`") && msg.contains("10000 instructions"),
            "{msg}"
        );
        assert_eq!(vm.call("helper", &ints(&[1]), BUDGET).unwrap().value, 8);
    }
}

#[test]
fn relocated_slots_hold_the_load_address_of_their_targets_on_every_corpus_image() {
    for target in TARGETS {
        for (scenario, version) in [
            ("05-jump-table", "v1"),
            ("11-function-pointer-table", "v1"),
            ("11-function-pointer-table", "v2"),
            ("06-rodata-table", "v2"),
        ] {
            let path = corpus_image(scenario, target, version);
            for base in [Base::Bias(DEFAULT_BIAS), Base::Bias(0x4000_0000)] {
                let vm = Vm::load_file(&path, &LoadOptions { base }).unwrap();
                let img = vm.image();
                let mut pointers = 0;
                for slot in &img.relocations {
                    let SlotTarget::Image(rva) = slot.target else {
                        panic!("{}: unexpected slot {slot:?}", path.display());
                    };
                    assert_eq!(slot.width, 8);
                    let b = vm.read_rva(slot.rva, 8).unwrap();
                    let v = u64::from_le_bytes(b.try_into().unwrap());
                    assert_eq!(v, img.base + rva, "{} slot {:#x}", path.display(), slot.rva);
                    pointers += 1;
                }
                if scenario == "11-function-pointer-table" {
                    assert!(pointers >= 4, "{}: {pointers} pointers", path.display());
                }
            }
        }
    }
}

#[test]
fn exports_match_the_formats_reader_on_every_target() {
    for target in TARGETS {
        let path = corpus_image("03-new-helper", target, "v2");
        let vm = load(&path);
        let image = vm.parse(None).unwrap();
        let from_formats: Vec<(String, u64)> = image
            .exports
            .iter()
            .map(|e| (e.name.clone(), e.rva))
            .collect();
        let mine: Vec<(String, u64)> = vm
            .image()
            .exports
            .iter()
            .map(|(n, r)| (n.clone(), *r))
            .collect();
        let mut from_formats = from_formats;
        from_formats.sort();
        assert_eq!(mine, from_formats, "{target}");
        assert!(mine.len() >= 2);
        // The loaded file's digest is the file's.
        assert_eq!(vm.image().sha256.0, image.sha256());
        // The image is mapped with its protections: code executable and
        // not writable, data writable and not executable.
        for s in &image.sections {
            let r = vm
                .image()
                .regions
                .iter()
                .find(|r| r.rva <= s.rva && s.rva < r.rva + r.size)
                .unwrap_or_else(|| panic!("{target}: section {} not mapped", s.name));
            if s.perms.execute {
                assert!(r.perms.execute && !r.perms.write, "{target} {}", s.name);
            }
            if s.perms.write && !s.name.contains("got") && s.name != ".dynamic" {
                assert!(r.perms.write && !r.perms.execute, "{target} {}", s.name);
            }
        }
    }
}

#[test]
fn data_objects_are_read_and_written_by_name() {
    for target in TARGETS {
        let path = corpus_image("07-new-global", target, "v1");
        let mut vm = load(&path);
        let image = vm.parse(None).unwrap();
        let data: Vec<_> = image.data.clone();
        drop(image);
        let object = data
            .iter()
            .find(|d| d.size == 8 || d.size == 4)
            .unwrap_or_else(|| panic!("{target}: no small data object"));
        let before = vm.read_data_object(object).unwrap();
        assert_eq!(before.len() as u64, object.size);
        let new: Vec<u8> = before.iter().map(|b| b ^ 0x5a).collect();
        vm.write_data_object(object, &new).unwrap();
        assert_eq!(vm.read_data_object(object).unwrap(), new);
        let err = vm.write_data_object(object, &[0]).unwrap_err();
        assert!(err.to_string().contains(&object.name), "{err}");
    }
}

/// `mov eax/x0, 42; ret` for the architecture of `target`.
fn return_42(target: &str) -> Vec<u8> {
    if target.starts_with("x86_64") {
        vec![0xb8, 0x2a, 0, 0, 0, 0xc3]
    } else {
        [0xd280_0540u32, 0xd65f_03c0]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect()
    }
}

#[test]
fn written_code_runs_after_the_translation_cache_is_dropped() {
    for target in TARGETS {
        let path = corpus_image("10-tiny-function", target, "v1");
        let mut vm = load(&path);
        let name = vm.image().exports.keys().next().unwrap().clone();
        let entry = vm.export(&name).unwrap();
        // Run it once so its code is translated and cached.
        let first = vm.call(&name, &ints(&[0, 0, 0, 0]), BUDGET);
        let code = return_42(target);
        Target::write(&mut vm, entry, &code).unwrap();
        let mut back = vec![0u8; code.len()];
        Target::read(&mut vm, entry, &mut back).unwrap();
        assert_eq!(back, code);
        let r = vm.call(&name, &ints(&[0, 0, 0, 0]), BUDGET).unwrap();
        assert_eq!(r.value, 42, "{target}: {name} (first run {first:?})");
        // Code pages keep their protection: still executable, not writable.
        let page = entry & !(PAGE - 1);
        let region = vm
            .regions()
            .unwrap()
            .into_iter()
            .find(|r| r.address <= page && page < r.address + r.size)
            .unwrap();
        assert!(region.perms.execute && !region.perms.write, "{target}");
    }
}

#[test]
fn memory_digest_is_unchanged_by_reads_and_restored_writes_and_protections() {
    for target in TARGETS {
        let path = corpus_image("01-bounds-check", target, "v1");
        let mut vm = load(&path);
        let d0 = vm.memory_digest().unwrap();
        // Reads change nothing.
        let base = vm.image().base;
        let size = vm.image().size;
        let mut buf = vec![0u8; usize::try_from(size).unwrap()];
        for r in vm.image().regions.clone() {
            let s = usize::try_from(r.rva).unwrap();
            let e = usize::try_from(r.rva + r.size).unwrap();
            Target::read(&mut vm, base + r.rva, &mut buf[s..e]).unwrap();
        }
        assert_eq!(vm.memory_digest().unwrap(), d0, "{target}");
        // A one-byte write changes it; writing the byte back restores it.
        let entry = vm.export("hb_len").unwrap();
        let old = vm.read(entry, 1).unwrap();
        vm.write(entry, &[old[0] ^ 1]).unwrap();
        let d1 = vm.memory_digest().unwrap();
        assert_ne!(d1, d0, "{target}");
        vm.write(entry, &old).unwrap();
        assert_eq!(vm.memory_digest().unwrap(), d0, "{target}");
        // Protecting a page and restoring it splits and re-joins a mapping:
        // the digest sees only the end state.
        let page = entry & !(PAGE - 1);
        Target::protect(&mut vm, page, PAGE, Protection::READ_WRITE).unwrap();
        assert_ne!(vm.memory_digest().unwrap(), d0, "{target}");
        Target::protect(&mut vm, page, PAGE, Protection::CODE).unwrap();
        assert_eq!(vm.memory_digest().unwrap(), d0, "{target}");
        // Allocating changes it, freeing restores it.
        let a = Target::allocate(&mut vm, base, base + (1 << 31), 2 * PAGE).unwrap();
        assert_ne!(vm.memory_digest().unwrap(), d0, "{target}");
        Target::free(&mut vm, a, 2 * PAGE).unwrap();
        assert_eq!(vm.memory_digest().unwrap(), d0, "{target}");
        // A call changes only the stack and scratch, which the digest covers too.
        vm.call("hb_len", &[], BUDGET).unwrap();
        let image_bytes = vm.read(base, usize::try_from(PAGE).unwrap()).unwrap();
        assert_eq!(image_bytes.len() as u64, PAGE);
    }
}

#[test]
fn target_locates_allocates_protects_and_keeps_state() {
    for target in TARGETS {
        let path = corpus_image("02-size-overflow", target, "v1");
        let mut vm = load(&path);
        let file = std::fs::read(&path).unwrap();
        let identity = ImageIdentity {
            sha256: Sha256Digest(hotpatch_formats::read::sha256(&file)),
            build: BuildIdentity::Elf { build_id: None },
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let located = vm.locate(&name, &identity).unwrap();
        assert_eq!(located.base, vm.image().base);
        assert_eq!(located.file_sha256, identity.sha256);
        assert!(located.how.contains(&format!("{:#x}", located.base)));
        if target.ends_with("windows") {
            assert!(vm.locate(&name.to_uppercase(), &identity).is_ok());
        }
        let err = vm.locate("other.so", &identity).unwrap_err();
        assert!(matches!(err, TargetError::NotLoaded { .. }), "{err}");
        assert_eq!(vm.page_size(), PAGE);
        assert_eq!(vm.stop().unwrap(), vec![]);
        vm.resume().unwrap();

        // Allocations lie within the bounds, page aligned, in free space.
        let base = vm.image().base;
        let end = base + vm.image().size;
        let lo = end.saturating_sub(1 << 27);
        let hi = base + (1 << 27);
        let mut got = Vec::new();
        for _ in 0..3 {
            let a = Target::allocate(&mut vm, lo, hi, 3 * PAGE).unwrap();
            assert!(a >= lo && a + 3 * PAGE <= hi && a % PAGE == 0, "{a:#x}");
            assert!(
                a + 3 * PAGE <= base || a >= end,
                "{a:#x} overlaps the image"
            );
            for &(b, s) in &got {
                assert!(a + 3 * PAGE <= b || a >= b + s, "{a:#x} overlaps {b:#x}");
            }
            // Fresh memory is readable, writable and zero.
            let mut z = vec![1u8; 16];
            Target::read(&mut vm, a, &mut z).unwrap();
            assert_eq!(z, vec![0u8; 16]);
            Target::write(&mut vm, a, b"data").unwrap();
            got.push((a, 3 * PAGE));
        }
        // Code placed in an allocation runs once it is made executable.
        let (code_at, _) = got[0];
        Target::write(&mut vm, code_at, &return_42(target)).unwrap();
        Target::protect(&mut vm, code_at, PAGE, Protection::CODE).unwrap();
        let r = vm.call_address(code_at, "new code", &[], BUDGET).unwrap();
        assert_eq!(r.value, 42);
        // Writes to read-only code succeed (the VM is the OS).
        Target::write(&mut vm, code_at, &return_42(target)).unwrap();

        // No room: a range smaller than the request, or one inside the image.
        let err = Target::allocate(&mut vm, base, base + PAGE, 2 * PAGE).unwrap_err();
        assert!(matches!(err, TargetError::NoRoom { .. }), "{err}");
        let err = Target::allocate(&mut vm, base, end, PAGE).unwrap_err();
        assert!(matches!(err, TargetError::NoRoom { .. }), "{err}");
        let err = Target::allocate(&mut vm, IMAGE_LIMIT, u64::MAX, PAGE).unwrap_err();
        assert!(matches!(err, TargetError::NoRoom { .. }), "{err}");
        assert!(Target::allocate(&mut vm, lo, hi, 100).is_err());

        // Only allocated ranges can be freed.
        assert!(Target::free(&mut vm, base, PAGE).is_err());
        for (a, s) in got {
            Target::free(&mut vm, a, s).unwrap();
            let mut b = [0u8; 1];
            assert!(matches!(
                Target::read(&mut vm, a, &mut b),
                Err(TargetError::Access { .. })
            ));
        }
        // Unmapped and out-of-range accesses are errors, never partial.
        let d = vm.memory_digest().unwrap();
        let err = Target::write(&mut vm, end - 2, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap_err();
        assert!(matches!(err, TargetError::Access { .. }), "{err}");
        assert_eq!(vm.memory_digest().unwrap(), d);
        assert!(Target::protect(&mut vm, base + 1, PAGE, Protection::CODE).is_err());
        assert!(Target::write(&mut vm, u64::MAX - 1, &[1, 2, 3]).is_err());

        // State records.
        assert_eq!(vm.load_state("img").unwrap(), None);
        vm.store_state("img", Some(b"record")).unwrap();
        assert_eq!(vm.load_state("img").unwrap(), Some(b"record".to_vec()));
        vm.store_state("img", None).unwrap();
        assert_eq!(vm.load_state("img").unwrap(), None);
    }
}

#[test]
fn faults_and_missing_exports_are_one_line_errors_naming_the_image() {
    let path = corpus_image("01-bounds-check", "x86_64-linux", "v1");
    let mut vm = load(&path);
    let err = vm.call("no_such_export", &[], BUDGET).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("v1.so") && msg.contains("no_such_export"),
        "{msg}"
    );
    // mov rax, [0]; ret
    let entry = vm.export("hb_len").unwrap();
    vm.write(entry, &[0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0, 0xc3])
        .unwrap();
    let err = vm.call("hb_len", &[], BUDGET).unwrap_err();
    assert!(
        matches!(err, Error::Fault { pc, .. } if pc == entry),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("v1.so") && msg.contains("unmapped") && msg.contains("at 0x0"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn bad_images_and_bases_are_refused_with_one_line_errors() {
    let path = corpus_image("01-bounds-check", "aarch64-windows", "v1");
    let file = std::fs::read(&path).unwrap();
    // Truncated: sections outside the file.
    let err = Vm::load("cut.dll", file[..1024].to_vec(), &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().starts_with("cut.dll: "), "{err}");
    // Not an image.
    let err = Vm::load("text.so", b"hello".to_vec(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::BadImage { .. }), "{err}");
    // Unaligned and too-low bases.
    for base in [Base::Bias(0x123), Base::At(0)] {
        let err = Vm::load("v1.dll", file.clone(), &LoadOptions { base }).unwrap_err();
        assert!(matches!(err, Error::BadBase { .. }), "{err}");
    }
    // Truncated or corrupted images never panic: every prefix at 64-byte
    // steps, and 200 deterministic byte corruptions of each image.
    for target in TARGETS {
        let image = std::fs::read(corpus_image("05-jump-table", target, "v1")).unwrap();
        for n in (0..image.len()).step_by(64) {
            let _ = Vm::load("cut", image[..n].to_vec(), &LoadOptions::default());
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut bad = image.clone();
            for _ in 0..4 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                // Mostly the headers, where the loader reads most.
                let limit = if seed & 1 == 0 { 0x400 } else { bad.len() };
                let at = usize::try_from((seed >> 16) % limit as u64).unwrap();
                bad[at] = (seed >> 56) as u8;
            }
            if let Ok(mut vm) = Vm::load("bad", bad, &LoadOptions::default()) {
                let _ = vm.call("vm_exec", &ints(&[1, 2]), 10_000);
            }
        }
    }
    // At the preferred base the image works too.
    let mut vm = Vm::load(
        "v1.dll",
        file,
        &LoadOptions {
            base: Base::Bias(0),
        },
    )
    .unwrap();
    assert_eq!(vm.image().base, vm.image().preferred_base);
    let (base, size) = (vm.image().base, vm.image().size);
    assert_eq!(vm.rva_of(base + 0x10), Some(0x10));
    assert_eq!(vm.rva_of(base + size), None);
    assert_eq!(vm.rva_of(base - 1), None);
    assert_eq!(vm.address_of(0x20), base + 0x20);
    assert_eq!(
        vm.call("hb_load", &ints(&[5, 40]), BUDGET).unwrap().value,
        5
    );
}
