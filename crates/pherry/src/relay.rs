//! The relay loop: registration, blocks and proofs down, signed messages up.
//!
//! pherry keeps no state of its own: every round starts from what the pRuntime reports (its
//! height and stream positions) and what the chain says (the origin's next sequence, the
//! worker record), so a restart of the node, the pRuntime or pherry resumes where things are.

use crate::batch::build_batch;
use anyhow::Context;
use commonware_codec::{Copying, DecodeExt};
use phala_api::pruntime::{Info, RegistrationRequest};
use phala_chain::registry;
use phala_client::{Client, pruntime::PruntimeClient};
use phala_crypto::Keypair;
use phala_types::{AttestationPolicy, Call, SignedRegistration, UpwardMessage, WorkerRecord};
use phala_types::{MqCall, RegistryCall};
use std::{io::IsTerminal, time::Instant};

/// How pherry relays.
pub struct Relay {
    pub node: Client,
    pub pruntime: PruntimeClient,
    pub operator: Keypair,
    /// Most headers per sync batch.
    pub batch: u64,
    /// Until when egress is held back: after the chain refused a batch for a reason that
    /// resending cannot fix (an expired attestation, say), every resend would only pay fees.
    pub egress_held_until: std::sync::Mutex<Option<Instant>>,
}

/// How long egress is held back after a refusal that resending cannot fix.
pub const EGRESS_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    pub synced_to: u64,
    pub head: u64,
    pub messages: usize,
    pub submitted: usize,
}

impl Relay {
    /// Registers the worker if the chain does not know it or its attestation is about to expire.
    pub async fn ensure_registered(&self, info: &Info) -> anyhow::Result<bool> {
        let head = self.node.health().await?.finalized_height;
        let record = self.worker_record(info).await?;
        let policy = self.policy().await?;
        let due = match &record {
            None => true,
            Some(record) => {
                head + policy.reattest_blocks / 10 >= record.attested_at + policy.reattest_blocks
            }
        };
        if !due {
            return Ok(false);
        }
        let request = RegistrationRequest {
            operator: self.operator.address(),
            freshness: head,
        };
        let response = self.pruntime.registration(&request).await?;
        let bytes = hex::decode(&response.registration)?;
        let signed = SignedRegistration::decode(Copying(&bytes))
            .map_err(|e| anyhow::anyhow!("malformed registration from the pRuntime: {e}"))?;
        self.node
            .execute(
                &self.operator,
                Call::Registry(RegistryCall::RegisterWorker(signed)),
            )
            .await
            .context("registration refused")?;
        tracing::info!(identity = %info.identity, attested = record.is_some(), "worker registered");
        Ok(true)
    }

    async fn worker_record(&self, info: &Info) -> anyhow::Result<Option<WorkerRecord>> {
        let value = self
            .node
            .state_value(&registry::keys::worker(&info.identity))
            .await?;
        match value.value {
            None => Ok(None),
            Some(hex_value) => Ok(WorkerRecord::decode(Copying(&hex::decode(hex_value)?)).ok()),
        }
    }

    async fn policy(&self) -> anyhow::Result<AttestationPolicy> {
        let value = self.node.state_value(registry::keys::POLICY).await?;
        let bytes = hex::decode(value.value.context("the chain has no attestation policy")?)?;
        AttestationPolicy::decode(Copying(&bytes)).map_err(|e| anyhow::anyhow!("policy: {e}"))
    }

    /// One round: a sync batch if the chain is ahead, then the egress.
    pub async fn round(&self) -> anyhow::Result<Round> {
        let info = self.pruntime.info().await?;
        let mut round = Round {
            synced_to: info.height,
            ..Round::default()
        };
        let head = self.node.health().await?.finalized_height;
        round.head = head;
        if head > info.height {
            let limit = self.batch.min(head - info.height);
            let batch = build_batch(&self.node, &info, limit).await?;
            let outcome = self.pruntime.sync(&batch).await?;
            round.synced_to = outcome.height;
            round.messages = outcome.messages;
        }
        round.submitted = self.relay_egress(&info).await?;
        Ok(round)
    }

    /// Submits the pRuntime's signed messages the chain has not accepted yet, in order.
    async fn relay_egress(&self, info: &Info) -> anyhow::Result<usize> {
        let held = *self
            .egress_held_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.is_some_and(|until| Instant::now() < until) {
            return Ok(0);
        }
        let key = phala_chain::mq::keys::origin_sequence(&info.identity);
        let Some(value) = self.node.state_value(&key).await?.value else {
            return Ok(0); // Not registered yet: the chain would refuse them.
        };
        let bytes: [u8; 8] = hex::decode(value)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("malformed origin sequence"))?;
        let next = u64::from_be_bytes(bytes);
        if info.egress_next <= next {
            return Ok(0);
        }
        let egress = self.pruntime.egress(next).await?;
        let nonce = self.node.account(&self.operator.address()).await?.nonce;
        let mut last = None;
        for (offset, hex_message) in egress.messages.iter().enumerate() {
            let message = UpwardMessage::decode(Copying(&hex::decode(hex_message)?))
                .map_err(|e| anyhow::anyhow!("malformed egress message: {e}"))?;
            let stx = self
                .node
                .sign_call(
                    &self.operator,
                    Call::Mq(MqCall::SubmitUpward(message)),
                    Some(nonce + offset as u64),
                )
                .await?;
            last = Some(self.node.submit(&stx).await?);
        }
        if let Some(hash) = last {
            // Wait for the batch so the next round reads the new sequence, not a stale one.
            let status = self
                .node
                .wait_final(&hash, std::time::Duration::from_secs(60))
                .await?;
            if let phala_api::rpc::TxStatus::Finalized {
                failed: Some(failure),
                ..
            } = status
            {
                if failure.code == "bad_sequence" {
                    // Another relayer delivered them first; the next round reads the sequence
                    // again.
                    tracing::warn!(reason = %failure.reason, "upward message batch failed");
                } else {
                    tracing::error!(
                        reason = %failure.reason,
                        "the chain refused the pRuntime's upward messages; holding them for {} s (re-attest if its attestation expired)",
                        EGRESS_BACKOFF.as_secs()
                    );
                    *self
                        .egress_held_until
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(Instant::now() + EGRESS_BACKOFF);
                }
            }
        }
        Ok(egress.messages.len())
    }
}

/// Reports catch-up progress: a live line on a terminal, a log line every few seconds otherwise.
pub struct Progress {
    terminal: bool,
    last: Instant,
    started: Instant,
    start_height: Option<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            last: Instant::now(),
            started: Instant::now(),
            start_height: None,
        }
    }
}

impl Progress {
    pub fn update(&mut self, round: &Round) {
        let start = *self.start_height.get_or_insert(round.synced_to);
        let behind = round.head.saturating_sub(round.synced_to);
        let rate = (round.synced_to - start.min(round.synced_to)) as f64
            / self.started.elapsed().as_secs_f64().max(1e-3);
        if self.terminal {
            let done = if round.head == 0 {
                1.0
            } else {
                round.synced_to as f64 / round.head as f64
            };
            let filled = (done * 30.0) as usize;
            eprint!(
                "\r[{}{}] {}/{} blocks, {:.0} blocks/s   ",
                "#".repeat(filled),
                ".".repeat(30 - filled.min(30)),
                round.synced_to,
                round.head,
                rate
            );
        } else if self.last.elapsed().as_secs() >= 5 || (behind == 0 && round.messages > 0) {
            tracing::info!(
                height = round.synced_to,
                head = round.head,
                behind,
                blocks_per_s = rate as u64,
                "sync progress"
            );
            self.last = Instant::now();
        }
    }
}
