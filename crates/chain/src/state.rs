//! The key-value view that modules read and write during a block.
//!
//! Modules never touch storage directly: they read through [`Overlay`], which layers one
//! block's uncommitted writes over a committed [`StateRead`] view. The overlay's change set is
//! what the state commitment applies when the block is executed or finalized.

use std::collections::BTreeMap;

/// A committed state that can be read.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

/// The writes of one or more blocks, in key order; `None` deletes.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A committed state plus pending changes, with an undo log so that a failed transaction
/// can be rolled back in time proportional to its own writes.
pub struct Overlay<'a, S: StateRead + ?Sized> {
    base: &'a S,
    changes: Changes,
    undo: Vec<Undo>,
}

/// One write's key and the change it replaced (`None`: the key had no pending change).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A point to roll an [`Overlay`] back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint(usize);

impl<'a, S: StateRead + ?Sized> Overlay<'a, S> {
    pub fn new(base: &'a S) -> Self {
        Overlay {
            base,
            changes: Changes::new(),
            undo: Vec::new(),
        }
    }

    /// Builds on `changes` already made over `base` (for example the ancestors' unfinalized blocks).
    pub fn with_changes(base: &'a S, changes: Changes) -> Self {
        Overlay {
            base,
            changes,
            undo: Vec::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.changes.get(key) {
            Some(value) => value.clone(),
            None => self.base.get(key),
        }
    }

    pub fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write(key, Some(value));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.write(key, None);
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.changes.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    pub fn get_u64(&self, key: &[u8]) -> Option<u64> {
        self.get(key)
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
    }

    pub fn get_u128(&self, key: &[u8]) -> Option<u128> {
        self.get(key)
            .and_then(|v| v.try_into().ok())
            .map(u128::from_be_bytes)
    }

    /// Returns the change set, consuming the overlay.
    pub fn into_changes(self) -> Changes {
        self.changes
    }

    /// A checkpoint to roll back to if a transaction fails half-way.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.undo.len())
    }

    /// Undoes every write made since `checkpoint`.
    pub fn restore(&mut self, checkpoint: Checkpoint) {
        while self.undo.len() > checkpoint.0 {
            let (key, previous) = self.undo.pop().expect("length checked");
            match previous {
                Some(change) => self.changes.insert(key, change),
                None => self.changes.remove(&key),
            };
        }
    }

    /// Forgets the undo log (after a transaction is kept for good).
    pub fn commit(&mut self) {
        self.undo.clear();
    }
}

impl StateRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

/// Where each module keeps its data: a module prefix, then the item.
pub mod keys {
    use commonware_codec::Encode;
    use phala_types::{Address, Destination};

    /// Prefix of every account record: balances plus [`BURNED`] are the total supply.
    pub const ACCOUNT_PREFIX: &[u8] = b"balances/account/";

    /// An account record (nonce and free balance).
    pub fn account(address: &Address) -> Vec<u8> {
        [ACCOUNT_PREFIX, &address.0].concat()
    }

    /// The last transaction of `address` whose call failed ([`crate::runtime::failure_record`]).
    pub fn last_failure(address: &Address) -> Vec<u8> {
        [b"balances/failure/".as_slice(), &address.0].concat()
    }

    /// PHA burned by fees so far; balances plus this equal the total supply.
    pub const BURNED: &[u8] = b"balances/burned";

    /// The next expected sequence of a registered upward-message origin.
    pub fn origin_sequence(origin: &Address) -> Vec<u8> {
        [b"mq/origin/".as_slice(), &origin.0].concat()
    }

    /// Why upward message `sequence` of `origin` was refused (it was consumed all the same).
    pub fn refusal(origin: &Address, sequence: u64) -> Vec<u8> {
        [
            b"mq/refused/".as_slice(),
            &origin.0,
            &sequence.to_be_bytes(),
        ]
        .concat()
    }

    /// The next sequence of a downward stream.
    pub fn stream_next(destination: &Destination) -> Vec<u8> {
        [b"mq/stream-next/".as_slice(), &destination.encode()].concat()
    }

    /// Where message `sequence` of a downward stream is ([`crate::mq::MessageLocation`]).
    pub fn stream_message(destination: &Destination, sequence: u64) -> Vec<u8> {
        [
            b"mq/stream/".as_slice(),
            &destination.encode(),
            &sequence.to_be_bytes(),
        ]
        .concat()
    }

    /// The chain height and hash of the last applied block.
    pub const HEAD: &[u8] = b"system/head";
}
