//! Blocks: a header that commits to everything (transactions, state, outbox) and the body.

use crate::{Address, SignedTransaction, limits};
use bytes::BufMut;
use commonware_codec::Buf;
use commonware_codec::{EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt, Write};
use commonware_consensus::{Block as ConsensusBlock, BoundedBlock, Heightable, types::Height};
use commonware_cryptography::{Digestible, Hasher, Sha256, sha256::Digest};

/// Everything a light client needs to know about a block; its hash is the block's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub height: u64,
    pub parent: Digest,
    /// Milliseconds since the Unix epoch, never less than the parent's.
    pub timestamp: u64,
    /// Binary Merkle root over the hashes of the body's transactions, in order.
    pub tx_root: Digest,
    /// Root of the authenticated state after this block.
    pub state_root: Digest,
    /// Binary Merkle root over the downward messages this block produced, in order.
    pub outbox_root: Digest,
    /// The consensus epoch (fixed at 0 until committees rotate).
    pub epoch: u64,
    /// The validator that proposed the block; it earns the author's share of fees.
    pub proposer: Address,
}

impl Header {
    /// SHA-256 of the header's encoding: the digest consensus votes on.
    pub fn hash(&self) -> Digest {
        let mut buf = Vec::with_capacity(self.encode_size());
        self.write(&mut buf);
        Sha256::hash(&[&buf])
    }
}

impl Write for Header {
    fn write(&self, buf: &mut impl BufMut) {
        self.height.write(buf);
        self.parent.write(buf);
        self.timestamp.write(buf);
        self.tx_root.write(buf);
        self.state_root.write(buf);
        self.outbox_root.write(buf);
        self.epoch.write(buf);
        self.proposer.write(buf);
    }
}

impl EncodeSize for Header {
    fn encode_size(&self) -> usize {
        8 + 32 + 8 + 32 + 32 + 32 + 8 + 32
    }
}

impl Read for Header {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Header {
            height: u64::read(buf)?,
            parent: Digest::read(buf)?,
            timestamp: u64::read(buf)?,
            tx_root: Digest::read(buf)?,
            state_root: Digest::read(buf)?,
            outbox_root: Digest::read(buf)?,
            epoch: u64::read(buf)?,
            proposer: Address::read(buf)?,
        })
    }
}

/// A header and the transactions it commits to. The digest (the header's hash) and the
/// transactions' hashes are cached because consensus, the mempool and the indexes ask often.
///
/// **Invariant:** a decoded block's transactions hash to its header's `tx_root`: bytes that
/// pair a header with another body do not decode, wherever they come from (a leader, a
/// backfill peer, an upstream node, storage), so nobody can make a node apply a body the
/// header does not commit to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: Header,
    pub transactions: Vec<SignedTransaction>,
    tx_hashes: Vec<Digest>,
    digest: Digest,
}

impl Block {
    /// Seals a header and body into a block. The body is not checked against the header (a
    /// builder computed the roots; tests build wrong ones on purpose): see
    /// [`Block::body_matches_header`].
    pub fn new(header: Header, transactions: Vec<SignedTransaction>) -> Self {
        let digest = header.hash();
        let tx_hashes = transactions.iter().map(SignedTransaction::hash).collect();
        Block {
            header,
            transactions,
            tx_hashes,
            digest,
        }
    }

    /// A builder's block: the header's `tx_root` is set from the body, whose transactions are
    /// hashed once for both.
    pub fn seal(mut header: Header, transactions: Vec<SignedTransaction>) -> Self {
        let tx_hashes: Vec<Digest> = transactions.iter().map(SignedTransaction::hash).collect();
        header.tx_root = crate::merkle::root(&tx_hashes);
        Block {
            digest: header.hash(),
            header,
            transactions,
            tx_hashes,
        }
    }

    /// The hashes of the transactions, in order.
    pub fn tx_hashes(&self) -> &[Digest] {
        &self.tx_hashes
    }

    /// Whether the transactions hash to the header's `tx_root`.
    pub fn body_matches_header(&self) -> bool {
        crate::merkle::root(&self.tx_hashes) == self.header.tx_root
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        self.header.write(buf);
        self.transactions.write(buf);
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        self.header.encode_size() + self.transactions.encode_size()
    }
}

impl Read for Block {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let header = Header::read(buf)?;
        let transactions = Vec::<SignedTransaction>::read_cfg(
            buf,
            &(RangeCfg::new(..=limits::MAX_BLOCK_TXS), ()),
        )?;
        let block = Block::new(header, transactions);
        if !block.body_matches_header() {
            return Err(CodecError::Invalid(
                "Block",
                "the transactions do not hash to the header's tx_root",
            ));
        }
        Ok(block)
    }
}

impl Digestible for Block {
    type Digest = Digest;
    fn digest(&self) -> Digest {
        self.digest
    }
}

impl Heightable for Block {
    fn height(&self) -> Height {
        Height::new(self.header.height)
    }
}

impl ConsensusBlock for Block {
    fn parent(&self) -> Digest {
        self.header.parent
    }
}

impl BoundedBlock for Block {
    fn max_encode_size(_: &()) -> usize {
        limits::MAX_BLOCK_SIZE
    }
}
