//! The authenticated state: an on-disk QMDB (commonware-storage's `qmdb::current::ordered`),
//! updated once per block in O(changes · log n), with inclusion and exclusion proofs against the
//! header's state root.
//!
//! Each state key `k` is stored under the QMDB key `SHA-256(k)` with the entry `(k, value)` as
//! its value, so keys spread evenly over QMDB's compressed index (our keys share long prefixes)
//! and a synced copy still knows its plain keys. A block's writes are one QMDB batch whose commit
//! records the block height; the root is QMDB's canonical root, which commits to the operation
//! log and to which operations are current. So the root changes every block (even an empty one)
//! and depends on history, not on the key set alone.
//!
//! ALPHA: built on commonware's ALPHA `qmdb` and `merkle` APIs, pinned `=2026.10.0`. The root
//! depends on the floor policy, the chunk size, the Merkle family and the batch boundaries: any
//! change of them (or of the pinned version) is a hard fork.

#[cfg(any(test, feature = "mocks"))]
pub mod mocks;
mod proof;
mod store;

pub use proof::{ProofError, StateProof};
pub use store::{Batch, BoxFuture, Entries, StateStore, Store, StoreError, genesis_root, open};

use commonware_cryptography::{Hasher, Sha256};
use phala_types::Digest;

/// The QMDB key of a state key.
pub fn hashed_key(key: &[u8]) -> Digest {
    Sha256::hash(&[key])
}

/// The QMDB value of a state entry: the key's length (u32, big-endian), the key, the value.
pub fn entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(4 + key.len() + value.len());
    entry.extend_from_slice(&(key.len() as u32).to_be_bytes());
    entry.extend_from_slice(key);
    entry.extend_from_slice(value);
    entry
}

/// Splits an entry into its key and value (`None`: not an entry).
pub fn split_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = entry.split_first_chunk::<4>()?;
    let length = u32::from_be_bytes(*length) as usize;
    (rest.len() >= length).then(|| rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_refuse_short_input() {
        let encoded = entry(b"key", b"value");
        assert_eq!(encoded, b"\0\0\0\x03keyvalue");
        assert_eq!(split_entry(&encoded), Some((&b"key"[..], &b"value"[..])));
        assert_eq!(split_entry(b"\0\0\0\x09key"), None);
        assert_eq!(split_entry(b"\0\0"), None);
    }
}
