//! The chain spec (everything every node must agree on at genesis) and the trusted-dealer
//! genesis that writes it with one key file per validator.
//!
//! The dealer generates the BLS group polynomial and one share per validator, writes them, and
//! drops its secret: nothing but the validators' key files can sign for the group afterwards.

use anyhow::{Context as _, anyhow, bail};
use commonware_codec::{Copying, Decode, DecodeExt, Encode};
use commonware_consensus::simplex::scheme::bls12381_threshold::standard as threshold;
use commonware_cryptography::{
    Hasher, Sha256, Signer as _,
    bls12381::{
        dkg::feldman_desmedt::deal,
        primitives::{
            group::{G2, Share},
            sharing::{Mode, ModeVersion, Sharing},
            variant::MinSig,
        },
    },
    ed25519,
};
use commonware_utils::{N3f1, NZU32, TryCollect as _, ordered::Set};
use phala_chain::{
    balances::{Allocation, FeeSchedule, FeeSplit},
    commitment,
    config::GenesisConfig,
    contracts::ContractsConfig,
    merkle,
    registry::RegistryConfig,
    state::Changes,
};
use phala_crypto::Keypair;
use phala_types::{Address, AttestationPolicy, Block, Digest, Header, TOTAL_SUPPLY, UNIT};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::Path};

/// The consensus signature scheme: BLS12-381 threshold signatures, signatures in G1 (48 bytes),
/// the group key in G2 (96 bytes).
pub type Scheme = threshold::Scheme<ed25519::PublicKey, MinSig>;

/// Most validators a spec may name.
pub const MAX_VALIDATORS: u32 = 1024;

/// The dev accounts a dev genesis funds (see `phala_crypto::dev`).
pub use phala_crypto::dev::{DEV_ACCOUNTS, DEV_OPERATORS, dev_operator};

/// One validator as every node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// The validator's ed25519 key: its p2p identity, consensus identity and fee account.
    pub address: Address,
    /// Where its peers dial it.
    pub p2p: SocketAddr,
}

/// Everything a node must agree on with the others before the first block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSpec {
    pub chain_id: String,
    /// The least time between a block and its parent, in milliseconds.
    pub block_interval_ms: u64,
    pub genesis: GenesisConfig,
    pub validators: Vec<ValidatorInfo>,
    /// The group's public polynomial (hex), from which each share's public part derives.
    pub sharing: String,
    /// The group public key (hex, 96 bytes): all a light client needs to check finality.
    pub identity: String,
}

/// A validator's secrets, written once by genesis.
#[derive(Serialize, Deserialize)]
pub struct ValidatorKey {
    /// ed25519 seed, hex.
    pub secret: String,
    /// This validator's share of the group key, hex.
    pub share: String,
}

impl ChainSpec {
    /// The chain's identity: SHA-256 of the spec's canonical JSON.
    pub fn hash(&self) -> Digest {
        let json = serde_json::to_vec(self).expect("spec serializes");
        Sha256::hash(&[&json])
    }

    /// The namespace consensus signs under, unique per chain.
    pub fn namespace(&self) -> Vec<u8> {
        [
            phala_types::namespace::CONSENSUS,
            b"/",
            self.chain_id.as_bytes(),
        ]
        .concat()
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read chain spec {}", path.display()))?;
        let spec: ChainSpec = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a chain spec", path.display()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what every node must agree on: the genesis state, the validator keys and the
    /// group key; a production chain must not name a dev validator key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.genesis.validate()?;
        self.participants()?;
        self.sharing()?;
        if !self.genesis.dev
            && let Some((validator, name)) = self
                .validators
                .iter()
                .find_map(|v| phala_crypto::dev::dev_name(&v.address).map(|name| (v.address, name)))
        {
            bail!("validator {validator} has the dev key `{name}`, which anyone can compute");
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The validators' consensus keys, in the engine's (sorted) order.
    pub fn participants(&self) -> anyhow::Result<Set<ed25519::PublicKey>> {
        self.validators
            .iter()
            .map(|v| phala_crypto::public_key(&v.address).map_err(|e| anyhow!(e)))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .try_collect()
            .map_err(|_| anyhow!("a validator is listed twice"))
    }

    pub fn sharing(&self) -> anyhow::Result<Sharing<MinSig>> {
        let bytes = hex::decode(&self.sharing).context("sharing is not hex")?;
        let sharing =
            Sharing::<MinSig>::decode_cfg(bytes, &(NZU32!(MAX_VALIDATORS), ModeVersion::v0()))
                .map_err(|e| anyhow!("invalid sharing: {e}"))?;
        if sharing.total().get() as usize != self.validators.len() {
            bail!(
                "the sharing is for {} validators, the spec lists {}",
                sharing.total(),
                self.validators.len()
            );
        }
        Ok(sharing)
    }

    pub fn identity(&self) -> anyhow::Result<G2> {
        let bytes = hex::decode(&self.identity).context("identity is not hex")?;
        G2::decode(bytes).map_err(|e| anyhow!("invalid identity: {e}"))
    }

    /// A scheme that verifies certificates with the group key alone (light clients, followers).
    pub fn certificate_verifier(&self) -> anyhow::Result<Scheme> {
        Ok(Scheme::certificate_verifier(
            &self.namespace(),
            self.identity()?,
        ))
    }

    /// The genesis state's writes and the genesis block; the block's parent is the spec hash,
    /// so chains differ.
    pub fn genesis(&self) -> anyhow::Result<(Changes, Block)> {
        let runtime = phala_chain::Runtime::new(self.hash(), self.genesis.clone());
        let changes = runtime.genesis_changes();
        let state_root = commitment::genesis_root(&changes)?;
        let header = Header {
            height: 0,
            parent: self.hash(),
            timestamp: self.genesis.timestamp,
            tx_root: merkle::root(&[]),
            state_root,
            outbox_root: merkle::root(&[]),
            epoch: 0,
            proposer: Address::default(),
        };
        Ok((changes, Block::new(header, Vec::new())))
    }
}

impl ValidatorKey {
    /// Reads a key file written by `genesis`.
    pub fn load(path: &Path) -> anyhow::Result<(Keypair, Share)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read validator key {}", path.display()))?;
        let key: ValidatorKey = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a validator key file", path.display()))?;
        key.keys().with_context(|| format!("in {}", path.display()))
    }

    /// The identity key and the group-key share this file holds.
    pub fn keys(&self) -> anyhow::Result<(Keypair, Share)> {
        let seed: [u8; 32] = hex::decode(&self.secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("bad secret: not 32 bytes of hex"))?;
        let share_bytes = hex::decode(&self.share).context("share is not hex")?;
        let share =
            Share::decode(Copying(&share_bytes[..])).map_err(|e| anyhow!("bad share: {e}"))?;
        Ok((Keypair::from_secret(seed), share))
    }
}

/// What `phala-node genesis` should create.
pub struct GenesisOptions {
    pub chain_id: String,
    pub validators: usize,
    pub host: std::net::IpAddr,
    pub base_port: u16,
    pub dev: bool,
    pub block_interval_ms: u64,
    /// Extra funded accounts (benchmarks): each gets `extra_balance`.
    pub extra_accounts: Vec<Address>,
    pub extra_balance: u128,
    /// Balances at genesis besides the dev accounts'; the rest of the supply goes to the
    /// (keyless) treasury.
    pub allocations: Vec<Allocation>,
    /// The registry admin of a production chain (dev chains use `alice`).
    pub admin: Option<Address>,
    /// Genesis time in milliseconds since the Unix epoch (`None`: now).
    pub timestamp: Option<u64>,
}

impl GenesisOptions {
    /// A dev chain of `validators` on 127.0.0.1 with genesis at time 0 and nothing besides
    /// the dev accounts: what tests build their chains from (set other fields over it).
    pub fn local_dev(chain_id: &str, validators: usize) -> Self {
        GenesisOptions {
            chain_id: chain_id.into(),
            validators,
            host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            base_port: 1,
            dev: true,
            block_interval_ms: 100,
            extra_accounts: vec![],
            extra_balance: 0,
            allocations: vec![],
            admin: None,
            timestamp: Some(0),
        }
    }
}

/// Runs the trusted dealer: a spec and one key file's contents per validator, in spec order.
pub fn generate(options: &GenesisOptions) -> anyhow::Result<(ChainSpec, Vec<ValidatorKey>)> {
    if options.validators == 0 || options.validators > MAX_VALIDATORS as usize {
        bail!("between 1 and {MAX_VALIDATORS} validators");
    }
    let keys: Vec<Keypair> = (0..options.validators)
        .map(|_| Keypair::generate())
        .collect();
    generate_with(options, &keys, commonware_utils::sys_rng())
}

/// The dealer with given validator keys and randomness (tests use fixed ones to be
/// reproducible; production uses [`generate`]).
pub fn generate_with(
    options: &GenesisOptions,
    keys: &[Keypair],
    mut rng: impl rand_core::CryptoRng,
) -> anyhow::Result<(ChainSpec, Vec<ValidatorKey>)> {
    let participants: Set<ed25519::PublicKey> = keys
        .iter()
        .map(|k| k.private_key().public_key())
        .try_collect()
        .map_err(|_| anyhow!("duplicate validator key"))?;
    let (output, shares) =
        deal::<MinSig, _, N3f1>(&mut rng, Mode::NonZeroCounter, participants.clone())
            .map_err(|e| anyhow!("dealing failed: {e:?}"))?;
    let sharing = output.public().clone();
    let validators = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ValidatorInfo {
            address: k.address(),
            p2p: SocketAddr::new(options.host, options.base_port + i as u16),
        })
        .collect();
    let treasury = phala_types::system::TREASURY;
    let mut allocations = options.allocations.clone();
    if options.dev {
        let operators = (0..DEV_OPERATORS).map(dev_operator);
        for key in DEV_ACCOUNTS
            .iter()
            .map(|name| Keypair::dev(name))
            .chain(operators)
        {
            allocations.push(Allocation {
                address: key.address(),
                balance: 10_000_000 * UNIT,
            });
        }
    }
    for address in &options.extra_accounts {
        allocations.push(Allocation {
            address: *address,
            balance: options.extra_balance,
        });
    }
    let allocated: u128 = allocations.iter().map(|a| a.balance).sum();
    let rest = TOTAL_SUPPLY
        .checked_sub(allocated)
        .ok_or_else(|| anyhow!("allocations exceed the supply"))?;
    allocations.push(Allocation {
        address: treasury,
        balance: rest,
    });
    let genesis = GenesisConfig {
        timestamp: options.timestamp.unwrap_or_else(now_ms),
        fees: FeeSchedule {
            base: UNIT / 1_000_000,
            per_byte: UNIT / 1_000_000_000,
            // 4 PHA per second of validator time: a transfer (~50 µs) costs 0.0002 PHA, a
            // DCAP registration (~2.6 ms) 0.01 PHA.
            per_weight: 4 * UNIT / 1_000_000_000,
            split: FeeSplit {
                burn: 20,
                author: 40,
                treasury: 40,
            },
            treasury,
        },
        allocations,
        upward_origins: Vec::new(),
        dev: options.dev,
        registry: registry_config(options.dev, options.admin),
        contracts: ContractsConfig::default(),
    };
    let spec = ChainSpec {
        chain_id: options.chain_id.clone(),
        block_interval_ms: options.block_interval_ms,
        genesis,
        validators,
        sharing: hex::encode(sharing.encode()),
        identity: hex::encode(sharing.public().encode()),
    };
    spec.validate()?;
    let mut files = Vec::new();
    for key in keys {
        let share = shares
            .get_value(&key.private_key().public_key())
            .ok_or_else(|| anyhow!("no share for a validator"))?;
        files.push(ValidatorKey {
            secret: hex::encode(key.private_key().encode()),
            share: hex::encode(share.encode()),
        });
    }
    Ok((spec, files))
}

/// The registry at genesis: a dev chain accepts simulated TEEs and makes alice its admin (unless
/// told otherwise); a production chain starts with an empty allowlist (no worker admitted
/// until its admin, later governance, allows measurements) and no simulated TEEs.
fn registry_config(dev: bool, admin: Option<Address>) -> RegistryConfig {
    if dev {
        RegistryConfig {
            admin: admin.or(Some(Keypair::dev("alice").address())),
            policy: AttestationPolicy::dev(),
            // Dev chains start with the cluster `phala dev` assigns its workers to.
            clusters: vec![0],
        }
    } else {
        RegistryConfig {
            admin,
            ..RegistryConfig::default()
        }
    }
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
