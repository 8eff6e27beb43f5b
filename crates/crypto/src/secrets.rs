//! Secrets between enclaves: HPKE (RFC 9180: X25519, HKDF-SHA256, ChaCha20-Poly1305) to seal a
//! secret to an attested ECDH key, and HKDF-SHA256 with labels to derive keys from a master key.
//! Requests that expect an answer ([`seal_request`]) get it sealed under a secret both sides
//! export from the request's HPKE context, as Oblivious HTTP does (RFC 9458 §4.4).

use chacha20poly1305::aead::Aead as _;
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

    /// Opens a request sealed by [`seal_request`] and returns it with the secret to seal the
    /// answer under.
    pub fn open_request(
        &self,
        info: &[u8],
        encapped: &[u8; 32],
        ciphertext: &[u8],
    ) -> Result<(Vec<u8>, ReplySecret), SecretError> {
        let encapped_key = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(encapped)
            .map_err(|_| SecretError::Malformed)?;
        let mut context = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.secret,
            &encapped_key,
            info,
        )
        .map_err(|_| SecretError::Open)?;
        let request = context
            .open(ciphertext, &[])
            .map_err(|_| SecretError::Open)?;
        let mut secret = [0u8; 32];
        context
            .export(REPLY_EXPORT, &mut secret)
            .map_err(|_| SecretError::Open)?;
        let reply = ReplySecret {
            secret,
            encapped: *encapped,
        };
        Ok((request, reply))
    }
}

/// What both ends of a request sealed with [`seal_request`] hold afterwards: the answer is
/// sealed under a key derived from it and a fresh response nonce (RFC 9458 §4.4), so answering
/// costs no public-key operation and only the requester can open the answer.
#[derive(Clone)]
pub struct ReplySecret {
    secret: [u8; 32],
    encapped: [u8; 32],
}

/// The HPKE exporter context of reply secrets.
const REPLY_EXPORT: &[u8] = b"phala/reply/v1";

impl ReplySecret {
    /// Seals an answer; `response_nonce` must be fresh (random) for each answer.
    pub fn seal(&self, response_nonce: &[u8; 32], aad: &[u8], answer: &[u8]) -> Vec<u8> {
        let (cipher, nonce) = self.cipher(response_nonce);
        let payload = chacha20poly1305::aead::Payload { msg: answer, aad };
        // ChaCha20-Poly1305 encryption fails only for messages beyond 256 GiB.
        cipher
            .encrypt(&nonce, payload)
            .unwrap_or_else(|_| unreachable!("answers are far below the AEAD's limit"))
    }

    /// Opens an answer sealed by [`ReplySecret::seal`] with the same nonce and `aad`.
    pub fn open(
        &self,
        response_nonce: &[u8; 32],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        let (cipher, nonce) = self.cipher(response_nonce);
        let payload = chacha20poly1305::aead::Payload { msg: sealed, aad };
        cipher
            .decrypt(&nonce, payload)
            .map_err(|_| SecretError::Open)
    }

    /// A secret derived from this one for `label` and `context`: a query session keys each of
    /// its requests and answers this way, so no two messages share a key and nonce.
    pub fn derive(&self, label: &[u8], context: &[u8]) -> ReplySecret {
        ReplySecret {
            secret: derive_key(&self.secret, label, context),
            encapped: self.encapped,
        }
    }

    fn cipher(
        &self,
        response_nonce: &[u8; 32],
    ) -> (chacha20poly1305::ChaCha20Poly1305, chacha20poly1305::Nonce) {
        use chacha20poly1305::KeyInit as _;
        let salt = [self.encapped.as_slice(), response_nonce].concat();
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &self.secret);
        let (mut key, mut nonce) = ([0u8; 32], [0u8; 12]);
        // Both lengths are far below HKDF-SHA256's 8160-byte limit.
        if hkdf.expand(b"key", &mut key).is_err() || hkdf.expand(b"nonce", &mut nonce).is_err() {
            unreachable!("HKDF-SHA256 expands 44 bytes");
        }
        (
            chacha20poly1305::ChaCha20Poly1305::new(&key.into()),
            nonce.into(),
        )
    }
}

/// Seals a request to `recipient` under `info` and returns (encapsulated key, ciphertext, the
/// secret that opens the answer).
pub fn seal_request(
    recipient: &[u8; 32],
    info: &[u8],
    request: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; 32], Vec<u8>, ReplySecret), SecretError> {
    let recipient = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|_| SecretError::Malformed)?;
    let (encapped, mut context) = hpke::setup_sender_with_rng::<
        ChaCha20Poly1305,
        HkdfSha256,
        X25519HkdfSha256,
    >(&OpModeS::Base, &recipient, info, rng)
    .map_err(|_| SecretError::Seal)?;
    let ciphertext = context.seal(request, &[]).map_err(|_| SecretError::Seal)?;
    let mut secret = [0u8; 32];
    context
        .export(REPLY_EXPORT, &mut secret)
        .map_err(|_| SecretError::Seal)?;
    let mut encapped_bytes = [0u8; 32];
    encapped_bytes.copy_from_slice(&encapped.to_bytes());
    let reply = ReplySecret {
        secret,
        encapped: encapped_bytes,
    };
    Ok((encapped_bytes, ciphertext, reply))
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
    fn only_the_requester_opens_the_answer_and_only_as_sealed() {
        let worker = EcdhKeypair::from_seed(&[1; 32]);
        let (encapped, ciphertext, requester) = seal_request(
            &worker.public(),
            b"ctx",
            b"question",
            &mut seeded_rng([5; 32]),
        )
        .unwrap();
        let (question, reply) = worker.open_request(b"ctx", &encapped, &ciphertext).unwrap();
        assert_eq!(question, b"question");
        assert!(
            worker
                .open_request(b"other", &encapped, &ciphertext)
                .is_err()
        );

        let sealed = reply.seal(&[7; 32], b"aad", b"answer");
        assert_eq!(
            requester.open(&[7; 32], b"aad", &sealed).unwrap(),
            b"answer"
        );
        assert!(
            requester.open(&[8; 32], b"aad", &sealed).is_err(),
            "another nonce"
        );
        assert!(
            requester.open(&[7; 32], b"bad", &sealed).is_err(),
            "another aad"
        );
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(requester.open(&[7; 32], b"aad", &tampered).is_err());
        // The same answer under another nonce is another ciphertext; another request's
        // secret opens nothing.
        assert_ne!(reply.seal(&[8; 32], b"aad", b"answer"), sealed);
        let (_, _, stranger) = seal_request(
            &worker.public(),
            b"ctx",
            b"question",
            &mut seeded_rng([6; 32]),
        )
        .unwrap();
        assert!(stranger.open(&[7; 32], b"aad", &sealed).is_err());
        // Derived secrets open only what was sealed under the same label and context.
        let derived = reply.derive(b"label", b"1").seal(&[7; 32], b"aad", b"x");
        assert!(
            requester
                .derive(b"label", b"1")
                .open(&[7; 32], b"aad", &derived)
                .is_ok()
        );
        assert!(
            requester
                .derive(b"label", b"2")
                .open(&[7; 32], b"aad", &derived)
                .is_err()
        );
        assert!(
            requester
                .derive(b"other", b"1")
                .open(&[7; 32], b"aad", &derived)
                .is_err()
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
