//! Block-level Merkle commitments (transaction root, outbox root) on commonware's binary Merkle
//! tree, and the proofs a light client checks against them. They live with the wire types
//! because decoding a block checks its body against the header's `tx_root`.

use crate::{Digest, DownwardMessage, SignedTransaction};
use commonware_codec::Encode;
use commonware_cryptography::{Hasher, Sha256};
use commonware_storage::bmt::{Builder, Proof, Tree as Bmt};

/// A proof that one leaf is at a position under a root.
pub type MerkleProof = Proof<Digest>;

/// Root over the leaves in order (the empty list has a well-defined root too).
pub fn root(leaves: &[Digest]) -> Digest {
    let mut builder = Builder::<Sha256>::new(leaves.len());
    for leaf in leaves {
        builder.add(leaf);
    }
    builder.build().root()
}

/// Proof of leaf `index`, or `None` if out of range. (To prove many leaves of one tree, build
/// a [`Tree`] once.)
pub fn prove(leaves: &[Digest], index: usize) -> Option<MerkleProof> {
    Tree::new(leaves).proof(index)
}

/// A tree built once, so that each proof of one of its leaves costs O(log n), not a rebuild.
#[derive(Clone, Debug)]
pub struct Tree(Bmt<Digest>);

impl Tree {
    pub fn new(leaves: &[Digest]) -> Self {
        let mut builder = Builder::<Sha256>::new(leaves.len());
        for leaf in leaves {
            builder.add(leaf);
        }
        Tree(builder.build())
    }

    /// The tree over a block's outbox.
    pub fn of_outbox(messages: &[DownwardMessage]) -> Self {
        Tree::new(&messages.iter().map(message_leaf).collect::<Vec<_>>())
    }

    pub fn root(&self) -> Digest {
        self.0.root()
    }

    /// Proof of leaf `index`, or `None` if out of range.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        self.0.proof(u32::try_from(index).ok()?).ok()
    }
}

/// Checks that `leaf` is at `index` under `root`.
pub fn verify(root: &Digest, leaf: &Digest, index: u32, proof: &MerkleProof) -> bool {
    proof
        .verify_element_inclusion::<Sha256>(leaf, index, root)
        .is_ok()
}

/// The leaf committing to a downward message.
pub fn message_leaf(message: &DownwardMessage) -> Digest {
    Sha256::hash(&[&message.encode()])
}

/// Root over a block's transactions.
pub fn tx_root(txs: &[SignedTransaction]) -> Digest {
    root(&txs.iter().map(SignedTransaction::hash).collect::<Vec<_>>())
}

/// Root over a block's outbox.
pub fn outbox_root(messages: &[DownwardMessage]) -> Digest {
    root(&messages.iter().map(message_leaf).collect::<Vec<_>>())
}
