//! Test-only Byzantine behaviour at a validator's network boundary: its outgoing messages on a
//! channel are rewritten or dropped per recipient, while the validator itself runs the honest
//! production code. This is how the simulations make a leader equivocate on block bodies, a
//! peer serve forged bodies on backfill, or a validator withhold its votes.

use bytes::Bytes;
use commonware_actor::{Feedback, Unreliable};
use commonware_codec::{Copying, Decode, DecodeExt, Encode, RangeCfg};
use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::{CheckedSender, LimitedSender, Recipients};
use commonware_runtime::IoBufs;
use phala_types::{Block, SignedTransaction};
use std::{sync::Arc, time::SystemTime};

/// What a recipient gets instead of a message: other bytes, or nothing (`None`).
pub type Rewrite = Arc<dyn Fn(&PublicKey, &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// A sender that passes messages through `rewrite` (when set) before they leave.
#[derive(Clone)]
pub struct Tamper<S> {
    inner: S,
    /// Every other participant, to expand `Recipients::All` into individual deliveries.
    peers: Vec<PublicKey>,
    rewrite: Option<Rewrite>,
}

impl<S> Tamper<S> {
    pub fn new(inner: S, peers: Vec<PublicKey>, rewrite: Option<Rewrite>) -> Self {
        Tamper {
            inner,
            peers,
            rewrite,
        }
    }
}

impl<S: LimitedSender<PublicKey = PublicKey>> LimitedSender for Tamper<S> {
    type PublicKey = PublicKey;
    type Checked<'a>
        = TamperChecked<'a, S>
    where
        Self: 'a;

    fn check(
        &mut self,
        recipients: Recipients<PublicKey>,
    ) -> Result<Self::Checked<'_>, SystemTime> {
        Ok(TamperChecked {
            sender: self,
            recipients,
        })
    }
}

/// A send in progress: the rewrite needs the message, which only arrives at send time.
pub struct TamperChecked<'a, S> {
    sender: &'a mut Tamper<S>,
    recipients: Recipients<PublicKey>,
}

impl<S: LimitedSender<PublicKey = PublicKey>> TamperChecked<'_, S> {
    fn listed(&self) -> Vec<PublicKey> {
        match &self.recipients {
            Recipients::All => self.sender.peers.clone(),
            Recipients::Some(list) => list.clone(),
            Recipients::One(peer) => vec![peer.clone()],
        }
    }
}

impl<S: LimitedSender<PublicKey = PublicKey>> CheckedSender for TamperChecked<'_, S> {
    type PublicKey = PublicKey;

    fn recipients(&self) -> Vec<PublicKey> {
        self.listed()
    }

    fn send(self, message: impl Into<IoBufs> + Send, priority: bool) -> Unreliable<Feedback> {
        let bytes = message.into().coalesce();
        let Some(rewrite) = self.sender.rewrite.clone() else {
            return match self.sender.inner.check(self.recipients) {
                Ok(checked) => checked.send(bytes, priority),
                Err(_) => Unreliable::Rejected,
            };
        };
        // Recipients grouped by the bytes they get.
        let mut groups: Vec<(Vec<u8>, Vec<PublicKey>)> = Vec::new();
        for recipient in self.listed() {
            let Some(out) = rewrite(&recipient, bytes.as_ref()) else {
                continue;
            };
            match groups.iter_mut().find(|(bytes, _)| *bytes == out) {
                Some((_, group)) => group.push(recipient),
                None => groups.push((out, vec![recipient])),
            }
        }
        let mut outcome = Unreliable::Rejected;
        for (out, group) in groups {
            if let Ok(checked) = self.sender.inner.check(Recipients::Some(group)) {
                outcome = checked.send(out, priority);
            }
        }
        outcome
    }
}

/// The same header over another body: the genuine transactions plus `bait`.
pub fn forged_body(block: &Block, bait: &SignedTransaction) -> Vec<u8> {
    let mut transactions = block.transactions.clone();
    transactions.push(bait.clone());
    Block::new(block.header.clone(), transactions)
        .encode()
        .to_vec()
}

/// A leader that equivocates on bodies: `victims` get its blocks with a forged body under the
/// true header, everyone else the true block.
pub fn equivocating_blocks(victims: Vec<PublicKey>, bait: SignedTransaction) -> Rewrite {
    Arc::new(move |recipient, bytes| {
        let forged = victims
            .contains(recipient)
            .then(|| Block::decode(Copying(bytes)).ok())
            .flatten()
            .map(|block| forged_body(&block, &bait));
        Some(forged.unwrap_or_else(|| bytes.to_vec()))
    })
}

/// A backfill peer that answers every block request with a forged body under the true header.
/// A resolver response is `id (u64) ‖ 1 ‖ length-prefixed value`, and the value ends with the
/// encoded block (after a certificate for height and round requests).
pub fn forged_backfill(bait: SignedTransaction) -> Rewrite {
    Arc::new(move |_, bytes| Some(forge_response(bytes, &bait).unwrap_or_else(|| bytes.to_vec())))
}

fn forge_response(bytes: &[u8], bait: &SignedTransaction) -> Option<Vec<u8>> {
    let (head, rest) = (bytes.get(..9)?, bytes.get(9..)?);
    if head[8] != 1 {
        return None;
    }
    let value = Bytes::decode_cfg(Copying(rest), &RangeCfg::new(..)).ok()?;
    // The block is the value's suffix that decodes as one (its root check makes a false match
    // impossible in practice).
    let start = (0..value.len().min(2_048))
        .find(|&offset| Block::decode(Copying(&value[offset..])).is_ok())?;
    let block = Block::decode(Copying(&value[start..])).ok()?;
    let forged = [&value[..start], forged_body(&block, bait).as_slice()].concat();
    Some([head, Bytes::from(forged).encode().as_ref()].concat())
}

/// A validator that never sends anything on the channel (its votes are withheld).
pub fn withhold() -> Rewrite {
    Arc::new(|_, _| None)
}
