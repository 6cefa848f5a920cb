//! The vectors file: `[[vector]]` entries with `call`, `args` and an
//! optional `expect` table. Other top-level keys are ignored, so a corpus
//! scenario's `expected.toml` is read as it is.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use hotpatch_emulator::Arg;
use serde::Deserialize;

/// The largest vectors file read.
const MAX_FILE: u64 = 16 << 20;
/// The largest buffer argument.
const MAX_BUFFER: usize = 1 << 20;

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    vector: Vec<Vector>,
}

/// One call and what it should return.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// The export to call.
    pub call: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    /// Expected return values: `baseline` and `updated`, or by version
    /// (`v1`, `v2`, ...) as the corpus writes them.
    #[serde(default)]
    pub expect: BTreeMap<String, i64>,
}

/// An argument as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ArgSpec {
    /// An integer.
    Int(i64),
    /// A byte buffer, passed by pointer.
    Hex {
        /// Its bytes in hex.
        hex: String,
    },
}

impl Vector {
    /// The arguments for the VM.
    pub fn args(&self) -> Result<Vec<Arg>> {
        self.args
            .iter()
            .map(|a| match a {
                ArgSpec::Int(i) => Ok(Arg::Int(*i)),
                ArgSpec::Hex { hex } => {
                    let clean: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
                    let bytes = hotpatch_formats::package::digest::from_hex(&clean)
                        .map_err(|e| anyhow!("argument {{ hex = {hex:?} }}: {e}"))?;
                    if bytes.len() > MAX_BUFFER {
                        return Err(anyhow!(
                            "a buffer argument of {} bytes is over the {MAX_BUFFER}-byte limit",
                            bytes.len()
                        ));
                    }
                    Ok(Arg::Bytes(bytes))
                }
            })
            .collect()
    }
}

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| match a {
                ArgSpec::Int(i) => i.to_string(),
                ArgSpec::Hex { hex } if hex.len() > 16 => {
                    format!("<{} bytes>", hex.len() / 2)
                }
                ArgSpec::Hex { hex } => format!("0x{hex}"),
            })
            .collect();
        write!(f, "{}({})", self.call, args.join(", "))
    }
}

/// Read the vectors of `path`.
pub fn load(path: &Path) -> Result<Vec<Vector>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.len() > MAX_FILE {
        return Err(anyhow!(
            "{}: {} bytes is over the {MAX_FILE}-byte limit for a vectors file",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: invalid vectors file: {}",
            path.display(),
            e.message().lines().next().unwrap_or("syntax error")
        )
    })?;
    if file.vector.is_empty() {
        return Err(anyhow!("{}: no [[vector]] entries", path.display()));
    }
    for (i, v) in file.vector.iter().enumerate() {
        v.args()
            .with_context(|| format!("{}: vector {}", path.display(), i.saturating_add(1)))?;
        if v.args.len() > 4 {
            return Err(anyhow!(
                "{}: vector {} ({}) has {} arguments; at most 4 are passed in registers",
                path.display(),
                i.saturating_add(1),
                v.call,
                v.args.len()
            ));
        }
    }
    Ok(file.vector)
}
