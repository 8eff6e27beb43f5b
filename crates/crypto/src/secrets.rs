//! Secrets between enclaves: HPKE (RFC 9180: X25519, HKDF-SHA256, ChaCha20-Poly1305) to seal a
//! secret to an attested ECDH key, and HKDF-SHA256 with labels to derive keys from a master key.

use hpke::{
    Deserializable, Kem as _, OpModeR, OpModeS, Serializable, aead::ChaCha20Poly1305,
    kdf::HkdfSha256, kem::X25519HkdfSha256,
};
use rand_core::CryptoRng;
use thiserror::Error;

/// An x25519 key pair for HPKE, derived from a 32-byte seed (RFC 9180 DeriveKeyPair).
pub struct EcdhKeypair {
    secret: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl EcdhKeypair {
    /// The key pair of a seed; the same seed always gives the same pair.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let (secret, public) = X25519HkdfSha256::derive_keypair(seed);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        EcdhKeypair {
            secret,
            public: bytes,
        }
    }

    /// The public key others seal secrets to.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Opens a secret sealed to this key with the same `info`.
    pub fn open(
        &self,
        info: &[u8],
        encapped: &[u8; 32],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        let encapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(encapped)
            .map_err(|_| SecretError::Malformed)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.secret,
            &encapped,
            info,
            ciphertext,
            &[],
        )
        .map_err(|_| SecretError::Open)
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("not a valid x25519 public key or encapsulated key")]
    Malformed,
    #[error("the ciphertext does not open with this key and context")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Seals `plaintext` to `recipient` under `info`. The `rng` picks the ephemeral key: pass a
/// deterministic one (seeded from a secret) when several enclaves must produce identical bytes.
pub fn seal(
    recipient: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Vec<u8>), SecretError> {
    let recipient = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|_| SecretError::Malformed)?;
    let (encapped, ciphertext) = hpke::single_shot_seal_with_rng::<
        ChaCha20Poly1305,
        HkdfSha256,
        X25519HkdfSha256,
    >(&OpModeS::Base, &recipient, info, plaintext, &[], rng)
    .map_err(|_| SecretError::Seal)?;
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&encapped.to_bytes());
    Ok((bytes, ciphertext))
}

/// Derives a 32-byte key from `secret` with HKDF-SHA256: `label` names the purpose (domain
/// separation), `context` the instance (a cluster id, a contract id, a generation).
pub fn derive_key(secret: &[u8; 32], label: &[u8], context: &[u8]) -> [u8; 32] {
    let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(label), secret);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hkdf.expand(context, &mut out).is_err() {
        unreachable!("HKDF-SHA256 expands 32 bytes");
    }
    out
}

/// A deterministic RNG for sealing, seeded from a secret derivation.
pub fn seeded_rng(seed: [u8; 32]) -> rand_chacha::ChaCha20Rng {
    <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_with_the_right_key_and_context() {
        let alice = EcdhKeypair::from_seed(&[1; 32]);
        let mallory = EcdhKeypair::from_seed(&[2; 32]);
        let (encapped, ciphertext) =
            seal(&alice.public(), b"ctx", b"secret", &mut seeded_rng([9; 32])).unwrap();
        assert_eq!(
            alice.open(b"ctx", &encapped, &ciphertext).unwrap(),
            b"secret"
        );
        assert_eq!(
            alice.open(b"other", &encapped, &ciphertext),
            Err(SecretError::Open)
        );
        assert_eq!(
            mallory.open(b"ctx", &encapped, &ciphertext),
            Err(SecretError::Open)
        );
        let mut tampered = ciphertext.clone();
        tampered[0] ^= 1;
        assert_eq!(
            alice.open(b"ctx", &encapped, &tampered),
            Err(SecretError::Open)
        );
    }

    #[test]
    fn seeded_sealing_is_deterministic() {
        let alice = EcdhKeypair::from_seed(&[1; 32]);
        let a = seal(&alice.public(), b"i", b"m", &mut seeded_rng([3; 32])).unwrap();
        let b = seal(&alice.public(), b"i", b"m", &mut seeded_rng([3; 32])).unwrap();
        let c = seal(&alice.public(), b"i", b"m", &mut seeded_rng([4; 32])).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn derived_keys_differ_by_label_and_context() {
        let master = [7u8; 32];
        let a = derive_key(&master, b"cluster", &1u32.to_be_bytes());
        assert_eq!(a, derive_key(&master, b"cluster", &1u32.to_be_bytes()));
        assert_ne!(a, derive_key(&master, b"cluster", &2u32.to_be_bytes()));
        assert_ne!(a, derive_key(&master, b"contract", &1u32.to_be_bytes()));
    }
}
