//! The chain's side of consensus: proposing and verifying blocks through the [`Ledger`], and
//! applying the finalized blocks marshal delivers in order.
//!
//! This module and `engine` are the only ones that touch the engine's ALPHA `Application`
//! trait, so an engine upgrade stays here.

use crate::{ledger::Ledger, spec::Scheme};
use commonware_consensus::{
    Application, Reporter,
    marshal::{Update, ancestry::Ancestry, core::Mailbox, standard::Standard},
    simplex::types::Context,
    types::Height,
};
use commonware_cryptography::{Digested, ed25519::PublicKey};
use commonware_parallel::Sequential;
use commonware_runtime::Clock;
use commonware_utils::{Acknowledgement as _, acknowledgement::Exact, channel::mpsc};
use futures::StreamExt as _;
use phala_chain::BlockContext;
use phala_types::{Address, Block, Digest};
use std::{sync::Arc, time::Duration};
use tracing::{error, info, warn};

/// The consensus context of a proposal.
pub type ConsensusContext = Context<Digest, PublicKey>;

/// How far ahead of our clock a block's timestamp may be before we wait rather than vote.
const MAX_CLOCK_DRIFT_MS: u64 = 2_000;

/// The application handed to marshal's `Inline` wrapper and, as a reporter, to marshal itself.
#[derive(Clone)]
pub struct ChainApp {
    ledger: Arc<Ledger>,
    finalized: mpsc::UnboundedSender<(Digested<Block>, Exact)>,
}

impl ChainApp {
    /// The app and the receiving end of finalized blocks, for [`run_finalizer`].
    pub fn new(ledger: Arc<Ledger>) -> (Self, mpsc::UnboundedReceiver<(Digested<Block>, Exact)>) {
        let (finalized, receiver) = mpsc::unbounded_channel();
        (ChainApp { ledger, finalized }, receiver)
    }

    /// Waits until the ledger finished replaying stored blocks after a restart.
    async fn ready<E: Clock>(&self, clock: &E) {
        while self.ledger.replaying() {
            clock.sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes sure `first` (and every unknown ancestor the stream yields) has been executed.
    /// False if an ancestor is invalid or the chain conflicts with finality.
    async fn ensure_executed(
        &self,
        first: Digested<Block>,
        ancestry: &mut impl Ancestry<Block>,
    ) -> bool {
        let mut unknown = vec![first];
        loop {
            let oldest = unknown.last().expect("non-empty").inner().clone();
            if self.ledger.knows(&oldest.header.parent) || self.ledger.knows(&oldest.header.hash())
            {
                break;
            }
            if oldest.header.height <= self.ledger.head().height + 1 {
                return false;
            }
            match ancestry.next().await {
                Some(parent) => unknown.push(parent),
                None => return false,
            }
        }
        for block in unknown.into_iter().rev() {
            let block = block.inner();
            if let Err(error) = self.ledger.execute(block, &block.header.proposer).await {
                warn!(height = block.header.height, %error, "ancestor failed execution");
                return false;
            }
        }
        true
    }
}

fn address_of(key: &PublicKey) -> Address {
    Address(key.as_ref().try_into().expect("ed25519 keys are 32 bytes"))
}

fn now_ms<E: Clock>(clock: &E) -> u64 {
    clock
        .current()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<E: Clock + Send + Sync + 'static> Application<E> for ChainApp {
    type SigningScheme = Scheme;
    type Context = ConsensusContext;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        (clock, context): (E, ConsensusContext),
        mut ancestry: impl Ancestry<Block>,
        _input: (),
    ) -> Option<Digested<Block>> {
        self.ready(&clock).await;
        let parent = ancestry.next().await?;
        if !self.ledger.knows(&parent.inner().header.hash())
            && !self.ensure_executed(parent.clone(), &mut ancestry).await
        {
            return None;
        }
        let parent = parent.inner().header.clone();
        let earliest = parent.timestamp + self.ledger.block_interval_ms();
        let now = now_ms(&clock);
        if now < earliest {
            clock.sleep(Duration::from_millis(earliest - now)).await;
        }
        let ctx = BlockContext {
            height: parent.height + 1,
            timestamp: now_ms(&clock).max(earliest),
            proposer: address_of(&context.leader),
        };
        let block = self.ledger.build(&parent, ctx).await?;
        Some(Digested::compute(block, &Sequential).await)
    }

    async fn verify(
        &mut self,
        (clock, context): (E, ConsensusContext),
        mut ancestry: impl Ancestry<Block>,
    ) -> bool {
        self.ready(&clock).await;
        let Some(block) = ancestry.next().await else {
            return false;
        };
        // A block from the future is not invalid yet: wait for our clock rather than vote no.
        let timestamp = block.inner().header.timestamp;
        let now = now_ms(&clock);
        if timestamp > now + MAX_CLOCK_DRIFT_MS {
            clock
                .sleep(Duration::from_millis(timestamp - now - MAX_CLOCK_DRIFT_MS))
                .await;
        }
        if !self.ledger.knows(&block.inner().header.parent) {
            let Some(parent) = ancestry.next().await else {
                return false;
            };
            if !self.ensure_executed(parent, &mut ancestry).await {
                return false;
            }
        }
        match self
            .ledger
            .execute(block.inner(), &address_of(&context.leader))
            .await
        {
            Ok(()) => true,
            Err(error) => {
                warn!(height = block.inner().header.height, %error, "rejected proposal");
                false
            }
        }
    }
}

impl Reporter for ChainApp {
    type Activity = Update<Block>;

    fn report(&mut self, update: Update<Block>) -> commonware_actor::Feedback {
        if let Update::Block(block, ack) = update {
            // The finalizer acknowledges once the block is applied; if it is gone the node is
            // shutting down and the unacknowledged block will be redelivered on restart.
            let _ = self.finalized.send((block, ack));
        }
        commonware_actor::Feedback::Ok
    }
}

/// Applies the finalized blocks marshal processed past the ledger's head (after a restart: the
/// ledger opens at its last committed block, which is at or past what marshal processed, so
/// this is usually nothing), then those marshal delivers, acknowledging each once applied.
/// Returns only on a fatal inconsistency (a finalized block that does not re-execute), which
/// must stop the node.
pub async fn run_finalizer(
    ledger: Arc<Ledger>,
    marshal: Mailbox<Scheme, Standard<Block>>,
    processed: u64,
    mut finalized: mpsc::UnboundedReceiver<(Digested<Block>, Exact)>,
) -> anyhow::Result<()> {
    let from = ledger.head().height + 1;
    if processed >= from {
        info!(
            from,
            to = processed,
            "applying finalized blocks from storage"
        );
    }
    for height in from..=processed {
        let block = marshal
            .get_block(Height::new(height))
            .await
            .ok_or_else(|| anyhow::anyhow!("finalized block {height} is missing from storage"))?;
        ledger.finalize(block.inner()).await?;
    }
    ledger.set_replaying(false);
    while let Some((block, ack)) = finalized.recv().await {
        if let Err(fatal) = ledger.finalize(block.inner()).await {
            error!(%fatal, "stopping: cannot apply a finalized block");
            return Err(fatal.into());
        }
        ack.acknowledge();
    }
    Ok(())
}
