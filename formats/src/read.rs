//! Reading an image file: format detection and dispatch to the PE or ELF reader.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::Image;

/// Images larger than this are refused before they are read (4 GiB).
pub const MAX_IMAGE_SIZE: u64 = 4 << 30;

/// Options for [`parse`].
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The image's path, used in messages and to find a PDB beside it.
    pub path: PathBuf,
    /// The PDB to use for a PE image. When `None`, the reader looks for
    /// `<image stem>.pdb` beside the image.
    pub pdb: Option<PathBuf>,
}

impl ReadOptions {
    /// Options for the image at `path`, with no explicit PDB.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ReadOptions {
            path: path.into(),
            pdb: None,
        }
    }

    /// Use this PDB for a PE image.
    pub fn with_pdb(mut self, pdb: impl Into<PathBuf>) -> Self {
        self.pdb = Some(pdb.into());
        self
    }
}

/// Read a whole file, refusing files over [`MAX_IMAGE_SIZE`].
pub fn load_file(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    if meta.len() > MAX_IMAGE_SIZE {
        return Err(Error::Malformed {
            path: path.to_path_buf(),
            what: "image",
            detail: format!(
                "file is {} bytes, over the {MAX_IMAGE_SIZE}-byte limit",
                meta.len()
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// SHA-256 of a byte slice.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Parse an image held in memory. The result borrows `data`.
pub fn parse<'data>(data: &'data [u8], opts: &ReadOptions) -> Result<Image<'data>> {
    let mut image = match data {
        [0x7f, b'E', b'L', b'F', ..] => crate::elf::parse(data, opts)?,
        [b'M', b'Z', ..] => crate::pe::parse(data, opts)?,
        [] => {
            return Err(Error::NotAnImage {
                path: opts.path.clone(),
                detail: "the file is empty".into(),
            })
        }
        _ => {
            let n = data.len().min(4);
            let magic: Vec<String> = data[..n].iter().map(|b| format!("{b:02x}")).collect();
            return Err(Error::NotAnImage {
                path: opts.path.clone(),
                detail: format!("it starts with bytes {}", magic.join(" ")),
            });
        }
    };
    image.canonicalise();
    Ok(image)
}
