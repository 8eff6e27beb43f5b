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

/// A header and the transactions it commits to. The digest is cached because consensus asks
/// for it often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: Header,
    pub transactions: Vec<SignedTransaction>,
    digest: Digest,
}

impl Block {
    /// Seals a header and body into a block (the caller computed the header's roots).
    pub fn new(header: Header, transactions: Vec<SignedTransaction>) -> Self {
        let digest = header.hash();
        Block {
            header,
            transactions,
            digest,
        }
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
        Ok(Block::new(header, transactions))
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
