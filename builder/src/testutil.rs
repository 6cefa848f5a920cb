//! Helpers shared by the builder's unit tests: the committed corpus, and
//! bare images for hand-assembled code.

use std::path::{Path, PathBuf};

use hotpatch_formats::read::load_file;
use hotpatch_formats::{
    Arch, Format, FormatIdentity, Function, Identity, Image, Permissions, ReadOptions, Section,
    TypeInfo, Visibility,
};

/// The corpus directory.
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// The image of `version` of `scenario` for `target`.
pub fn corpus_file(scenario: &str, target: &str, version: &str) -> PathBuf {
    let ext = if target.ends_with("windows") {
        "dll"
    } else {
        "so"
    };
    corpus().join(format!("{scenario}/bin/{target}/{version}.{ext}"))
}

/// An image's bytes and read options (with the PDB beside it, for PE).
pub fn read(path: &Path) -> (Vec<u8>, ReadOptions) {
    let bytes = load_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut opts = ReadOptions::new(path);
    let pdb = path.with_extension("pdb");
    if pdb.exists() {
        opts = opts.with_pdb(pdb);
    }
    (bytes, opts)
}

/// A mapped, readable section over `data`.
pub fn section<'d>(
    name: &str,
    rva: u64,
    data: &'d [u8],
    write: bool,
    execute: bool,
) -> Section<'d> {
    Section {
        name: name.to_string(),
        rva,
        size: data.len() as u64,
        perms: Permissions {
            read: true,
            write,
            execute,
        },
        data,
    }
}

/// A bare image: these sections and global functions `(name, rva, size)`,
/// nothing else. Tests set other fields with struct update syntax.
pub fn image<'d>(
    format: Format,
    arch: Arch,
    sections: Vec<Section<'d>>,
    functions: &[(&str, u64, u64)],
) -> Image<'d> {
    Image {
        file: &[],
        format,
        arch,
        preferred_base: 0,
        sections,
        functions: functions
            .iter()
            .map(|&(name, rva, size)| Function {
                name: name.to_string(),
                rva,
                size,
                unit: None,
                visibility: Visibility::Global,
                extent: hotpatch_formats::Extent::Symbol,
            })
            .collect(),
        data: Vec::new(),
        exports: Vec::new(),
        relocations: Vec::new(),
        identity: Identity {
            format: match format {
                Format::Elf => FormatIdentity::Elf { build_id: None },
                Format::Pe => FormatIdentity::Pe {
                    time_date_stamp: 0,
                    size_of_image: 0,
                    checksum: 0,
                    codeview: None,
                },
            },
        },
        boundaries: Vec::new(),
        stripped: false,
        type_info: TypeInfo::Absent,
        types: Vec::new(),
        type_uses: Vec::new(),
        lines: Vec::new(),
    }
}
