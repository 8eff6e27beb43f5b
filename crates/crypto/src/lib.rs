//! Keys and signatures of the network, all through commonware's audited ed25519 (batch
//! verification included), each signature domain-separated by a namespace from
//! [`phala_types::namespace`] and bound to one chain by its genesis hash.

pub mod dev;
pub mod secrets;

use commonware_codec::{Copying, DecodeExt, Encode};
use commonware_cryptography::{
    BatchVerifier, Hasher, Sha256, Signer, Verifier,
    ed25519::{PrivateKey, PublicKey, Signature},
};
use phala_types::{
    Address, Digest, SignedRegistration, SignedTransaction, Transaction, UpwardMessage,
    WorkerRegistration, namespace,
};
use std::path::Path;
use thiserror::Error;

pub use commonware_cryptography::BatchEntry;

/// Why a key could not be loaded or used.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {0} is not a valid key file (expected JSON with a 32-byte hex `secret`)")]
    Format(String),
    #[error("{0} is not a valid ed25519 public key")]
    BadPublicKey(Address),
}

/// An account's or origin's signing key.
#[derive(Clone)]
pub struct Keypair {
    secret: PrivateKey,
    address: Address,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    address: Address,
    secret: String,
}

impl Keypair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::from_secret(seed)
    }

    /// The key with this 32-byte ed25519 secret seed.
    pub fn from_secret(seed: [u8; 32]) -> Self {
        // A 32-byte ed25519 seed is always a valid private key, so decoding cannot fail.
        let secret =
            PrivateKey::decode(Copying(&seed[..])).expect("32 bytes are a valid ed25519 seed");
        let address = Address(public_bytes(&secret.public_key()));
        Keypair { secret, address }
    }

    /// The well-known key of a development account such as `alice`. Never use on a real chain.
    pub fn dev(name: &str) -> Self {
        let seed = Sha256::hash(&[format!("phala-dev-account/{name}").as_bytes()]);
        Self::from_secret(seed.0)
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs `message` under `namespace`.
    pub fn sign(&self, namespace: &[u8], message: &[u8]) -> [u8; 64] {
        signature_bytes(&self.secret.sign(namespace, message))
    }

    /// Signs a transaction for the chain with this genesis hash.
    pub fn sign_transaction(&self, genesis: &Digest, tx: Transaction) -> SignedTransaction {
        let signature = self.sign(namespace::TRANSACTION, &transaction_payload(genesis, &tx));
        SignedTransaction { tx, signature }
    }

    /// Fills in the signature of an upward message whose origin is this key.
    pub fn sign_upward(&self, genesis: &Digest, message: &mut UpwardMessage) {
        message.origin = self.address;
        message.signature = self.sign(namespace::UPWARD, &upward_payload(genesis, message));
    }

    /// Signs a worker registration with this (identity) key.
    pub fn sign_registration(
        &self,
        genesis: &Digest,
        registration: WorkerRegistration,
    ) -> SignedRegistration {
        let payload = registration_payload(genesis, &registration);
        SignedRegistration {
            signature: self.sign(namespace::REGISTRATION, &payload),
            registration,
        }
    }

    /// Writes the key to a JSON file readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = KeyFile {
            address: self.address,
            secret: hex::encode(self.secret.encode()),
        };
        let text = serde_json::to_string_pretty(&file).expect("key file serializes");
        std::fs::write(path, text).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        Ok(())
    }

    /// Reads a key written by [`Keypair::save`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let bad = || KeyError::Format(path.display().to_string());
        let file: KeyFile = serde_json::from_str(&text).map_err(|_| bad())?;
        let seed: [u8; 32] = hex::decode(&file.secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let key = Self::from_secret(seed);
        if key.address != file.address {
            return Err(bad());
        }
        Ok(key)
    }

    /// The underlying engine key (validators use it as their p2p and consensus identity).
    pub fn private_key(&self) -> &PrivateKey {
        &self.secret
    }
}

/// The message an account signs for a transaction: the genesis hash, then the encoding.
pub fn transaction_payload(genesis: &Digest, tx: &Transaction) -> Vec<u8> {
    let mut payload = genesis.0.to_vec();
    payload.extend_from_slice(&tx.encode());
    payload
}

/// The message an origin signs for an upward message: the genesis hash, then its fields.
pub fn upward_payload(genesis: &Digest, message: &UpwardMessage) -> Vec<u8> {
    let mut payload = genesis.0.to_vec();
    payload.extend_from_slice(&message.signing_payload());
    payload
}

/// The ed25519 public key behind an address, if it is a valid curve point.
pub fn public_key(address: &Address) -> Result<PublicKey, KeyError> {
    PublicKey::decode(Copying(&address.0[..])).map_err(|_| KeyError::BadPublicKey(*address))
}

/// Checks one signature by `address` over `message` under `namespace`.
pub fn verify(address: &Address, namespace: &[u8], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = public_key(address) else {
        return false;
    };
    let Ok(signature) = Signature::decode(Copying(&signature[..])) else {
        return false;
    };
    key.verify(namespace, message, &signature)
}

/// Checks a transaction's signature.
pub fn verify_transaction(genesis: &Digest, stx: &SignedTransaction) -> bool {
    verify(
        &stx.tx.signer,
        namespace::TRANSACTION,
        &transaction_payload(genesis, &stx.tx),
        &stx.signature,
    )
}

/// Checks an upward message's signature by its origin.
pub fn verify_upward(genesis: &Digest, message: &UpwardMessage) -> bool {
    verify(
        &message.origin,
        namespace::UPWARD,
        &upward_payload(genesis, message),
        &message.signature,
    )
}

/// Checks that a registration was signed by the identity key it registers.
pub fn verify_registration(genesis: &Digest, signed: &SignedRegistration) -> bool {
    verify(
        &signed.registration.identity,
        namespace::REGISTRATION,
        &registration_payload(genesis, &signed.registration),
        &signed.signature,
    )
}

/// The bytes an identity key signs for a registration: genesis hash, then the registration.
pub fn registration_payload(genesis: &Digest, registration: &WorkerRegistration) -> Vec<u8> {
    [genesis.as_ref(), &registration.signing_payload()].concat()
}

/// Checks many transactions' signatures at once (several times faster than one by one); `false`
/// if any is invalid, in which case callers fall back to [`verify_transaction`] to find it.
pub fn verify_transactions_batch(genesis: &Digest, txs: &[SignedTransaction]) -> bool {
    // Nothing to check: an empty block has no bad signature (commonware rejects empty batches).
    if txs.is_empty() {
        return true;
    }
    let mut decoded = Vec::with_capacity(txs.len());
    for stx in txs {
        let (Ok(key), Ok(sig)) = (
            public_key(&stx.tx.signer),
            Signature::decode(Copying(&stx.signature[..])),
        ) else {
            return false;
        };
        decoded.push((key, sig, transaction_payload(genesis, &stx.tx)));
    }
    PublicKey::verify_batch(
        &mut commonware_utils::sys_rng(),
        &decoded,
        |_, (key, signature, payload)| BatchEntry {
            public_key: key,
            namespace: namespace::TRANSACTION,
            message: payload,
            signature,
        },
        &commonware_parallel::Sequential,
    )
}

fn public_bytes(key: &PublicKey) -> [u8; 32] {
    key.encode()[..]
        .try_into()
        .expect("ed25519 public keys are 32 bytes")
}

fn signature_bytes(signature: &Signature) -> [u8; 64] {
    signature.encode()[..]
        .try_into()
        .expect("ed25519 signatures are 64 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_types::{BalancesCall, Call, UNIT};

    fn transfer(from: &Keypair, nonce: u64) -> Transaction {
        Transaction {
            signer: from.address(),
            nonce,
            fee: 1,
            expiry: 100,
            call: Call::Balances(BalancesCall::Transfer {
                to: Keypair::dev("bob").address(),
                amount: UNIT,
            }),
        }
    }

    #[test]
    fn signatures_bind_chain_namespace_and_content() {
        let alice = Keypair::dev("alice");
        let genesis = Digest([1; 32]);
        let stx = alice.sign_transaction(&genesis, transfer(&alice, 0));
        assert!(verify_transaction(&genesis, &stx));
        assert!(!verify_transaction(&Digest([2; 32]), &stx), "other chain");
        let mut changed = stx.clone();
        changed.tx.nonce = 1;
        assert!(!verify_transaction(&genesis, &changed), "changed content");
        let payload = transaction_payload(&genesis, &stx.tx);
        assert!(
            !verify(
                &alice.address(),
                namespace::UPWARD,
                &payload,
                &stx.signature
            ),
            "namespace"
        );
    }

    #[test]
    fn batch_verification_finds_a_bad_signature() {
        let alice = Keypair::dev("alice");
        let genesis = Digest([1; 32]);
        let mut txs: Vec<_> = (0..8)
            .map(|n| alice.sign_transaction(&genesis, transfer(&alice, n)))
            .collect();
        assert!(verify_transactions_batch(&genesis, &txs));
        assert!(
            verify_transactions_batch(&genesis, &[]),
            "nothing to reject"
        );
        txs[3].signature[0] ^= 1;
        assert!(!verify_transactions_batch(&genesis, &txs));
    }

    #[test]
    fn key_files_round_trip_and_reject_garbage() {
        let dir = std::env::temp_dir().join(format!("phala-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.json");
        let key = Keypair::generate();
        key.save(&path).unwrap();
        assert_eq!(Keypair::load(&path).unwrap().address(), key.address());
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(Keypair::load(&path), Err(KeyError::Format(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
