//! The contract workflow over a node and a worker: upload, instantiate, command, query, and
//! checking a receipt against the chain. Used by the CLI, the demo and the tests.

use crate::{Client, Error};
use bytes::Bytes;
use commonware_codec::{Copying, DecodeExt};
use phala_api::query::{
    Answer, PreparedQuery, QueryRequest, QueryResponse, QuerySession, SessionOpened, SessionQuery,
    prepare_query, seal_command,
};
use phala_crypto::Keypair;
use phala_types::ContractsCall;
use phala_types::{
    Address, Call, ContractCommand, ContractRecord, Destination, DownwardMessage, QueryReceipt,
    ReportRecord,
    contracts::{CodeHash, ContractId, code_hash, contract_id, topics},
    registry::decode_payload,
};
use std::time::{Duration, Instant};

/// Uploads code (idempotent) and returns its hash once final.
pub async fn upload_code(
    client: &Client,
    signer: &Keypair,
    code: &[u8],
) -> Result<CodeHash, Error> {
    client
        .execute(
            signer,
            Call::Contracts(ContractsCall::UploadCode {
                code: Bytes::copy_from_slice(code),
            }),
        )
        .await?;
    Ok(code_hash(code))
}

/// The storage quota `phala contract instantiate` buys unless told otherwise (bytes of
/// state, each entry counting its key, value and 32 bytes).
pub const DEFAULT_STORAGE_QUOTA: u64 = 64 * 1024;

/// What to instantiate.
pub struct Deployment<'a> {
    pub code_hash: CodeHash,
    pub cluster: u32,
    /// The same deployer, code, cluster and salt give the same contract id.
    pub salt: [u8; 32],
    /// The bytes of state the deployer's locked deposit buys.
    pub storage_quota: u64,
    /// `init`'s input (public: it is in the transaction).
    pub input: &'a [u8],
}

/// Instantiates code on a cluster and waits until the gatekeepers published its key.
pub async fn instantiate(
    client: &Client,
    signer: &Keypair,
    deployment: Deployment<'_>,
    timeout: Duration,
) -> Result<ContractRecord, Error> {
    let call = Call::Contracts(ContractsCall::Instantiate {
        code_hash: deployment.code_hash,
        cluster: deployment.cluster,
        salt: deployment.salt,
        storage_quota: deployment.storage_quota,
        input: Bytes::copy_from_slice(deployment.input),
    });
    client.execute(signer, call).await?;
    let id = contract_id(
        &signer.address(),
        &deployment.code_hash,
        deployment.cluster,
        &deployment.salt,
    );
    wait_ready(client, &id, timeout).await
}

/// The deployer sets its contract's storage quota: more locks more deposit, less returns the
/// part above (never below the state the workers last reported).
pub async fn set_storage_quota(
    client: &Client,
    signer: &Keypair,
    contract: &ContractId,
    quota: u64,
) -> Result<(), Error> {
    let call = Call::Contracts(ContractsCall::SetStorageQuota {
        contract: *contract,
        quota,
    });
    client.execute(signer, call).await.map(drop)
}

/// Waits until a contract has its public key.
pub async fn wait_ready(
    client: &Client,
    id: &ContractId,
    timeout: Duration,
) -> Result<ContractRecord, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let record = client.contract(id).await?.record;
        if record.public_key.is_some() {
            return Ok(record);
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "the gatekeepers to publish the key of contract {}",
                hex::encode(id)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A command sent: its transaction and its call index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentCommand {
    pub transaction: phala_types::Digest,
    pub index: u64,
}

/// Encrypts `input` to the contract, sends it with `gas_limit` and waits until final.
pub async fn command(
    client: &Client,
    signer: &Keypair,
    contract: &ContractId,
    input: &[u8],
    gas_limit: u64,
) -> Result<SentCommand, Error> {
    let record = client.contract(contract).await?.record;
    let public_key = record
        .public_key
        .ok_or_else(|| Error::Malformed("the contract has no public key yet".into()))?;
    let nonce = client.account(&signer.address()).await?.nonce;
    let stream = Destination::Cluster(record.cluster);
    let from = client
        .state_value(&phala_chain::mq::keys::stream_next(&stream))
        .await?
        .value
        .and_then(|v| hex::decode(v).ok())
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map_or(0, u64::from_be_bytes);
    let (encapped, ciphertext) =
        seal_command(&public_key, contract, &signer.address(), nonce, input)
            .map_err(|e| Error::Malformed(e.to_string()))?;
    let call = Call::Contracts(ContractsCall::Command {
        contract: *contract,
        gas_limit,
        encapped,
        ciphertext: Bytes::from(ciphertext),
    });
    let stx = client.sign_call(signer, call, Some(nonce)).await?;
    let transaction = client.submit(&stx).await?;
    let height = client.wait_applied(&transaction).await?;
    let sent = (signer.address(), nonce);
    let index = command_index(client, stream, from, height, sent).await?;
    Ok(SentCommand { transaction, index })
}

/// The call index the chain gave the command `(sender, nonce)`: found among the messages of its
/// cluster's stream from sequence `from` up to the block that included it.
async fn command_index(
    client: &Client,
    stream: Destination,
    mut from: u64,
    height: u64,
    (sender, nonce): (Address, u64),
) -> Result<u64, Error> {
    loop {
        let messages = client.stream_messages(stream, from, height).await?;
        if messages.is_empty() {
            return Err(Error::Malformed(
                "the command is missing from its cluster's stream".into(),
            ));
        }
        for message in &messages {
            let bytes = hex::decode(&message.message)
                .map_err(|_| Error::Malformed("stream message hex".into()))?;
            let message = DownwardMessage::decode(Copying(bytes.as_slice()))
                .map_err(|e| Error::Malformed(format!("stream message: {e}")))?;
            from = message.sequence.saturating_add(1);
            if message.topic.as_ref() != topics::COMMAND {
                continue;
            }
            let command: ContractCommand = decode_payload(&message.payload)
                .map_err(|e| Error::Malformed(format!("command message: {e}")))?;
            if command.sender == sender && command.nonce == nonce {
                return Ok(command.index);
            }
        }
    }
}

/// Waits until some worker reported call `index` of a contract.
pub async fn wait_report(
    client: &Client,
    contract: &ContractId,
    index: u64,
    timeout: Duration,
) -> Result<ReportRecord, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(report) = client.contract_report(contract, index).await? {
            return Ok(report);
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "a worker to report call {index} of contract {}",
                hex::encode(contract)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A query's outcome: the contract's answer and the worker's receipt.
#[derive(Debug, Clone)]
pub struct QueryOutcome {
    pub answer: Answer,
    pub receipt: QueryReceipt,
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryFailure {
    #[error(transparent)]
    Node(#[from] Error),
    #[error("cannot reach the worker at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the worker refused the query: {0}")]
    Refused(String),
    #[error(transparent)]
    Call(#[from] phala_api::query::ContractCallError),
}

/// Sends an encrypted, signed query to the worker at `worker_url` and opens its answer. The
/// worker must have synced at least the node's finalized height minus `lag` blocks.
pub async fn query(
    client: &Client,
    http: &reqwest::Client,
    worker_url: &str,
    caller: &Keypair,
    contract: &ContractId,
    input: &[u8],
    lag: u64,
) -> Result<QueryOutcome, QueryFailure> {
    let record = client.contract(contract).await?.record;
    let public_key = record
        .public_key
        .ok_or_else(|| Error::Malformed("the contract has no public key yet".into()))?;
    let head = client.health().await?.finalized_height;
    let prepared = prepare_query(
        caller,
        contract,
        &public_key,
        input,
        head.saturating_sub(lag),
    )?;
    let response = send_query(http, worker_url, &prepared.request).await?;
    open(&prepared, &response)
}

fn open(prepared: &PreparedQuery, response: &QueryResponse) -> Result<QueryOutcome, QueryFailure> {
    Ok(QueryOutcome {
        answer: prepared.open(response)?,
        receipt: response.receipt.clone(),
    })
}

/// Posts a query to a worker's `/query`.
pub async fn send_query(
    http: &reqwest::Client,
    worker_url: &str,
    request: &QueryRequest,
) -> Result<QueryResponse, QueryFailure> {
    post(http, worker_url, "query", request).await
}

/// Opens a query session with a worker: `prepared` (any input; it is not run) is signed and
/// encrypted like a query, and the session's queries then cost the worker no public-key
/// operation.
pub async fn open_session(
    http: &reqwest::Client,
    worker_url: &str,
    prepared: PreparedQuery,
) -> Result<QuerySession, QueryFailure> {
    let opened: SessionOpened = post(http, worker_url, "session", &prepared.request).await?;
    Ok(prepared.into_session(&opened)?)
}

/// Posts a query of an open session to a worker's `/session/query`.
pub async fn send_session_query(
    http: &reqwest::Client,
    worker_url: &str,
    query: &SessionQuery,
) -> Result<QueryResponse, QueryFailure> {
    post(http, worker_url, "session/query", query).await
}

async fn post<Request: serde::Serialize, Answer: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    worker_url: &str,
    path: &str,
    body: &Request,
) -> Result<Answer, QueryFailure> {
    let url = format!("{}/{path}", worker_url.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| QueryFailure::Unreachable {
        url: url.clone(),
        reason: e.to_string(),
    };
    let response = http
        .post(&url)
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    if response.status().is_success() {
        return response.json().await.map_err(unreachable);
    }
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let reason = body["error"]
        .as_str()
        .unwrap_or("no reason given")
        .to_string();
    Err(QueryFailure::Refused(format!("{status}: {reason}")))
}
