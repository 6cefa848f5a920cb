//! Ed25519 keys in standard files: PKCS#8 PEM private keys (as `openssl
//! genpkey -algorithm ed25519` writes them) and SPKI PEM public keys.
//!
//! Key material never appears in a `Debug` form, a message or an error.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hotpatch_formats::package::{create_exclusive, KeyId, Sha256Digest};
use zeroize::Zeroizing;

/// The largest key file read (PEM keys are a few hundred bytes).
const MAX_KEY_FILE: u64 = 64 << 10;

/// Why a key could not be made, read or written. No variant carries key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A private key file is readable or writable by group or others.
    #[error("{}: private key is accessible by group or others (mode {mode:04o}); run `chmod 600` on it", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The text is not an unencrypted Ed25519 PKCS#8 PEM private key.
    #[error(
        "{source_name}: not an Ed25519 private key in PKCS#8 PEM (\"BEGIN PRIVATE KEY\"){hint}"
    )]
    NotPrivateKey {
        /// Where it came from (a path, or `environment variable NAME`).
        source_name: String,
        /// A hint for common mistakes (encrypted key, public key given).
        hint: &'static str,
    },
    /// The text is not an Ed25519 SPKI PEM public key.
    #[error("{source_name}: not an Ed25519 public key in SPKI PEM (\"BEGIN PUBLIC KEY\"){hint}")]
    NotPublicKey {
        /// Where it came from.
        source_name: String,
        /// A hint for common mistakes (private key given).
        hint: &'static str,
    },
    /// The environment variable is unset, empty or not text.
    #[error("environment variable {var} {problem}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A key file would overwrite an existing file.
    #[error("{}: already exists; keygen never overwrites a file", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A key could not be encoded (never expected for Ed25519).
    #[error("cannot encode the key as {0}")]
    Encode(&'static str),
    /// The system's random number generator failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
}

/// An Ed25519 private (signing) key.
pub struct PrivateKey {
    key: SigningKey,
    public: PublicKey,
}

/// An Ed25519 public (verifying) key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    /// Its DER SubjectPublicKeyInfo.
    der: Vec<u8>,
    /// SHA-256 of `der`.
    id: KeyId,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(id {}, secret redacted)", self.key_id())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PrivateKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        PrivateKey::new(SigningKey::from_bytes(&seed))
    }

    fn new(key: SigningKey) -> Result<Self, KeyError> {
        let public = PublicKey::new(key.verifying_key())?;
        Ok(PrivateKey { key, public })
    }

    /// The key with this 32-byte secret seed (RFC 8032). For reproducible
    /// test keys; real keys come from [`PrivateKey::generate`].
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        PrivateKey::new(SigningKey::from_bytes(seed))
    }

    /// Read a PKCS#8 PEM private key (v1, as OpenSSL writes it, or v2 with
    /// the public key). `source_name` names it in errors; the text never
    /// appears in them.
    pub fn from_pkcs8_pem(pem: &str, source_name: &str) -> Result<Self, KeyError> {
        let err = |hint| KeyError::NotPrivateKey {
            source_name: source_name.into(),
            hint,
        };
        match SigningKey::from_pkcs8_pem(pem.trim()) {
            Ok(key) => PrivateKey::new(key),
            Err(_) if pem.contains("ENCRYPTED PRIVATE KEY") => Err(err(
                "; encrypted keys are not supported, decrypt it with `openssl pkey`",
            )),
            Err(_) if pem.contains("PUBLIC KEY") => Err(err("; this is a public key")),
            Err(_) => Err(err("")),
        }
    }

    /// Read a private key file, refusing one that group or others may read
    /// or write (as ssh does).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(|_| KeyError::NotPrivateKey {
                source_name: path.display().to_string(),
                hint: "",
            })?;
        let _ = meta;
        PrivateKey::from_pkcs8_pem(&text, &path.display().to_string())
    }

    /// Read a PKCS#8 PEM private key from an environment variable (a CI
    /// secret).
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let value = match std::env::var(var) {
            Ok(v) => Zeroizing::new(v),
            Err(std::env::VarError::NotPresent) => {
                return Err(KeyError::Env {
                    var: var.into(),
                    problem: "is not set",
                })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(KeyError::Env {
                    var: var.into(),
                    problem: "is not text",
                })
            }
        };
        if value.trim().is_empty() {
            return Err(KeyError::Env {
                var: var.into(),
                problem: "is empty",
            });
        }
        PrivateKey::from_pkcs8_pem(&value, &format!("environment variable {var}"))
    }

    /// The key as PKCS#8 v1 PEM, exactly as `openssl genpkey -algorithm
    /// ed25519` writes one.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let bytes = KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::Encode("PKCS#8 PEM"))
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.public.id
    }

    /// Sign `message` (Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Result<Self, KeyError> {
        let der = key
            .to_public_key_der()
            .map_err(|_| KeyError::Encode("SPKI DER"))?
            .into_vec();
        let id = KeyId(Sha256Digest::of(&der).0);
        Ok(PublicKey { key, der, id })
    }

    /// Read an SPKI PEM public key (`BEGIN PUBLIC KEY`).
    pub fn from_spki_pem(pem: &str, source_name: &str) -> Result<Self, KeyError> {
        let key =
            VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| KeyError::NotPublicKey {
                source_name: source_name.into(),
                hint: if pem.contains("PRIVATE KEY") {
                    "; this is a private key, give its .pub file"
                } else {
                    ""
                },
            })?;
        PublicKey::new(key)
    }

    /// Read an SPKI PEM public key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
            .map_err(|source| KeyError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        PublicKey::from_spki_pem(&text, &path.display().to_string())
    }

    /// The key as SPKI PEM, as `openssl pkey -pubout` writes it.
    pub fn to_spki_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| KeyError::Encode("SPKI PEM"))
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.der
    }

    /// The key id: SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` by this
    /// key (strict: no small-order keys or non-canonical signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// `KEY.pub` for `KEY`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Make a new key pair: `path` gets the PKCS#8 PEM private key (mode 0600,
/// created exclusively) and `path.pub` the SPKI PEM public key. Neither may
/// exist already; on failure, neither is left behind.
pub fn keygen(path: &Path) -> Result<KeyId, KeyError> {
    let public = public_path(path);
    for p in [path, public.as_path()] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(KeyError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    let key = PrivateKey::generate()?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists { path: p }
            } else {
                KeyError::Io { path: p, source }
            }
        }
    };
    let pem = key.to_pkcs8_pem()?;
    let public_pem = key.public_key().to_spki_pem()?;
    create_exclusive(path, pem.as_bytes(), 0o600).map_err(io(path))?;
    if let Err(e) = create_exclusive(&public, public_pem.as_bytes(), 0o644) {
        // We made the private key a moment ago: remove it, leave nothing.
        let _ = std::fs::remove_file(path);
        return Err(io(&public)(e));
    }
    Ok(key.key_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_key_id_is_the_spki_digest() {
        let k = PrivateKey::from_seed(&[7; 32]).unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = PrivateKey::from_pkcs8_pem(&pem, "test").unwrap();
        assert_eq!(back.key_id(), k.key_id());
        let pubpem = k.public_key().to_spki_pem().unwrap();
        assert!(pubpem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let p = PublicKey::from_spki_pem(&pubpem, "test").unwrap();
        assert_eq!(&p, k.public_key());
        // RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }.
        let der = p.spki_der();
        assert_eq!(
            &der[..12],
            &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]
        );
        assert_eq!(der.len(), 44);
        assert_eq!(p.key_id(), KeyId(Sha256Digest::of(der).0));
    }

    #[test]
    fn signatures_verify_strictly() {
        let k = PrivateKey::from_seed(&[1; 32]).unwrap();
        let sig = k.sign(b"message");
        assert!(k.public_key().verify(b"message", &sig));
        assert!(!k.public_key().verify(b"messagf", &sig));
        let other = PrivateKey::from_seed(&[2; 32]).unwrap();
        assert!(!other.public_key().verify(b"message", &sig));
    }

    #[test]
    fn errors_carry_no_key_material() {
        let k = PrivateKey::from_seed(&[3; 32]).unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        // Damage the PEM body.
        let bad = pem.replacen("MC4CAQAw", "MC4CAQAx", 1);
        let err = PrivateKey::from_pkcs8_pem(&bad, "KEY")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "KEY: not an Ed25519 private key in PKCS#8 PEM (\"BEGIN PRIVATE KEY\")"
        );
        assert!(!format!("{k:?}").contains(&pem[28..60]));
        let err =
            PrivateKey::from_pkcs8_pem(&k.public_key().to_spki_pem().unwrap(), "KEY").unwrap_err();
        assert!(err.to_string().ends_with("; this is a public key"));
        let err = PublicKey::from_spki_pem(&pem, "PUB").unwrap_err();
        assert!(err
            .to_string()
            .ends_with("; this is a private key, give its .pub file"));
    }

    #[test]
    fn keygen_writes_both_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("release");
        let id = keygen(&p).unwrap();
        let k = PrivateKey::load(&p).unwrap();
        assert_eq!(k.key_id(), id);
        assert_eq!(PublicKey::load(&public_path(&p)).unwrap().key_id(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let before = std::fs::read(&p).unwrap();
        assert!(matches!(keygen(&p), Err(KeyError::Exists { .. })));
        assert_eq!(std::fs::read(&p).unwrap(), before);
        // Only the .pub exists: refused, and no private key is made.
        let q = dir.path().join("other");
        std::fs::write(public_path(&q), b"x").unwrap();
        assert!(matches!(keygen(&q), Err(KeyError::Exists { .. })));
        assert!(!q.exists());
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        keygen(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = PrivateKey::load(&p).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: private key is accessible by group or others (mode 0640); run `chmod 600` on it", p.display())
        );
    }
}
