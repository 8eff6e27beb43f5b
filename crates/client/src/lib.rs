//! The node's JSON-RPC API: its types ([`api`]), a typed client ([`Client`]), and the checks
//! a client can make without trusting the node: state proofs against a state root, and
//! finality certificates against the chain's BLS group key.

pub mod api;
mod verify;

use api::{AccountJson, BlockJson, ChainInfo, FinalizedHead, Health, StateValueJson, TxStatus};
use commonware_codec::Encode;
use jsonrpsee::{
    core::{ClientError, client::ClientT},
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
};
use phala_types::{Address, Digest, SignedTransaction};
use std::time::Duration;

pub use verify::{VerifyError, verify_account, verify_certificate, verify_finalization};

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
}

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

    async fn call<R: serde::de::DeserializeOwned>(
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
        api::parse_digest(&hash).map_err(|e| Error::Malformed(e.to_string()))
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
}
