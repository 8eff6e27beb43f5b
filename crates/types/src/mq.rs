//! Messages of the queue between the chain and the secure workers.
//!
//! Downward messages are produced by state transitions and committed by a block's outbox root;
//! upward messages are signed by a registered origin (a worker, gatekeeper or contract) and
//! accepted only in sequence.

use crate::{Address, limits};
use bytes::{BufMut, Bytes};
use commonware_codec::Buf;
use commonware_codec::{EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt, Write};

/// Who a downward message is for. Each destination is one ordered stream.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Destination {
    /// Every worker and gatekeeper.
    All,
    /// The gatekeepers, which hold the master key.
    Gatekeepers,
    /// One worker, by identity key.
    Worker(Address),
    /// One contract, by contract id.
    Contract([u8; 32]),
    /// The workers of one cluster: its contracts' instantiations and commands, in order.
    Cluster(u32),
}

impl Write for Destination {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Destination::All => 0u8.write(buf),
            Destination::Gatekeepers => 1u8.write(buf),
            Destination::Worker(a) => {
                2u8.write(buf);
                a.write(buf);
            }
            Destination::Contract(id) => {
                3u8.write(buf);
                id.write(buf);
            }
            Destination::Cluster(id) => {
                4u8.write(buf);
                id.write(buf);
            }
        }
    }
}

impl EncodeSize for Destination {
    fn encode_size(&self) -> usize {
        match self {
            Destination::All | Destination::Gatekeepers => 1,
            Destination::Worker(_) | Destination::Contract(_) => 33,
            Destination::Cluster(_) => 5,
        }
    }
}

impl Read for Destination {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(Destination::All),
            1 => Ok(Destination::Gatekeepers),
            2 => Ok(Destination::Worker(Address::read(buf)?)),
            3 => Ok(Destination::Contract(<[u8; 32]>::read(buf)?)),
            4 => Ok(Destination::Cluster(u32::read(buf)?)),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

/// A message from the chain to workers, committed by the outbox root of the block that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownwardMessage {
    pub destination: Destination,
    /// Position in the destination's stream (0, 1, 2, ...): a reader detects any gap or repeat.
    pub sequence: u64,
    pub topic: Bytes,
    pub payload: Bytes,
}

impl Write for DownwardMessage {
    fn write(&self, buf: &mut impl BufMut) {
        self.destination.write(buf);
        self.sequence.write(buf);
        self.topic.write(buf);
        self.payload.write(buf);
    }
}

impl EncodeSize for DownwardMessage {
    fn encode_size(&self) -> usize {
        self.destination.encode_size() + 8 + self.topic.encode_size() + self.payload.encode_size()
    }
}

impl Read for DownwardMessage {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(DownwardMessage {
            destination: Destination::read(buf)?,
            sequence: u64::read(buf)?,
            topic: Bytes::read_cfg(buf, &RangeCfg::new(..=limits::MAX_TOPIC))?,
            payload: Bytes::read_cfg(buf, &RangeCfg::new(..=limits::MAX_PAYLOAD))?,
        })
    }
}

/// A message from an origin to the chain. The signature covers every other field under the
/// [`crate::namespace::UPWARD`] domain and the chain's genesis hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpwardMessage {
    pub origin: Address,
    pub topic: Bytes,
    pub payload: Bytes,
    pub sequence: u64,
    pub signature: [u8; 64],
}

impl UpwardMessage {
    /// The bytes the origin signs: everything but the signature.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encode_size());
        self.origin.write(&mut out);
        self.topic.write(&mut out);
        self.payload.write(&mut out);
        self.sequence.write(&mut out);
        out
    }
}

impl Write for UpwardMessage {
    fn write(&self, buf: &mut impl BufMut) {
        self.origin.write(buf);
        self.topic.write(buf);
        self.payload.write(buf);
        self.sequence.write(buf);
        self.signature.write(buf);
    }
}

impl EncodeSize for UpwardMessage {
    fn encode_size(&self) -> usize {
        32 + self.topic.encode_size() + self.payload.encode_size() + 8 + 64
    }
}

impl Read for UpwardMessage {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(UpwardMessage {
            origin: Address::read(buf)?,
            topic: Bytes::read_cfg(buf, &RangeCfg::new(..=limits::MAX_UPWARD_TOPIC))?,
            payload: Bytes::read_cfg(buf, &RangeCfg::new(..=limits::MAX_PAYLOAD))?,
            sequence: u64::read(buf)?,
            signature: <[u8; 64]>::read(buf)?,
        })
    }
}
