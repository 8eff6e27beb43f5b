//! Confidential contracts on the wire: ids, the messages that carry instantiations and
//! encrypted commands to a cluster's workers, the reports workers send back, and the signed
//! query receipts anyone can check.

use crate::Address;
use crate::registry::{hex_bytes, payload_struct};
use bytes::{BufMut, Bytes};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt, Write};
use commonware_cryptography::{Hasher, Sha256};
use serde::{Deserialize, Serialize};

/// A contract's identity: [`contract_id`] of its deployer, code, cluster and salt.
pub type ContractId = [u8; 32];
/// SHA-256 of a contract's code.
pub type CodeHash = [u8; 32];

/// Largest contract code the chain stores.
pub const MAX_CODE: usize = 192 * 1024;
/// Largest plaintext input of `init`, a command or a query.
pub const MAX_INPUT: usize = 32 * 1024;
/// Largest encrypted command or query (the input plus framing and the AEAD tag).
pub const MAX_SEALED: usize = MAX_INPUT + 1024;
/// Most events plus messages in one report.
pub const MAX_REPORT_EMITS: usize = 16;
/// Largest event or message a contract emits.
pub const MAX_EMIT: usize = 4 * 1024;
/// Most bytes of events, message topics and message payloads one call may emit in all.
pub const MAX_EMIT_TOTAL: usize = 16 * 1024;
/// Longest topic of a contract's message (the chain prefixes `contract/<id>/`).
pub const MAX_MESSAGE_TOPIC: usize = 32;
/// Largest encoded [`ContractReport`]: its fixed fields, the two list lengths, a length
/// prefix (at most 3 bytes each, 2 per message) per item, and the emitted bytes.
pub const MAX_REPORT: usize =
    32 + 8 + 32 + 8 + 1 + 8 + 2 * 2 + MAX_REPORT_EMITS * 5 + MAX_EMIT_TOTAL;
/// What each entry of a contract's state counts against its storage quota besides its key and
/// value bytes: the cost of an entry to keep, hash and seal, so that many tiny entries are
/// not free.
pub const STATE_ENTRY_OVERHEAD: u64 = 32;

/// The bytes a state entry counts against the storage quota.
pub fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + STATE_ENTRY_OVERHEAD
}

// What a worker must report always fits one upward message: a report can never be refused
// for its size (and so never jam its worker's queue).
const _: () = assert!(MAX_REPORT <= crate::limits::MAX_PAYLOAD);

/// SHA-256 of contract code: how the chain and the workers name it.
pub fn code_hash(code: &[u8]) -> CodeHash {
    let digest = Sha256::hash(&[code]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Domain labels of contract cryptography.
pub mod labels {
    /// Contract ids.
    pub const CONTRACT_ID: &[u8] = b"phala/contract-id/v1";
    /// HPKE info of an encrypted command (followed by contract, sender and nonce).
    pub const COMMAND: &[u8] = b"phala/contract-command/v1";
    /// HPKE info of an encrypted query (followed by the contract and the caller).
    pub const QUERY: &[u8] = b"phala/contract-query/v1";
    /// Caller signatures over queries.
    pub const QUERY_SIGNATURE: &[u8] = b"phala/contract-query-signature/v1";
    /// HPKE info of a query's encrypted answer (followed by the request hash).
    pub const RESPONSE: &[u8] = b"phala/contract-response/v1";
    /// Worker signatures over query receipts.
    pub const RECEIPT: &[u8] = b"phala/query-receipt/v1";
    /// State commitments.
    pub const STATE: &[u8] = b"phala/contract-state/v1";
}

/// Topics of contract messages.
pub mod topics {
    /// Down to the cluster and the gatekeepers: a contract was instantiated
    /// ([`crate::ContractInstantiated`]).
    pub const INSTANTIATED: &[u8] = b"contract/instantiated";
    /// Down to the cluster: an encrypted command ([`crate::ContractCommand`]).
    pub const COMMAND: &[u8] = b"contract/command";
    /// Up from a gatekeeper: a contract's public key ([`crate::ContractPublicKey`]).
    pub const PUBLISH_KEY: &[u8] = b"gk/publish-contract-key";
    /// Up from a worker: the result of one contract call ([`crate::ContractReport`]).
    pub const REPORT: &[u8] = b"contract/report";
    /// Down to the cluster: a contract's new storage quota ([`crate::ContractQuota`]), in
    /// order with its commands.
    pub const QUOTA: &[u8] = b"contract/quota";
}

/// The id of the contract `deployer` instantiates from `code_hash` on `cluster` with `salt`.
pub fn contract_id(
    deployer: &Address,
    code_hash: &CodeHash,
    cluster: u32,
    salt: &[u8; 32],
) -> ContractId {
    let digest = Sha256::hash(&[
        labels::CONTRACT_ID,
        &deployer.0,
        code_hash,
        &cluster.to_be_bytes(),
        salt,
    ]);
    let mut id = [0u8; 32];
    id.copy_from_slice(digest.as_ref());
    id
}

/// HPKE info of a command: binds the ciphertext to its contract, sender and transaction nonce,
/// so that nobody can resubmit it under another account or another nonce.
pub fn command_info(contract: &ContractId, sender: &Address, nonce: u64) -> Vec<u8> {
    [labels::COMMAND, contract, &sender.0, &nonce.to_be_bytes()].concat()
}

/// Bytes bounded at decoding by `MAX`, so payload structs decode without configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob<const MAX: usize>(pub Bytes);

impl<const MAX: usize> Write for Blob<MAX> {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.write(buf);
    }
}

impl<const MAX: usize> EncodeSize for Blob<MAX> {
    fn encode_size(&self) -> usize {
        self.0.encode_size()
    }
}

impl<const MAX: usize> Read for Blob<MAX> {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Blob(Bytes::read_cfg(buf, &RangeCfg::new(..=MAX))?))
    }
}

impl<const MAX: usize> From<Vec<u8>> for Blob<MAX> {
    fn from(bytes: Vec<u8>) -> Self {
        Blob(Bytes::from(bytes))
    }
}

payload_struct!(
    /// A contract was instantiated: its cluster's workers load the code and run `init`; the
    /// gatekeepers publish its public key.
    ContractInstantiated {
        contract: ContractId,
        code_hash: CodeHash,
        deployer: Address,
        cluster: u32,
        /// The master key generation whose cluster key the contract key derives from.
        generation: u32,
        height: u64,
        timestamp: u64,
        /// The bytes of state (counted by [`entry_bytes`]) the deployer's deposit bought.
        storage_quota: u64,
        /// The (public) init input.
        input: Blob<MAX_INPUT>,
    }
);

payload_struct!(
    /// A contract's storage quota changed: calls from here on in the cluster stream may grow
    /// its state up to `quota` bytes.
    ContractQuota {
        contract: ContractId,
        quota: u64,
    }
);

payload_struct!(
    /// An encrypted command, in the chain order every worker of the cluster follows.
    ContractCommand {
        contract: ContractId,
        /// The command's position in the contract's calls: 1 for the first (0 is `init`).
        index: u64,
        sender: Address,
        nonce: u64,
        gas_limit: u64,
        height: u64,
        timestamp: u64,
        /// HPKE encapsulated key and ciphertext, sealed to the contract's key with
        /// [`command_info`].
        encapped: [u8; 32],
        ciphertext: Blob<MAX_SEALED>,
    }
);

payload_struct!(
    /// A contract's public key (x25519), derived by the gatekeepers from the contract key.
    ContractPublicKey {
        contract: ContractId,
        public_key: [u8; 32],
    }
);

/// What one worker computed for one call of a contract (0 = `init`, n = the n-th command):
/// every worker of the cluster must report the same commitment, events and messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractReport {
    pub contract: ContractId,
    pub index: u64,
    /// [`labels::STATE`] commitment of the contract's state after the call.
    pub commitment: [u8; 32],
    pub gas_used: u64,
    pub succeeded: bool,
    /// The state's size after the call, counted by [`entry_bytes`].
    pub state_bytes: u64,
    pub events: Vec<Bytes>,
    /// (topic, payload) pairs the chain re-publishes.
    pub messages: Vec<(Bytes, Bytes)>,
}

impl Write for ContractReport {
    fn write(&self, buf: &mut impl BufMut) {
        self.contract.write(buf);
        self.index.write(buf);
        self.commitment.write(buf);
        self.gas_used.write(buf);
        self.succeeded.write(buf);
        self.state_bytes.write(buf);
        self.events.write(buf);
        self.messages.write(buf);
    }
}

impl EncodeSize for ContractReport {
    fn encode_size(&self) -> usize {
        32 + 8 + 32 + 8 + 1 + 8 + self.events.encode_size() + self.messages.encode_size()
    }
}

impl Read for ContractReport {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let emit = RangeCfg::new(..=MAX_EMIT);
        let count = RangeCfg::new(..=MAX_REPORT_EMITS);
        let topic = RangeCfg::new(..=MAX_MESSAGE_TOPIC);
        Ok(ContractReport {
            contract: ReadExt::read(buf)?,
            index: ReadExt::read(buf)?,
            commitment: ReadExt::read(buf)?,
            gas_used: ReadExt::read(buf)?,
            succeeded: ReadExt::read(buf)?,
            state_bytes: ReadExt::read(buf)?,
            events: Vec::<Bytes>::read_cfg(buf, &(count, emit))?,
            messages: Vec::<(Bytes, Bytes)>::read_cfg(buf, &(count, (topic, emit)))?,
        })
    }
}

payload_struct!(
    /// What the chain knows of a contract.
    #[derive(Serialize, Deserialize)]
    ContractRecord {
        #[serde(with = "hex_bytes")]
        id: ContractId,
        #[serde(with = "hex_bytes")]
        code_hash: CodeHash,
        deployer: Address,
        cluster: u32,
        generation: u32,
        instantiated: u64,
        /// The contract's x25519 public key once a gatekeeper published it; commands and
        /// queries are encrypted to it.
        #[serde(default, with = "hex_option")]
        public_key: Option<[u8; 32]>,
        /// Commands sent so far (the last command's index).
        commands: u64,
        /// The bytes of state its workers may keep ([`entry_bytes`]).
        storage_quota: u64,
        /// What the deployer has locked in [`crate::system::STORAGE_DEPOSITS`] for the quota.
        #[serde(with = "crate::amount::u128_string")]
        storage_deposit: crate::Balance,
    }
);

payload_struct!(
    /// Another result reported for a call: evidence that a worker of the cluster is faulty.
    #[derive(Serialize, Deserialize)]
    Dispute {
        worker: Address,
        #[serde(with = "hex_bytes")]
        commitment: [u8; 32],
    }
);

payload_struct!(
    /// The first report the chain received for one call of a contract, how many workers
    /// confirmed it, and the first disagreeing report if any.
    #[derive(Serialize, Deserialize)]
    ReportRecord {
        index: u64,
        reporter: Address,
        #[serde(with = "hex_bytes")]
        commitment: [u8; 32],
        gas_used: u64,
        succeeded: bool,
        /// The state's size after the call ([`entry_bytes`]).
        state_bytes: u64,
        height: u64,
        confirmations: u32,
        dispute: Option<Dispute>,
    }
);

/// A worker's signed statement about one query answer: check it with
/// `phala contract verify-receipt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReceipt {
    #[serde(with = "hex_bytes")]
    pub contract: ContractId,
    #[serde(with = "hex_bytes")]
    pub code_hash: CodeHash,
    /// SHA-256 of the encrypted request as sent.
    #[serde(with = "hex_bytes")]
    pub request_hash: [u8; 32],
    /// SHA-256 of the plaintext answer (an `Ok` answer or the refusal message).
    #[serde(with = "hex_bytes")]
    pub response_hash: [u8; 32],
    /// The block the worker's state was at.
    pub height: u64,
    /// The contract's state commitment the answer was computed from.
    #[serde(with = "hex_bytes")]
    pub state_commitment: [u8; 32],
    /// The worker's identity key.
    pub worker: Address,
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
}

impl QueryReceipt {
    /// The bytes the worker signs: every field but the signature, under [`labels::RECEIPT`].
    pub fn signing_payload(&self) -> Vec<u8> {
        [
            labels::RECEIPT,
            &self.contract,
            &self.code_hash,
            &self.request_hash,
            &self.response_hash,
            &self.height.to_be_bytes(),
            &self.state_commitment,
            &self.worker.0,
        ]
        .concat()
    }
}

mod hex_option {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_some(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bytes = hex::decode(text).map_err(D::Error::custom)?;
        Ok(Some(
            bytes
                .try_into()
                .map_err(|_| D::Error::custom("expected 32 bytes"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{UpwardMessage, limits};
    use commonware_codec::{DecodeExt, Encode};

    /// The largest reports a call can produce: every emission counted, the total used up.
    fn largest_reports() -> Vec<ContractReport> {
        let report = |events: Vec<Bytes>, messages: Vec<(Bytes, Bytes)>| ContractReport {
            contract: [1; 32],
            index: u64::MAX,
            commitment: [2; 32],
            gas_used: u64::MAX,
            succeeded: true,
            state_bytes: u64::MAX,
            events,
            messages,
        };
        let per_message = MAX_EMIT_TOTAL / MAX_REPORT_EMITS;
        let topic = Bytes::from(vec![b't'; MAX_MESSAGE_TOPIC]);
        let payload = Bytes::from(vec![b'p'; per_message - MAX_MESSAGE_TOPIC]);
        vec![
            report(
                vec![Bytes::from(vec![b'e'; MAX_EMIT]); MAX_EMIT_TOTAL / MAX_EMIT],
                Vec::new(),
            ),
            report(Vec::new(), vec![(topic, payload); MAX_REPORT_EMITS]),
            report(
                vec![Bytes::from(vec![b'e'; per_message]); MAX_REPORT_EMITS / 2],
                vec![(Bytes::new(), Bytes::from(vec![b'p'; per_message])); MAX_REPORT_EMITS / 2],
            ),
        ]
    }

    #[test]
    fn the_largest_report_fits_one_upward_message() {
        for report in largest_reports() {
            let bytes = report.encode();
            assert!(bytes.len() <= MAX_REPORT, "{} > {MAX_REPORT}", bytes.len());
            assert_eq!(ContractReport::decode(bytes.clone()).unwrap(), report);
            let message = UpwardMessage {
                origin: crate::Address([3; 32]),
                topic: Bytes::from_static(topics::REPORT),
                payload: bytes,
                sequence: u64::MAX,
                signature: [4; 64],
            };
            let encoded = message.encode();
            assert!(encoded.len() <= limits::MAX_TX_SIZE);
            assert_eq!(UpwardMessage::decode(encoded).unwrap(), message);
        }
    }
}

/// Conformance vectors: the exact bytes of the storage-quota encodings, so that a reordered or
/// resized field fails here instead of silently changing what workers sign and the chain hashes.
#[cfg(test)]
mod conformance {
    use super::*;
    use commonware_codec::{DecodeExt, Encode};

    fn check<T: Encode + DecodeExt<()> + PartialEq + std::fmt::Debug>(value: T, hex: &str) {
        let bytes = value.encode();
        assert_eq!(hex::encode(&bytes), hex, "{}", std::any::type_name::<T>());
        assert_eq!(T::decode(bytes).unwrap(), value);
    }

    #[test]
    fn quota_encodings_are_fixed() {
        let ones = "01".repeat(32);
        check(
            ContractQuota {
                contract: [1; 32],
                quota: 0x0102,
            },
            &format!("{ones}0000000000000102"),
        );
        check(
            ContractReport {
                contract: [1; 32],
                index: 5,
                commitment: [2; 32],
                gas_used: 6,
                succeeded: true,
                state_bytes: 7,
                events: vec![Bytes::from_static(b"e")],
                messages: vec![(Bytes::from_static(b"t"), Bytes::from_static(b"p"))],
            },
            &format!(
                "{ones}0000000000000005{}00000000000000060100000000000000070101650101740170",
                "02".repeat(32)
            ),
        );
    }
}
