//! Proofs of a key's value, or of its absence, against a state root. Verification is pure
//! hashing and needs only the 32-byte root, so light clients (the pRuntime, the CLI) run it.

use super::{entry, hashed_key};
use bytes::BufMut;
use commonware_codec::{
    Buf, Decode as _, Encode as _, EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt as _,
    Write,
};
use commonware_cryptography::Sha256;
use commonware_storage::{
    merkle::{MAX_PROOF_DIGESTS_PER_ELEMENT, mmr},
    qmdb::{
        any::value::VariableEncoding,
        current::ordered::proof::{ExclusionProof, KeyValueProof},
    },
};
use phala_types::{Digest, limits};

/// The Merkle family of the state's operation log.
pub(crate) type Family = mmr::Family;
/// Bytes per chunk of the state's activity bitmap.
pub(crate) const CHUNK: usize = 32;
/// How state values are encoded in the operation log.
pub(crate) type Encoding = VariableEncoding<Vec<u8>>;

/// The largest entry a proof may carry: a value no block could write is refused unread.
pub(crate) const MAX_ENTRY: usize = limits::MAX_BLOCK_SIZE + 4_096;

/// A proof of a key's value, or of its absence, against a state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateProof {
    /// The key's current value and the proof that its entry is the key's active operation.
    Present {
        value: Vec<u8>,
        proof: KeyValueProof<Family, Digest, Digest, [u8; CHUNK]>,
    },
    /// The active entry whose span (up to the next active key) covers the absent key.
    Absent(ExclusionProof<Family, Digest, Encoding, Digest, [u8; CHUNK]>),
}

/// Why a state proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof does not show the key's value under the root")]
    Inclusion,
    #[error("the proof does not show the key's absence under the root")]
    Exclusion,
}

impl StateProof {
    /// Checks the proof and returns the key's proven value (`None`: proven absent).
    pub fn verify(&self, root: &Digest, key: &[u8]) -> Result<Option<Vec<u8>>, ProofError> {
        let hashed = hashed_key(key);
        match self {
            StateProof::Present { value, proof } => proof
                .verify::<Sha256, Encoding>(hashed, entry(key, value), root)
                .then(|| Some(value.clone()))
                .ok_or(ProofError::Inclusion),
            StateProof::Absent(proof) => proof
                .verify::<Sha256>(&hashed, root)
                .then_some(None)
                .ok_or(ProofError::Exclusion),
        }
    }

    /// The value the proof claims for its key (`None`: it claims the key is absent). Trust it
    /// only after [`StateProof::verify`].
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            StateProof::Present { value, .. } => Some(value),
            StateProof::Absent(_) => None,
        }
    }

    /// The proof's canonical bytes (what [`StateProof::decode`] reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// Reads a proof from untrusted bytes, refusing oversized values and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Self::decode_cfg(bytes::Bytes::copy_from_slice(bytes), &())
    }
}

fn value_cfg() -> (RangeCfg<usize>, ()) {
    ((..=MAX_ENTRY).into(), ())
}

impl Write for StateProof {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            StateProof::Present { value, proof } => {
                0u8.write(buf);
                value.write(buf);
                proof.write(buf);
            }
            StateProof::Absent(proof) => {
                1u8.write(buf);
                proof.write(buf);
            }
        }
    }
}

impl EncodeSize for StateProof {
    fn encode_size(&self) -> usize {
        1 + match self {
            StateProof::Present { value, proof } => value.encode_size() + proof.encode_size(),
            StateProof::Absent(proof) => proof.encode_size(),
        }
    }
}

impl Read for StateProof {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => {
                let value = Vec::<u8>::read_cfg(buf, &value_cfg())?;
                let proof = KeyValueProof::read_cfg(buf, &(MAX_PROOF_DIGESTS_PER_ELEMENT, ()))?;
                Ok(StateProof::Present { value, proof })
            }
            1 => {
                let proof = ExclusionProof::read_cfg(
                    buf,
                    &(
                        MAX_PROOF_DIGESTS_PER_ELEMENT,
                        ((), value_cfg()),
                        value_cfg(),
                    ),
                )?;
                Ok(StateProof::Absent(proof))
            }
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}
