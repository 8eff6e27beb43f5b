//! Talking to confidential contracts: sealing commands, building signed encrypted queries,
//! opening answers, and checking receipts. The pRuntime uses the same functions on its side,
//! so both ends agree on every byte.

use phala_crypto::{
    Keypair,
    secrets::{self, ReplySecret},
};
use phala_types::{
    Address, QueryReceipt,
    contracts::{ContractId, command_info, labels},
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Why a contract call could not be built or its answer not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContractCallError {
    #[error("the contract's public key is not a valid x25519 key")]
    BadPublicKey,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("the answer does not decrypt with this query's key")]
    Undecryptable,
    #[error("the receipt does not match this query and answer: {0}")]
    ReceiptMismatch(&'static str),
}

/// `POST /query` on a worker's pRuntime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// Contract id (hex).
    pub contract: String,
    pub caller: Address,
    /// HPKE encapsulated key (hex).
    pub encapped: String,
    /// HPKE ciphertext (hex) of the input; the answer is sealed under a secret exported from
    /// the same HPKE context ([`secrets::seal_request`]).
    pub ciphertext: String,
    /// The worker must have synced at least this block, else it refuses (stale).
    #[serde(default)]
    pub min_height: u64,
    /// The caller's signature (hex) over [`query_signing_payload`].
    pub signature: String,
}

/// What `POST /query` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// The worker's fresh response nonce (hex, 32 bytes), mixed into the answer's key.
    pub nonce: String,
    /// The answer ([`encode_answer`]) sealed with the request's reply secret (hex), with
    /// [`response_info`] as associated data.
    pub ciphertext: String,
    pub receipt: QueryReceipt,
}

/// A contract's answer: its output, or why it refused.
pub type Answer = Result<Vec<u8>, String>;

/// Seals a command's input to the contract's key, bound to its sender and transaction nonce.
pub fn seal_command(
    public_key: &[u8; 32],
    contract: &ContractId,
    sender: &Address,
    nonce: u64,
    input: &[u8],
) -> Result<([u8; 32], Vec<u8>), ContractCallError> {
    let info = command_info(contract, sender, nonce);
    let mut rng = secrets::seeded_rng(rand_seed());
    secrets::seal(public_key, &info, input, &mut rng).map_err(|_| ContractCallError::BadPublicKey)
}

/// HPKE info of a query: binds it to the contract and the caller.
pub fn query_info(contract: &ContractId, caller: &Address) -> Vec<u8> {
    [labels::QUERY, contract, &caller.0].concat()
}

/// What the caller signs: the encrypted request and its freshness bound.
pub fn query_signing_payload(
    contract: &ContractId,
    encapped: &[u8; 32],
    ciphertext: &[u8],
    min_height: u64,
) -> Vec<u8> {
    [
        contract.as_slice(),
        encapped,
        &min_height.to_be_bytes(),
        ciphertext,
    ]
    .concat()
}

/// The hash a receipt names for a request.
pub fn request_hash(request: &QueryRequest) -> [u8; 32] {
    phala_types::contracts::code_hash(
        &[
            request.contract.as_bytes(),
            &request.caller.0,
            request.encapped.as_bytes(),
            request.ciphertext.as_bytes(),
            &request.min_height.to_be_bytes(),
            request.signature.as_bytes(),
        ]
        .concat(),
    )
}

/// The bytes of an answer: 0 then the output, or 1 then the refusal message.
pub fn encode_answer(answer: &Answer) -> Vec<u8> {
    match answer {
        Ok(output) => [&[0u8][..], output].concat(),
        Err(message) => [&[1u8][..], message.as_bytes()].concat(),
    }
}

fn decode_answer(bytes: &[u8]) -> Result<Answer, ContractCallError> {
    match bytes.split_first() {
        Some((0, output)) => Ok(Ok(output.to_vec())),
        Some((1, message)) => Ok(Err(String::from_utf8_lossy(message).into_owned())),
        _ => Err(ContractCallError::Malformed("answer")),
    }
}

/// Associated data of an answer: binds it to the request it answers.
pub fn response_info(request_hash: &[u8; 32]) -> Vec<u8> {
    [labels::RESPONSE, request_hash.as_slice()].concat()
}

/// A query ready to send, and the secret that opens its answer.
pub struct PreparedQuery {
    pub request: QueryRequest,
    reply: ReplySecret,
}

/// Builds a query of `contract` (whose public key is `public_key`) signed by `caller`.
pub fn prepare_query(
    caller: &Keypair,
    contract: &ContractId,
    public_key: &[u8; 32],
    input: &[u8],
    min_height: u64,
) -> Result<PreparedQuery, ContractCallError> {
    let info = query_info(contract, &caller.address());
    let mut rng = secrets::seeded_rng(rand_seed());
    let (encapped, ciphertext, reply) = secrets::seal_request(public_key, &info, input, &mut rng)
        .map_err(|_| ContractCallError::BadPublicKey)?;
    let payload = query_signing_payload(contract, &encapped, &ciphertext, min_height);
    let signature = caller.sign(labels::QUERY_SIGNATURE, &payload);
    Ok(PreparedQuery {
        request: QueryRequest {
            contract: hex::encode(contract),
            caller: caller.address(),
            encapped: hex::encode(encapped),
            ciphertext: hex::encode(ciphertext),
            min_height,
            signature: hex::encode(signature),
        },
        reply,
    })
}

impl PreparedQuery {
    /// Decrypts the answer and checks that the receipt names this request, this answer and
    /// this contract, and is signed by the worker it names. Whether that worker and code are
    /// the chain's is checked by [`crate::receipt`] (`phala contract verify-receipt`).
    pub fn open(&self, response: &QueryResponse) -> Result<Answer, ContractCallError> {
        let hash = request_hash(&self.request);
        open_answer(&self.reply, &hash, &self.request.contract, response)
    }

    /// Turns this query, sent to `POST /session`, into a session of further queries.
    pub fn into_session(self, opened: &SessionOpened) -> Result<QuerySession, ContractCallError> {
        let id = request_hash(&self.request);
        if opened.session != hex::encode(id) {
            return Err(ContractCallError::ReceiptMismatch("session id"));
        }
        Ok(QuerySession {
            id,
            contract: self.request.contract,
            reply: self.reply,
            next: AtomicU64::new(0),
        })
    }
}

/// Opens an answer sealed under `reply` and checks that the receipt names this request, this
/// answer and this contract, and is signed by the worker it names.
fn open_answer(
    reply: &ReplySecret,
    hash: &[u8; 32],
    contract: &str,
    response: &QueryResponse,
) -> Result<Answer, ContractCallError> {
    let nonce: [u8; 32] = hex::decode(&response.nonce)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ContractCallError::Malformed("response nonce"))?;
    let ciphertext = hex::decode(&response.ciphertext)
        .map_err(|_| ContractCallError::Malformed("answer ciphertext"))?;
    let plain = reply
        .open(&nonce, &response_info(hash), &ciphertext)
        .map_err(|_| ContractCallError::Undecryptable)?;
    let receipt = &response.receipt;
    if receipt.request_hash != *hash {
        return Err(ContractCallError::ReceiptMismatch("request hash"));
    }
    if receipt.response_hash != phala_types::contracts::code_hash(&plain) {
        return Err(ContractCallError::ReceiptMismatch("response hash"));
    }
    if hex::encode(receipt.contract) != contract {
        return Err(ContractCallError::ReceiptMismatch("contract"));
    }
    if !receipt_signature_valid(receipt) {
        return Err(ContractCallError::ReceiptMismatch("worker signature"));
    }
    decode_answer(&plain)
}

/// What `POST /session` answers: the session a signed, encrypted [`QueryRequest`] opened (its
/// input is ignored). Queries in a session cost the worker no public-key operation: they are
/// authenticated and encrypted by keys derived from the opening request's reply secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpened {
    /// The session id (hex): the opening request's hash.
    pub session: String,
    /// Seconds the worker keeps the session (a restarted worker forgets it: open another).
    pub expires_in_secs: u64,
}

/// `POST /session/query`: one query in a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionQuery {
    pub session: String,
    /// Never reused within a session: it selects this query's keys.
    pub counter: u64,
    /// The input sealed under the counter's request key (hex).
    pub ciphertext: String,
    #[serde(default)]
    pub min_height: u64,
}

const SESSION_REQUEST: &[u8] = b"phala/session-request/v1";
const SESSION_RESPONSE: &[u8] = b"phala/session-response/v1";
const SESSION_QUERY: &[u8] = b"phala/session-query/v1";

/// The keys of query `counter` in a session: (request, response).
pub fn session_keys(session: &ReplySecret, counter: u64) -> (ReplySecret, ReplySecret) {
    let context = counter.to_be_bytes();
    (
        session.derive(SESSION_REQUEST, &context),
        session.derive(SESSION_RESPONSE, &context),
    )
}

/// Associated data of a session query's input: binds it to its session, counter and height.
pub fn session_request_aad(session: &[u8; 32], counter: u64, min_height: u64) -> Vec<u8> {
    [
        SESSION_QUERY,
        session.as_slice(),
        &counter.to_be_bytes(),
        &min_height.to_be_bytes(),
    ]
    .concat()
}

/// The hash a receipt names for a session query.
pub fn session_query_hash(query: &SessionQuery) -> [u8; 32] {
    phala_types::contracts::code_hash(
        &[
            SESSION_QUERY,
            query.session.as_bytes(),
            &query.counter.to_be_bytes(),
            query.ciphertext.as_bytes(),
            &query.min_height.to_be_bytes(),
        ]
        .concat(),
    )
}

/// A caller's open session with one worker and contract.
pub struct QuerySession {
    pub id: [u8; 32],
    contract: String,
    reply: ReplySecret,
    next: AtomicU64,
}

/// A session query ready to send, and what opens its answer.
pub struct PreparedSessionQuery {
    pub query: SessionQuery,
    contract: String,
    response: ReplySecret,
}

impl QuerySession {
    /// Seals `input` as the session's next query.
    pub fn prepare(&self, input: &[u8], min_height: u64) -> PreparedSessionQuery {
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        let (request, response) = session_keys(&self.reply, counter);
        // Each counter's request key is used once, so a fixed nonce is safe.
        let aad = session_request_aad(&self.id, counter, min_height);
        let ciphertext = request.seal(&[0; 32], &aad, input);
        PreparedSessionQuery {
            query: SessionQuery {
                session: hex::encode(self.id),
                counter,
                ciphertext: hex::encode(ciphertext),
                min_height,
            },
            contract: self.contract.clone(),
            response,
        }
    }
}

impl PreparedSessionQuery {
    /// Decrypts the answer and checks its receipt, as [`PreparedQuery::open`] does.
    pub fn open(&self, response: &QueryResponse) -> Result<Answer, ContractCallError> {
        let hash = session_query_hash(&self.query);
        open_answer(&self.response, &hash, &self.contract, response)
    }
}

/// Whether the receipt carries its worker's valid signature.
pub fn receipt_signature_valid(receipt: &QueryReceipt) -> bool {
    phala_crypto::verify(
        &receipt.worker,
        labels::RECEIPT,
        &receipt.signing_payload(),
        &receipt.signature,
    )
}

fn rand_seed() -> [u8; 32] {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}
