//! Sealed files: AEAD (ChaCha20-Poly1305) under a key derived from the TEE's sealing key, so
//! the host sees only ciphertext, and any change to a file is detected. Writes are atomic
//! (temporary file, fsync, rename), so a crash leaves the old or the new version, never half.

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit,
    aead::{Aead, Payload},
};
use std::{fs, io::Write, path::Path};
use thiserror::Error;

const MAGIC: &[u8] = b"PHSEAL1";

/// Why a sealed file could not be read or written.
#[derive(Debug, Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a sealed file of this pRuntime, or was tampered with")]
    Corrupt(String),
}

/// Seals and unseals files under one key; `label` names the file's purpose (bound as AAD).
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    pub fn new(sealing_key: &[u8; 32]) -> Self {
        let key = phala_crypto::secrets::derive_key(sealing_key, b"phala/pruntime/seal/v1", b"");
        Sealer {
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }

    /// A sealer for data bound to a secret other than the TEE's (a contract key), under
    /// `purpose`.
    pub fn for_secret(secret: &[u8; 32], purpose: &[u8]) -> Self {
        let key = phala_crypto::secrets::derive_key(secret, purpose, b"");
        Sealer {
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Encrypts `plaintext` under a fresh nonce: nonce then ciphertext.
    pub fn encrypt(&self, label: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; 12] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: label,
                },
            )
            .ok()?;
        Some([nonce.as_slice(), &ciphertext].concat())
    }

    /// Decrypts what [`Sealer::encrypt`] produced; `None` if it was tampered with.
    pub fn decrypt(&self, label: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        self.cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: label,
                },
            )
            .ok()
    }

    /// Encrypts `plaintext` and replaces `path` atomically.
    pub fn write(&self, path: &Path, label: &[u8], plaintext: &[u8]) -> Result<(), SealError> {
        let io = |source| SealError::Io {
            path: path.display().to_string(),
            source,
        };
        let sealed = self
            .encrypt(label, plaintext)
            .ok_or_else(|| SealError::Corrupt(path.display().to_string()))?;
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(MAGIC).map_err(io)?;
        file.write_all(&sealed).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Reads and decrypts `path`; `Ok(None)` if it does not exist.
    pub fn read(&self, path: &Path, label: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SealError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let corrupt = || SealError::Corrupt(path.display().to_string());
        let body = bytes.strip_prefix(MAGIC).ok_or_else(corrupt)?;
        self.decrypt(label, body).map(Some).ok_or_else(corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_round_trip_and_detect_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sealed");
        let sealer = Sealer::new(&[1; 32]);
        assert!(sealer.read(&path, b"state").unwrap().is_none());
        sealer.write(&path, b"state", b"secret state").unwrap();
        assert_eq!(
            sealer.read(&path, b"state").unwrap().unwrap(),
            b"secret state"
        );
        assert!(!fs::read(&path).unwrap().windows(6).any(|w| w == b"secret"));
        // Another key, another label, or a flipped bit: refused.
        assert!(Sealer::new(&[2; 32]).read(&path, b"state").is_err());
        assert!(sealer.read(&path, b"keys").is_err());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(sealer.read(&path, b"state").is_err());
    }
}
