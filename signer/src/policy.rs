//! The trust policy: which keys may sign packages, for which products and
//! when, how many must sign, which keys are revoked, and how long a package
//! may claim to stay valid. Documented in `signer/README.md`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hotpatch_formats::package::{write_atomic, KeyId, Timestamp};
use serde::Deserialize;

use crate::key::{KeyError, PublicKey};

/// The policy file format version.
pub const POLICY_VERSION: u32 = 1;
/// The only role defined so far: may sign release packages.
pub const ROLE_RELEASE: &str = "release";
/// A product pattern that allows every product.
pub const ANY_PRODUCT: &str = "*";
/// The longest validity a policy may allow, in days (ten years).
pub const MAX_VALIDITY_DAYS: u64 = 3653;
/// The largest policy file read.
const MAX_POLICY_FILE: u64 = 4 << 20;

/// A trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    /// The public key.
    pub key: PublicKey,
    /// Its roles (so far only [`ROLE_RELEASE`]).
    pub roles: Vec<String>,
    /// The products it may sign for (or [`ANY_PRODUCT`]).
    pub products: Vec<String>,
    /// It does not count before this instant.
    pub not_before: Option<Timestamp>,
    /// It does not count after this instant.
    pub not_after: Option<Timestamp>,
}

/// A revoked key: its signatures never count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The key's id.
    pub id: KeyId,
    /// Why, for the record and for messages.
    pub reason: String,
}

/// A trust policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    /// How many distinct valid keys must sign.
    pub threshold: u32,
    /// The longest validity (expires − created) a package may claim, in days.
    pub max_validity_days: u64,
    /// The trusted keys (ids unique).
    pub keys: Vec<TrustedKey>,
    /// Revoked key ids (unique).
    pub revoked: Vec<Revocation>,
}

/// Why a policy cannot be read, made or changed. One line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the policy's schema.
    #[error("{source_name}: invalid trust policy: {detail}")]
    Syntax {
        /// The file.
        source_name: String,
        /// The TOML parser's message (first line).
        detail: String,
    },
    /// A rule of the policy is broken.
    #[error("{source_name}: {field}: {detail}")]
    Invalid {
        /// The file.
        source_name: String,
        /// Which entry (`key[2].products`).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A key in it could not be read.
    #[error("{source_name}: {field}: {error}")]
    Key {
        /// The file.
        source_name: String,
        /// Which entry.
        field: String,
        /// The key error.
        error: KeyError,
    },
    /// The file already exists (`trust new` never overwrites a policy).
    #[error("{}: already exists; `trust new` never overwrites a policy", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    threshold: u32,
    max_validity_days: u64,
    #[serde(default)]
    key: Vec<KeyEntry>,
    #[serde(default)]
    revoked: Vec<RevokedEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: Option<String>,
    public_key: Option<String>,
    path: Option<PathBuf>,
    roles: Vec<String>,
    products: Vec<String>,
    not_before: Option<toml::value::Datetime>,
    not_after: Option<toml::value::Datetime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedEntry {
    id: String,
    reason: String,
}

impl TrustPolicy {
    /// A policy trusting `keys` for `products` (empty: any product), with
    /// the release role and no validity window. `name` names it in errors.
    pub fn new(
        name: &str,
        keys: Vec<PublicKey>,
        threshold: u32,
        products: Vec<String>,
        max_validity_days: u64,
    ) -> Result<Self, PolicyError> {
        let products = if products.is_empty() {
            vec![ANY_PRODUCT.to_string()]
        } else {
            products
        };
        let policy = TrustPolicy {
            threshold,
            max_validity_days,
            keys: keys
                .into_iter()
                .map(|key| TrustedKey {
                    key,
                    roles: vec![ROLE_RELEASE.into()],
                    products: products.clone(),
                    not_before: None,
                    not_after: None,
                })
                .collect(),
            revoked: Vec::new(),
        };
        policy.validate(name)?;
        Ok(policy)
    }

    /// Read a policy file; key paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = read_text(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        TrustPolicy::from_toml(&text, base, &path.display().to_string())
    }

    /// Parse policy TOML; `base` is where relative key paths start,
    /// `source_name` names it in errors.
    pub fn from_toml(text: &str, base: &Path, source_name: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                let upto = text.get(..s.start).unwrap_or(text);
                upto.matches('\n').count().saturating_add(1)
            });
            PolicyError::Syntax {
                source_name: source_name.into(),
                detail: match line {
                    Some(l) => format!("line {l}: {}", one_line(e.message())),
                    None => one_line(e.message()),
                },
            }
        })?;
        let invalid = |field: String, detail: String| PolicyError::Invalid {
            source_name: source_name.into(),
            field,
            detail,
        };
        if file.version != POLICY_VERSION {
            return Err(invalid(
                "version".into(),
                format!(
                    "unsupported policy version {} (this tool reads {POLICY_VERSION})",
                    file.version
                ),
            ));
        }
        let mut keys = Vec::with_capacity(file.key.len());
        for (i, k) in file.key.into_iter().enumerate() {
            let field = format!("key[{i}]");
            let key = match (&k.public_key, &k.path) {
                (Some(pem), None) => PublicKey::from_spki_pem(pem, &format!("{field}.public_key")),
                (None, Some(p)) => PublicKey::load(&base.join(p)),
                _ => {
                    return Err(invalid(
                        field,
                        "give exactly one of public_key (inline PEM) and path".into(),
                    ))
                }
            }
            .map_err(|error| PolicyError::Key {
                source_name: source_name.into(),
                field: field.clone(),
                error,
            })?;
            if let Some(id) = &k.id {
                let id =
                    KeyId::parse(id).map_err(|e| invalid(format!("{field}.id"), e.to_string()))?;
                if id != key.key_id() {
                    return Err(invalid(
                        format!("{field}.id"),
                        format!("{id} is not the id of the key given, {}", key.key_id()),
                    ));
                }
            }
            let time = |t: &Option<toml::value::Datetime>, name: &str| {
                t.as_ref()
                    .map(|t| timestamp(t).map_err(|d| invalid(format!("{field}.{name}"), d)))
                    .transpose()
            };
            keys.push(TrustedKey {
                key,
                roles: k.roles,
                products: k.products,
                not_before: time(&k.not_before, "not_before")?,
                not_after: time(&k.not_after, "not_after")?,
            });
        }
        let mut revoked = Vec::with_capacity(file.revoked.len());
        for (i, r) in file.revoked.into_iter().enumerate() {
            let id = KeyId::parse(&r.id)
                .map_err(|e| invalid(format!("revoked[{i}].id"), e.to_string()))?;
            revoked.push(Revocation {
                id,
                reason: r.reason,
            });
        }
        let policy = TrustPolicy {
            threshold: file.threshold,
            max_validity_days: file.max_validity_days,
            keys,
            revoked,
        };
        policy.validate(source_name)?;
        Ok(policy)
    }

    /// Check the rules: threshold 1..=keys, validity 1..=3653 days, roles
    /// known, products valid, windows ordered, ids unique, reasons given.
    pub fn validate(&self, source_name: &str) -> Result<(), PolicyError> {
        let invalid = |field: String, detail: String| PolicyError::Invalid {
            source_name: source_name.into(),
            field,
            detail,
        };
        if self.threshold == 0 {
            return Err(invalid("threshold".into(), "must be at least 1".into()));
        }
        if self.threshold as usize > self.keys.len() {
            return Err(invalid(
                "threshold".into(),
                format!(
                    "{} can never be met by {} keys",
                    self.threshold,
                    self.keys.len()
                ),
            ));
        }
        if !(1..=MAX_VALIDITY_DAYS).contains(&self.max_validity_days) {
            return Err(invalid(
                "max_validity_days".into(),
                format!(
                    "{} is not within 1..={MAX_VALIDITY_DAYS}",
                    self.max_validity_days
                ),
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let field = |f: &str| format!("key[{i}].{f}");
            if !ids.insert(k.key.key_id()) {
                return Err(invalid(
                    format!("key[{i}]"),
                    format!("key {} is listed twice", k.key.key_id()),
                ));
            }
            if k.roles.is_empty() {
                return Err(invalid(field("roles"), "no role given".into()));
            }
            if let Some(r) = k.roles.iter().find(|r| r.as_str() != ROLE_RELEASE) {
                return Err(invalid(
                    field("roles"),
                    format!("unknown role {r:?} (known: {ROLE_RELEASE:?})"),
                ));
            }
            if k.products.is_empty() {
                return Err(invalid(
                    field("products"),
                    format!("no product given (use {ANY_PRODUCT:?} for any)"),
                ));
            }
            if let Some(p) = k
                .products
                .iter()
                .find(|p| p.as_str() != ANY_PRODUCT && !valid_product(p))
            {
                return Err(invalid(
                    field("products"),
                    format!("{p:?} is not a product name or {ANY_PRODUCT:?}"),
                ));
            }
            if let (Some(a), Some(b)) = (k.not_before, k.not_after) {
                if a >= b {
                    return Err(invalid(
                        field("not_after"),
                        format!("{b} is not after not_before {a}"),
                    ));
                }
            }
        }
        let mut revoked = BTreeSet::new();
        for (i, r) in self.revoked.iter().enumerate() {
            if !revoked.insert(r.id) {
                return Err(invalid(
                    format!("revoked[{i}]"),
                    format!("key {} is revoked twice", r.id),
                ));
            }
            if r.reason.trim().is_empty() {
                return Err(invalid(
                    format!("revoked[{i}].reason"),
                    "a revocation needs a reason".into(),
                ));
            }
        }
        Ok(())
    }

    /// The trusted key with this id.
    pub fn key(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key.key_id() == *id)
    }

    /// The revocation of this key id, if any.
    pub fn revocation(&self, id: &KeyId) -> Option<&Revocation> {
        self.revoked.iter().find(|r| r.id == *id)
    }

    /// The policy as TOML, keys inline, with their ids.
    pub fn to_toml(&self) -> Result<String, PolicyError> {
        let mut s = String::new();
        let _ = writeln!(s, "# hotpatch trust policy (see signer/README.md)");
        let _ = writeln!(s, "version = {POLICY_VERSION}");
        let _ = writeln!(s, "# distinct valid keys that must sign a package");
        let _ = writeln!(s, "threshold = {}", self.threshold);
        let _ = writeln!(
            s,
            "# the longest validity (expires - created) a package may claim"
        );
        let _ = writeln!(s, "max_validity_days = {}", self.max_validity_days);
        for k in &self.keys {
            let pem = k.key.to_spki_pem().map_err(|error| PolicyError::Key {
                source_name: "policy".into(),
                field: "key".into(),
                error,
            })?;
            let _ = writeln!(s, "\n[[key]]");
            let _ = writeln!(s, "id = {}", toml_str(&k.key.key_id().to_string()));
            let _ = writeln!(s, "public_key = \"\"\"\n{}\"\"\"", pem);
            let _ = writeln!(s, "roles = {}", toml_list(&k.roles));
            let _ = writeln!(s, "products = {}", toml_list(&k.products));
            if let Some(t) = k.not_before {
                let _ = writeln!(s, "not_before = {t}");
            }
            if let Some(t) = k.not_after {
                let _ = writeln!(s, "not_after = {t}");
            }
        }
        for r in &self.revoked {
            s.push_str(&revocation_toml(r));
        }
        Ok(s)
    }
}

/// Write a new policy file (never overwriting one).
pub fn write_new(path: &Path, policy: &TrustPolicy) -> Result<(), PolicyError> {
    let text = policy.to_toml()?;
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(PolicyError::Exists {
            path: path.to_path_buf(),
        });
    }
    hotpatch_formats::package::create_exclusive(path, text.as_bytes(), 0o644).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PolicyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            PolicyError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Add a revocation to a policy file, keeping everything else in it
/// (comments included): the entry is appended, the result is read back as a
/// policy, and only then written (atomically).
pub fn revoke_in_file(path: &Path, id: KeyId, reason: &str) -> Result<TrustPolicy, PolicyError> {
    let source_name = path.display().to_string();
    let text = read_text(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let policy = TrustPolicy::from_toml(&text, base, &source_name)?;
    if let Some(r) = policy.revocation(&id) {
        return Err(PolicyError::Invalid {
            source_name,
            field: "revoked".into(),
            detail: format!("key {id} is already revoked ({})", r.reason),
        });
    }
    if reason.trim().is_empty() || reason.chars().any(char::is_control) {
        return Err(PolicyError::Invalid {
            source_name,
            field: "revoked".into(),
            detail: "the reason must be one line of text".into(),
        });
    }
    let mut new_text = text;
    if !new_text.ends_with('\n') && !new_text.is_empty() {
        new_text.push('\n');
    }
    new_text.push_str(&revocation_toml(&Revocation {
        id,
        reason: reason.into(),
    }));
    let updated = TrustPolicy::from_toml(&new_text, base, &source_name)?;
    write_atomic(path, new_text.as_bytes(), 0o644).map_err(|source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(updated)
}

fn revocation_toml(r: &Revocation) -> String {
    format!(
        "\n[[revoked]]\nid = {}\nreason = {}\n",
        toml_str(&r.id.to_string()),
        toml_str(&r.reason)
    )
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

fn read_text(path: &Path) -> Result<String, PolicyError> {
    use std::io::Read;
    let io = |source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_POLICY_FILE.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_POLICY_FILE {
        return Err(PolicyError::Invalid {
            source_name: path.display().to_string(),
            field: "file".into(),
            detail: format!("larger than {MAX_POLICY_FILE} bytes"),
        });
    }
    Ok(text)
}

/// A TOML datetime as a timestamp: an offset date-time, or a local date
/// (midnight UTC).
fn timestamp(t: &toml::value::Datetime) -> Result<Timestamp, String> {
    use toml::value::Offset;
    let err = || format!("{t} must be a date-time with an offset (2026-01-01T00:00:00Z) or a date");
    let date = t.date.ok_or_else(err)?;
    let (time, offset_minutes) = match (t.time, t.offset) {
        (None, None) => ((0, 0, 0), 0i64),
        (Some(tm), Some(Offset::Z)) => ((tm.hour, tm.minute, tm.second), 0),
        (Some(tm), Some(Offset::Custom { minutes })) => {
            ((tm.hour, tm.minute, tm.second), i64::from(minutes))
        }
        _ => return Err(err()),
    };
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        date.year, date.month, date.day, time.0, time.1, time.2
    );
    let local = Timestamp::parse(&text).map_err(|e| e.to_string())?;
    let unix = i64::try_from(local.unix())
        .ok()
        .and_then(|u| u.checked_sub(offset_minutes.checked_mul(60)?))
        .and_then(|u| u64::try_from(u).ok())
        .ok_or_else(err)?;
    Timestamp::from_unix(unix).map_err(|e| e.to_string())
}

fn valid_product(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 128
        && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PrivateKey;

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_seed(&[n; 32])
            .unwrap()
            .public_key()
            .clone()
    }

    #[test]
    fn new_policy_round_trips_through_toml() {
        let p = TrustPolicy::new("t", vec![key(1), key(2)], 2, vec!["libfoo".into()], 93).unwrap();
        let text = p.to_toml().unwrap();
        let back = TrustPolicy::from_toml(&text, Path::new("."), "t").unwrap();
        assert_eq!(back, p);
        assert!(text.contains(&format!("id = \"{}\"", key(1).key_id())));
    }

    #[test]
    fn windows_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.pub"), key(3).to_spki_pem().unwrap()).unwrap();
        let text = "version = 1\nthreshold = 1\nmax_validity_days = 30\n\n[[key]]\npath = \"k.pub\"\nroles = [\"release\"]\nproducts = [\"*\"]\nnot_before = 2026-01-01T01:00:00+01:00\nnot_after = 2027-01-01\n";
        let p = TrustPolicy::from_toml(text, dir.path(), "t").unwrap();
        assert_eq!(p.keys[0].key, key(3));
        assert_eq!(
            p.keys[0].not_before,
            Some(Timestamp::parse("2026-01-01T00:00:00Z").unwrap())
        );
        assert_eq!(
            p.keys[0].not_after,
            Some(Timestamp::parse("2027-01-01T00:00:00Z").unwrap())
        );
    }

    #[test]
    fn policy_refusals() {
        let k = key(1).to_spki_pem().unwrap();
        let base = |extra: &str, threshold: u32| {
            format!("version = 1\nthreshold = {threshold}\nmax_validity_days = 30\n\n[[key]]\npublic_key = \"\"\"\n{k}\"\"\"\nroles = [\"release\"]\nproducts = [\"*\"]\n{extra}")
        };
        let err = |t: &str| {
            TrustPolicy::from_toml(t, Path::new("."), "T")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&base("", 2)),
            "T: threshold: 2 can never be met by 1 keys"
        );
        assert_eq!(err(&base("", 0)), "T: threshold: must be at least 1");
        assert!(err(&base("id = \"00\"\n", 1)).starts_with("T: key[0].id: expected 64 hex digits"));
        assert!(err(&base(&format!("id = \"{}\"\n", "ab".repeat(32)), 1))
            .contains("is not the id of the key given"));
        assert_eq!(
            err(&base("", 1).replace("[\"release\"]", "[\"root\"]")),
            "T: key[0].roles: unknown role \"root\" (known: \"release\")"
        );
        let e = err(&base("colour = 1\n", 1));
        assert!(
            e.starts_with(
                "T: invalid trust policy: line 13: unknown field `colour`, expected one of"
            ),
            "{e}"
        );
        assert!(err(&base("not_before = 2026-01-01T00:00:00\n", 1))
            .contains("must be a date-time with an offset"));
        assert!(err(&base(
            "not_before = 2027-01-01\nnot_after = 2026-01-01\n",
            1
        ))
        .contains("is not after not_before"));
        assert!(err(&base("", 1).replace("version = 1", "version = 2"))
            .contains("unsupported policy version 2"));
        assert!(err(&base(
            &format!(
                "\n[[revoked]]\nid = \"{}\"\nreason = \" \"\n",
                key(1).key_id()
            ),
            1
        ))
        .contains("a revocation needs a reason"));
    }

    #[test]
    fn revoke_appends_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        let p = TrustPolicy::new("t", vec![key(1)], 1, vec![], 93).unwrap();
        let text = format!("# keep me\n{}", p.to_toml().unwrap());
        std::fs::write(&path, &text).unwrap();
        let updated = revoke_in_file(&path, key(1).key_id(), "leaked \"in\" CI logs").unwrap();
        assert_eq!(
            updated.revocation(&key(1).key_id()).unwrap().reason,
            "leaked \"in\" CI logs"
        );
        let new_text = std::fs::read_to_string(&path).unwrap();
        assert!(new_text.starts_with(&text));
        let again = revoke_in_file(&path, key(1).key_id(), "again")
            .unwrap_err()
            .to_string();
        assert!(
            again.ends_with("is already revoked (leaked \"in\" CI logs)"),
            "{again}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new_text);
    }
}
