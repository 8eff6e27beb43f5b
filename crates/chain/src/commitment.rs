//! The authenticated state: every key-value pair is a leaf of commonware's binary Merkle tree,
//! leaves sorted by key, so the root commits to the whole state and depends on nothing else.
//!
//! A value is proven by its leaf's inclusion proof; an absent key by the inclusion proofs of its
//! two neighbours, adjacent in the tree, one sorting before and one after it (or of the first or
//! last leaf alone, or of an empty tree's leaf count). Verification needs only the root.

use crate::{
    merkle::{self, MerkleProof},
    state::{Changes, StateRead},
};
use commonware_cryptography::{Hasher, Sha256};
use commonware_storage::bmt::{Builder, Tree};
use phala_types::Digest;
use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

/// The leaf of one key-value pair: SHA-256 over the length-prefixed key and the value.
pub fn leaf(key: &[u8], value: &[u8]) -> Digest {
    Sha256::hash(&[&(key.len() as u32).to_be_bytes(), key, value])
}

/// One leaf shown in a proof: its position, key, value and inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenLeaf {
    pub position: u32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub proof: MerkleProof,
}

/// A proof of a key's value, or of its absence, against a state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateProof {
    /// Leaves in the tree (bound by the root through every inclusion proof).
    pub leaf_count: u32,
    /// The key's own leaf when present; otherwise its neighbours (zero, one or two).
    pub leaves: Vec<ProvenLeaf>,
}

/// Why a state proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("a leaf's inclusion proof does not match the root")]
    Inclusion,
    #[error("the proof's leaves do not show the key's value or its absence")]
    Shape,
}

impl StateProof {
    /// Checks the proof and returns the key's proven value (`None`: proven absent).
    pub fn verify(&self, root: &Digest, key: &[u8]) -> Result<Option<Vec<u8>>, ProofError> {
        for leaf_ in &self.leaves {
            if leaf_.proof.leaf_count != self.leaf_count
                || !merkle::verify(
                    root,
                    &leaf(&leaf_.key, &leaf_.value),
                    leaf_.position,
                    &leaf_.proof,
                )
            {
                return Err(ProofError::Inclusion);
            }
        }
        let last = self.leaf_count.checked_sub(1);
        match self.leaves.as_slice() {
            [] if self.leaf_count == 0 && *root == merkle::root(&[]) => Ok(None),
            [only] if only.key == key => Ok(Some(only.value.clone())),
            [only] if only.position == 0 && key < only.key.as_slice() => Ok(None),
            [only] if Some(only.position) == last && key > only.key.as_slice() => Ok(None),
            [lower, upper]
                if upper.position == lower.position + 1
                    && lower.key.as_slice() < key
                    && key < upper.key.as_slice() =>
            {
                Ok(None)
            }
            _ => Err(ProofError::Shape),
        }
    }
}

/// The committed state: all key-value pairs with their leaf hashes cached, and the Merkle tree
/// over them built at most once per committed version (on the first root or proof asked of it).
#[derive(Debug, Clone, Default)]
pub struct StateDb {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, Digest)>,
    tree: OnceLock<Arc<Snapshot>>,
}

/// The tree of one committed version, with its keys in leaf order for O(log n) lookups.
#[derive(Debug)]
struct Snapshot {
    keys: Vec<Vec<u8>>,
    tree: Tree<Digest>,
}

impl StateRead for StateDb {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).map(|(value, _)| value.clone())
    }
}

impl StateDb {
    fn snapshot(&self) -> &Arc<Snapshot> {
        self.tree.get_or_init(|| {
            let mut builder = Builder::<Sha256>::new(self.entries.len());
            for (_, leaf) in self.entries.values() {
                builder.add(leaf);
            }
            Arc::new(Snapshot {
                keys: self.entries.keys().cloned().collect(),
                tree: builder.build(),
            })
        })
    }

    /// Applies committed changes (a finalized block's writes).
    pub fn apply(&mut self, changes: &Changes) {
        self.tree = OnceLock::new();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    self.entries
                        .insert(key.clone(), (value.clone(), leaf(key, value)));
                }
                None => {
                    self.entries.remove(key);
                }
            }
        }
    }

    /// The root of the committed state.
    pub fn root(&self) -> Digest {
        self.snapshot().tree.root()
    }

    /// The root the state would have with `changes` applied, without applying them.
    pub fn root_with(&self, changes: &Changes) -> Digest {
        let mut leaves = Vec::with_capacity(self.entries.len() + changes.len());
        let mut committed = self.entries.iter().peekable();
        let mut pending = changes.iter().peekable();
        loop {
            let take_committed = match (committed.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ck, _)), Some((pk, _))) => ck < pk,
            };
            if take_committed {
                let (_, (_, l)) = committed.next().expect("peeked");
                leaves.push(*l);
                continue;
            }
            let (key, value) = pending.next().expect("peeked");
            if committed.peek().is_some_and(|(ck, _)| *ck == key) {
                committed.next();
            }
            if let Some(value) = value {
                leaves.push(leaf(key, value));
            }
        }
        merkle::root(&leaves)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates key-value pairs whose key starts with `prefix`.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.as_slice(), v.as_slice()))
    }

    /// Proves `key`'s value or absence against [`StateDb::root`].
    pub fn prove(&self, key: &[u8]) -> StateProof {
        let snapshot = self.snapshot();
        let count = snapshot.keys.len();
        let shown = |position: usize| {
            let key = &snapshot.keys[position];
            ProvenLeaf {
                position: position as u32,
                key: key.clone(),
                value: self.entries[key].0.clone(),
                proof: snapshot
                    .tree
                    .proof(position as u32)
                    .expect("position in range"),
            }
        };
        let positions: Vec<usize> = match snapshot.keys.binary_search_by(|k| k.as_slice().cmp(key))
        {
            Ok(found) => vec![found],
            Err(_) if count == 0 => vec![],
            Err(0) => vec![0],
            Err(below) if below == count => vec![below - 1],
            Err(below) => vec![below - 1, below],
        };
        StateProof {
            leaf_count: count as u32,
            leaves: positions.into_iter().map(shown).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(keys: &[&str]) -> StateDb {
        let mut db = StateDb::default();
        let changes: Changes = keys
            .iter()
            .map(|k| (k.as_bytes().to_vec(), Some(format!("v-{k}").into_bytes())))
            .collect();
        db.apply(&changes);
        db
    }

    #[test]
    fn proves_values_and_absences() {
        let db = db(&["b", "d", "f"]);
        let root = db.root();
        for key in ["b", "d", "f"] {
            let proof = db.prove(key.as_bytes());
            assert_eq!(
                proof.verify(&root, key.as_bytes()),
                Ok(Some(format!("v-{key}").into_bytes()))
            );
        }
        for key in ["a", "c", "e", "g"] {
            let proof = db.prove(key.as_bytes());
            assert_eq!(
                proof.verify(&root, key.as_bytes()),
                Ok(None),
                "absence of {key}"
            );
        }
        let empty = StateDb::default();
        assert_eq!(empty.prove(b"x").verify(&empty.root(), b"x"), Ok(None));
    }

    #[test]
    fn rejects_proofs_that_lie() {
        let db = db(&["b", "d", "f"]);
        let root = db.root();
        // A presence proof cannot be passed off as another key's value or absence.
        let proof = db.prove(b"d");
        assert_eq!(proof.verify(&root, b"c"), Err(ProofError::Shape));
        // Non-adjacent neighbours cannot hide a key between them.
        let mut gap = db.prove(b"c");
        gap.leaves[1] = db.prove(b"f").leaves[0].clone();
        assert_eq!(gap.verify(&root, b"d"), Err(ProofError::Shape));
        // A changed value breaks inclusion.
        let mut forged = db.prove(b"d");
        forged.leaves[0].value = b"rich".to_vec();
        assert_eq!(forged.verify(&root, b"d"), Err(ProofError::Inclusion));
        // Against another root nothing holds.
        let other = super::tests::db(&["b", "d"]).root();
        assert_eq!(
            db.prove(b"d").verify(&other, b"d"),
            Err(ProofError::Inclusion)
        );
        // An empty-tree claim against a non-empty root fails.
        let empty_claim = StateProof {
            leaf_count: 0,
            leaves: vec![],
        };
        assert_eq!(empty_claim.verify(&root, b"zz"), Err(ProofError::Shape));
    }

    #[test]
    fn speculative_root_equals_applied_root() {
        let mut db = db(&["b", "d", "f"]);
        let mut changes = Changes::new();
        changes.insert(b"a".to_vec(), Some(b"1".to_vec()));
        changes.insert(b"d".to_vec(), None);
        changes.insert(b"f".to_vec(), Some(b"2".to_vec()));
        changes.insert(b"z".to_vec(), Some(b"3".to_vec()));
        let speculative = db.root_with(&changes);
        db.apply(&changes);
        assert_eq!(speculative, db.root());
        assert_eq!(db.len(), 4);
    }
}
