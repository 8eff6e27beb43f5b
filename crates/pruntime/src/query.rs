//! Encrypted queries: decrypt a caller-signed request with the contract's key, run the
//! contract's `handle_query` on the state of the last accepted batch, and answer encrypted to
//! the caller with a receipt signed by this worker's identity key.
//!
//! A query never waits for sync and never changes state: the view is an immutable snapshot
//! (contract states are shared, copy-on-write), so queries run in parallel with each other and
//! with sync.

use crate::contracts::{Contracts, Instance};
use phala_api::query::{
    QueryRequest, QueryResponse, SessionQuery, encode_answer, query_info, query_signing_payload,
    request_hash, response_info, session_keys, session_query_hash, session_request_aad,
};
use phala_crypto::{Keypair, secrets::ReplySecret};
use phala_types::{
    Address, QueryReceipt,
    contracts::{ContractId, labels},
};
use phala_vm::{Call, Entry, VmError};
use thiserror::Error;

/// Why a query was not answered. The contract's own refusals are answers, not errors: they come
/// back encrypted with a receipt.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("malformed query: {0}")]
    Malformed(&'static str),
    #[error("this worker does not run contract {0}")]
    UnknownContract(String),
    #[error(
        "this worker is at block {height}, behind the requested {wanted}; ask again shortly or ask another worker"
    )]
    Stale { height: u64, wanted: u64 },
    #[error("the caller's signature is invalid")]
    BadSignature,
    #[error("the query does not decrypt with this contract's key")]
    Undecryptable,
    #[error(
        "this worker is answering {0} queries already; ask again shortly or ask another worker"
    )]
    Busy(usize),
    #[error("no such query session on this worker (unknown or expired); open a new one")]
    UnknownSession,
}

/// A caller's query session: who opened it, for which contract, and the secret its queries'
/// keys derive from.
pub struct Session {
    contract: ContractId,
    caller: Address,
    reply: ReplySecret,
}

/// A request whose signature checked and whose input decrypted.
struct Opened<'a> {
    instance: &'a Instance,
    input: Vec<u8>,
    reply: ReplySecret,
}

/// What queries are answered from.
#[derive(Clone)]
pub struct QueryView {
    contracts: Contracts,
    identity: Keypair,
    height: u64,
    time_ms: u64,
}

impl QueryView {
    /// A view of `contracts` as of block `height` (timestamp `time_ms`).
    pub fn new(contracts: Contracts, identity: Keypair, height: u64, time_ms: u64) -> Self {
        QueryView {
            contracts,
            identity,
            height,
            time_ms,
        }
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    /// Answers one query.
    pub fn answer(&self, request: &QueryRequest) -> Result<QueryResponse, QueryError> {
        let opened = self.open(request)?;
        let hash = request_hash(request);
        self.respond(
            opened.instance,
            &request.caller,
            opened.input,
            &opened.reply,
            hash,
        )
    }

    /// Opens a query session from a signed, encrypted request (its input is ignored): later
    /// queries in it are keyed from the request's reply secret.
    pub fn open_session(&self, request: &QueryRequest) -> Result<([u8; 32], Session), QueryError> {
        let opened = self.open(request)?;
        let session = Session {
            contract: opened.instance.id,
            caller: request.caller,
            reply: opened.reply,
        };
        Ok((request_hash(request), session))
    }

    /// Answers one query of an open session.
    pub fn answer_in_session(
        &self,
        id: &[u8; 32],
        session: &Session,
        query: &SessionQuery,
    ) -> Result<QueryResponse, QueryError> {
        let instance = self.instance(&session.contract, query.min_height)?;
        let ciphertext =
            hex::decode(&query.ciphertext).map_err(|_| QueryError::Malformed("ciphertext"))?;
        let (request_key, response_key) = session_keys(&session.reply, query.counter);
        let aad = session_request_aad(id, query.counter, query.min_height);
        let input = request_key
            .open(&[0; 32], &aad, &ciphertext)
            .map_err(|_| QueryError::Undecryptable)?;
        let hash = session_query_hash(query);
        self.respond(instance, &session.caller, input, &response_key, hash)
    }

    /// The instance a query reads, if this worker runs it and is recent enough.
    fn instance(&self, contract: &ContractId, min_height: u64) -> Result<&Instance, QueryError> {
        let instance = self
            .contracts
            .instances
            .get(contract)
            .ok_or_else(|| QueryError::UnknownContract(hex::encode(contract)))?;
        if self.height < min_height {
            return Err(QueryError::Stale {
                height: self.height,
                wanted: min_height,
            });
        }
        Ok(instance)
    }

    /// Checks a request's signature and decrypts it.
    fn open(&self, request: &QueryRequest) -> Result<Opened<'_>, QueryError> {
        let contract: [u8; 32] = decode_hex(&request.contract, "contract id")?;
        let instance = self.instance(&contract, request.min_height)?;
        let encapped: [u8; 32] = decode_hex(&request.encapped, "encapsulated key")?;
        let ciphertext =
            hex::decode(&request.ciphertext).map_err(|_| QueryError::Malformed("ciphertext"))?;
        let signature: [u8; 64] = decode_hex(&request.signature, "signature")?;
        let payload = query_signing_payload(&contract, &encapped, &ciphertext, request.min_height);
        if !phala_crypto::verify(
            &request.caller,
            labels::QUERY_SIGNATURE,
            &payload,
            &signature,
        ) {
            return Err(QueryError::BadSignature);
        }
        let (input, reply) = instance
            .ecdh()
            .open_request(
                &query_info(&contract, &request.caller),
                &encapped,
                &ciphertext,
            )
            .map_err(|_| QueryError::Undecryptable)?;
        Ok(Opened {
            instance,
            input,
            reply,
        })
    }

    /// Runs the query and seals the answer under `reply` with a signed receipt.
    fn respond(
        &self,
        instance: &Instance,
        caller: &Address,
        input: Vec<u8>,
        reply: &ReplySecret,
        hash: [u8; 32],
    ) -> Result<QueryResponse, QueryError> {
        let answer = self.run(instance, caller, input)?;
        let answer_bytes = encode_answer(&answer);
        let nonce: [u8; 32] = rand::random();
        let sealed = reply.seal(&nonce, &response_info(&hash), &answer_bytes);
        let mut receipt = QueryReceipt {
            contract: instance.id,
            code_hash: instance.code_hash,
            request_hash: hash,
            response_hash: phala_types::contracts::code_hash(&answer_bytes),
            height: self.height,
            state_commitment: instance.commitment,
            worker: self.identity.address(),
            signature: [0; 64],
        };
        receipt.signature = self
            .identity
            .sign(labels::RECEIPT, &receipt.signing_payload());
        Ok(QueryResponse {
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(sealed),
            receipt,
        })
    }

    fn run(
        &self,
        instance: &Instance,
        caller: &Address,
        input: Vec<u8>,
    ) -> Result<Result<Vec<u8>, String>, QueryError> {
        if let Some(reason) = &instance.broken {
            return Ok(Err(format!("the contract cannot run: {reason}")));
        }
        let call = Call {
            entry: Entry::Query,
            contract: instance.id,
            caller: caller.0,
            height: self.height,
            time_ms: self.time_ms,
            input,
            fuel: 0,
            random_seed: Instance::query_seed(),
        };
        // The contract's own refusals and failures are answers; a full VM is not.
        match self
            .contracts
            .vm()
            .call(&instance.code_hash, instance.state.clone(), call)
            .map_err(|failure| failure.error)
        {
            Ok(outcome) => Ok(Ok(outcome.output)),
            Err(VmError::Busy(running)) => Err(QueryError::Busy(running)),
            Err(VmError::Refused(message)) => Ok(Err(message)),
            Err(other) => Ok(Err(other.to_string())),
        }
    }
}

fn decode_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], QueryError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(QueryError::Malformed(what))
}
