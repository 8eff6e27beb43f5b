//! Wires one validator's actors: p2p channels → block broadcast → marshal (ordered, stored,
//! backfilled finalized blocks) → simplex consensus → the chain application.
//!
//! Generic over the runtime and the network so that production (tokio, authenticated p2p) and
//! the deterministic simulation (simulated p2p) run exactly this code.

use crate::{
    application::{ChainApp, run_finalizer},
    ledger::Ledger,
    spec::Scheme,
};
use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{
        self, Start,
        core::{Actor as MarshalActor, Mailbox as MarshalMailbox},
        resolver::p2p as backfill,
        standard::{Inline, Standard},
    },
    simplex::{
        self,
        config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
        elector::RoundRobin,
        types::Finalization,
    },
    types::{Epoch, FixedEpocher, ViewDelta},
};
use commonware_cryptography::{
    Digested, Digestible as _, Sha256, certificate::ConstantProvider, ed25519::PublicKey,
};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage, buffer::paged::CacheRef};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use phala_types::{Block, Digest, limits};
use rand_core::CryptoRng;
use std::{sync::Arc, time::Duration};

/// Channel ids; every node must use the same.
pub mod channel {
    pub const VOTES: u64 = 0;
    pub const CERTIFICATES: u64 = 1;
    pub const CERTIFICATE_FETCH: u64 = 2;
    pub const BLOCKS: u64 = 3;
    pub const BACKFILL: u64 = 4;
    pub const TRANSACTIONS: u64 = 5;
}

/// The marshal mailbox: finalized blocks and certificates by height or digest.
pub type Marshal = MarshalMailbox<Scheme, Standard<Block>>;

/// The stored finalization certificate type.
pub type FinalizationCert = Finalization<Scheme, Digest>;

/// The six p2p channels a validator needs.
pub struct Channels<Tx, Rx> {
    pub votes: (Tx, Rx),
    pub certificates: (Tx, Rx),
    pub certificate_fetch: (Tx, Rx),
    pub blocks: (Tx, Rx),
    pub backfill: (Tx, Rx),
    pub transactions: (Tx, Rx),
}

/// What distinguishes one validator.
pub struct ValidatorConfig {
    pub me: PublicKey,
    pub scheme: Scheme,
    /// Prefix of every storage partition of this validator (unique per validator on a shared
    /// storage, stable across restarts).
    pub partition: String,
    pub genesis: Block,
    /// Simplex leader timeout: how long to wait for a proposal before voting to skip the view.
    pub leader_timeout: Duration,
}

/// The largest p2p message: a full block or a consensus message, whichever is larger.
pub fn max_message_size(validators: u32) -> u32 {
    let consensus = simplex::max_payload_size::<Scheme, Digest>(validators);
    commonware_p2p::max_message_size(&[consensus, limits::MAX_BLOCK_SIZE + 4096])
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    let write_buffer = NZUsize!(1 << 20);
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 1 << 16,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 1 << 16,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 30,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(262_144),
        freezer_key_write_buffer: write_buffer,
        freezer_value_write_buffer: write_buffer,
        ordinal_write_buffer: write_buffer,
        replay_buffer: NZUsize!(8 << 20),
        codec_config,
    }
}

/// Starts a validator's actors and returns the marshal mailbox (for RPC) and the finalizer's
/// handle, which ends only on a fatal error.
pub async fn start_validator<E, Tx, Rx, Bl, Pr>(
    context: E,
    config: ValidatorConfig,
    channels: Channels<Tx, Rx>,
    blocker: Bl,
    peers: Pr,
    ledger: Arc<Ledger>,
) -> (Marshal, Handle<anyhow::Result<()>>)
where
    E: Spawner + Clock + Storage + Metrics + CryptoRng,
    Tx: Sender<PublicKey = PublicKey>,
    Rx: Receiver<PublicKey = PublicKey>,
    Bl: Blocker<PublicKey = PublicKey>,
    Pr: Provider<PublicKey = PublicKey>,
{
    let prefix = config.partition;
    let page_cache = CacheRef::new(NZU16!(4_096), NZUsize!(8_192));
    let write_buffer = NZUsize!(1 << 20);
    let replay_buffer = NZUsize!(8 << 20);

    let (broadcast, blocks) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: config.me.clone(),
            mailbox_size: NZUsize!(1024),
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    broadcast.start(channels.blocks);
    crate::gossip::start(
        context.child("gossip"),
        channels.transactions,
        ledger.clone(),
    );

    let resolver = backfill::init(
        context.child("backfill"),
        backfill::Config {
            public_key: config.me.clone(),
            peer_provider: peers,
            blocker: blocker.clone(),
            mailbox_size: NZUsize!(1024),
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );

    let finalizations: immutable::Archive<E, Digest, FinalizationCert> = immutable::Archive::init(
        context.child("finalizations"),
        archive_config(&prefix, "finalizations", &page_cache, ()),
    )
    .await
    .expect("cannot open the finalizations archive");
    let stored_blocks: immutable::Archive<E, Digest, Arc<Block>> = immutable::Archive::init(
        context.child("blocks"),
        archive_config(&prefix, "blocks", &page_cache, ()),
    )
    .await
    .expect("cannot open the blocks archive");

    let epocher = FixedEpocher::new(NZU64!(u64::MAX));
    let genesis = Digested::compute(config.genesis, &Sequential).await;
    let genesis_digest = genesis.digest();
    let (marshal, mailbox, floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations,
        stored_blocks,
        marshal::Config {
            provider: ConstantProvider::<Scheme, Epoch>::new(config.scheme.clone()),
            epocher: epocher.clone(),
            start: Start::Genesis(genesis),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: NZUsize!(1024),
            view_retention: ViewDelta::new(2_560),
            prunable_items_per_section: NZU64!(4_096),
            page_cache: page_cache.clone(),
            replay_buffer,
            key_write_buffer: write_buffer,
            value_write_buffer: write_buffer,
            block_codec_config: (),
            max_repair: NZUsize!(20),
            max_pending_acks: NZUsize!(16),
            strategy: Sequential,
        },
    )
    .await;
    let processed = floor.processed().map(|p| p.height().get()).unwrap_or(0);

    let (app, finalized) = ChainApp::new(ledger.clone());
    marshal.start(app.clone(), blocks, resolver);
    let finalizer = context.child("finalizer").spawn({
        let mailbox = mailbox.clone();
        move |_| run_finalizer(ledger, mailbox, processed, finalized)
    });

    let wrapper = Inline::new(context.child("application"), app, mailbox.clone(), epocher);
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme: config.scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: wrapper.clone(),
            relay: wrapper.clone(),
            reporter: wrapper,
            strategy: Sequential,
            partition: format!("{prefix}-simplex-e0"),
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: Floor::Genesis(genesis_digest),
            replay_buffer,
            write_buffer,
            page_cache,
            leader_timeout: config.leader_timeout,
            certification_timeout: config.leader_timeout * 2,
            timeout_retry: config.leader_timeout * 5,
            view_retention: ViewDelta::new(256),
            skip: SkipPolicy::Enabled {
                timeout: config.leader_timeout * 10,
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );
    engine.start(
        channels.votes,
        channels.certificates,
        channels.certificate_fetch,
    );
    (mailbox, finalizer)
}
