//! Reading an image file: format detection and dispatch to the PE or ELF reader.
//!
//! Files are checked before they are read whole: [`load_file`] and
//! [`load_pdb`] open the file, read its first bytes, refuse it unless they
//! are the signature of a format this crate reads, and refuse it if it is
//! larger than the format's cap ([`MAX_IMAGE_SIZE`], [`MAX_PDB_SIZE`]). Only
//! then is the rest read, and never more than the cap even if the file grows
//! meanwhile.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::Image;

/// Images larger than this are refused before they are read whole (4 GiB).
///
/// A PE32+ image cannot usefully be larger: its section file offsets,
/// raw sizes and `SizeOfImage` are 32-bit fields (and the Microsoft linker
/// stops at 2 GiB). ELF has 64-bit offsets, but the largest shared objects
/// shipped in practice are a few hundred megabytes with their symbol table;
/// a bigger file is almost always one that still carries its DWARF debug
/// information, which this tool does not read: `objcopy --strip-debug`
/// keeps `.symtab` and removes it. The cap bounds the memory the reader
/// needs, since the whole file is held in memory.
pub const MAX_IMAGE_SIZE: u64 = 4 << 30;

/// PDBs larger than this are refused before they are read whole (4 GiB).
///
/// With the MSF 7.00 page size that lld-link and link.exe use by default
/// (4 KiB), the Microsoft toolchain cannot write a larger PDB; only a PDB
/// linked with a larger `/pdbpagesize` can be. The reader holds the whole
/// PDB in memory and copies the streams it reads, so this also bounds its
/// memory to about twice the cap.
pub const MAX_PDB_SIZE: u64 = 4 << 30;

/// Signature of an MSF 7.00 ("big MSF") file, which every modern PDB is.
pub(crate) const MSF7_MAGIC: &[u8] = b"Microsoft C/C++ MSF 7.00\r\n\x1a\x44\x53\x00\x00\x00";
/// Signature of the old MSF 2.00 format, which is not supported.
pub(crate) const MSF2_MAGIC: &[u8] = b"Microsoft C/C++ program database 2.00\r\n\x1a\x4a\x47";

/// Options for [`parse`].
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The image's path, used in messages and to find a PDB beside it.
    pub path: PathBuf,
    /// The PDB to use for a PE image. When `None`, the reader looks for
    /// `<image stem>.pdb` beside the image, and without one reads the image
    /// as a stripped image (functions from `.pdata` and the exports).
    pub pdb: Option<PathBuf>,
    /// A separate debug file for an ELF image (what `objcopy
    /// --only-keep-debug` writes, or a distribution's `-dbgsym` package
    /// holds): its symbols and DWARF replace the image's. When `None`, a
    /// stripped ELF image is looked up by its build-id in
    /// [`ReadOptions::debug_dirs`].
    pub debug: Option<PathBuf>,
    /// Where to look for debug files by build-id
    /// (`DIR/.build-id/xx/yyyy….debug`); `/usr/lib/debug` by default.
    pub debug_dirs: Vec<PathBuf>,
}

impl ReadOptions {
    /// Options for the image at `path`, with no explicit PDB.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ReadOptions {
            path: path.into(),
            pdb: None,
            debug: None,
            debug_dirs: vec![PathBuf::from("/usr/lib/debug")],
        }
    }

    /// Use this separate debug file for an ELF image.
    pub fn with_debug(mut self, debug: impl Into<PathBuf>) -> Self {
        self.debug = Some(debug.into());
        self
    }

    /// Look for debug files by build-id in these directories instead.
    pub fn with_debug_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.debug_dirs = dirs;
        self
    }

    /// Use this PDB for a PE image.
    pub fn with_pdb(mut self, pdb: impl Into<PathBuf>) -> Self {
        self.pdb = Some(pdb.into());
        self
    }

    /// The PDB path that messages name: the explicit one, or
    /// `<image path with .pdb>`.
    pub(crate) fn pdb_or_default(&self) -> PathBuf {
        self.pdb
            .clone()
            .unwrap_or_else(|| self.path.with_extension("pdb"))
    }
}

/// What a file must start with, and how large it may be.
struct Expect {
    /// What the file should be, for messages (`image`, `PDB`).
    what: &'static str,
    /// The cap.
    max: u64,
    /// How many leading bytes the signature check needs.
    head: usize,
    /// The signature check: `Err` describes what is wrong.
    check: fn(&Path, &[u8]) -> Result<()>,
}

/// Read a whole image file, after checking that it starts with a PE (`MZ`)
/// or ELF (`\x7fELF`) signature and is not larger than [`MAX_IMAGE_SIZE`].
///
/// A file that is neither is refused with [`Error::NotAnImage`] after
/// reading four bytes, whatever its size.
pub fn load_file(path: &Path) -> Result<Vec<u8>> {
    load(path, &IMAGE)
}

/// Read a whole PDB file, after checking that it starts with the MSF 7.00
/// signature and is not larger than [`MAX_PDB_SIZE`].
pub fn load_pdb(path: &Path) -> Result<Vec<u8>> {
    load(
        path,
        &Expect {
            what: "PDB",
            max: MAX_PDB_SIZE,
            head: MSF7_MAGIC.len(),
            check: check_pdb_magic,
        },
    )
}

/// The image signature check of [`load_file`].
fn check_image_magic(path: &Path, head: &[u8]) -> Result<()> {
    match head {
        [0x7f, b'E', b'L', b'F', ..] | [b'M', b'Z', ..] => Ok(()),
        _ => Err(not_an_image(path, head)),
    }
}

/// [`Error::NotAnImage`] for a file that starts with `head`.
fn not_an_image(path: &Path, head: &[u8]) -> Error {
    let detail = if head.is_empty() {
        "the file is empty".to_owned()
    } else {
        let magic: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("it starts with bytes {}", magic.join(" "))
    };
    Error::NotAnImage {
        path: path.to_path_buf(),
        detail,
    }
}

/// The PDB signature check of [`load_pdb`].
pub(crate) fn check_pdb_magic(path: &Path, head: &[u8]) -> Result<()> {
    let malformed = |detail: &str| Error::Malformed {
        path: path.to_path_buf(),
        what: "PDB",
        detail: detail.to_owned(),
    };
    if head.starts_with(MSF7_MAGIC) {
        Ok(())
    } else if is_msf2(head) {
        Err(malformed(
            "an old MSF 2.00 PDB; only MSF 7.00 PDBs are supported",
        ))
    } else {
        Err(malformed("not a PDB file: it lacks the MSF 7.00 signature"))
    }
}

/// Whether `head` (the first bytes of a file) is the MSF 2.00 signature, or
/// as much of it as `head` holds beyond the part both signatures share.
fn is_msf2(head: &[u8]) -> bool {
    let n = head.len().min(MSF2_MAGIC.len());
    n > "Microsoft C/C++ ".len() && head.get(..n) == MSF2_MAGIC.get(..n)
}

/// An image file opened and checked, not yet read: what [`open_image`]
/// returns to a caller that maps the file instead of reading it.
#[derive(Debug)]
pub struct CheckedFile {
    /// The open file.
    pub file: File,
    /// Its length when it was checked, at most [`MAX_IMAGE_SIZE`]. Map or
    /// read no more than this.
    pub len: u64,
}

/// Open an image file and check it as [`load_file`] does (a regular file,
/// a PE or ELF signature, at most [`MAX_IMAGE_SIZE`] bytes), without
/// reading it whole: for a caller that maps it into memory.
pub fn open_image(path: &Path) -> Result<CheckedFile> {
    let (file, len, _) = open_checked(path, &IMAGE)?;
    Ok(CheckedFile { file, len })
}

/// What [`load_file`] and [`open_image`] expect.
const IMAGE: Expect = Expect {
    what: "image",
    max: MAX_IMAGE_SIZE,
    head: 4,
    check: check_image_magic,
};

/// The error for a file of `len` bytes over `expect`'s cap.
fn too_big(path: &Path, expect: &Expect, len: u64) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        what: expect.what,
        detail: format!(
            "the file is {len} bytes, over the {} GiB ({}-byte) limit for {}s{}",
            expect.max >> 30,
            expect.max,
            expect.what,
            if expect.what == "image" {
                " (an ELF image with debug information fits once `objcopy --strip-debug` removes it)"
            } else {
                ""
            }
        ),
    }
}

/// Open, check that it is a regular file, read and check the signature,
/// check the size: the file, its length and the bytes read so far.
fn open_checked(path: &Path, expect: &Expect) -> Result<(File, u64, Vec<u8>)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let mut head = Vec::with_capacity(expect.head);
    (&file)
        .take(u64::try_from(expect.head).unwrap_or(u64::MAX))
        .read_to_end(&mut head)
        .map_err(io)?;
    (expect.check)(path, &head)?;
    if meta.len() > expect.max {
        return Err(too_big(path, expect, meta.len()));
    }
    Ok((file, meta.len(), head))
}

/// Open, check the signature, check the size, then read the rest.
fn load(path: &Path, expect: &Expect) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let (file, len, head) = open_checked(path, expect)?;
    // The size from the metadata is a hint: read at most one byte past the
    // cap, so that a file that grows meanwhile is refused, not read.
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(0))
        .map_err(|e| io(std::io::Error::other(e)))?;
    bytes.extend_from_slice(&head);
    let rest = expect
        .max
        .saturating_sub(u64::try_from(head.len()).unwrap_or(u64::MAX))
        .saturating_add(1);
    (&file).take(rest).read_to_end(&mut bytes).map_err(io)?;
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > expect.max {
        return Err(too_big(path, expect, len));
    }
    Ok(bytes)
}

/// SHA-256 of a byte slice.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Parse an image held in memory. The result borrows `data`.
///
/// A PE image's PDB is read from disk: [`ReadOptions::pdb`], or
/// `<image stem>.pdb` beside the image (see [`parse_with_pdb`] for a PDB
/// already in memory). When neither is there, the image is read as a
/// stripped image ([`Image::stripped`]); a [`ReadOptions::pdb`] that is
/// missing is an error naming it.
pub fn parse<'data>(data: &'data [u8], opts: &ReadOptions) -> Result<Image<'data>> {
    let mut image = match data {
        [0x7f, b'E', b'L', b'F', ..] => {
            let image = crate::elf::parse(data, opts)?;
            match debug_file_for(&image, opts) {
                Some(path) => with_debug_file(image, &path, opts)?,
                None => image,
            }
        }
        [b'M', b'Z', ..] => crate::pe::parse(data, opts, crate::pe::Pdb::FromDisk)?,
        _ => return Err(not_an_image(&opts.path, data)),
    };
    image.canonicalise();
    Ok(image)
}

/// The separate debug file to read for an ELF image: the one given, or, for
/// a stripped image with a build-id, `DIR/.build-id/xx/yyyy….debug` in the
/// first debug directory that has it.
fn debug_file_for(image: &Image<'_>, opts: &ReadOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.debug {
        return Some(p.clone());
    }
    if !image.stripped {
        return None;
    }
    let crate::FormatIdentity::Elf { build_id: Some(id) } = &image.identity.format else {
        return None;
    };
    let hex = crate::package::digest::to_hex(id);
    let (head, rest) = (hex.get(..2)?, hex.get(2..)?);
    opts.debug_dirs
        .iter()
        .map(|d| d.join(".build-id").join(head).join(format!("{rest}.debug")))
        .find(|p| p.is_file())
}

/// `image` with the symbols, data objects, type layouts and function lines
/// of the debug file at `path`, which must be an ELF file of the same machine and
/// build-id. The image keeps its own sections, relocations, exports and
/// identity: the debug file's code sections hold no bytes.
fn with_debug_file<'data>(
    mut image: Image<'data>,
    path: &Path,
    opts: &ReadOptions,
) -> Result<Image<'data>> {
    let bytes = load_file(path)?;
    let debug_opts = ReadOptions {
        path: path.to_path_buf(),
        pdb: None,
        debug: None,
        debug_dirs: Vec::new(),
    };
    let debug = match bytes.as_slice() {
        [0x7f, b'E', b'L', b'F', ..] => crate::elf::parse(&bytes, &debug_opts)?,
        _ => {
            return Err(Error::NotAnImage {
                path: path.to_path_buf(),
                detail: "a debug file for an ELF image must be an ELF file".into(),
            })
        }
    };
    let id = |i: &Image<'_>| match &i.identity.format {
        crate::FormatIdentity::Elf { build_id: Some(b) } => crate::package::digest::to_hex(b),
        _ => "none".to_string(),
    };
    let (expected, found) = (id(&image), id(&debug));
    if debug.arch != image.arch || expected != found || expected == "none" {
        return Err(Error::DebugMismatch {
            debug: path.to_path_buf(),
            image: opts.path.clone(),
            expected: format!("{expected} ({})", image.arch.name()),
            found: format!("{found} ({})", debug.arch.name()),
        });
    }
    if debug.stripped {
        return Err(Error::NoSymbols {
            path: path.to_path_buf(),
            detail: "the debug file has no symbol table".into(),
        });
    }
    image.functions = debug.functions;
    image.data = debug.data;
    image.boundaries.extend(debug.boundaries);
    image.boundaries.sort_unstable();
    image.boundaries.dedup();
    image.type_info = debug.type_info;
    image.types = debug.types;
    image.type_uses = debug.type_uses;
    image.lines = debug.lines;
    image.stripped = false;
    Ok(image)
}

/// Parse a PE image with its PDB, both held in memory. The result borrows
/// `data`.
///
/// Messages about the PDB name [`ReadOptions::pdb`], or `<image stem>.pdb`
/// when it is `None`. An image that is not PE is refused with
/// [`Error::NotAnImage`] (an ELF image has no PDB: use [`parse`]).
pub fn parse_with_pdb<'data>(
    data: &'data [u8],
    pdb: &[u8],
    opts: &ReadOptions,
) -> Result<Image<'data>> {
    let mut image = match data {
        [b'M', b'Z', ..] => crate::pe::parse(data, opts, crate::pe::Pdb::InMemory(pdb))?,
        [0x7f, b'E', b'L', b'F', ..] => {
            return Err(Error::NotAnImage {
                path: opts.path.clone(),
                detail: "it is an ELF image, which has no PDB; expected a PE image".into(),
            })
        }
        _ => return Err(not_an_image(&opts.path, data)),
    };
    image.canonicalise();
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn image_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let elf = write(dir.path(), "a.so", b"\x7fELF\x02\x01rest");
        assert_eq!(load_file(&elf).unwrap(), b"\x7fELF\x02\x01rest");
        let pe = write(dir.path(), "a.dll", b"MZ");
        assert_eq!(load_file(&pe).unwrap(), b"MZ");
        let text = write(dir.path(), "a.txt", b"hello");
        assert_eq!(
            load_file(&text).unwrap_err().to_string(),
            format!(
                "{}: not a PE or ELF image (it starts with bytes 68 65 6c 6c)",
                text.display()
            )
        );
        let empty = write(dir.path(), "e.so", b"");
        assert!(load_file(&empty)
            .unwrap_err()
            .to_string()
            .ends_with("(the file is empty)"));
        let short = write(dir.path(), "s.so", b"\x7fEL");
        assert!(load_file(&short)
            .unwrap_err()
            .to_string()
            .ends_with("(it starts with bytes 7f 45 4c)"));
        let err = load_file(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[test]
    fn pdb_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let mut msf7 = MSF7_MAGIC.to_vec();
        msf7.extend_from_slice(&[1, 2, 3]);
        let p = write(dir.path(), "a.pdb", &msf7);
        assert_eq!(load_pdb(&p).unwrap(), msf7);
        let p = write(dir.path(), "old.pdb", MSF2_MAGIC);
        assert!(load_pdb(&p).unwrap_err().to_string().contains("MSF 2.00"));
        let p = write(dir.path(), "elf.pdb", b"\x7fELF\x02\x01");
        assert!(load_pdb(&p)
            .unwrap_err()
            .to_string()
            .contains("lacks the MSF 7.00 signature"));
        let p = write(dir.path(), "short.pdb", &MSF7_MAGIC[..10]);
        assert!(load_pdb(&p)
            .unwrap_err()
            .to_string()
            .contains("lacks the MSF 7.00 signature"));
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        // Sparse files: the size check must come before any reading, or the
        // test would read (and hold) gigabytes.
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.so");
        sparse(&big, b"\x7fELF", MAX_IMAGE_SIZE + 1);
        let msg = load_file(&big).unwrap_err().to_string();
        assert!(
            msg.contains("over the 4 GiB (4294967296-byte) limit for images"),
            "{msg}"
        );
        let text = dir.path().join("big.txt");
        sparse(&text, b"", 3 << 30);
        let msg = load_file(&text).unwrap_err().to_string();
        assert!(
            msg.ends_with("not a PE or ELF image (it starts with bytes 00 00 00 00)"),
            "{msg}"
        );
        let pdb = dir.path().join("big.pdb");
        sparse(&pdb, MSF7_MAGIC, MAX_PDB_SIZE + 1);
        let msg = load_pdb(&pdb).unwrap_err().to_string();
        assert!(msg.contains("limit for PDBs"), "{msg}");
    }

    /// A sparse file of `len` bytes that starts with `head`.
    fn sparse(path: &Path, head: &[u8], len: u64) {
        use std::io::Write;
        let mut f = File::create(path).unwrap();
        f.write_all(head).unwrap();
        f.set_len(len).unwrap();
    }
}
