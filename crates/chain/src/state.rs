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

/// A committed state seen through the writes of unfinalized ancestors, so that a block executes
/// over its parent's state while only its own writes land in its overlay.
pub struct Pending<'a, S: StateRead + ?Sized> {
    pub base: &'a S,
    pub changes: &'a Changes,
}

impl<S: StateRead + ?Sized> StateRead for Pending<'_, S> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.changes.get(key) {
            Some(value) => value.clone(),
            None => self.base.get(key),
        }
    }
}

impl StateRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}
