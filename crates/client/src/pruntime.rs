//! An HTTP client for a pRuntime's API (pherry and the CLI use it).

use crate::{Client, Error};
use phala_api::pruntime::{
    AnchorFile, ApiError, Egress, Info, RegistrationRequest, RegistrationResponse, SyncBatch,
    SyncOutcome, TrustAnchor,
};
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;

/// Why a pRuntime call failed.
#[derive(Debug, thiserror::Error)]
pub enum PruntimeError {
    #[error("cannot reach the pRuntime at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The pRuntime answered with an error (its reason, for operators).
    #[error("pRuntime refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("malformed pRuntime answer: {0}")]
    Malformed(reqwest::Error),
}

/// One pRuntime's API.
pub struct PruntimeClient {
    base: String,
    http: reqwest::Client,
}

impl PruntimeClient {
    /// A client for the pRuntime at `base`, such as `http://127.0.0.1:8000`.
    pub fn new(base: &str) -> Result<Self, PruntimeError> {
        let base = base.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| PruntimeError::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(PruntimeClient { base, http })
    }

    async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, PruntimeError> {
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(PruntimeError::Malformed);
        }
        let reason = match response.json::<ApiError>().await {
            Ok(error) => error.error,
            Err(_) => "no reason given".into(),
        };
        Err(PruntimeError::Refused {
            status: status.as_u16(),
            reason,
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, PruntimeError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|source| PruntimeError::Unreachable { url, source })?;
        Self::answer(response).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, PruntimeError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| PruntimeError::Unreachable { url, source })?;
        Self::answer(response).await
    }

    pub async fn info(&self) -> Result<Info, PruntimeError> {
        self.get("/info").await
    }

    pub async fn sync(&self, batch: &SyncBatch) -> Result<SyncOutcome, PruntimeError> {
        self.post("/sync", batch).await
    }

    pub async fn registration(
        &self,
        request: &RegistrationRequest,
    ) -> Result<RegistrationResponse, PruntimeError> {
        self.post("/registration", request).await
    }

    pub async fn egress(&self, from: u64) -> Result<Egress, PruntimeError> {
        self.get(&format!("/egress?from={from}")).await
    }
}

/// The anchor of the chain a node serves. Trusting the node for it is right only where the
/// node is the operator's own (a dev network); in production the anchor is measured config.
pub async fn anchor_from(node: &Client) -> Result<AnchorFile, Error> {
    let info = node.chain_info().await?;
    let genesis_block = node.block(Some(0)).await?.header.hash;
    Ok(AnchorFile {
        anchor: TrustAnchor {
            chain_id: info.chain_id,
            genesis_hash: info.genesis_hash,
            identity: info.identity,
            namespace: info.namespace,
        },
        genesis_block,
    })
}
