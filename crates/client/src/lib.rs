//! HTTP clients: [`Client`] for a node's JSON-RPC API and [`pruntime::PruntimeClient`] for a
//! pRuntime's. The wire types and the checks that make a client independent of the node's
//! honesty (certificates, state proofs, receipts) live in the I/O-free `phala-api`; this crate
//! fetches what they check.

pub mod contract_ops;
pub mod pruntime;
pub mod receipt;

use commonware_codec::{Encode, EncodeSize};
use jsonrpsee::{
    core::{ClientError, client::ClientT},
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
};
use phala_api::rpc::{
    AccountJson, BlockJson, ChainInfo, ContractInfo, FinalizedHead, HeadersJson, Health,
    OutboxMessageJson, StateValueJson, StateValuesJson, TxStatus, Witness,
};
use phala_api::{TrustedChain, verify_headers, verify_values};
use phala_chain::balances::FeeSchedule;
use phala_crypto::Keypair;
use phala_types::{Address, Digest, SignedTransaction};
use phala_types::{Call, Destination, ReportRecord, Transaction, WorkerRecord};
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the node at {url}: {source}")]
    Unreachable { url: String, source: ClientError },
    /// The node answered with a JSON-RPC error.
    #[error("{message}")]
    Rpc {
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
    },
    #[error("the node's answer is malformed: {0}")]
    Malformed(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The transaction was included, and its fee paid, but its call failed.
    #[error("transaction {hash} failed (its fee was paid): {reason}")]
    TxFailed {
        hash: String,
        code: String,
        reason: String,
    },
    /// The node's answer does not hold up against what the client trusts.
    #[error("the node at {url} lied: {reason}")]
    Lied { url: String, reason: String },
}

/// The error code of a call refused for the connection's request budget (the node's
/// `rpc::code::OVER_BUDGET`).
pub const OVER_BUDGET: i32 = 1003;

/// A connection to one node's RPC endpoint.
pub struct Client {
    url: String,
    http: HttpClient,
}

impl Client {
    /// A client for `url` such as `http://127.0.0.1:9944`.
    pub fn new(url: &str) -> Result<Self, Error> {
        let http = HttpClientBuilder::default()
            .request_timeout(Duration::from_secs(30))
            .max_response_size(phala_api::rpc::MAX_RESPONSE_BYTES)
            .build(url)
            .map_err(|source| Error::Unreachable {
                url: url.into(),
                source,
            })?;
        Ok(Client {
            url: url.into(),
            http,
        })
    }

    /// Calls `method`; a refusal for the connection's request budget is waited out (as long as
    /// the node says, a few times), since it says nothing about the call itself.
    async fn call<R: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: jsonrpsee::core::params::ArrayParams,
    ) -> Result<R, Error> {
        let mut waits = 0;
        loop {
            match self.call_once(method, params.clone()).await {
                Err(Error::Rpc {
                    code: OVER_BUDGET,
                    data,
                    ..
                }) if waits < 10 => {
                    waits += 1;
                    let wait_ms = data
                        .as_ref()
                        .and_then(|d| d["retry_after_ms"].as_u64())
                        .unwrap_or(100)
                        .min(2_000);
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once<R: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: jsonrpsee::core::params::ArrayParams,
    ) -> Result<R, Error> {
        self.http
            .request(method, params)
            .await
            .map_err(|error| match error {
                ClientError::Call(call) => Error::Rpc {
                    code: call.code(),
                    message: call.message().to_string(),
                    data: call.data().and_then(|d| serde_json::from_str(d.get()).ok()),
                },
                ClientError::Transport(_) | ClientError::RestartNeeded(_) => Error::Unreachable {
                    url: self.url.clone(),
                    source: error,
                },
                other => Error::Malformed(other.to_string()),
            })
    }

    pub async fn chain_info(&self) -> Result<ChainInfo, Error> {
        self.call("chain_info", rpc_params![]).await
    }

    pub async fn health(&self) -> Result<Health, Error> {
        self.call("health", rpc_params![]).await
    }

    /// Submits a signed transaction; returns its hash once the node admitted it.
    pub async fn submit(&self, stx: &SignedTransaction) -> Result<Digest, Error> {
        let hash: String = self
            .call("submit_transaction", rpc_params![hex::encode(stx.encode())])
            .await?;
        phala_api::rpc::parse_digest(&hash).map_err(|e| Error::Malformed(e.to_string()))
    }

    pub async fn transaction_status(&self, hash: &Digest) -> Result<TxStatus, Error> {
        self.call("transaction_status", rpc_params![hex::encode(hash)])
            .await
    }

    /// Waits until a transaction is finalized or rejected.
    pub async fn wait_final(&self, hash: &Digest, timeout: Duration) -> Result<TxStatus, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.transaction_status(hash).await?;
            if matches!(
                status,
                TxStatus::Finalized { .. } | TxStatus::Rejected { .. }
            ) {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!("transaction {}", hex::encode(hash))));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn account(&self, address: &Address) -> Result<AccountJson, Error> {
        self.call("account", rpc_params![address.to_string()]).await
    }

    pub async fn state_value(&self, key: &[u8]) -> Result<StateValueJson, Error> {
        self.call("state_value", rpc_params![hex::encode(key)])
            .await
    }

    /// A finalized block by height, or the head when `None`.
    pub async fn block(&self, height: Option<u64>) -> Result<BlockJson, Error> {
        self.call("block", rpc_params![height]).await
    }

    pub async fn finalized_head(&self) -> Result<FinalizedHead, Error> {
        self.call("finalized_head", rpc_params![]).await
    }

    /// Signs `call` as a transaction paying the minimum fee, with the signer's next nonce
    /// unless `nonce` is given, valid for [`EXPIRY_BLOCKS`].
    pub async fn sign_call(
        &self,
        signer: &Keypair,
        call: Call,
        nonce: Option<u64>,
    ) -> Result<SignedTransaction, Error> {
        let info = self.chain_info().await?;
        let genesis = phala_api::rpc::parse_digest(&info.genesis_hash)
            .map_err(|e| Error::Malformed(e.to_string()))?;
        let nonce = match nonce {
            Some(nonce) => nonce,
            None => self.account(&signer.address()).await?.nonce,
        };
        let head = self.health().await?.finalized_height;
        let mut tx = Transaction {
            signer: signer.address(),
            nonce,
            fee: 0,
            expiry: head + EXPIRY_BLOCKS,
            call,
        };
        // The fee depends on the encoded size, which does not depend on the fee (fixed width).
        tx.fee = minimum_fee(&info.fees, &signer.sign_transaction(&genesis, tx.clone()));
        Ok(signer.sign_transaction(&genesis, tx))
    }

    /// Signs, submits and waits for `call` to be finalized; a rejection or a failed call is
    /// an error.
    pub async fn execute(&self, signer: &Keypair, call: Call) -> Result<Digest, Error> {
        let stx = self.sign_call(signer, call, None).await?;
        let hash = self.submit(&stx).await?;
        self.wait_applied(&hash).await?;
        Ok(hash)
    }

    /// Waits until a transaction is finalized with its call applied; returns the height of
    /// its block. A rejection or a failed call is an error.
    pub async fn wait_applied(&self, hash: &Digest) -> Result<u64, Error> {
        match self.wait_final(hash, Duration::from_secs(60)).await? {
            TxStatus::Finalized {
                failed: Some(failure),
                ..
            } => Err(Error::TxFailed {
                hash: hex::encode(hash),
                code: failure.code,
                reason: failure.reason,
            }),
            TxStatus::Finalized { height, .. } => Ok(height),
            TxStatus::Rejected { code, reason } => Err(Error::Rpc {
                code: 1001,
                message: format!("transaction rejected: {reason}"),
                data: Some(serde_json::json!({ "code": code })),
            }),
            other => Err(Error::Malformed(format!(
                "unexpected transaction status {other:?}"
            ))),
        }
    }

    /// Consecutive finalized headers from `from`, ending at a certified one.
    pub async fn headers(&self, from: u64, limit: u64) -> Result<HeadersJson, Error> {
        self.call("headers", rpc_params![from, limit]).await
    }

    /// A queue stream's messages from `from` up to block `to_height`, with proofs.
    pub async fn stream_messages(
        &self,
        destination: Destination,
        from: u64,
        to_height: u64,
    ) -> Result<Vec<OutboxMessageJson>, Error> {
        self.call("stream_messages", rpc_params![destination, from, to_height])
            .await
    }

    /// A certified head with proofs of where each stream's next message is, of `origin`'s
    /// next upward sequence, and of the `backfill` stream messages.
    pub async fn stream_witness(
        &self,
        streams: &[(Destination, u64)],
        origin: Option<Address>,
        backfill: &[(Destination, u64)],
    ) -> Result<Witness, Error> {
        self.call("stream_witness", rpc_params![streams, origin, backfill])
            .await
    }

    /// A contract's record, its latest report and its events.
    pub async fn contract(&self, id: &[u8; 32]) -> Result<ContractInfo, Error> {
        self.call("contract", rpc_params![hex::encode(id)]).await
    }

    /// The report the chain recorded for call `index` of a contract, if any.
    pub async fn contract_report(
        &self,
        id: &[u8; 32],
        index: u64,
    ) -> Result<Option<ReportRecord>, Error> {
        self.call("contract_report", rpc_params![hex::encode(id), index])
            .await
    }

    /// Uploaded code by hash.
    pub async fn code(&self, hash: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let text: String = self.call("code", rpc_params![hex::encode(hash)]).await?;
        hex::decode(text).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// Proves, against the trusted group key and trusting this node for nothing, that the
    /// block at `height` is final; returns its header (whose state root proofs then rest on).
    pub async fn prove_final(
        &self,
        trust: &TrustedChain,
        height: u64,
    ) -> Result<phala_types::Header, Error> {
        // The node may not have the certificate yet (its block was finalized a moment ago).
        let mut tries = 0;
        let headers = loop {
            match self.headers(height, 1).await {
                Err(Error::Rpc { code: 1002, .. }) if tries < 20 => tries += 1,
                other => break other?,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        verify_headers(trust, height, &headers).map_err(|e| Error::Lied {
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }

    /// The values of `keys`, each proven against a state root that a finality certificate under
    /// the trusted group key covers: nothing is taken on this node's word.
    pub async fn proven_values(
        &self,
        trust: &TrustedChain,
        keys: &[Vec<u8>],
    ) -> Result<ProvenValues, Error> {
        let hexes: Vec<String> = keys.iter().map(hex::encode).collect();
        let answer: StateValuesJson = self.call("state_values", rpc_params![hexes]).await?;
        let lied = |reason: String| Error::Lied {
            url: self.url.clone(),
            reason,
        };
        let (root, values) = verify_values(keys, &answer).map_err(|e| lied(e.to_string()))?;
        let header = self.prove_final(trust, answer.height).await?;
        if header.state_root != root {
            return Err(lied(format!(
                "block {}'s certified state root is not the one its proofs are against",
                answer.height
            )));
        }
        Ok(ProvenValues { header, values })
    }

    /// The node's chain, checked against the trusted one.
    pub async fn check_chain(&self, trust: &TrustedChain) -> Result<(), Error> {
        let info = self.chain_info().await?;
        trust.check(&info).map_err(|e| Error::Lied {
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The registry's workers.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, Error> {
        self.call("workers", rpc_params![]).await
    }
}

/// State values proven final (see [`Client::proven_values`]).
#[derive(Debug, Clone)]
pub struct ProvenValues {
    /// The certified header whose state root the values are proven against.
    pub header: phala_types::Header,
    /// One per key asked, in order (`None`: absent).
    pub values: Vec<Option<Vec<u8>>>,
}

/// How many blocks a transaction built by [`Client::sign_call`] stays valid.
pub const EXPIRY_BLOCKS: u64 = 600;

/// The least fee the chain accepts for this transaction (by its size and weight).
pub fn minimum_fee(fees: &FeeSchedule, stx: &SignedTransaction) -> u128 {
    let size = stx.encode_size();
    phala_chain::weights::minimum_fee(fees, size, phala_chain::weights::weight(stx, size))
}
