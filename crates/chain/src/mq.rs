//! The chain side of the message queue.
//!
//! Downward: any module pushes a [`DownwardMessage`] into the block's [`Outbox`]; the outbox root
//! in the header commits to them so a worker can check each one with a Merkle proof.
//! Upward: a registered origin's signed message is accepted only with the next sequence number,
//! then re-published downward to every worker so the origin's peers can read it.

use crate::{
    TxError,
    state::{Overlay, StateRead, keys},
};
use bytes::Bytes;
use phala_types::{Address, Destination, Digest, DownwardMessage, UpwardMessage};

/// Topic prefix under which accepted upward messages are re-published downward.
pub const RELAY_TOPIC_PREFIX: &[u8] = b"from/";

/// The downward messages a block produces, in the order they were pushed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outbox {
    pub messages: Vec<DownwardMessage>,
}

impl Outbox {
    pub fn push(&mut self, message: DownwardMessage) {
        self.messages.push(message);
    }
}

/// Registers an origin, expecting sequence 0 first; re-registering keeps its sequence.
pub fn register_origin<S: StateRead + ?Sized>(state: &mut Overlay<S>, origin: &Address) {
    let key = keys::origin_sequence(origin);
    if state.get(&key).is_none() {
        state.set(key, 0u64.to_be_bytes().to_vec());
    }
}

/// The next sequence an origin must use, or `None` if it is not registered.
pub fn next_sequence<S: StateRead + ?Sized>(state: &Overlay<S>, origin: &Address) -> Option<u64> {
    state.get_u64(&keys::origin_sequence(origin))
}

/// Accepts an upward message: registered origin, valid domain-separated signature, next sequence.
pub fn accept_upward<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    genesis: &Digest,
    message: &UpwardMessage,
) -> Result<(), TxError> {
    let expected =
        next_sequence(state, &message.origin).ok_or(TxError::UnknownOrigin(message.origin))?;
    if message.sequence != expected {
        return Err(TxError::BadSequence {
            origin: message.origin,
            expected,
            got: message.sequence,
        });
    }
    if !phala_crypto::verify_upward(genesis, message) {
        return Err(TxError::BadOriginSignature);
    }
    state.set(
        keys::origin_sequence(&message.origin),
        (expected + 1).to_be_bytes().to_vec(),
    );
    let mut topic = RELAY_TOPIC_PREFIX.to_vec();
    topic.extend_from_slice(&message.origin.0);
    topic.extend_from_slice(b"/");
    topic.extend_from_slice(&message.topic);
    outbox.push(DownwardMessage {
        destination: Destination::All,
        topic: Bytes::from(topic),
        payload: message.payload.clone(),
    });
    Ok(())
}
