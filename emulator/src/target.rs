//! The VM as a [`Target`] of the applier's engine.

use hotpatch_applier::{Located, Protection, Target, TargetError};
use hotpatch_formats::package::ImageIdentity;
use hotpatch_formats::{Format, Permissions};

use crate::error::Error;
use crate::loader::PAGE;
use crate::vm::Vm;

impl Vm {
    fn target_error(&self, e: Error) -> TargetError {
        let target = Target::describe(self);
        match e {
            Error::Access {
                address,
                len,
                detail,
                ..
            } => TargetError::Access {
                target,
                address,
                len,
                detail,
            },
            Error::NoRoom { size, lo, hi, .. } => TargetError::NoRoom {
                target,
                size,
                lo,
                hi,
            },
            other => TargetError::Other {
                target,
                detail: other.to_string(),
            },
        }
    }
}

impl Target for Vm {
    fn describe(&self) -> String {
        format!("VM ({})", self.image().label)
    }

    /// The VM holds one image: it is found by its file name (ignoring
    /// ASCII case for PE, as Windows does). The identity is the engine's
    /// to check against [`Located::file_sha256`].
    fn locate(&mut self, name: &str, _identity: &ImageIdentity) -> Result<Located, TargetError> {
        let image = self.image();
        let same = match image.format {
            Format::Pe => image.name.eq_ignore_ascii_case(name),
            Format::Elf => image.name == name,
        };
        if !same {
            return Err(TargetError::NotLoaded {
                name: name.to_owned(),
                target: self.describe(),
            });
        }
        Ok(Located {
            base: image.base,
            file_sha256: image.sha256,
            format: image.format,
            arch: image.arch,
            how: format!("loaded by the VM at {:#x} from {}", image.base, image.label),
        })
    }

    fn page_size(&self) -> u64 {
        PAGE
    }

    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), TargetError> {
        self.read_into(address, buf)
            .map_err(|e| self.target_error(e))
    }

    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), TargetError> {
        Vm::write(self, address, bytes).map_err(|e| self.target_error(e))
    }

    fn allocate(&mut self, lo: u64, hi: u64, size: u64) -> Result<u64, TargetError> {
        Vm::allocate(self, lo, hi, size).map_err(|e| self.target_error(e))
    }

    fn free(&mut self, address: u64, size: u64) -> Result<(), TargetError> {
        Vm::free(self, address, size).map_err(|e| self.target_error(e))
    }

    fn protect(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<(), TargetError> {
        let perms = Permissions {
            read: protection.read,
            write: protection.write,
            execute: protection.execute,
        };
        Vm::protect(self, address, size, perms).map_err(|e| self.target_error(e))
    }

    fn flush_code(&mut self, address: u64, len: u64) -> Result<(), TargetError> {
        self.flush(address, len).map_err(|e| self.target_error(e))
    }

    fn load_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(self.states.get(key).cloned())
    }

    fn store_state(&mut self, key: &str, record: Option<&[u8]>) -> Result<(), TargetError> {
        match record {
            Some(r) => {
                self.states.insert(key.to_owned(), r.to_vec());
            }
            None => {
                self.states.remove(key);
            }
        }
        Ok(())
    }
}
