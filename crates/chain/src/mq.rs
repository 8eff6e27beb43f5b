//! The chain side of the message queue.
//!
//! Downward: a module calls [`send`]; the message gets the next sequence of its destination's
//! stream and goes into the block's [`Outbox`], whose root the header commits to. The state
//! records where each stream message lives ([`keys::stream_message`]), so a worker can be
//! proven not only each message but also that none is missing.
//! Upward: a registered origin's signed message is accepted only with the next sequence number.
//! Registry topics are handled by the registry; others are re-published downward to every
//! worker so the origin's peers can read them. An accepted message is consumed even when its
//! handler refuses it: the refusal is recorded ([`keys::refusal`]) and the sequence advances,
//! so a message the chain will never take cannot block its sender's queue.

use crate::{
    BlockContext, TxError,
    config::GenesisConfig,
    module::{Env, Module, Origin},
    state::{Overlay, StateRead},
    weights::{self, Weight},
};
use bytes::Bytes;
use phala_types::{Address, Destination, Digest, DownwardMessage, MqCall, UpwardMessage};
use serde::Serialize;

/// The message queue module. Its one call, [`MqCall::SubmitUpward`], spans modules: the
/// dispatcher checks the origin with the registry, this module accepts the message (origin,
/// sequence, signature), then the module its topic belongs to takes it ([`Module::on_upward`])
/// or it is [`relay`]ed to every worker.
pub struct Mq;

impl Module for Mq {
    const PREFIX: &'static [u8] = b"mq/";
    type Call = MqCall;

    fn genesis<S: StateRead + ?Sized>(state: &mut Overlay<S>, config: &GenesisConfig) {
        for origin in &config.upward_origins {
            register_origin(state, origin);
        }
    }

    fn weight(call: &MqCall) -> Weight {
        match call {
            // A report stores up to 16 events and publishes up to 16 messages.
            MqCall::SubmitUpward(_) => weights::SIGNATURE + weights::writes(40),
        }
    }

    fn dispatch<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        _origin: &Origin,
        call: &MqCall,
    ) -> Result<(), TxError> {
        match call {
            MqCall::SubmitUpward(message) => {
                accept_upward(env.state, env.genesis_hash, message)?;
                env.emit(Event::Accepted {
                    origin: message.origin,
                    sequence: message.sequence,
                    topic: String::from_utf8_lossy(&message.topic).into_owned(),
                });
                Ok(())
            }
        }
    }
}

/// What happened in the message queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// An upward message was accepted (its sequence consumed).
    Accepted {
        origin: Address,
        sequence: u64,
        topic: String,
    },
    /// The module its topic belongs to refused it: nothing it asked for was applied (see
    /// [`keys::refusal`]).
    Refused {
        origin: Address,
        sequence: u64,
        code: String,
    },
}

/// Where the module keeps its data.
pub mod keys {
    use commonware_codec::Encode;
    use phala_types::{Address, Destination};

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
}

/// Topic prefix under which accepted upward messages are re-published downward.
pub const RELAY_TOPIC_PREFIX: &[u8] = b"from/";

/// The downward messages a block produces, in the order they were sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outbox {
    pub messages: Vec<DownwardMessage>,
}

/// Where a stream message is (the height of its block and its index in that block's outbox)
/// and its Merkle leaf, so that a state proof alone proves an old message to a light client
/// that joins a stream late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLocation {
    pub height: u64,
    pub index: u32,
    pub leaf: Digest,
}

impl MessageLocation {
    /// The 44-byte state value: height and index big-endian, then the leaf.
    pub fn encode(&self) -> Vec<u8> {
        [
            self.height.to_be_bytes().as_slice(),
            &self.index.to_be_bytes(),
            self.leaf.as_ref(),
        ]
        .concat()
    }

    /// Reads a state value written by [`MessageLocation::encode`].
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() != 44 {
            return None;
        }
        let height = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let index = u32::from_be_bytes(value.get(8..12)?.try_into().ok()?);
        let leaf: [u8; 32] = value.get(12..)?.try_into().ok()?;
        Some(MessageLocation {
            height,
            index,
            leaf: Digest::from(leaf),
        })
    }
}

/// Appends a message to its destination's stream and to the block's outbox.
pub fn send<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    destination: Destination,
    topic: &[u8],
    payload: Bytes,
) {
    let next_key = keys::stream_next(&destination);
    let sequence = state.get_u64(&next_key).unwrap_or(0);
    state.set(next_key, (sequence + 1).to_be_bytes().to_vec());
    let message = DownwardMessage {
        destination,
        sequence,
        topic: Bytes::copy_from_slice(topic),
        payload,
    };
    let location = MessageLocation {
        height: ctx.height,
        index: outbox.messages.len() as u32,
        leaf: crate::merkle::message_leaf(&message),
    };
    state.set(
        keys::stream_message(&destination, sequence),
        location.encode(),
    );
    outbox.messages.push(message);
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

/// Checks and consumes an upward message: registered origin, valid domain-separated signature,
/// next sequence. The caller then acts on its topic.
pub fn accept_upward<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
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
    Ok(())
}

/// Re-publishes an accepted upward message to every worker as `from/<origin>/<topic>`.
pub fn relay<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    message: &UpwardMessage,
) {
    let mut topic = RELAY_TOPIC_PREFIX.to_vec();
    topic.extend_from_slice(&message.origin.0);
    topic.extend_from_slice(b"/");
    topic.extend_from_slice(&message.topic);
    send(
        state,
        outbox,
        ctx,
        Destination::All,
        &topic,
        message.payload.clone(),
    );
}

/// Longest refusal reason kept in the state.
const MAX_REFUSAL: usize = 256;

/// Records why an accepted upward message was refused: `"<code>: <reason>"` under
/// [`keys::refusal`], for its sender's operator to read.
pub fn record_refusal<S: StateRead + ?Sized>(
    env: &mut Env<'_, '_, S>,
    message: &UpwardMessage,
    error: &TxError,
) {
    let mut text = format!("{}: {error}", error.code()).into_bytes();
    text.truncate(MAX_REFUSAL);
    env.state
        .set(keys::refusal(&message.origin, message.sequence), text);
    env.emit(Event::Refused {
        origin: message.origin,
        sequence: message.sequence,
        code: error.code().to_owned(),
    });
}

/// Why the upward message `sequence` of `origin` was refused, if it was.
pub fn refusal<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    origin: &Address,
    sequence: u64,
) -> Option<String> {
    let bytes = state.get(&keys::refusal(origin, sequence))?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
