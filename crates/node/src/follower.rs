//! A follower: a node that is not a validator. It pulls finalized blocks from upstream nodes'
//! RPC and trusts them for nothing but availability: a block is applied only once a finality
//! certificate that verifies against the chain's group key covers it (directly, or through the
//! parent-hash chain below a certified descendant), and only if re-executing it yields the
//! state root its header commits to. It then serves the same RPC as a validator.

use crate::{ledger::Ledger, spec::ChainSpec};
use commonware_codec::{Copying, DecodeExt};
use phala_client::Client;
use phala_types::{Block, Digest};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::{info, warn};

/// Most blocks fetched per round.
const BATCH: u64 = 256;

/// Why an upstream's blocks were refused.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("upstream error: {0}")]
    Upstream(#[from] phala_client::Error),
    #[error("block {height} from upstream is malformed: {reason}")]
    Malformed { height: u64, reason: String },
    #[error("block {height}'s certificate does not verify against the group key")]
    BadCertificate { height: u64 },
    #[error("block {height} does not link to its parent")]
    BrokenChain { height: u64 },
    #[error(transparent)]
    Fatal(#[from] crate::ledger::FatalBlock),
}

/// The verified blocks and certificates a follower serves.
#[derive(Default)]
pub struct VerifiedChain {
    inner: Mutex<ChainData>,
}

#[derive(Default)]
struct ChainData {
    blocks: Vec<Arc<Block>>,
    by_digest: HashMap<Digest, u64>,
    finalizations: BTreeMap<u64, Vec<u8>>,
}

impl ChainData {
    fn push(&mut self, block: Block, finalization: Option<Vec<u8>>) {
        let height = block.header.height;
        self.by_digest.insert(block.header.hash(), height);
        if let Some(finalization) = finalization {
            self.finalizations.insert(height, finalization);
        }
        self.blocks.push(Arc::new(block));
    }
}

impl VerifiedChain {
    pub fn new(genesis: Block) -> Self {
        let chain = VerifiedChain::default();
        chain.push(genesis, None);
        chain
    }

    fn data(&self) -> std::sync::MutexGuard<'_, ChainData> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, block: Block, finalization: Option<Vec<u8>>) {
        self.data().push(block, finalization);
    }

    /// Keeps `block`, finalized by the caller, if `finalization` certifies it under the chain's
    /// group key and it extends the last block kept: for blocks that reach a follower by other
    /// means than an upstream (an import, a benchmark's certified chain).
    pub fn push_certified(
        &self,
        spec: &ChainSpec,
        block: Block,
        finalization: Vec<u8>,
    ) -> Result<(), FollowError> {
        let height = block.header.height;
        if !block.body_matches_header() {
            return Err(FollowError::Malformed {
                height,
                reason: "its transactions do not match its tx_root".into(),
            });
        }
        if !certifies(spec, &block, &finalization) {
            return Err(FollowError::BadCertificate { height });
        }
        let mut data = self.data();
        let extends = data.blocks.last().is_some_and(|last| {
            last.header.hash() == block.header.parent && last.header.height + 1 == height
        });
        if !extends {
            return Err(FollowError::BrokenChain { height });
        }
        data.push(block, Some(finalization));
        Ok(())
    }

    pub fn block(&self, height: u64) -> Option<Arc<Block>> {
        self.data().blocks.get(height as usize).cloned()
    }

    pub fn height_of(&self, digest: &Digest) -> Option<u64> {
        self.data().by_digest.get(digest).copied()
    }

    pub fn finalization(&self, height: u64) -> Option<Vec<u8>> {
        self.data().finalizations.get(&height).cloned()
    }

    /// The height of the last verified block.
    pub fn height(&self) -> u64 {
        self.data().blocks.len().saturating_sub(1) as u64
    }
}

/// Checks that `finalization` is a valid certificate, under this chain's group key, of `block`.
pub fn certifies(spec: &ChainSpec, block: &Block, finalization: &[u8]) -> bool {
    let Ok(identity) = hex::decode(&spec.identity) else {
        return false;
    };
    phala_api::verify_certificate(
        &spec.namespace(),
        &identity,
        &block.header.hash(),
        finalization,
    )
    .is_ok()
}

/// Checks that `run` is a chain from `head`: each block's parent is the previous block.
pub fn links(head: &Digest, run: &[(Block, Option<Vec<u8>>)]) -> Result<(), FollowError> {
    let mut parent = *head;
    for (block, _) in run {
        if block.header.parent != parent {
            return Err(FollowError::BrokenChain {
                height: block.header.height,
            });
        }
        parent = block.header.hash();
    }
    Ok(())
}

/// Fetches, verifies and applies blocks from the upstreams forever (rotating on errors).
pub async fn follow(
    spec: ChainSpec,
    ledger: Arc<Ledger>,
    chain: Arc<VerifiedChain>,
    upstreams: Vec<Client>,
) {
    ledger.set_replaying(false);
    let mut current = 0;
    loop {
        match sync_round(&spec, &ledger, &chain, &upstreams[current]).await {
            Ok(0) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(applied) => info!(applied, height = ledger.head().height, "followed"),
            Err(FollowError::Fatal(fatal)) => {
                // A certified block that does not re-execute: our code or the network is broken.
                tracing::error!(%fatal, "stopping: a certified block does not re-execute");
                std::process::exit(2);
            }
            Err(error) => {
                warn!(%error, "upstream {current} failed; trying the next");
                current = (current + 1) % upstreams.len();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// One round: fetch up to [`BATCH`] blocks past our head, apply every certified run; the
/// number applied.
pub async fn sync_round(
    spec: &ChainSpec,
    ledger: &Ledger,
    chain: &VerifiedChain,
    upstream: &Client,
) -> Result<usize, FollowError> {
    let head = ledger.head();
    let remote = upstream.health().await?.finalized_height;
    let mut run: Vec<(Block, Option<Vec<u8>>)> = Vec::new();
    let mut applied = 0;
    for height in head.height + 1..=remote.min(head.height + BATCH) {
        let answer = upstream.block(Some(height)).await?;
        let malformed = |reason: String| FollowError::Malformed { height, reason };
        let raw = hex::decode(&answer.raw).map_err(|e| malformed(e.to_string()))?;
        let block = Block::decode(Copying(&raw[..])).map_err(|e| malformed(e.to_string()))?;
        if block.header.height != height {
            return Err(malformed("wrong height".into()));
        }
        let finalization = match &answer.finalization {
            Some(hex_cert) => Some(hex::decode(hex_cert).map_err(|e| malformed(e.to_string()))?),
            None => None,
        };
        let certified = match &finalization {
            Some(cert) if certifies(spec, &block, cert) => true,
            Some(_) => return Err(FollowError::BadCertificate { height }),
            None => false,
        };
        run.push((block, finalization));
        if certified {
            // The certificate signs this block's hash; its parent links bind the whole run.
            links(&ledger.head().hash(), &run)?;
            for (block, finalization) in run.drain(..) {
                ledger.finalize(&block).await?;
                chain.push(block, finalization);
                applied += 1;
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_types::Header;

    fn block(height: u64, parent: Digest) -> Block {
        let header = Header {
            height,
            parent,
            timestamp: height,
            tx_root: Digest([0; 32]),
            state_root: Digest([0; 32]),
            outbox_root: Digest([0; 32]),
            epoch: 0,
            proposer: Default::default(),
        };
        Block::new(header, vec![])
    }

    #[test]
    fn a_forged_block_inside_a_run_breaks_the_chain() {
        let head = Digest([7; 32]);
        let first = block(1, head);
        let second = block(2, first.header.hash());
        assert!(links(&head, &[(first.clone(), None), (second.clone(), None)]).is_ok());
        let forged = block(1, Digest([8; 32]));
        assert!(matches!(
            links(&head, &[(forged, None), (second.clone(), None)]),
            Err(FollowError::BrokenChain { height: 1 })
        ));
        let other_first = {
            let mut b = first.clone();
            b.header.timestamp = 99;
            Block::new(b.header, vec![])
        };
        assert!(matches!(
            links(&head, &[(other_first, None), (second, None)]),
            Err(FollowError::BrokenChain { height: 2 })
        ));
    }

    /// A block reaches a follower's store only with its own body, a certificate of it, and
    /// as the next block of the chain it keeps.
    #[tokio::test]
    async fn push_certified_keeps_only_certified_linked_blocks_with_their_own_bodies() {
        use crate::{
            certify::Certifier,
            spec::{GenesisOptions, generate_with},
        };
        let keys = vec![phala_crypto::Keypair::dev("push-certified")];
        let options = GenesisOptions::local_dev("push-certified", 1);
        let (spec, validator_keys) =
            generate_with(&options, &keys, commonware_utils::TestRng::new(5)).unwrap();
        let (ledger, genesis) = Ledger::for_testing(&spec).await;
        let chain = VerifiedChain::new(genesis);
        let certifier = Certifier::new(&spec, &validator_keys).unwrap();
        let parent = ledger.head();
        let ctx = phala_chain::BlockContext {
            height: 1,
            timestamp: parent.timestamp + 1,
            proposer: spec.validators[0].address,
        };
        let good = ledger.build(&parent, ctx).await.unwrap();
        let certificate = certifier.certify(1, good.header.hash()).unwrap();

        let other = certifier.certify(1, Digest([9; 32])).unwrap();
        assert!(matches!(
            chain.push_certified(&spec, good.clone(), other),
            Err(FollowError::BadCertificate { height: 1 })
        ));
        let alice = phala_crypto::Keypair::dev("alice");
        let tx = phala_types::Transaction {
            signer: alice.address(),
            nonce: 0,
            fee: 1,
            expiry: 9,
            call: phala_types::Call::Balances(phala_types::BalancesCall::Transfer {
                to: alice.address(),
                amount: 1,
            }),
        };
        let swapped = Block::new(
            good.header.clone(),
            vec![alice.sign_transaction(&spec.hash(), tx)],
        );
        assert!(matches!(
            chain.push_certified(&spec, swapped, certificate.clone()),
            Err(FollowError::Malformed { height: 1, .. })
        ));
        let mut skipping = good.clone();
        skipping.header.height = 2;
        let skipping = Block::new(skipping.header, vec![]);
        let skipping_certificate = certifier.certify(2, skipping.header.hash()).unwrap();
        assert!(matches!(
            chain.push_certified(&spec, skipping, skipping_certificate),
            Err(FollowError::BrokenChain { height: 2 })
        ));
        assert_eq!(chain.height(), 0, "nothing was kept");
        chain
            .push_certified(&spec, good.clone(), certificate)
            .unwrap();
        assert_eq!(
            chain.block(1).map(|b| b.header.hash()),
            Some(good.header.hash())
        );
    }
}
