//! An HTTP client for the pRuntime API (pherry and the CLI use it).

use crate::api::{
    ApiError, Egress, Info, RegistrationRequest, RegistrationResponse, SyncBatch, SyncOutcome,
};
use crate::light::{AnchorFile, TrustAnchor};
use anyhow::{Context, bail};
use commonware_codec::{Copying, DecodeExt};
use phala_client::Client;
use phala_types::{
    ContractInstantiated, Destination, DownwardMessage, contracts::topics, registry::decode_payload,
};
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;

/// One pRuntime's API.
pub struct PruntimeClient {
    base: String,
    http: reqwest::Client,
}

impl PruntimeClient {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(PruntimeClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
        })
    }

    async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
        let status = response.status();
        if status.is_success() {
            return response.json().await.context("malformed pRuntime answer");
        }
        match response.json::<ApiError>().await {
            Ok(error) => bail!("pRuntime refused ({status}): {}", error.error),
            Err(_) => bail!("pRuntime answered {status}"),
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the pRuntime at {url}"))?;
        Self::answer(response).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the pRuntime at {url}"))?;
        Self::answer(response).await
    }

    pub async fn info(&self) -> anyhow::Result<Info> {
        self.get("/info").await
    }

    pub async fn sync(&self, batch: &SyncBatch) -> anyhow::Result<SyncOutcome> {
        self.post("/sync", batch).await
    }

    pub async fn registration(
        &self,
        request: &RegistrationRequest,
    ) -> anyhow::Result<RegistrationResponse> {
        self.post("/registration", request).await
    }

    pub async fn egress(&self, from: u64) -> anyhow::Result<Egress> {
        self.get(&format!("/egress?from={from}")).await
    }
}

/// The anchor of the chain a node serves. Trusting the node for it is right only where the
/// node is the operator's own (a dev network); in production the anchor is measured config.
pub async fn anchor_from(node: &Client) -> anyhow::Result<AnchorFile> {
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

/// Builds the next sync batch for a pRuntime from a node: up to `limit` headers after the
/// pRuntime's head (ending at a certified one), every message of its streams in them with
/// proofs, the older messages of streams it joined late (backfill), the code of contracts
/// instantiated in its cluster, and a witness that nothing was left out.
pub async fn build_batch(node: &Client, info: &Info, limit: u64) -> anyhow::Result<SyncBatch> {
    let headers = node.headers(info.height + 1, limit).await?;
    let last = headers
        .headers
        .last()
        .map(|h| h.height)
        .context("the node returned no headers")?;
    let mut messages = Vec::new();
    let mut after = Vec::new();
    for (destination, next) in &info.streams {
        let found = node.stream_messages(*destination, *next, last).await?;
        after.push((*destination, next + found.len() as u64));
        messages.extend(found);
    }
    messages.sort_by_key(|m| (m.height, m.index));
    // Messages from before this batch belong to streams joined late: proven by state instead.
    let split = messages.partition_point(|m| m.height <= info.height);
    let messages_new = messages.split_off(split);
    let old = messages;
    let mut backfill = Vec::with_capacity(old.len());
    let mut backfill_keys = Vec::with_capacity(old.len());
    let mut codes = Vec::new();
    for message in old.iter().chain(&messages_new) {
        let decoded = decode_message(&message.message)?;
        if let Some(code_hash) = instantiated_code(&decoded) {
            codes.push(hex::encode(node.code(&code_hash).await?));
        }
        if message.height <= info.height {
            backfill_keys.push((decoded.destination, decoded.sequence));
            backfill.push(message.message.clone());
        }
    }
    let witness = node
        .stream_witness(&after, Some(info.identity), &backfill_keys)
        .await?;
    Ok(SyncBatch {
        headers: headers.headers,
        certificate: headers.certificate,
        messages: messages_new,
        witness,
        backfill,
        codes,
    })
}

fn decode_message(text: &str) -> anyhow::Result<DownwardMessage> {
    let bytes = hex::decode(text).context("the node sent a message that is not hex")?;
    DownwardMessage::decode(Copying(&bytes)).context("the node sent a malformed message")
}

/// The code a cluster-stream message needs: that of the contract it instantiates.
fn instantiated_code(message: &DownwardMessage) -> Option<[u8; 32]> {
    if !matches!(message.destination, Destination::Cluster(_))
        || message.topic.as_ref() != topics::INSTANTIATED
    {
        return None;
    }
    decode_payload::<ContractInstantiated>(&message.payload)
        .ok()
        .map(|i| i.code_hash)
}
